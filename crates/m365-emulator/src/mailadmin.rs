//! Admin operations on mailboxes (Rust API and `/_admin/mail…` routes): create mailboxes, grant
//! access (to users, and to apps' Exchange service principals), application access policies,
//! deliver mail, look into folders, expire delta tokens.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::EmulatorError;
use crate::config::{
    AccessPolicySpec, DeliverSpec, EwsAuthSpec, EwsBlockSpec, FolderInfo, MailboxAppGrant, MailboxGrant, MailboxSpec,
    MessageInfo, ReadReceipt, ServicePrincipalSpec, Setup,
};
use crate::state::{Emu, Inner};

type Result<T> = std::result::Result<T, EmulatorError>;

impl Emu {
    fn tenant_id(&self, tenant: &str) -> Result<String> {
        Ok(self.lock().tenant(tenant).ok_or_else(|| EmulatorError::NotFound(format!("tenant {tenant}")))?.id.clone())
    }

    /// Creates a mailbox; a user's UPN as address makes it that user's (its id is the user's oid).
    pub fn create_mailbox(&self, spec: MailboxSpec) -> Result<String> {
        let (tid, owner) = {
            let g = self.lock();
            let t = g.tenant(&spec.tenant).ok_or_else(|| EmulatorError::NotFound(format!("tenant {}", spec.tenant)))?;
            let owner = g.user_by_name(Some(&t.id), &spec.address).map(|u| (u.oid.clone(), u.name().to_string()));
            (t.id.clone(), owner)
        };
        let mut mail = self.mail();
        let id = mail.add(&spec, tid, owner)?.id.clone();
        tracing::info!(mailbox = %spec.address, "mailbox created");
        Ok(id)
    }

    /// Gives a user full access to a mailbox (delegated `*.Shared` permissions then reach it).
    pub fn grant_mailbox_access(&self, grant: MailboxGrant) -> Result<()> {
        let tid = self.tenant_id(&grant.tenant)?;
        let oid = self
            .lock()
            .user_by_name(Some(&tid), &grant.username)
            .ok_or_else(|| EmulatorError::NotFound(format!("user {}", grant.username)))?
            .oid
            .clone();
        let mut mail = self.mail();
        let mb = mail.get_mut(&grant.mailbox)?;
        if !mb.full_access.contains(&oid) {
            mb.full_access.push(oid);
        }
        Ok(())
    }

    /// Lets a user send as a mailbox (`Add-RecipientPermission -AccessRights SendAs`, or Send-As
    /// on-premises): EWS sends from a mailbox not the caller's own need it.
    pub fn grant_send_as(&self, grant: MailboxGrant) -> Result<()> {
        let tid = self.tenant_id(&grant.tenant)?;
        let oid = self
            .lock()
            .user_by_name(Some(&tid), &grant.username)
            .ok_or_else(|| EmulatorError::NotFound(format!("user {}", grant.username)))?
            .oid
            .clone();
        let mut mail = self.mail();
        let mb = mail.get_mut(&grant.mailbox)?;
        if !mb.send_as.contains(&oid) {
            mb.send_as.push(oid);
        }
        Ok(())
    }

    /// Registers an app's service principal in Exchange Online (`New-ServicePrincipal`); the app
    /// must be usable in the tenant. Registering twice changes nothing.
    pub fn register_service_principal(&self, spec: ServicePrincipalSpec) -> Result<()> {
        let tid = self.tenant_id(&spec.tenant)?;
        let client_id = {
            let g = self.lock();
            let app = g
                .app(&spec.client_id)
                .filter(|a| g.app_usable_in(a, &tid))
                .ok_or_else(|| EmulatorError::NotFound(format!("app {} in tenant {}", spec.client_id, spec.tenant)))?;
            app.client_id.clone()
        };
        let mut mail = self.mail();
        if !mail.has_service_principal(&tid, &client_id) {
            mail.service_principals.push((tid, client_id));
        }
        Ok(())
    }

