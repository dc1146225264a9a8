//! Who calls the mail APIs and what they may do: bearer token checks (signature, lifetime,
//! audience), delegated and application permissions, mailbox grants, application access
//! policies and the per-(app, mailbox) concurrency limit. Graph and EWS word the refusals
//! differently; the decisions are made here once.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use serde_json::Value;

use crate::scopes::{self, EXCHANGE_ID, GRAPH_ID};
use crate::state::Emu;

/// The API a token must be for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Graph,
    Ews,
}

/// What a request wants to do with a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    Read,
    Write,
    Send,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No bearer token.
    NoToken,
    /// Not a token of this emulator, or tampered.
    BadToken,
    Expired,
    /// Token for another resource.
    WrongAudience,
    /// The mailbox does not exist (or is in another tenant).
    NoMailbox(String),
    /// The mailbox has REST access disabled.
    RestDisabled,
    /// Missing permission or mailbox access.
    Forbidden,
    /// Application access policy.
    Policy,
    /// Over the concurrency limit.
    Concurrency,
    /// `/me` with an app-only token, or app-only EWS without impersonation.
    NeedsUser,
}

/// The caller, from a verified token.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub tenant_id: String,
    pub client_id: String,
    /// (oid, upn) for delegated tokens.
    pub user: Option<(String, String)>,
    /// `scp` (delegated) or `roles` (app-only).
    pub permissions: Vec<String>,
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

/// Checks the bearer token: this emulator's signature, lifetime (5 minutes of skew on `nbf`), and
/// an audience of the API.
pub(crate) fn caller(emu: &Emu, headers: &HeaderMap, api: Api) -> Result<Caller, Denied> {
    let token = bearer(headers).filter(|t| !t.is_empty()).ok_or(Denied::NoToken)?;
    let claims = verified_claims(emu, &token)?;
    let want = match api {
        Api::Graph => GRAPH_ID,
        Api::Ews => EXCHANGE_ID,
    };
    if audience(&claims) != want {
        return Err(Denied::WrongAudience);
    }
    Ok(caller_of(&claims))
}

/// The claims of a token of this emulator that is within its lifetime (5 minutes of skew on `nbf`).
pub(crate) fn verified_claims(emu: &Emu, token: &str) -> Result<Value, Denied> {
    let claims = emu.key.verify(token).ok_or(Denied::BadToken)?;
    let now = emu.clock.now_s();
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or(Denied::BadToken)?;
    let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(0);
    if now >= exp || now + 300 < nbf {
        return Err(Denied::Expired);
    }
    Ok(claims)
}

/// The canonical resource the token's `aud` names (`GRAPH_ID`, `EXCHANGE_ID`, or the URI).
pub(crate) fn audience(claims: &Value) -> String {
    scopes::canonical_resource(claims.get("aud").and_then(Value::as_str).unwrap_or_default(), &|_| None)
}

/// Who the verified claims speak for, and with which permissions.
pub(crate) fn caller_of(claims: &Value) -> Caller {
    let s = |n: &str| claims.get(n).and_then(Value::as_str).unwrap_or_default().to_string();
    let user = claims.get("scp").map(|_| (s("oid"), s("preferred_username")));
    let permissions = match &user {
        Some(_) => s("scp").split_whitespace().map(str::to_string).collect(),
        None => claims
            .get("roles")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default(),
    };
    Caller { tenant_id: s("tid"), client_id: s("appid"), user, permissions }
}

impl Caller {
    pub(crate) fn has(&self, names: &[&str]) -> bool {
        self.permissions.iter().any(|p| names.iter().any(|n| p.eq_ignore_ascii_case(n)))
    }

    /// Whether the token carries a permission for the need, on the caller's own mailbox or on
    /// another one. EWS has one permission for everything (`EWS.AccessAsUser.All`,
    /// `full_access_as_app`).
    fn permits(&self, api: Api, need: Need, own: bool) -> bool {
        if api == Api::Ews {
            return self.has(&["EWS.AccessAsUser.All", "full_access_as_app"]);
        }
        let app = self.user.is_none();
        match (need, app, own) {
            (Need::Read, true, _) => self.has(&["Mail.Read", "Mail.ReadWrite"]),
            (Need::Write, true, _) => self.has(&["Mail.ReadWrite"]),
            (Need::Send, true, _) => self.has(&["Mail.Send"]),
            (Need::Read, false, true) => {
                self.has(&["Mail.Read", "Mail.ReadWrite", "Mail.Read.Shared", "Mail.ReadWrite.Shared"])
            }
            (Need::Write, false, true) => self.has(&["Mail.ReadWrite", "Mail.ReadWrite.Shared"]),
            (Need::Send, false, true) => self.has(&["Mail.Send", "Mail.Send.Shared"]),
            (Need::Read, false, false) => self.has(&["Mail.Read.Shared", "Mail.ReadWrite.Shared"]),
            (Need::Write, false, false) => self.has(&["Mail.ReadWrite.Shared"]),
            (Need::Send, false, false) => self.has(&["Mail.Send.Shared"]),
        }
    }
}

