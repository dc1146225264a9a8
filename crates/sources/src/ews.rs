//! Exchange Web Services: Exchange Server on-premises (and Exchange Online
//! while Microsoft still allows it). New mail by SyncFolderItems with the
//! SyncState stored after journaling, raw MIME by GetItem, settled by
//! MoveItem, UpdateItem (IsRead) or DeleteItem. OAuth bearer tokens
//! (delegated, or app-only with ExchangeImpersonation + X-AnchorMailbox) or
//! Basic credentials for on-premises servers.
//!
//! Layers: the `soap` module writes requests and reads responses (pure
//! text in, text out); [`EwsSource`] is the mailbox logic on top.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

use crate::{BearerTokens, Listing, MailSource, Outcome, RemoteMail, SettleAction, SourceError};

/// Items per GetItem / MoveItem request.
const ITEMS_PER_REQUEST: usize = 50;
/// Changes per SyncFolderItems page (EWS allows 1–512).
const SYNC_PAGE: usize = 512;

/// How the robot authenticates to EWS.
#[derive(Clone)]
pub enum EwsAuth {
    /// OAuth2 bearer tokens of a delegated connection: the signed-in user's
    /// own mailbox, or one it was granted.
    Delegated(Arc<dyn BearerTokens>),
    /// OAuth2 app-only tokens (full_access_as_app): every request
    /// impersonates the mailbox.
    Application(Arc<dyn BearerTokens>),
    /// Basic authentication (Exchange Server on-premises).
    Basic { username: String, password: String },
}

#[derive(Clone)]
pub struct EwsConfig {
    /// The full endpoint, `https://host/EWS/Exchange.asmx`.
    pub url: String,
    pub address: String,
    /// `inbox` or another distinguished folder name, or a display name
    /// under the mailbox root.
    pub folder: String,
    pub processed_folder: String,
    pub error_folder: String,
    pub settle: SettleAction,
    pub auth: EwsAuth,
    pub timeout: Duration,
    pub sync_state: Option<String>,
}

/// Whether an EWS URL points at Exchange Online, where Microsoft blocks EWS
/// from 2026-10-01 and removes it 2027-04-01.
pub fn is_exchange_online(url: &str) -> bool {
    let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase)).unwrap_or_default();
    ["outlook.office365.com", "outlook.office.com", "outlook.office365.us", "partner.outlook.cn"]
        .iter()
        .any(|online| host == *online || host.ends_with(&format!(".{online}")))
}

pub const EXCHANGE_ONLINE_WARNING: &str = "this EWS mailbox points at Exchange Online, where Microsoft blocks EWS from \
     2026-10-01 and removes it on 2027-04-01: use a Graph mailbox (--kind graph) instead";

mod soap {
    //! EWS requests as text, and what the robot reads from the answers.

    pub const NS_TYPES: &str = "http://schemas.microsoft.com/exchange/services/2006/types";
    pub const NS_MESSAGES: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";

    pub fn escape(text: &str) -> String {
        text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
    }

    /// The SOAP envelope; `impersonate` names the mailbox for app-only access.
    pub fn envelope(impersonate: Option<&str>, body: &str) -> String {
        let impersonation = impersonate
            .map(|a| {
                format!(
                    "<t:ExchangeImpersonation><t:ConnectingSID><t:SmtpAddress>{}</t:SmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>",
                    escape(a)
                )
            })
            .unwrap_or_default();
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
             <soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\" xmlns:t=\"{NS_TYPES}\" xmlns:m=\"{NS_MESSAGES}\">\
             <soap:Header><t:RequestServerVersion Version=\"Exchange2013\"/>{impersonation}</soap:Header>\
             <soap:Body>{body}</soap:Body></soap:Envelope>"
        )
    }

    /// A distinguished folder, in a named mailbox for delegated access.
    pub fn distinguished(id: &str, mailbox: Option<&str>) -> String {
        match mailbox {
            Some(m) => format!(
                "<t:DistinguishedFolderId Id=\"{}\"><t:Mailbox><t:EmailAddress>{}</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>",
                escape(id),
                escape(m)
            ),
            None => format!("<t:DistinguishedFolderId Id=\"{}\"/>", escape(id)),
        }
    }

    pub fn item_ids(ids: &[String]) -> String {
        ids.iter().map(|id| format!("<t:ItemId Id=\"{}\"/>", escape(id))).collect()
    }

    /// One response message of an answer: its class, code and text.
    #[derive(Debug, Clone)]
    pub struct ResponseMessage {
        pub class: String,
        pub code: String,
        pub text: String,
        pub back_off_ms: Option<u64>,
    }

    pub fn responses(doc: &roxmltree::Document<'_>) -> Vec<(roxmltree::NodeId, ResponseMessage)> {
        doc.descendants()
            .filter(|n| n.is_element() && n.has_attribute("ResponseClass"))
            .map(|n| {
                let child = |name: &str| {
                    n.children().find(|c| c.tag_name().name() == name).and_then(|c| c.text()).unwrap_or("").to_string()
                };
                (
                    n.id(),
                    ResponseMessage {
                        class: n.attribute("ResponseClass").unwrap_or("").to_string(),
                        code: child("ResponseCode"),
                        text: child("MessageText"),
                        back_off_ms: back_off(n),
                    },
                )
            })
            .collect()
    }

    /// `BackOffMilliseconds` in a MessageXml (ErrorServerBusy).
    pub fn back_off(node: roxmltree::Node<'_, '_>) -> Option<u64> {
        node.descendants()
            .find(|d| d.attribute("Name") == Some("BackOffMilliseconds"))
            .and_then(|d| d.text())
            .and_then(|t| t.trim().parse().ok())
    }

    pub fn text_of(node: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
        node.descendants().find(|d| d.tag_name().name() == name).and_then(|d| d.text()).map(str::to_string)
    }
}