    /// Gives an app's Exchange service principal full access to a mailbox (`Add-MailboxPermission
    /// -User <service principal> -AccessRights FullAccess`). Like Exchange, refuses an app that
    /// has no service principal yet.
    pub fn grant_mailbox_access_to_app(&self, grant: MailboxAppGrant) -> Result<()> {
        let tid = self.tenant_id(&grant.tenant)?;
        let mut mail = self.mail();
        if !mail.has_service_principal(&tid, &grant.client_id) {
            return Err(EmulatorError::NotFound(format!(
                "Exchange service principal of app {} (register it first: New-ServicePrincipal)",
                grant.client_id
            )));
        }
        let mb = mail.get_mut(&grant.mailbox)?;
        if mb.tenant_id != tid {
            return Err(EmulatorError::NotFound(format!("mailbox {} in tenant {}", grant.mailbox, grant.tenant)));
        }
        if !mb.app_full_access.iter().any(|c| c.eq_ignore_ascii_case(&grant.client_id)) {
            mb.app_full_access.push(grant.client_id);
        }
        Ok(())
    }

    /// Restricts an app's app-only access to the listed mailboxes (replaces an earlier policy).
    pub fn set_access_policy(&self, policy: AccessPolicySpec) -> Result<()> {
        let tid = self.tenant_id(&policy.tenant)?;
        self.mail().set_policy(tid, &policy);
        Ok(())
    }

    /// Puts a mail into a folder, as transport delivery would.
    pub fn deliver(&self, spec: DeliverSpec) -> Result<MessageInfo> {
        let now = self.clock.now_ms();
        let received = spec.received_at.map_or(now, |t| t.timestamp_millis());
        let mut mail = self.mail();
        let mb = mail.get_mut(&spec.mailbox)?;
        let folder = spec.folder.as_deref().unwrap_or("inbox");
        let i = mb
            .deliver(folder, spec.mime.into_bytes(), received, spec.is_read)
            .map_err(|e| EmulatorError::NotFound(format!("folder {folder}: {e}")))?;
        Ok(mb.info(&mb.messages[i]))
    }

    /// The messages of a folder (id, well-known name or display name), oldest first.
    pub fn mail_messages(&self, mailbox: &str, folder: &str) -> Result<Vec<MessageInfo>> {
        let mail = self.mail();
        let mb = mail.get(mailbox)?;
        let f = mb.folder_loose(folder).ok_or_else(|| EmulatorError::NotFound(format!("folder {folder}")))?;
        Ok(mb.in_folder(&f.id).map(|m| mb.info(m)).collect())
    }

    pub fn mail_folders(&self, mailbox: &str) -> Result<Vec<FolderInfo>> {
        let mail = self.mail();
        let mb = mail.get(mailbox)?;
        Ok(mb.folders.iter().map(|f| mb.folder_info(f)).collect())
    }

    /// The raw MIME of a message (by either id).
    pub fn mail_mime(&self, mailbox: &str, id: &str) -> Result<Vec<u8>> {
        let mail = self.mail();
        let mb = mail.get(mailbox)?;
        Ok(mb.message(id).ok_or_else(|| EmulatorError::NotFound(format!("message {id}")))?.mime.to_vec())
    }

    /// The read receipts Exchange sent for a mailbox's messages (all mailboxes with `None`),
    /// oldest first.
    pub fn read_receipts(&self, mailbox: Option<&str>) -> Result<Vec<ReadReceipt>> {
        let mail = self.mail();
        Ok(match mailbox {
            Some(m) => mail.get(m)?.receipts.clone(),
            None => mail.mailboxes.iter().flat_map(|m| m.receipts.iter().cloned()).collect(),
        })
    }

    /// Every delta token and EWS sync state of the mailbox stops working (410 / ErrorInvalidSyncStateData).
    pub fn expire_delta_tokens(&self, mailbox: &str) -> Result<()> {
        self.mail().get_mut(mailbox)?.epoch += 1;
        Ok(())
    }

    /// Turns REST (Graph) access to a mailbox off (404 MailboxNotEnabledForRESTAPI) or on.
    pub fn set_rest_enabled(&self, mailbox: &str, enabled: bool) -> Result<()> {
        self.mail().get_mut(mailbox)?.rest_disabled = !enabled;
        Ok(())
    }