/// Whether the caller may send as the mailbox it opened: its owner, a user granted Send As
/// (full access alone is not enough), or an app-only caller, which acts as the mailbox itself
/// (impersonation).
pub(crate) fn may_send_as(c: &Caller, mb: &crate::mail::Mailbox) -> bool {
    match &c.user {
        None => true,
        Some((oid, _)) => mb.owner_oid.as_deref() == Some(oid.as_str()) || mb.send_as.contains(oid),
    }
}

/// A request's hold on a mailbox: counts against the (app, mailbox) concurrency limit until dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    emu: Arc<Emu>,
    key: (String, String),
    pub mailbox: String,
    pub latency_ms: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut mail = self.emu.mail();
        if let Some(n) = mail.inflight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                mail.inflight.remove(&self.key);
            }
        }
    }
}

/// Opens a mailbox (address or id) for a caller: existence, tenant, REST switch (Graph only),
/// permissions, grants, policy, then a concurrency slot. Waits the mailbox's latency while
/// holding the slot.
pub(crate) async fn open(emu: &Arc<Emu>, c: &Caller, key: &str, api: Api, need: Need) -> Result<Slot, Denied> {
    let (slot, address, n) = {
        let mut mail = emu.mail();
        let i = mail
            .find(key)
            .filter(|&i| mail.mailboxes[i].tenant_id == c.tenant_id)
            .ok_or_else(|| Denied::NoMailbox(key.to_string()))?;
        let mb = &mail.mailboxes[i];
        if api == Api::Graph && mb.rest_disabled {
            return Err(Denied::RestDisabled);
        }
        match &c.user {
            Some((oid, _)) => {
                let own = mb.owner_oid.as_deref() == Some(oid.as_str());
                if !c.permits(api, need, own) || !(own || mb.full_access.contains(oid)) {
                    return Err(Denied::Forbidden);
                }
            }
            None => {
                if !c.permits(api, need, false) {
                    return Err(Denied::Forbidden);
                }
                if mail.blocked_by_policy(mb, &c.client_id) {
                    return Err(Denied::Policy);
                }
            }
        }
        let (id, address, latency_ms) = (mb.id.clone(), mb.address.clone(), mb.latency_ms);
        let key = (c.client_id.clone(), id.clone());
        let Some(n) = take_slot(&mut mail, &key) else {
            return Err(Denied::Concurrency);
        };
        (Slot { emu: emu.clone(), key, mailbox: id, latency_ms }, address, n)
    };
    // Counted after the mail lock is released: locks are never nested.
    emu.faults().stats.note_concurrency(&address, n);
    if slot.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(slot.latency_ms)).await;
    }
    Ok(slot)
}

/// One more request of the (app, mailbox) in flight, if the limit allows: how many are then.
fn take_slot(mail: &mut crate::mail::MailStore, key: &(String, String)) -> Option<usize> {
    let limit = mail.concurrency_limit;
    let n = mail.inflight.entry(key.clone()).or_default();
    if *n >= limit {
        return None;
    }
    *n += 1;
    Some(*n)
}

/// Takes up to `slots` of an app's concurrency slots on a mailbox (address or id), as that many
/// requests of another client of the app would while they run: Outlook counts them against the
/// same limit. They are given back when the returned slots are dropped. Fewer than asked are
/// taken when the limit leaves fewer free (those requests would have been refused).
pub(crate) fn occupy(emu: &Arc<Emu>, mailbox: &str, client_id: &str, slots: usize) -> Option<Vec<Slot>> {
    let (taken, address, peak) = {
        let mut mail = emu.mail();
        let i = mail.find(mailbox)?;
        let (id, address) = (mail.mailboxes[i].id.clone(), mail.mailboxes[i].address.clone());
        let key = (client_id.to_string(), id.clone());
        let mut taken = Vec::new();
        let mut peak = 0;
        while taken.len() < slots {
            let Some(n) = take_slot(&mut mail, &key) else { break };
            peak = n;
            taken.push(Slot { emu: emu.clone(), key: key.clone(), mailbox: id.clone(), latency_ms: 0 });
        }
        (taken, address, peak)
    };
    emu.faults().stats.note_concurrency(&address, peak);
    Some(taken)
}
