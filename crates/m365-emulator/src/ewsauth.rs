//! How EWS callers authenticate, by HTTP scheme: OAuth bearer tokens as Exchange Online (checked in
//! `mailauth`), or, standing in for Exchange Server on-premises, a user name and password by
//! `Basic` or by NTLM over HTTP ([MS-NTHT]). The accepted schemes are switched by the admin API
//! (`POST /_admin/ews/auth`) or `Setup.ews_auth`; a 401 names each in its own `WWW-Authenticate`.
//!
//! Basic and NTLM callers act as delegated users with full EWS rights: their own mailbox and the
//! mailboxes they were granted, never impersonation.
//!
//! NTLM is connection-oriented: the NEGOTIATE message gets a 401 with the CHALLENGE message, and
//! the AUTHENTICATE message must come on the **same TCP connection** within a minute; each
//! challenge is used once. A connection is *not* kept authenticated afterwards (IIS does keep it
//! by default): every request runs the handshake again, so a client that relies on a connection
//! staying signed in fails here — stricter than Exchange, never looser.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;

use crate::EmulatorError;
use crate::config::{EwsAuthScheme, EwsAuthSpec, EwsBlockBody, EwsBlockSpec};
use crate::mailauth::{self, Api, Caller, Denied};
use crate::ntlm::{self, NtlmError};
use crate::server::Connection;
use crate::state::Emu;

/// The server's NetBIOS domain name in NTLM challenges (also accepted as the user's domain).
pub(crate) const NB_DOMAIN: &str = "EMULATOR";
pub(crate) const NB_COMPUTER: &str = "EXCHANGE";
pub(crate) const DNS_DOMAIN: &str = "emulator.test";
pub(crate) const DNS_COMPUTER: &str = "exchange.emulator.test";
/// VERSION of the challenge: Windows Server 2019 (10.0.17763), NTLM revision 15.
const NTLM_VERSION: [u8; 8] = [10, 0, 0x63, 0x45, 0, 0, 0, 0x0f];
/// How long an NTLM challenge waits for its AUTHENTICATE message.
pub(crate) const CHALLENGE_LIFETIME_MS: i64 = 60_000;
/// The scope an on-premises caller holds: all of EWS.
const FULL_EWS: &str = "EWS.AccessAsUser.All";
const BEARER_CHALLENGE: &str = "Bearer client_id=\"00000002-0000-0ff1-ce00-000000000000\", \
     trusted_issuers=\"00000001-0000-0000-c000-000000000000@*\", \
     token_types=\"app_asserted_user_v1 service_asserted_app_v1\", error=\"invalid_token\"";

/// An NTLM handshake waiting for its AUTHENTICATE message.
#[derive(Debug)]
struct Pending {
    peer: SocketAddr,
    server_challenge: [u8; 8],
    negotiate: Vec<u8>,
    challenge: Vec<u8>,
    created_ms: i64,
}

/// The accepted schemes and the NTLM handshakes in progress, by connection id.
#[derive(Debug, Default)]
pub(crate) struct EwsAuthState {
    pub spec: EwsAuthSpec,
    pending: HashMap<u64, Pending>,
    /// EWS closed to callers (Exchange Online's block from 2026-10-01).
    pub block: EwsBlockSpec,
}

impl EwsAuthState {
    /// Drops the handshake of a connection that closed.
    pub fn forget(&mut self, conn: u64) {
        self.pending.remove(&conn);
    }

    fn accepts(&self, s: EwsAuthScheme) -> bool {
        self.spec.schemes.contains(&s)
    }
}

impl Emu {
    /// Sets the schemes EWS accepts (at least one; repeats dropped, order kept).
    pub fn set_ews_auth(&self, spec: EwsAuthSpec) -> Result<EwsAuthSpec, EmulatorError> {
        let mut schemes = Vec::new();
        for s in spec.schemes {
            if !schemes.contains(&s) {
                schemes.push(s);
            }
        }
        if schemes.is_empty() {
            return Err(EmulatorError::Invalid("EWS needs at least one authentication scheme".into()));
        }
        let spec = EwsAuthSpec { schemes };
        let mut st = self.ews_auth();
        if !spec.schemes.contains(&EwsAuthScheme::Ntlm) {
            st.pending.clear();
        }
        st.spec = spec.clone();
        tracing::info!(schemes = ?spec.schemes, "EWS authentication schemes set");
        Ok(spec)
    }