    /// Concurrent requests allowed per (app, mailbox) before 429 MailboxConcurrency (default 4).
    pub fn set_mail_concurrency_limit(&self, limit: usize) {
        self.mail().concurrency_limit = limit.max(1);
    }

    /// Holds up to `slots` of an app's concurrency slots on a mailbox until the hold is dropped.
    pub(crate) fn hold_mail_slots(self: &Arc<Self>, mailbox: &str, client_id: &str, slots: usize) -> Result<SlotHold> {
        let slots = crate::mailauth::occupy(self, mailbox, client_id, slots)
            .ok_or_else(|| EmulatorError::NotFound(format!("mailbox {mailbox}")))?;
        tracing::info!(mailbox, client_id, held = slots.len(), "concurrency slots held");
        Ok(SlotHold { slots })
    }

    /// Mailboxes, grants and policies in the config file's shape.
    pub(crate) fn dump_mail(&self, g: &Inner, setup: &mut Setup) {
        let mail = self.mail();
        let upn = |tid: &str, oid: &str| g.user(tid, oid).map(|u| u.spec.username.clone());
        for mb in &mail.mailboxes {
            setup.mailboxes.push(MailboxSpec {
                tenant: mb.tenant_id.clone(),
                address: mb.address.clone(),
                display_name: Some(mb.display_name.clone()),
                rest_disabled: mb.rest_disabled,
                latency_ms: mb.latency_ms,
            });
            for oid in &mb.full_access {
                if let Some(username) = upn(&mb.tenant_id, oid) {
                    setup.mailbox_grants.push(MailboxGrant {
                        tenant: mb.tenant_id.clone(),
                        mailbox: mb.address.clone(),
                        username,
                    });
                }
            }
            for oid in &mb.send_as {
                if let Some(username) = upn(&mb.tenant_id, oid) {
                    setup.send_as_grants.push(MailboxGrant {
                        tenant: mb.tenant_id.clone(),
                        mailbox: mb.address.clone(),
                        username,
                    });
                }
            }
            for client_id in &mb.app_full_access {
                setup.mailbox_app_grants.push(MailboxAppGrant {
                    tenant: mb.tenant_id.clone(),
                    mailbox: mb.address.clone(),
                    client_id: client_id.clone(),
                });
            }
        }
        for (tenant, client_id) in &mail.service_principals {
            setup
                .exchange_service_principals
                .push(ServicePrincipalSpec { tenant: tenant.clone(), client_id: client_id.clone() });
        }
        for ((tenant, client_id), mailboxes) in &mail.policies {
            setup.access_policies.push(AccessPolicySpec {
                tenant: tenant.clone(),
                client_id: client_id.clone(),
                mailboxes: mailboxes.clone(),
            });
        }
    }
}

/// Concurrency slots of an (app, mailbox) held as running requests of another client of the app
/// would hold them: Outlook counts them against the same limit of 4. Given back when dropped.
#[derive(Debug)]
pub struct SlotHold {
    slots: Vec<crate::mailauth::Slot>,
}

