//! Fault injection and request counters, per endpoint.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::EmulatorError;
use crate::config::{FaultSpec, IdTokenFault};
use crate::error::StsError;

/// Endpoint names faults and counters are kept under.
pub const ENDPOINTS: [&str; 15] = [
    "authorize",
    "login",
    "token",
    "logout",
    "openid_configuration",
    "jwks",
    "instance_discovery",
    "introspect",
    "userinfo",
    "graph",
    "graph_value",
    "graph_delta",
    "graph_batch",
    "ews",
    "other",
];

/// Which endpoint a request path belongs to; `None` for the admin API (never faulted or counted).
pub(crate) fn classify(path: &str) -> Option<&'static str> {
    if path == "/_admin" || path.starts_with("/_admin/") {
        return None;
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs.first() == Some(&"v1.0") {
        return Some(match segs.as_slice() {
            ["v1.0", "$batch"] => "graph_batch",
            [.., "$value"] => "graph_value",
            [.., "delta" | "delta()" | "microsoft.graph.delta"] => "graph_delta",
            _ => "graph",
        });
    }
    if path.eq_ignore_ascii_case("/EWS/Exchange.asmx") {
        return Some("ews");
    }
    Some(match segs.as_slice() {
        [_, "oauth2", "v2.0", "authorize"] => "authorize",
        [_, "oauth2", "v2.0", "token"] => "token",
        [_, "oauth2", "v2.0", "logout"] => "logout",
        [_, "login" | "mfa" | "consent"] => "login",
        [_, "v2.0", ".well-known", "openid-configuration"] | [_, ".well-known", "openid-configuration"] => {
            "openid_configuration"
        }
        [_, "discovery", "v2.0", "keys"] | [_, "discovery", "keys"] => "jwks",
        [_, "discovery", "instance"] => "instance_discovery",
        ["introspect", ..] => "introspect",
        ["oidc", "userinfo"] => "userinfo",
        _ => "other",
    })
}

/// Counters of one endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EndpointStats {
    /// Requests received (faulted ones included), inside a `$batch` or not.
    pub requests: u64,
    /// Of `requests`, those that came as items of a `$batch` (not HTTP requests of their own).
    #[serde(default)]
    pub batched: u64,
    /// Requests a fault was applied to.
    pub faults: u64,
    /// Answers by HTTP status (`"200"`, `"400"`…); dropped connections count as `"dropped"`.
    pub status: BTreeMap<String, u64>,
    /// Requests that came before the wait an injected fault asked for
    /// (Retry-After, EWS BackOffMilliseconds) was over: a client that does
    /// not honour them.
    #[serde(default)]
    pub early: u64,
}

/// Request counters (`GET /_admin/stats`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub endpoints: BTreeMap<String, EndpointStats>,
    /// Successful token requests by grant type.
    pub grants: BTreeMap<String, u64>,
    /// AADSTS error codes answered (token endpoint and sign-in), e.g. `"7000215": 1`.
    pub errors: BTreeMap<String, u64>,
    /// By mailbox address: the most requests of one app in flight on it at once (Graph, EWS,
    /// `$batch` items and held slots alike), as Outlook's concurrency limit counts them.
    #[serde(default)]
    pub concurrency_peak: BTreeMap<String, u64>,
}

impl Stats {
    /// Requests received by an endpoint (0 if none).
    pub fn requests(&self, endpoint: &str) -> u64 {
        self.endpoints.get(endpoint).map_or(0, |e| e.requests)
    }

    /// HTTP requests an endpoint received: `$batch` items not counted.
    pub fn http_requests(&self, endpoint: &str) -> u64 {
        self.endpoints.get(endpoint).map_or(0, |e| e.requests - e.batched)
    }

    /// How often an AADSTS code was answered.
    pub fn error_count(&self, code: u32) -> u64 {
        self.errors.get(&code.to_string()).copied().unwrap_or(0)
    }

