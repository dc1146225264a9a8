//! Crash injection at the pipeline's step boundaries, for the exactly-once
//! tests. Compiled in only with the `crash-points` feature (the test
//! builds); without it every point is an empty inline function, so a
//! release binary has no way to be told to crash.
//!
//! With it: `MAILROBOT_CRASH_AT=after-process` kills the process (no
//! unwinding, no destructors, like SIGKILL) the first time that point is
//! reached; `after-process:3` the third time. `MAILROBOT_PANIC_AT=poll`
//! panics instead (how tests show a bug in one mailbox's poll is caught).
//! Unset, a point costs one atomic load.

pub const CRASH_ENV: &str = "MAILROBOT_CRASH_AT";
pub const PANIC_ENV: &str = "MAILROBOT_PANIC_AT";

/// Every step boundary of one mail's path, in order.
pub const POINTS: &[&str] = &["after-fetch", "after-process", "after-settle", "after-mark-settled"];

#[cfg(feature = "crash-points")]
pub use armed::{panic_point, point};

/// Without the `crash-points` feature: nothing.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn point(_name: &str) {}

/// Without the `crash-points` feature: nothing.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn panic_point(_name: &str) {}

#[cfg(feature = "crash-points")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{CRASH_ENV, PANIC_ENV};

    struct Armed {
        point: String,
        nth: u64,
        hits: AtomicU64,
    }

    fn armed() -> Option<&'static Armed> {
        static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let spec = std::env::var(CRASH_ENV).ok()?;
                let (point, nth) = match spec.split_once(':') {
                    Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
                    None => (spec, 1),
                };
                Some(Armed { point, nth, hits: AtomicU64::new(0) })
            })
            .as_ref()
    }

    /// Dies here if the environment asks for it.
    pub fn point(name: &str) {
        let Some(armed) = armed() else { return };
        if armed.point == name && armed.hits.fetch_add(1, Ordering::SeqCst) + 1 == armed.nth {
            eprintln!("mailrobot: injected crash at {name}");
            // SAFETY: _exit ends the process at once; nothing is left to observe.
            unsafe { libc::_exit(86) };
        }
    }

    /// Panics here if the environment asks for it.
    pub fn panic_point(name: &str) {
        static ARMED: OnceLock<Option<String>> = OnceLock::new();
        if ARMED.get_or_init(|| std::env::var(PANIC_ENV).ok()).as_deref() == Some(name) {
            panic!("injected panic at {name}");
        }
    }
}
