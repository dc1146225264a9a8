//! Credentials never cross a network unencrypted unless the operator said
//! so. Passwords, bearer tokens and client secrets may go over plain TCP or
//! `http://` only to this machine (loopback) or where a mailbox or tenant was
//! added with `--allow-plaintext`.
//!
//! The decision is made from the host as written, never from a DNS answer:
//! `localhost`, an IPv4 literal in 127.0.0.0/8 or `::1` is loopback; any
//! name is not (it could resolve anywhere). So `mailbox add` and `tenant
//! add` refuse before contacting anything, and every connect checks again.

use std::net::{IpAddr, Ipv6Addr};

use crate::SourceError;

/// The flag that allows it, named in every refusal.
pub const ALLOW_FLAG: &str = "--allow-plaintext";

/// Whether `host` (a name, an IP literal, or a bracketed IPv6 literal) is
/// this machine by how it is written.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => ip == Ipv6Addr::LOCALHOST || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        Err(_) => false,
    }
}

/// Refuses to send `what` (e.g. "the IMAP password") unencrypted to `host`
/// unless it is loopback or `allowed`.
pub fn check_host(host: &str, encrypted: bool, what: &str, allowed: bool) -> Result<(), SourceError> {
    if encrypted || allowed || is_loopback_host(host) {
        return Ok(());
    }
    Err(SourceError::permanent(format!(
        "refusing to send {what} unencrypted to {host}: use TLS (--tls tls or starttls, or an https:// URL), \
         or, if this network is trusted, add it again with {ALLOW_FLAG}"
    )))
}

/// [`check_host`] for a URL: `https://` is encrypted, `http://` is not.
pub fn check_url(url: &str, what: &str, allowed: bool) -> Result<(), SourceError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| SourceError::permanent(format!("{url} is not a URL ({e}); give a full https:// URL")))?;
    let encrypted = match parsed.scheme() {
        "https" => true,
        "http" => false,
        other => {
            return Err(SourceError::permanent(format!("{url} uses {other}://; give an https:// URL")));
        }
    };
    let host = parsed.host_str().unwrap_or_default();
    check_host(host, encrypted, what, allowed)
}

/// Whether `url` has the same origin (scheme, host, port) as `base`:
/// tokens for `base` go nowhere else, whatever a server or the database
/// hands back as the next link.
pub fn same_origin(url: &str, base: &str) -> bool {
    match (url::Url::parse(url), url::Url::parse(base)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_decided_from_the_host_as_written() {
        for host in
            ["localhost", "LOCALHOST", "localhost.", "127.0.0.1", "127.8.9.10", "::1", "[::1]", "::ffff:127.0.0.1"]
        {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["imap.example.com", "localhost.example.com", "10.0.0.1", "0.0.0.0", "::", "[2001:db8::1]", ""] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn refusals_name_the_flag() {
        let err = check_host("imap.example.com", false, "the IMAP password", false).unwrap_err();
        assert!(err.is_permanent() && err.to_string().contains(ALLOW_FLAG), "{err}");
        assert!(check_host("imap.example.com", true, "x", false).is_ok());
        assert!(check_host("imap.example.com", false, "x", true).is_ok());
        assert!(check_url("http://127.0.0.1:8080/token", "x", false).is_ok());
        assert!(check_url("https://login.example.com/token", "x", false).is_ok());
        let err = check_url("http://login.example.com/token", "the client secret", false).unwrap_err();
        assert!(err.to_string().contains("login.example.com"), "{err}");
        assert!(check_url("ftp://x/", "x", true).is_err());
    }

    #[test]
    fn origins() {
        assert!(same_origin("https://graph.microsoft.com/v1.0/users/a/delta?x=1", "https://graph.microsoft.com"));
        assert!(!same_origin("https://evil.example/v1.0/delta", "https://graph.microsoft.com"));
        assert!(!same_origin("http://graph.microsoft.com/v1.0", "https://graph.microsoft.com"));
        assert!(!same_origin("https://graph.microsoft.com:8443/v1.0", "https://graph.microsoft.com"));
    }
}