    pub fn ews_auth_spec(&self) -> EwsAuthSpec {
        self.ews_auth().spec.clone()
    }

    /// Closes EWS to every caller whose app id is not allowed (or opens it again).
    pub fn set_ews_block(&self, spec: EwsBlockSpec) -> EwsBlockSpec {
        tracing::info!(blocked = spec.blocked, allowed = ?spec.allowed_app_ids, "EWS block set");
        self.ews_auth().block = spec.clone();
        spec
    }

    pub fn ews_block_spec(&self) -> EwsBlockSpec {
        self.ews_auth().block.clone()
    }

    /// The 403 body when EWS is blocked for this caller; None when it may pass.
    pub(crate) fn ews_block_for(&self, caller: &Caller) -> Option<EwsBlockBody> {
        let st = self.ews_auth();
        let allowed = st.block.allowed_app_ids.iter().any(|a| a.eq_ignore_ascii_case(&caller.client_id));
        (st.block.blocked && !allowed).then_some(st.block.body)
    }
}

/// Why EWS does not serve a request yet: a plain 401, or the NTLM challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 401 with a `WWW-Authenticate` per accepted scheme.
    Unauthorized { reason: &'static str, schemes: Vec<EwsAuthScheme>, realm: String },
    /// 401 with `WWW-Authenticate: NTLM <CHALLENGE_MESSAGE>`.
    NtlmChallenge(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unauthorized { reason, .. } => f.write_str(reason),
            Refusal::NtlmChallenge(_) => f.write_str("NTLM challenge sent"),
        }
    }
}

impl Refusal {
    pub fn response(&self) -> Response {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        let h = r.headers_mut();
        match self {
            Refusal::NtlmChallenge(token) => {
                if let Ok(v) = HeaderValue::from_str(&format!("NTLM {token}")) {
                    h.append(header::WWW_AUTHENTICATE, v);
                }
            }
            Refusal::Unauthorized { reason, schemes, realm } => {
                for s in schemes {
                    let v = match s {
                        EwsAuthScheme::Bearer => Ok(HeaderValue::from_static(BEARER_CHALLENGE)),
                        EwsAuthScheme::Basic => HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")),
                        EwsAuthScheme::Ntlm => Ok(HeaderValue::from_static("NTLM")),
                    };
                    if let Ok(v) = v {
                        h.append(header::WWW_AUTHENTICATE, v);
                    }
                }
                if schemes.contains(&EwsAuthScheme::Bearer)
                    && let Ok(v) =
                        HeaderValue::from_str(&format!("2000001;reason=\"{reason}\";error_category=\"invalid_token\""))
                {
                    h.insert("x-ms-diagnostics", v);
                }
            }
        }
        r
    }
}

/// The caller of an EWS request, by whichever accepted scheme its `Authorization` header uses.
/// `conn` is the TCP connection the request came on (NTLM needs it).
pub(crate) fn authenticate(emu: &Emu, headers: &HeaderMap, conn: Option<Connection>) -> Result<Caller, Refusal> {
    let schemes = emu.ews_auth().spec.schemes.clone();
    let refuse = |reason: &'static str| Refusal::Unauthorized {
        reason,
        schemes: schemes.clone(),
        realm: url::Url::parse(&emu.base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "localhost".into()),
    };
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or_default();
    let (name, credentials) = value.split_once(' ').map(|(n, c)| (n, c.trim())).unwrap_or((value, ""));
    let scheme = name.parse::<EwsAuthScheme>().ok().filter(|s| schemes.contains(s));
    match scheme {
        None if value.is_empty() && schemes.contains(&EwsAuthScheme::Bearer) => Err(refuse("No bearer token")),
        None if value.is_empty() => Err(refuse("No credentials")),
        None => Err(refuse("The authentication scheme is not accepted")),
        Some(EwsAuthScheme::Bearer) => mailauth::caller(emu, headers, Api::Ews).map_err(|d| {
            refuse(match d {
                Denied::NoToken => "No bearer token",
                Denied::Expired => "The token has expired",
                Denied::WrongAudience => "The audience claim value is invalid",
                _ => "The token is invalid",
            })
        }),
        Some(EwsAuthScheme::Basic) => {
            basic(emu, credentials).ok_or_else(|| refuse("The user name or password is wrong"))
        }
        Some(EwsAuthScheme::Ntlm) => {
            let Some(conn) = conn else {
                return Err(refuse("NTLM needs a connection"));
            };
            let Ok(msg) = STANDARD.decode(credentials) else {
                return Err(refuse("The NTLM token is not base64"));
            };
            match ntlm::message_type(&msg) {
                Ok(ntlm::NEGOTIATE_MESSAGE) => Err(match ntlm_challenge(emu, conn, &msg) {
                    Ok(challenge) => challenge,
                    Err(e) => {
                        tracing::debug!(error = %e, "NTLM NEGOTIATE refused");
                        refuse("The NTLM NEGOTIATE message is malformed")
                    }
                }),
                Ok(ntlm::AUTHENTICATE_MESSAGE) => ntlm_authenticate(emu, conn, &msg).map_err(refuse),
                _ => Err(refuse("Not an NTLM NEGOTIATE or AUTHENTICATE message")),
            }
        }
    }
}