    /// The most requests of one app that were in flight at once on a mailbox (0 if none came).
    pub fn concurrency_peak(&self, mailbox: &str) -> u64 {
        self.concurrency_peak.iter().find(|(m, _)| m.eq_ignore_ascii_case(mailbox)).map_or(0, |(_, n)| *n)
    }

    pub(crate) fn note_concurrency(&mut self, mailbox: &str, in_flight: usize) {
        let peak = self.concurrency_peak.entry(mailbox.to_string()).or_default();
        *peak = (*peak).max(in_flight as u64);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Faults {
    pending: Vec<FaultSpec>,
    /// Per endpoint: no request wanted before then (the last injected wait).
    quiet_until: BTreeMap<String, std::time::Instant>,
    id_tokens: Vec<IdTokenFault>,
    pub stats: Stats,
}

impl Faults {
    pub fn add(&mut self, f: FaultSpec) -> Result<(), EmulatorError> {
        if f.endpoint != "*" && !ENDPOINTS.contains(&f.endpoint.as_str()) {
            return Err(EmulatorError::Invalid(format!(
                "unknown endpoint '{}' (one of {}, or *)",
                f.endpoint,
                ENDPOINTS.join(", ")
            )));
        }
        if let Some(s) = f.status {
            StatusCode::from_u16(s).map_err(|_| EmulatorError::Invalid(format!("bad status {s}")))?;
        }
        if f.count == 0 {
            return Err(EmulatorError::Invalid("count must be at least 1".into()));
        }
        if f.probability.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
            return Err(EmulatorError::Invalid("probability must be between 0 and 1".into()));
        }
        self.pending.push(f);
        Ok(())
    }

    pub fn clear(&mut self) {
        self.pending.clear();
        self.quiet_until.clear();
        self.id_tokens.clear();
    }

    pub fn add_id_token(&mut self, f: IdTokenFault) -> Result<(), EmulatorError> {
        if f.count == 0 {
            return Err(EmulatorError::Invalid("count must be at least 1".into()));
        }
        self.id_tokens.push(f);
        Ok(())
    }

    /// The claims to change in the id_token being issued, if a tampering is queued.
    pub fn take_id_token(&mut self) -> Option<serde_json::Map<String, serde_json::Value>> {
        let f = self.id_tokens.first_mut()?;
        f.count -= 1;
        let claims = f.claims.clone();
        if f.count == 0 {
            self.id_tokens.remove(0);
        }
        Some(claims)
    }

    pub fn pending(&self) -> Vec<FaultSpec> {
        self.pending.clone()
    }

    /// Counts a request and takes the fault that applies to it, if any (first added, first used).
    pub fn on_request(&mut self, endpoint: &str) -> Option<FaultSpec> {
        let e = self.stats.endpoints.entry(endpoint.to_string()).or_default();
        e.requests += 1;
        let now = std::time::Instant::now();
        if self.quiet_until.get(endpoint).is_some_and(|until| now < *until) {
            e.early += 1;
        }
        let strikes = |f: &FaultSpec| f.probability.is_none_or(|p| rand::random::<f64>() < p);
        let i = self.pending.iter().position(|f| (f.endpoint == endpoint || f.endpoint == "*") && strikes(f))?;
        e.faults += 1;
        let f = &mut self.pending[i];
        f.count -= 1;
        let taken = f.clone();
        if f.count == 0 {
            self.pending.remove(i);
        }
        if let Some(seconds) = taken.retry_after.filter(|_| taken.status.is_some()) {
            let until = now + std::time::Duration::from_secs(seconds);
            let quiet = self.quiet_until.entry(endpoint.to_string()).or_insert(until);
            *quiet = (*quiet).max(until);
        }
        Some(taken)
    }

    /// Marks the request just counted by [`Faults::on_request`] as a `$batch` item.
    pub fn on_batched(&mut self, endpoint: &str) {
        self.stats.endpoints.entry(endpoint.to_string()).or_default().batched += 1;
    }

    pub fn on_response(&mut self, endpoint: &str, status: &str) {
        *self.stats.endpoints.entry(endpoint.to_string()).or_default().status.entry(status.to_string()).or_default() +=
            1;
    }

    pub fn count_grant(&mut self, grant: &str) {
        *self.stats.grants.entry(grant.to_string()).or_default() += 1;
    }

    pub fn count_error(&mut self, code: u32) {
        *self.stats.errors.entry(code.to_string()).or_default() += 1;
    }
}

/// The STS error an injected status stands for, so clients see Microsoft's shape.
pub(crate) fn fault_error(status: StatusCode, retry_after: Option<u64>) -> StsError {
    let e = match status.as_u16() {
        429 => {
            StsError::new("temporarily_unavailable", 90055, "There are too many incoming requests. Try again later.")
        }
        503 => StsError::new("temporarily_unavailable", 90033, "A transient error has occurred. Please try again."),
        _ => StsError::new(
            "server_error",
            50000,
            "There was an error issuing a token or an issue with our sign-in service. Try again later.",
        ),
    };
    StsError { retry_after, ..e.with_status(status) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_endpoints() {
        assert_eq!(classify("/contoso.test/oauth2/v2.0/token"), Some("token"));
        assert_eq!(classify("/common/v2.0/.well-known/openid-configuration"), Some("openid_configuration"));
        assert_eq!(classify("/common/discovery/instance"), Some("instance_discovery"));
        assert_eq!(classify("/t/discovery/v2.0/keys"), Some("jwks"));
        assert_eq!(classify("/t/login"), Some("login"));
        assert_eq!(classify("/_admin/stats"), None);
        assert_eq!(classify("/"), Some("other"));
        assert_eq!(classify("/v1.0/users/a@b/mailFolders/inbox/messages"), Some("graph"));
        assert_eq!(classify("/v1.0/users/a@b/messages/X/$value"), Some("graph_value"));
        assert_eq!(classify("/v1.0/me/mailFolders/inbox/messages/delta"), Some("graph_delta"));
        assert_eq!(classify("/v1.0/$batch"), Some("graph_batch"));
        assert_eq!(classify("/EWS/Exchange.asmx"), Some("ews"));
    }

    #[test]
    fn faults_are_used_up_in_order() {
        let mut f = Faults::default();
        f.add(FaultSpec { count: 2, status: Some(429), ..Default::default() }).unwrap();
        f.add(FaultSpec { endpoint: "*".into(), status: Some(503), ..Default::default() }).unwrap();
        assert_eq!(f.on_request("token").unwrap().status, Some(429));
        assert_eq!(f.on_request("jwks").unwrap().status, Some(503));
        assert_eq!(f.on_request("token").unwrap().status, Some(429));
        assert!(f.on_request("token").is_none());
        assert_eq!(f.stats.requests("token"), 3);
        assert_eq!(f.stats.endpoints["token"].faults, 2);
        assert!(f.add(FaultSpec { endpoint: "nope".into(), ..Default::default() }).is_err());
    }

    #[test]
    fn probable_faults_strike_about_as_often_as_asked() {
        let mut f = Faults::default();
        let spec =
            FaultSpec { endpoint: "graph".into(), count: u32::MAX, probability: Some(0.2), ..Default::default() };
        f.add(spec).unwrap();
        let struck = (0..10_000).filter(|_| f.on_request("graph").is_some()).count();
        assert!((1_700..2_300).contains(&struck), "{struck} of 10,000");
        assert!(f.on_request("token").is_none(), "other endpoints are spared");
        assert!(f.add(FaultSpec { probability: Some(1.5), ..Default::default() }).is_err());
    }

    #[test]
    fn a_graph_failure_rate_is_that_rate_on_each_graph_endpoint() {
        let mut f = Faults::default();
        for spec in FaultSpec::graph_failure_rate(0.2) {
            f.add(spec).unwrap();
        }
        for endpoint in ["graph_value", "graph_batch"] {
            let struck = (0..10_000).filter(|_| f.on_request(endpoint).is_some()).count();
            assert!((1_700..2_300).contains(&struck), "{endpoint}: {struck} of 10,000");
        }
        assert!((0..1000).all(|_| f.on_request("token").is_none()));
    }
}
