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

/// A `Retry-After` value (RFC 9110 10.2.3): delay-seconds, or an HTTP-date
/// (the wait until then; none if it has passed). The one reader of the
/// header for the token endpoint, Graph and `$batch` items.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now()).to_std().unwrap_or_default();
    Some(wait)
}

/// The `Retry-After` of an answer, when it has a readable one.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers.get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SourceError;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        assert_eq!(parse_retry_after(" 12 "), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "passed: no wait");
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let wait = parse_retry_after(&soon).unwrap();
        assert!(wait > Duration::from_secs(80) && wait <= Duration::from_secs(90), "{wait:?}");
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-5"), None);
    }

    #[test]
    fn short_waits_in_place_long_ones_end_the_pass() {
        let busy = SourceError::throttled("busy", Duration::from_secs(1));
        assert_eq!(wait_in_place(&busy, 1), Some(Duration::from_secs(1)));
        assert_eq!(wait_in_place(&busy, MAX_ATTEMPTS), None, "attempts are bounded");
        assert_eq!(wait_in_place(&SourceError::throttled("busy", Duration::from_secs(60)), 1), None);
        assert_eq!(wait_in_place(&SourceError::transient("network"), 1), None);
    }
}