/// A user the emulator knows, as Basic and NTLM see it.
#[derive(Debug, Clone)]
struct Account {
    tenant_id: String,
    oid: String,
    upn: String,
    password: String,
}

impl Account {
    fn caller(self, scheme: EwsAuthScheme) -> Caller {
        tracing::debug!(user = %self.upn, scheme = scheme.as_str(), "EWS caller signed in with a password");
        Caller {
            tenant_id: self.tenant_id,
            // On-premises EWS throttles per user: the concurrency slot is keyed by the user.
            client_id: format!("user:{}", self.oid),
            user: Some((self.oid, self.upn)),
            permissions: vec![FULL_EWS.into()],
        }
    }
}

/// The NetBIOS name a DNS domain would have: its first label, upper case, at most 15 characters.
pub(crate) fn netbios_name(dns: &str) -> String {
    dns.split('.').next().unwrap_or_default().chars().take(15).collect::<String>().to_uppercase()
}

/// The users a name can stand for. `user` is a UPN (`robot@contoso.test`; `domain` empty or one
/// below) or the local part of one (`robot`), with `domain` empty, the emulator's NetBIOS or DNS
/// domain, or the user's tenant domain or its NetBIOS form (`CONTOSO` for `contoso.test`).
fn accounts(emu: &Emu, user: &str, domain: &str) -> Vec<Account> {
    let (user, domain) = (user.trim(), domain.trim());
    if user.is_empty() {
        return Vec::new();
    }
    let g = emu.lock();
    g.users
        .iter()
        .filter(|u| {
            let upn = &u.spec.username;
            let named = if user.contains('@') {
                upn.eq_ignore_ascii_case(user)
            } else {
                upn.split_once('@').is_some_and(|(local, _)| local.eq_ignore_ascii_case(user))
            };
            let tenant_domain = g.tenant_by_id(&u.tenant_id).map(|t| t.spec.domain.as_str()).unwrap_or_default();
            named
                && (domain.is_empty()
                    || [NB_DOMAIN, DNS_DOMAIN, tenant_domain, &netbios_name(tenant_domain)]
                        .iter()
                        .any(|d| !d.is_empty() && d.eq_ignore_ascii_case(domain)))
        })
        .map(|u| Account {
            tenant_id: u.tenant_id.clone(),
            oid: u.oid.clone(),
            upn: u.spec.username.clone(),
            password: u.spec.password.clone(),
        })
        .collect()
}

/// `Basic base64(user:password)`; the user as a UPN, `DOMAIN\name` or `name`.
fn basic(emu: &Emu, credentials: &str) -> Option<Caller> {
    let raw = STANDARD.decode(credentials).ok()?;
    // RFC 7617: UTF-8 is what clients send today; older ones send ISO-8859-1.
    let text = String::from_utf8(raw.clone()).unwrap_or_else(|_| raw.iter().map(|&b| b as char).collect());
    let (name, password) = text.split_once(':')?;
    let (domain, user) = name.split_once('\\').unwrap_or(("", name));
    accounts(emu, user, domain)
        .into_iter()
        .find(|a| !a.password.is_empty() && a.password == password)
        .map(|a| a.caller(EwsAuthScheme::Basic))
}