/// An EWS mailbox folder as a [`MailSource`].
pub struct EwsSource {
    http: reqwest::Client,
    cfg: EwsConfig,
    folder_id: String,
    processed_id: Option<String>,
    error_id: String,
    next_sync_state: Option<String>,
}

impl EwsSource {
    pub async fn connect(cfg: EwsConfig) -> Result<Self, SourceError> {
        if is_exchange_online(&cfg.url) {
            tracing::warn!(mailbox = %cfg.address, "{EXCHANGE_ONLINE_WARNING}");
        }
        let tls = crate::tls::client_config(None)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| SourceError::permanent(format!("HTTP client: {e}")))?;
        let mut source = Self {
            http,
            cfg,
            folder_id: String::new(),
            processed_id: None,
            error_id: String::new(),
            next_sync_state: None,
        };
        source.folder_id = source.folder(&source.cfg.folder.clone(), false).await?;
        if source.cfg.settle == SettleAction::Move {
            source.processed_id = Some(source.folder(&source.cfg.processed_folder.clone(), true).await?);
        }
        source.error_id = source.folder(&source.cfg.error_folder.clone(), true).await?;
        Ok(source)
    }

    fn impersonated(&self) -> Option<&str> {
        matches!(self.cfg.auth, EwsAuth::Application(_)).then_some(self.cfg.address.as_str())
    }

    /// The mailbox to name in DistinguishedFolderIds (delegated access to
    /// someone else's mailbox).
    fn named_mailbox(&self) -> Option<&str> {
        matches!(self.cfg.auth, EwsAuth::Delegated(_)).then_some(self.cfg.address.as_str())
    }

    /// Posts one operation; returns the answer's text. A 401 with OAuth gets
    /// one retry with a fresh token; ErrorServerBusy is a throttle.
    async fn call(&self, body: &str) -> Result<String, SourceError> {
        let envelope = soap::envelope(self.impersonated(), body);
        for attempt in 0..2 {
            let mut request = self
                .http
                .post(&self.cfg.url)
                .header("Content-Type", "text/xml; charset=utf-8")
                .header("X-AnchorMailbox", &self.cfg.address)
                .body(envelope.clone());
            request = match &self.cfg.auth {
                EwsAuth::Delegated(tokens) | EwsAuth::Application(tokens) => {
                    request.bearer_auth(tokens.token(attempt > 0).await?)
                }
                EwsAuth::Basic { username, password } => request.basic_auth(username, Some(password)),
            };
            let response = request.send().await.map_err(|e| {
                SourceError::transient(format!(
                    "EWS at {} for mailbox {}: {}",
                    self.cfg.url,
                    self.cfg.address,
                    e.without_url()
                ))
            })?;
            let status = response.status().as_u16();
            if status == 401 && attempt == 0 && !matches!(self.cfg.auth, EwsAuth::Basic { .. }) {
                continue;
            }
            let text = response.text().await.unwrap_or_default();
            if status == 401 {
                return Err(SourceError::permanent(format!(
                    "EWS refused the credentials for mailbox {} (HTTP 401); check the connection or the password",
                    self.cfg.address
                )));
            }
            if let Ok(doc) = roxmltree::Document::parse(&text)
                && let Some(code) = soap::text_of(doc.root(), "ResponseCode")
                && code == "ErrorServerBusy"
            {
                let wait = soap::back_off(doc.root()).map(Duration::from_millis).unwrap_or(Duration::from_secs(30));
                return Err(SourceError::throttled(
                    format!("EWS is busy for mailbox {} (ErrorServerBusy)", self.cfg.address),
                    wait,
                ));
            }
            if status >= 500 && !text.contains("ResponseClass") {
                return Err(SourceError::transient(format!(
                    "EWS failed (HTTP {status}) for mailbox {}",
                    self.cfg.address
                )));
            }
            return Ok(text);
        }
        unreachable!("the second attempt returns")
    }

    fn error(&self, doing: &str, m: &soap::ResponseMessage) -> SourceError {
        let detail = format!("{}: {}", m.code, m.text);
        match m.code.as_str() {
            "ErrorServerBusy" => SourceError::throttled(
                format!("EWS is busy ({doing}) for mailbox {}", self.cfg.address),
                Duration::from_millis(m.back_off_ms.unwrap_or(30_000)),
            ),
            "ErrorAccessDenied" | "ErrorImpersonateUserDenied" | "ErrorNonExistentMailbox" => {
                SourceError::permanent(format!(
                    "EWS refused {doing} for mailbox {} ({detail}): delegated connections need Full Access to the \
                 mailbox; application connections need full_access_as_app",
                    self.cfg.address
                ))
            }
            _ => SourceError::permanent(format!("EWS refused {doing} for mailbox {} ({detail})", self.cfg.address)),
        }
    }

    /// A folder's id: a distinguished name, or a display name under the
    /// mailbox root (created if `create` and missing).
    async fn folder(&self, name: &str, create: bool) -> Result<String, SourceError> {
        const DISTINGUISHED: &[&str] =
            &["inbox", "deleteditems", "drafts", "sentitems", "junkemail", "archive", "msgfolderroot"];
        let mailbox = self.named_mailbox();
        if DISTINGUISHED.contains(&name.to_ascii_lowercase().as_str()) {
            let body = format!(
                "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds>{}</m:FolderIds></m:GetFolder>",
                soap::distinguished(&name.to_ascii_lowercase(), mailbox)
            );
            return self.folder_id_from(&self.call(&body).await?, &format!("finding folder {name}"));
        }
        let body = format!(
            "<m:FindFolder Traversal=\"Shallow\"><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>\
             <m:ParentFolderIds>{}</m:ParentFolderIds></m:FindFolder>",
            soap::distinguished("msgfolderroot", mailbox)
        );
        let text = self.call(&body).await?;
        let doc =
            roxmltree::Document::parse(&text).map_err(|e| SourceError::transient(format!("EWS sent bad XML: {e}")))?;
        if let Some((_, m)) = soap::responses(&doc).into_iter().find(|(_, m)| m.class != "Success") {
            return Err(self.error("listing folders", &m));
        }
        let found = doc
            .descendants()
            .filter(|n| n.tag_name().name() == "Folder")
            .find(|f| soap::text_of(*f, "DisplayName").is_some_and(|d| d.eq_ignore_ascii_case(name)))
            .and_then(|f| f.descendants().find(|d| d.tag_name().name() == "FolderId"))
            .and_then(|id| id.attribute("Id").map(str::to_string));
        match found {
            Some(id) => Ok(id),
            None if create => {
                let body = format!(
                    "<m:CreateFolder><m:ParentFolderId>{}</m:ParentFolderId><m:Folders><t:Folder><t:DisplayName>{}</t:DisplayName></t:Folder></m:Folders></m:CreateFolder>",
                    soap::distinguished("msgfolderroot", mailbox),
                    soap::escape(name)
                );
                tracing::info!(mailbox = %self.cfg.address, folder = name, "creating EWS folder");
                self.folder_id_from(&self.call(&body).await?, &format!("creating folder {name}"))
            }
            None => Err(SourceError::permanent(format!("mailbox {} has no folder {name:?}", self.cfg.address))),
        }
    }

    fn folder_id_from(&self, text: &str, doing: &str) -> Result<String, SourceError> {
        let doc =
            roxmltree::Document::parse(text).map_err(|e| SourceError::transient(format!("EWS sent bad XML: {e}")))?;
        if let Some((_, m)) = soap::responses(&doc).into_iter().find(|(_, m)| m.class != "Success") {
            return Err(self.error(doing, &m));
        }
        doc.descendants()
            .find(|n| n.tag_name().name() == "FolderId")
            .and_then(|n| n.attribute("Id").map(str::to_string))
            .ok_or_else(|| SourceError::transient(format!("EWS answer without a FolderId ({doing})")))
    }

    /// One SyncFolderItems round to the end: ids created (and still there),
    /// oldest first, and the new SyncState.
    async fn sync(&self, state: Option<&str>) -> Result<(Vec<String>, String), SourceError> {
        let mut state = state.map(str::to_string);
        let mut created: Vec<(String, String)> = Vec::new();
        loop {
            let body = format!(
                "<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>\
                 <t:FieldURI FieldURI=\"item:DateTimeReceived\"/></t:AdditionalProperties></m:ItemShape>\
                 <m:SyncFolderId><t:FolderId Id=\"{}\"/></m:SyncFolderId>{}<m:MaxChangesReturned>{SYNC_PAGE}</m:MaxChangesReturned>\
                 </m:SyncFolderItems>",
                soap::escape(&self.folder_id),
                state.as_deref().map(|s| format!("<m:SyncState>{}</m:SyncState>", soap::escape(s))).unwrap_or_default()
            );
            let text = self.call(&body).await?;
            let doc = roxmltree::Document::parse(&text)
                .map_err(|e| SourceError::transient(format!("EWS sent bad XML: {e}")))?;
            if let Some((_, m)) = soap::responses(&doc).into_iter().find(|(_, m)| m.class != "Success") {
                if m.code == "ErrorInvalidSyncStateData" {
                    return Err(SourceError::permanent("ErrorInvalidSyncStateData"));
                }
                return Err(self.error("synchronising the folder", &m));
            }
            for change in doc.descendants().filter(|n| n.tag_name().name() == "Changes").flat_map(|c| c.children()) {
                let id = change
                    .descendants()
                    .find(|d| d.tag_name().name() == "ItemId")
                    .and_then(|d| d.attribute("Id"))
                    .map(str::to_string);
                let Some(id) = id else { continue };
                match change.tag_name().name() {
                    "Create" => {
                        let received = soap::text_of(change, "DateTimeReceived").unwrap_or_default();
                        if !created.iter().any(|(known, _)| *known == id) {
                            created.push((id, received));
                        }
                    }
                    "Delete" => created.retain(|(known, _)| *known != id),
                    _ => {}
                }
            }
            state = soap::text_of(doc.root(), "SyncState");
            let last = soap::text_of(doc.root(), "IncludesLastItemInRange").is_none_or(|v| v == "true");
            if last {
                created.sort_by(|a, b| a.1.cmp(&b.1));
                let state = state.ok_or_else(|| SourceError::transient("EWS sync answer without SyncState"))?;
                return Ok((created.into_iter().map(|(id, _)| id).collect(), state));
            }
        }
    }

    /// Runs an item operation in chunks; ErrorItemNotFound counts as done
    /// (settling is idempotent).
    async fn per_items(&self, ids: &[String], doing: &str, body: impl Fn(&str) -> String) -> Result<(), SourceError> {
        for chunk in ids.chunks(ITEMS_PER_REQUEST) {
            let text = self.call(&body(&soap::item_ids(chunk))).await?;
            let doc = roxmltree::Document::parse(&text)
                .map_err(|e| SourceError::transient(format!("EWS sent bad XML: {e}")))?;
            for (_, m) in soap::responses(&doc) {
                if m.class != "Success" && m.code != "ErrorItemNotFound" {
                    return Err(self.error(doing, &m));
                }
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl MailSource for EwsSource {
    async fn list(&mut self) -> Result<Vec<Listing>, SourceError> {
        let (ids, state) = match self.sync(self.cfg.sync_state.clone().as_deref()).await {
            Err(e) if e.to_string() == "ErrorInvalidSyncStateData" => {
                tracing::warn!(mailbox = %self.cfg.address, "EWS sync state no longer valid; synchronising from the start");
                self.sync(None).await?
            }
            other => other?,
        };
        self.next_sync_state = Some(state);
        Ok(ids.into_iter().map(|remote_id| Listing { remote_id, size: None }).collect())
    }

    async fn fetch(&mut self, remote_ids: &[String]) -> Result<Vec<RemoteMail>, SourceError> {
        let mut mails = Vec::with_capacity(remote_ids.len());
        for chunk in remote_ids.chunks(ITEMS_PER_REQUEST) {
            let body = format!(
                "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:IncludeMimeContent>true</t:IncludeMimeContent></m:ItemShape>\
                 <m:ItemIds>{}</m:ItemIds></m:GetItem>",
                soap::item_ids(chunk)
            );
            let text = self.call(&body).await?;
            let doc = roxmltree::Document::parse(&text)
                .map_err(|e| SourceError::transient(format!("EWS sent bad XML: {e}")))?;
            for (node_id, m) in soap::responses(&doc) {
                if m.class != "Success" {
                    if m.code == "ErrorItemNotFound" {
                        continue; // gone since the listing
                    }
                    return Err(self.error("reading a mail", &m));
                }
                let node = doc.get_node(node_id).expect("node of this document");
                let id = node
                    .descendants()
                    .find(|d| d.tag_name().name() == "ItemId")
                    .and_then(|d| d.attribute("Id"))
                    .map(str::to_string);
                let mime = soap::text_of(node, "MimeContent");
                let (Some(id), Some(mime)) = (id, mime) else { continue };
                let cleaned: String = mime.split_whitespace().collect();
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(cleaned)
                    .map_err(|e| SourceError::transient(format!("EWS MimeContent is not base64: {e}")))?;
                mails.push(RemoteMail { remote_id: id, raw });
            }
        }
        Ok(mails)
    }

    async fn settle(&mut self, outcomes: &[(String, Outcome)]) -> Result<(), SourceError> {
        let failed: Vec<String> =
            outcomes.iter().filter(|(_, o)| *o == Outcome::Failed).map(|(id, _)| id.clone()).collect();
        let processed: Vec<String> =
            outcomes.iter().filter(|(_, o)| *o == Outcome::Processed).map(|(id, _)| id.clone()).collect();
        let move_to = |folder: &str| {
            let folder = soap::escape(folder);
            move |ids: &str| {
                format!(
                    "<m:MoveItem><m:ToFolderId><t:FolderId Id=\"{folder}\"/></m:ToFolderId><m:ItemIds>{ids}</m:ItemIds></m:MoveItem>"
                )
            }
        };
        if !failed.is_empty() {
            self.per_items(&failed, "moving a mail to the error folder", move_to(&self.error_id)).await?;
        }
        if processed.is_empty() {
            return Ok(());
        }
        match self.cfg.settle {
            SettleAction::Move => {
                let folder = self.processed_id.clone().unwrap_or_default();
                self.per_items(&processed, "moving a mail to the processed folder", move_to(&folder)).await
            }
            SettleAction::Delete => {
                self.per_items(&processed, "deleting a mail", |ids| {
                    format!(
                        "<m:DeleteItem DeleteType=\"MoveToDeletedItems\"><m:ItemIds>{ids}</m:ItemIds></m:DeleteItem>"
                    )
                })
                .await
            }
            SettleAction::MarkRead => {
                for id in &processed {
                    let body = format!(
                        "<m:UpdateItem MessageDisposition=\"SaveOnly\" ConflictResolution=\"AutoResolve\"><m:ItemChanges>\
                         <t:ItemChange><t:ItemId Id=\"{}\"/><t:Updates><t:SetItemField><t:FieldURI FieldURI=\"message:IsRead\"/>\
                         <t:Message><t:IsRead>true</t:IsRead></t:Message></t:SetItemField></t:Updates></t:ItemChange>\
                         </m:ItemChanges></m:UpdateItem>",
                        soap::escape(id)
                    );
                    self.per_items(std::slice::from_ref(id), "marking a mail read", |_| body.clone()).await?;
                }
                Ok(())
            }
        }
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    fn resettle_if_listed_again(&self) -> bool {
        true
    }

    fn sync_state(&self) -> Option<String> {
        self.next_sync_state.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_online_is_recognised() {
        assert!(is_exchange_online("https://outlook.office365.com/EWS/Exchange.asmx"));
        assert!(!is_exchange_online("https://mail.contoso.local/EWS/Exchange.asmx"));
        assert!(!is_exchange_online("http://127.0.0.1:8443/EWS/Exchange.asmx"));
    }

    #[test]
    fn envelopes_escape_and_impersonate() {
        let e = soap::envelope(Some("a&b@x"), "<m:X/>");
        assert!(e.contains("<t:SmtpAddress>a&amp;b@x</t:SmtpAddress>"));
        assert!(roxmltree::Document::parse(&e).is_ok());
        assert!(!soap::envelope(None, "<m:X/>").contains("ExchangeImpersonation"));
    }
}
