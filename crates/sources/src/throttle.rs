//! What every source does when a server asks for quiet (Graph 429/503 with
//! Retry-After, EWS ErrorServerBusy with BackOffMilliseconds): a short wait
//! is taken in place and the request sent again; a longer one ends the pass
//! and is stored, so no process asks before it is over. Either way it is
//! not a failure.

use std::time::Duration;

/// Waits up to this long are taken in place; longer ones end the pass.
pub const MAX_WAIT_IN_PASS: Duration = Duration::from_secs(5);
/// Attempts per request before the pass gives up on it.
pub const MAX_ATTEMPTS: u32 = 6;

/// How long to wait before sending again after `error` on attempt
/// `attempt`, if the server asked for a wait short enough to take here.
pub fn wait_in_place(error: &crate::SourceError, attempt: u32) -> Option<Duration> {
    let wait = error.retry_after()?;
    (attempt < MAX_ATTEMPTS && wait <= MAX_WAIT_IN_PASS).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SourceError;

    #[test]
    fn short_waits_in_place_long_ones_end_the_pass() {
        let busy = SourceError::throttled("busy", Duration::from_secs(1));
        assert_eq!(wait_in_place(&busy, 1), Some(Duration::from_secs(1)));
        assert_eq!(wait_in_place(&busy, MAX_ATTEMPTS), None, "attempts are bounded");
        assert_eq!(wait_in_place(&SourceError::throttled("busy", Duration::from_secs(60)), 1), None);
        assert_eq!(wait_in_place(&SourceError::transient("network"), 1), None);
    }
}