/// NEGOTIATE: a fresh challenge, remembered for this connection (replacing an earlier one).
fn ntlm_challenge(emu: &Emu, conn: Connection, negotiate: &[u8]) -> Result<Refusal, NtlmError> {
    let n = ntlm::parse_negotiate(negotiate)?;
    let now = emu.clock.now_ms();
    let mut server_challenge = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut server_challenge);
    let names = ntlm::ServerNames {
        nb_domain: NB_DOMAIN,
        nb_computer: NB_COMPUTER,
        dns_domain: DNS_DOMAIN,
        dns_computer: DNS_COMPUTER,
    };
    let target_info = ntlm::target_info(&names, ntlm::filetime(now));
    let challenge = ntlm::build_challenge(&ntlm::Challenge {
        flags: ntlm::challenge_flags(n.flags),
        server_challenge,
        target_name: NB_DOMAIN,
        target_info: &target_info,
        version: NTLM_VERSION,
    });
    let token = STANDARD.encode(&challenge);
    let mut st = emu.ews_auth();
    st.pending.retain(|_, p| now - p.created_ms <= CHALLENGE_LIFETIME_MS);
    st.pending.insert(
        conn.id,
        Pending { peer: conn.peer, server_challenge, negotiate: negotiate.to_vec(), challenge, created_ms: now },
    );
    Ok(Refusal::NtlmChallenge(token))
}

/// AUTHENTICATE: the connection's pending challenge (taken: single use), then the NTLMv2 proof
/// for one of the users the name may stand for.
fn ntlm_authenticate(emu: &Emu, conn: Connection, msg: &[u8]) -> Result<Caller, &'static str> {
    let pending = {
        let mut st = emu.ews_auth();
        if !st.accepts(EwsAuthScheme::Ntlm) {
            return Err("NTLM is not accepted");
        }
        st.pending.remove(&conn.id)
    };
    let Some(p) = pending.filter(|p| p.peer == conn.peer) else {
        return Err("No NTLM challenge is pending on this connection");
    };
    if emu.clock.now_ms() - p.created_ms > CHALLENGE_LIFETIME_MS {
        return Err("The NTLM challenge has expired");
    }
    let auth = ntlm::parse_authenticate(msg).map_err(|e| {
        tracing::debug!(error = %e, "NTLM AUTHENTICATE refused");
        "The NTLM AUTHENTICATE message is malformed"
    })?;
    let mut last = NtlmError::WrongResponse;
    for a in accounts(emu, &auth.user, &auth.domain) {
        match ntlm::verify(&auth, &a.password, &p.server_challenge, &p.negotiate, &p.challenge) {
            Ok(v) => {
                tracing::debug!(user = %auth.user, domain = %auth.domain, mic = v.mic_checked, "NTLMv2 response verified");
                return Ok(a.caller(EwsAuthScheme::Ntlm));
            }
            Err(e) => last = e,
        }
    }
    tracing::debug!(user = %auth.user, domain = %auth.domain, error = %last, "NTLM AUTHENTICATE refused");
    Err(match last {
        NtlmError::NotV2 => "Only NTLMv2 responses are accepted",
        NtlmError::Anonymous => "Anonymous NTLM authentication is not accepted",
        _ => "The user name or password is wrong",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netbios_names_are_the_first_label_in_upper_case() {
        assert_eq!(netbios_name("contoso.test"), "CONTOSO");
        assert_eq!(netbios_name("averyveryverylongdomainname.example"), "AVERYVERYVERYLO");
        assert_eq!(netbios_name(""), "");
    }

    #[test]
    fn a_401_names_every_accepted_scheme() {
        let r = Refusal::Unauthorized {
            reason: "No credentials",
            schemes: vec![EwsAuthScheme::Basic, EwsAuthScheme::Ntlm, EwsAuthScheme::Bearer],
            realm: "127.0.0.1".into(),
        }
        .response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let www: Vec<&str> =
            r.headers().get_all(header::WWW_AUTHENTICATE).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(www.len(), 3);
        assert_eq!(www[0], "Basic realm=\"127.0.0.1\"");
        assert_eq!(www[1], "NTLM");
        assert!(www[2].starts_with("Bearer client_id="));
        assert!(r.headers().contains_key("x-ms-diagnostics"));
        let r =
            Refusal::Unauthorized { reason: "x", schemes: vec![EwsAuthScheme::Ntlm], realm: String::new() }.response();
        assert!(!r.headers().contains_key("x-ms-diagnostics"));
    }
}
