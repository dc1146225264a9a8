//! When a failed delivery is tried again: about 5 s after the first failure,
//! then 30 s, 2 min, 5 min, then doubling up to one hour, and hourly after
//! that — for about three days (at least one, as promised) before the
//! delivery is marked failed (it stays resendable).

use std::time::Duration;

/// The waits after the first failures; later ones double up to [`MAX_WAIT`].
const FIRST_WAITS: [Duration; 4] =
    [Duration::from_secs(5), Duration::from_secs(30), Duration::from_secs(120), Duration::from_secs(300)];
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Attempts in all before giving up: the waits sum to about three days.
pub const MAX_ATTEMPTS: i64 = 80;

/// The wait after `failed` attempts have failed (1 = the first), or None
/// when the delivery should stop.
pub fn wait_after(failed: i64) -> Option<Duration> {
    if failed >= MAX_ATTEMPTS {
        return None;
    }
    let index = (failed.max(1) - 1) as usize;
    Some(match FIRST_WAITS.get(index) {
        Some(wait) => *wait,
        None => {
            let doublings = (index + 1 - FIRST_WAITS.len()).min(16) as u32;
            (FIRST_WAITS[FIRST_WAITS.len() - 1] * 2u32.pow(doublings)).min(MAX_WAIT)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waits_grow_as_documented() {
        let waits: Vec<u64> = (1..=9).map(|n| wait_after(n).unwrap().as_secs()).collect();
        assert_eq!(waits, [5, 30, 120, 300, 600, 1200, 2400, 3600, 3600]);
    }

    #[test]
    fn deliveries_are_tried_for_at_least_a_day() {
        let total: Duration = (1..MAX_ATTEMPTS).map(|n| wait_after(n).unwrap()).sum();
        assert!(total >= Duration::from_secs(24 * 3600), "{total:?}");
        assert!(total <= Duration::from_secs(4 * 24 * 3600), "{total:?}");
        assert_eq!(wait_after(MAX_ATTEMPTS), None);
    }
}
