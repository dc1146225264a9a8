//! Sign-in throttling, per account and per client address: after a few
//! failures each further attempt waits longer (doubling up to 15 minutes),
//! so guessing is slow while a person who mistyped barely notices. Kept in
//! memory: one `serve` answers the UI.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before attempts are held back.
pub const FREE_FAILURES: u32 = 5;
const FIRST_WAIT: Duration = Duration::from_secs(2);
const LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);
/// A key with no failure for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, Default)]
pub struct SignInThrottle {
    keys: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    fn blocked_until(&self) -> Option<Instant> {
        let over = self.count.checked_sub(FREE_FAILURES)?;
        let wait = FIRST_WAIT.saturating_mul(1 << over.min(20)).min(LONGEST_WAIT);
        Some(self.last + wait)
    }
}

impl SignInThrottle {
    /// How long before `keys` may try again; None when they may now.
    pub fn wait(&self, keys: &[&str], now: Instant) -> Option<Duration> {
        let map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| map.get(*k)?.blocked_until())
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    pub fn failed(&self, keys: &[&str], now: Instant) {
        let mut map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
        for key in keys {
            let entry = map.entry(key.to_string()).or_insert(Failures { count: 0, last: now });
            entry.count += 1;
            entry.last = now;
        }
    }

    pub fn succeeded(&self, keys: &[&str]) {
        let mut map = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            map.remove(*key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_the_free_ones_wait_longer_each_time() {
        let throttle = SignInThrottle::default();
        let now = Instant::now();
        let keys = ["account:ada@contoso.test", "address:192.0.2.1"];
        for _ in 0..FREE_FAILURES {
            assert_eq!(throttle.wait(&keys, now), None);
            throttle.failed(&keys, now);
        }
        assert_eq!(throttle.wait(&keys, now), Some(FIRST_WAIT));
        throttle.failed(&keys, now);
        assert_eq!(throttle.wait(&keys, now), Some(FIRST_WAIT * 2));
        // Another address for the same account waits too; so does another
        // account from the same address.
        assert!(throttle.wait(&["account:ada@contoso.test", "address:198.51.100.7"], now).is_some());
        assert!(throttle.wait(&["account:bob@contoso.test", "address:192.0.2.1"], now).is_some());
        assert_eq!(throttle.wait(&keys, now + FIRST_WAIT * 2), None);
        throttle.succeeded(&keys);
        assert_eq!(throttle.wait(&keys, now), None);
    }
}