impl SlotHold {
    /// How many slots are held (fewer than asked when fewer were free).
    pub fn held(&self) -> usize {
        self.slots.len()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Hold {
    mailbox: String,
    client_id: String,
    slots: usize,
    ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MailboxRef {
    mailbox: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestSwitch {
    mailbox: String,
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: usize,
}

#[derive(Deserialize)]
struct ReceiptQuery {
    mailbox: Option<String>,
}

#[derive(Deserialize)]
struct FolderQuery {
    mailbox: String,
    folder: Option<String>,
}

fn body<T: serde::de::DeserializeOwned>(b: &Bytes) -> Result<T> {
    Ok(serde_json::from_slice(b)?)
}

fn ok() -> Response {
    axum::Json(json!({"ok": true})).into_response()
}

pub(crate) fn routes() -> Router<Arc<Emu>> {
    Router::new()
        .route("/_admin/mailboxes", post(mailboxes))
        .route("/_admin/mailboxes/grant", post(grant))
        .route("/_admin/mailboxes/grant-app", post(grant_app))
        .route("/_admin/mailboxes/send-as", post(send_as))
        .route("/_admin/mailboxes/access-policy", post(policy))
        .route("/_admin/exchange/service-principals", post(service_principal))
        .route("/_admin/mailboxes/deliver", post(deliver))
        .route("/_admin/mailboxes/messages", get(messages))
        .route("/_admin/mailboxes/folders", get(folders))
        .route("/_admin/mailboxes/expire-delta", post(expire))
        .route("/_admin/mailboxes/rest", post(rest))
        .route("/_admin/mailboxes/concurrency", post(concurrency))
        .route("/_admin/mailboxes/hold", post(hold))
        .route("/_admin/mailboxes/receipts", get(receipts))
        .route("/_admin/ews/auth", post(set_ews_auth).get(ews_auth))
        .route("/_admin/ews/block", post(set_ews_block).get(ews_block))
}

async fn mailboxes(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    let spec: MailboxSpec = body(&b)?;
    let id = emu.create_mailbox(spec.clone())?;
    Ok((StatusCode::CREATED, axum::Json(json!({"id": id, "address": spec.address}))).into_response())
}

async fn grant(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    emu.grant_mailbox_access(body(&b)?)?;
    Ok(ok())
}

async fn send_as(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    emu.grant_send_as(body(&b)?)?;
    Ok(ok())
}

async fn grant_app(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    emu.grant_mailbox_access_to_app(body(&b)?)?;
    Ok(ok())
}

async fn service_principal(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    emu.register_service_principal(body(&b)?)?;
    Ok(ok())
}

async fn policy(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    emu.set_access_policy(body(&b)?)?;
    Ok(ok())
}

async fn deliver(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    Ok((StatusCode::CREATED, axum::Json(emu.deliver(body(&b)?)?)).into_response())
}

async fn messages(State(emu): State<Arc<Emu>>, Query(q): Query<FolderQuery>) -> Result<Response> {
    let folder = q.folder.as_deref().unwrap_or("inbox");
    Ok(axum::Json(emu.mail_messages(&q.mailbox, folder)?).into_response())
}

async fn folders(State(emu): State<Arc<Emu>>, Query(q): Query<FolderQuery>) -> Result<Response> {
    Ok(axum::Json(emu.mail_folders(&q.mailbox)?).into_response())
}

async fn expire(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    let m: MailboxRef = body(&b)?;
    emu.expire_delta_tokens(&m.mailbox)?;
    Ok(ok())
}

async fn rest(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    let r: RestSwitch = body(&b)?;
    emu.set_rest_enabled(&r.mailbox, r.enabled)?;
    Ok(ok())
}

async fn concurrency(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    let l: Limit = body(&b)?;
    emu.set_mail_concurrency_limit(l.limit);
    Ok(ok())
}

/// `POST /_admin/mailboxes/hold` `{"mailbox", "client_id", "slots": 2, "ms": 5000}`: holds the
/// slots for `ms` milliseconds; answers how many it holds.
async fn hold(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    let h: Hold = body(&b)?;
    let held = emu.hold_mail_slots(&h.mailbox, &h.client_id, h.slots)?;
    let n = held.held();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(h.ms)).await;
        drop(held);
    });
    Ok(axum::Json(json!({"held": n})).into_response())
}

/// `POST /_admin/ews/auth` `{"schemes": ["Basic", "NTLM"]}`: answers the schemes now in force.
async fn set_ews_auth(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    Ok(axum::Json(emu.set_ews_auth(body::<EwsAuthSpec>(&b)?)?).into_response())
}

async fn ews_auth(State(emu): State<Arc<Emu>>) -> Response {
    axum::Json(emu.ews_auth_spec()).into_response()
}

async fn receipts(State(emu): State<Arc<Emu>>, Query(q): Query<ReceiptQuery>) -> Result<Response> {
    Ok(axum::Json(emu.read_receipts(q.mailbox.as_deref())?).into_response())
}

/// `POST /_admin/ews/block` `{"blocked": true, "allowed_app_ids": [...], "body": "html"}`: answers
/// the block now in force.
async fn set_ews_block(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response> {
    Ok(axum::Json(emu.set_ews_block(body::<EwsBlockSpec>(&b)?)).into_response())
}

async fn ews_block(State(emu): State<Arc<Emu>>) -> Response {
    axum::Json(emu.ews_block_spec()).into_response()
}
