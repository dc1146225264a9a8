//! Exchange Web Services: Exchange Server on-premises (and Exchange Online
//! while Microsoft still allows it). New mail by SyncFolderItems with the
//! SyncState stored after journaling, raw MIME by GetItem, settled by
//! MoveItem, UpdateItem (IsRead) or DeleteItem. Mail the robot sends goes out
//! as the mailbox by CreateItem (SendAndSaveCopy, the MIME message as
//! MimeContent). OAuth bearer tokens
//! (delegated, or app-only with ExchangeImpersonation + X-AnchorMailbox) or,
//! for on-premises servers, a user name and password: NTLMv2 where the
//! server offers it (the password never travels), else Basic.
//!
//! Layers: the `soap` module writes requests and reads responses (pure
//! text in, text out), `www_authenticate` reads a 401's offers, [`crate::ntlm`]
//! writes the NTLM messages, `crate::http1` holds NTLM's connection;
//! [`EwsSource`] is the mailbox logic on top.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName};

use crate::paging::Paging;
use crate::{BearerTokens, Listing, MailSource, Outcome, RemoteMail, SettleAction, SourceError, ntlm};

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
    /// A user name (`DOMAIN\user`, `user@domain` or `user`) and password:
    /// Exchange Server on-premises.
    Password { username: String, password: String, scheme: PasswordScheme },
}

/// How a password login authenticates over HTTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PasswordScheme {
    /// The first request goes without credentials and the server's 401
    /// decides: NTLM when it offers NTLM or Negotiate, else Basic. The choice
    /// holds for the source's life.
    #[default]
    Auto,
    /// The password, base64-encoded, in every request (safe only over TLS).
    Basic,
    /// An NTLMv2 handshake on every request; the password never travels.
    Ntlm,
}

impl PasswordScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            PasswordScheme::Auto => "auto",
            PasswordScheme::Basic => "basic",
            PasswordScheme::Ntlm => "ntlm",
        }
    }
}

impl fmt::Display for PasswordScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PasswordScheme {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(PasswordScheme::Auto),
            "basic" => Ok(PasswordScheme::Basic),
            "ntlm" => Ok(PasswordScheme::Ntlm),
            other => Err(format!("unknown EWS login {other:?}: expected \"auto\", \"basic\" or \"ntlm\"")),
        }
    }
}

/// How a password login goes once decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Login {
    Basic,
    /// NTLM messages under this HTTP scheme: `NTLM`, or `Negotiate` (whose
    /// Windows implementation takes raw NTLM messages too).
    Ntlm(&'static str),
}

impl Login {
    fn name(self) -> &'static str {
        match self {
            Login::Basic => "Basic",
            Login::Ntlm(scheme) => scheme,
        }
    }
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
    /// Mails over this many bytes are not downloaded (SyncFolderItems lists
    /// each item's size; a GetItem answer is read no further than the sizes
    /// it should hold).
    pub max_message_bytes: u64,
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
    /// `SuppressReadReceipts` (UpdateItem, DeleteItem) is in the schema from
    /// Exchange 2013 SP1 on: every request names that version.
    pub const REQUEST_SERVER_VERSION: &str = "Exchange2013_SP1";
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
             <soap:Header><t:RequestServerVersion Version=\"{REQUEST_SERVER_VERSION}\"/>{impersonation}</soap:Header>\
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

    /// DeleteItem into Deleted Items. `SuppressReadReceipts`: deleting an
    /// unread mail would otherwise send the not-read receipt its sender asked
    /// for (Disposition-Notification-To).
    pub fn delete_items(item_ids: &str) -> String {
        format!(
            "<m:DeleteItem DeleteType=\"MoveToDeletedItems\" SuppressReadReceipts=\"true\"><m:ItemIds>{item_ids}</m:ItemIds></m:DeleteItem>"
        )
    }

    /// UpdateItem setting IsRead. `SuppressReadReceipts`: marking a mail read
    /// would otherwise mail a read receipt to every sender who asked for one.
    pub fn mark_read(id: &str) -> String {
        format!(
            "<m:UpdateItem MessageDisposition=\"SaveOnly\" ConflictResolution=\"AutoResolve\" SuppressReadReceipts=\"true\"><m:ItemChanges>\
             <t:ItemChange><t:ItemId Id=\"{}\"/><t:Updates><t:SetItemField><t:FieldURI FieldURI=\"message:IsRead\"/>\
             <t:Message><t:IsRead>true</t:IsRead></t:Message></t:SetItemField></t:Updates></t:ItemChange>\
             </m:ItemChanges></m:UpdateItem>",
            escape(id)
        )
    }

    /// CreateItem sending a whole MIME message (base64) and keeping a copy in
    /// Sent Items, as the CreateItem reference writes it: Exchange reads the
    /// recipients from the message's headers.
    pub fn send_mime(mime_base64: &str, mailbox: Option<&str>) -> String {
        format!(
            "<m:CreateItem MessageDisposition=\"SendAndSaveCopy\"><m:SavedItemFolderId>{}</m:SavedItemFolderId>\
             <m:Items><t:Message><t:MimeContent>{mime_base64}</t:MimeContent></t:Message></m:Items></m:CreateItem>",
            distinguished("sentitems", mailbox)
        )
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

    /// How deep an answer may nest: EWS answers nest a dozen levels.
    pub const MAX_DEPTH: usize = 256;

    /// Parses an answer. Deeper nesting is refused before the XML parser
    /// sees it: roxmltree recurses per level, and a few thousand levels
    /// (tens of kilobytes from a broken or hostile server) overflowed the
    /// stack, which aborts the whole process.
    pub fn parse(text: &str) -> Result<roxmltree::Document<'_>, crate::SourceError> {
        if !nests_within(text, MAX_DEPTH) {
            return Err(crate::SourceError::transient(format!(
                "EWS sent bad XML: elements nested deeper than {MAX_DEPTH} levels"
            )));
        }
        roxmltree::Document::parse(text).map_err(|e| crate::SourceError::transient(format!("EWS sent bad XML: {e}")))
    }

    /// Whether no element in `text` lies more than `max` levels deep: open
    /// tags (quoted attribute values skipped) less close tags; comments,
    /// CDATA, processing instructions and declarations hold none.
    pub fn nests_within(text: &str, max: usize) -> bool {
        let b = text.as_bytes();
        let skip_to = |from: usize, end: &[u8]| {
            b[from..].windows(end.len()).position(|w| w == end).map_or(b.len(), |i| from + i + end.len())
        };
        let (mut i, mut depth) = (0, 0usize);
        while let Some(at) = b[i..].iter().position(|&c| c == b'<') {
            i += at + 1;
            let rest = &b[i..];
            if rest.starts_with(b"/") {
                depth = depth.saturating_sub(1);
            } else if rest.starts_with(b"!--") {
                i = skip_to(i, b"-->");
            } else if rest.starts_with(b"![CDATA[") {
                i = skip_to(i, b"]]>");
            } else if rest.starts_with(b"?") {
                i = skip_to(i, b"?>");
            } else if rest.starts_with(b"!") {
                i = skip_to(i, b">");
            } else {
                // An open tag: find its end outside quoted values.
                let mut quote = None;
                let mut end = b.len();
                for (j, &c) in rest.iter().enumerate() {
                    match (quote, c) {
                        (Some(q), _) if c == q => quote = None,
                        (Some(_), _) => {}
                        (None, b'"' | b'\'') => quote = Some(c),
                        (None, b'>') => {
                            end = i + j;
                            break;
                        }
                        _ => {}
                    }
                }
                if end == b.len() || b[end - 1] != b'/' {
                    depth += 1;
                    if depth > max {
                        return false;
                    }
                }
                i = end.min(b.len());
            }
        }
        true
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

mod www_authenticate {
    //! The challenges of a 401's `WWW-Authenticate` headers (RFC 9110 11.6.1):
    //! comma-separated, each a scheme with a token68 or auth-params.

    use super::Login;

    /// One challenge: its scheme, and its token68 (NTLM's CHALLENGE message) if it has one.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Challenge {
        pub scheme: String,
        pub token: Option<String>,
    }

    pub fn from_headers(headers: &reqwest::header::HeaderMap) -> Vec<Challenge> {
        headers
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse)
            .collect()
    }

    /// The challenges of one header value. Auth-params (`realm="x"`) belong
    /// to the challenge before them and are skipped.
    pub fn parse(value: &str) -> Vec<Challenge> {
        let mut challenges = Vec::new();
        for element in elements(value) {
            let element = element.trim();
            let name_end = element.find(|c: char| !is_tchar(c)).unwrap_or(element.len());
            let (name, rest) = element.split_at(name_end);
            let rest = rest.trim_start();
            if name.is_empty() || rest.starts_with('=') {
                continue;
            }
            let token = is_token68(rest).then(|| rest.to_string());
            challenges.push(Challenge { scheme: name.to_string(), token });
        }
        challenges
    }

    /// Splits at commas outside quoted strings.
    fn elements(value: &str) -> Vec<&str> {
        let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
        for (i, c) in value.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    parts.push(&value[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&value[start..]);
        parts
    }

    fn is_tchar(c: char) -> bool {
        c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
    }

    fn is_token68(s: &str) -> bool {
        let body = s.trim_end_matches('=');
        !body.is_empty() && body.chars().all(|c| c.is_ascii_alphanumeric() || "-._~+/".contains(c))
    }

    pub fn offers(offered: &[Challenge], scheme: &str) -> bool {
        offered.iter().any(|c| c.scheme.eq_ignore_ascii_case(scheme))
    }

    /// The token of the first challenge of `scheme` that has one.
    pub fn token<'a>(offered: &'a [Challenge], scheme: &str) -> Option<&'a str> {
        offered.iter().find(|c| c.scheme.eq_ignore_ascii_case(scheme)).and_then(|c| c.token.as_deref())
    }

    /// NTLM first (the password never travels), Negotiate next (carrying
    /// NTLM), Basic last.
    pub fn choose(offered: &[Challenge]) -> Option<Login> {
        if offers(offered, "NTLM") {
            Some(Login::Ntlm("NTLM"))
        } else if offers(offered, "Negotiate") {
            Some(Login::Ntlm("Negotiate"))
        } else if offers(offered, "Basic") {
            Some(Login::Basic)
        } else {
            None
        }
    }

    /// The schemes offered, for messages: `NTLM, Negotiate` or `none`.
    pub fn names(offered: &[Challenge]) -> String {
        let mut names: Vec<&str> = Vec::new();
        for c in offered {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(&c.scheme)) {
                names.push(&c.scheme);
            }
        }
        if names.is_empty() { "none".to_string() } else { names.join(", ") }
    }
}

/// Items a sync created and did not delete again: (id, received, size) in
/// the order first created, each once.
#[derive(Debug, Default)]
struct Created {
    /// Deleted items leave a hole (None) rather than shifting the rest.
    items: Vec<Option<(String, String, Option<u64>)>>,
    /// Where each live id is in `items`: a first sync lists the whole
    /// folder, and searching the list for each change took quadratic time.
    at: std::collections::HashMap<String, usize>,
}

impl Created {
    fn create(&mut self, id: String, received: String, size: Option<u64>) {
        if !self.at.contains_key(&id) {
            self.at.insert(id.clone(), self.items.len());
            self.items.push(Some((id, received, size)));
        }
    }

    fn delete(&mut self, id: &str) {
        if let Some(i) = self.at.remove(id) {
            self.items[i] = None;
        }
    }

    fn items(self) -> Vec<(String, String, Option<u64>)> {
        self.items.into_iter().flatten().collect()
    }
}

/// An EWS mailbox folder as a [`MailSource`].
pub struct EwsSource {
    http: reqwest::Client,
    /// How a password login goes, once decided (see [`PasswordScheme::Auto`]).
    login: Mutex<Option<Login>>,
    /// NTLM's own connection, kept between requests (see [`crate::http1`]).
    ntlm_connection: tokio::sync::Mutex<Option<crate::http1::Connection>>,
    tls: Arc<rustls::ClientConfig>,
    cfg: EwsConfig,
    folder_id: String,
    processed_id: Option<String>,
    error_id: String,
    next_sync_state: Option<String>,
    /// Sizes SyncFolderItems listed, for bounding GetItem answers.
    sizes: std::collections::HashMap<String, u64>,
    /// The most bytes the answer to the call in flight may have. Calls on
    /// one source run one at a time, so one value serves them all.
    answer_cap: std::sync::atomic::AtomicU64,
}

/// Answers that carry no mail (folders, sync pages, settle results).
const SMALL_ANSWER: u64 = 16 << 20;
/// Bytes of mail asked for in one GetItem (fewer items when they are large).
const GET_ITEM_BYTES: u64 = 16 << 20;

impl EwsSource {
    pub async fn connect(cfg: EwsConfig) -> Result<Self, SourceError> {
        if is_exchange_online(&cfg.url) {
            tracing::warn!(mailbox = %cfg.address, "{EXCHANGE_ONLINE_WARNING}");
        }
        let mut source = Self::unconnected(cfg)?;
        source.folder_id = source.folder(&source.cfg.folder.clone(), false).await?;
        if source.cfg.settle == SettleAction::Move {
            source.processed_id = Some(source.folder(&source.cfg.processed_folder.clone(), true).await?);
        }
        source.error_id = source.folder(&source.cfg.error_folder.clone(), true).await?;
        Ok(source)
    }

    /// The source before it has asked the server anything.
    fn unconnected(cfg: EwsConfig) -> Result<Self, SourceError> {
        let tls = crate::tls::client_config(None)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| SourceError::permanent(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            login: Mutex::new(None),
            ntlm_connection: tokio::sync::Mutex::new(None),
            tls,
            cfg,
            folder_id: String::new(),
            processed_id: None,
            error_id: String::new(),
            next_sync_state: None,
            sizes: std::collections::HashMap::new(),
            answer_cap: std::sync::atomic::AtomicU64::new(SMALL_ANSWER),
        })
    }

    /// The client alone, asking the server nothing (no folder is looked up):
    /// for sending as the mailbox and checking it may.
    pub fn client(cfg: EwsConfig) -> Result<Self, SourceError> {
        Self::unconnected(cfg)
    }

    /// Sends a complete MIME message as this mailbox: CreateItem with
    /// `MessageDisposition="SendAndSaveCopy"`, the message as base64
    /// `t:MimeContent`, the copy in the mailbox's Sent Items. One attempt:
    /// unlike the reads, a send is not repeated here, even after
    /// ErrorServerBusy (a throttle error: the caller decides when to try
    /// again, with the same message).
    pub async fn send_mime(&self, mime: &[u8]) -> Result<(), SourceError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(mime);
        let body = soap::send_mime(&encoded, self.named_mailbox());
        self.answer_cap.store(SMALL_ANSWER, std::sync::atomic::Ordering::Relaxed);
        let text = self.call_once(&body).await?;
        self.sent(&text)?;
        tracing::debug!(mailbox = %self.cfg.address, bytes = mime.len(), "EWS CreateItem sent a mail");
        Ok(())
    }

    /// Whether the server can be reached with these credentials and shows
    /// the mailbox's Sent Items (a GetFolder; nothing is sent). Send As
    /// rights show only in a send.
    pub async fn check_sent_items(&self) -> Result<(), SourceError> {
        self.folder("sentitems", false).await.map(drop)
    }

    /// Reads CreateItem's answer: sent, or why not.
    fn sent(&self, text: &str) -> Result<(), SourceError> {
        let doc = soap::parse(text)?;
        match soap::responses(&doc).into_iter().next() {
            Some((_, m)) if m.class == "Success" => Ok(()),
            Some((_, m)) => Err(send_error(&self.cfg.address, &m)),
            None => Err(SourceError::transient(format!(
                "EWS answered the send for mailbox {} without a response message",
                self.cfg.address
            ))),
        }
    }

    fn impersonated(&self) -> Option<&str> {
        matches!(self.cfg.auth, EwsAuth::Application(_)).then_some(self.cfg.address.as_str())
    }

    /// The mailbox to name in DistinguishedFolderIds (delegated access to
    /// someone else's mailbox).
    fn named_mailbox(&self) -> Option<&str> {
        matches!(self.cfg.auth, EwsAuth::Delegated(_) | EwsAuth::Password { .. }).then_some(self.cfg.address.as_str())
    }

    /// Posts one operation; returns the answer's text. A busy server
    /// (ErrorServerBusy, for the request or any item in it) asking for a
    /// short wait gets it, then the same request again: every operation the
    /// robot sends is a read or idempotent, and a busy answer changed nothing
    /// it will not find done (ErrorItemNotFound on a repeated move). Longer
    /// waits end the pass as a throttle, not a failure.
    async fn call(&self, body: &str) -> Result<String, SourceError> {
        self.call_capped(body, SMALL_ANSWER).await
    }

    /// [`call`](Self::call) for an answer that may be up to `cap` bytes.
    async fn call_capped(&self, body: &str, cap: u64) -> Result<String, SourceError> {
        self.answer_cap.store(cap, std::sync::atomic::Ordering::Relaxed);
        let mut attempt = 1;
        loop {
            let result = match self.call_once(body).await {
                Ok(text) => busy_items(&text, &self.cfg.address).map_or(Ok(text), Err),
                Err(e) => Err(e),
            };
            match result {
                Err(e) if crate::throttle::wait_in_place(&e, attempt).is_some() => {
                    let wait = e.retry_after().unwrap_or_default();
                    tracing::debug!(mailbox = %self.cfg.address, attempt, wait_ms = wait.as_millis() as u64, "EWS busy; waiting as asked");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One POST of one operation. ErrorServerBusy is a throttle.
    async fn call_once(&self, body: &str) -> Result<String, SourceError> {
        let envelope = soap::envelope(self.impersonated(), body);
        let (status, text) = match &self.cfg.auth {
            EwsAuth::Delegated(tokens) | EwsAuth::Application(tokens) => {
                self.post_with_token(tokens.as_ref(), &envelope).await?
            }
            EwsAuth::Password { username, password, scheme } => {
                self.post_with_password(username, password, *scheme, &envelope).await?
            }
        };
        self.answer(status, text)
    }

    /// An answer's text, unless it says EWS is closed to this app (403),
    /// the server is busy, or the request failed.
    fn answer(&self, status: u16, text: String) -> Result<String, SourceError> {
        if status == 403 {
            return Err(forbidden(&self.cfg, &text));
        }
        if let Ok(doc) = soap::parse(&text)
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
            return Err(self.soap_fault(status, &text));
        }
        Ok(text)
    }

    /// A SOAP fault (HTTP 500) refuses the whole request. One carrying an
    /// EWS error code (ErrorImpersonateUserDenied, ErrorAccessDenied…) will
    /// not pass by retrying; an unexplained 5xx might.
    fn soap_fault(&self, status: u16, text: &str) -> SourceError {
        let mailbox = &self.cfg.address;
        let parsed = soap::parse(text).ok();
        let field = |name: &str| parsed.as_ref().and_then(|doc| soap::text_of(doc.root(), name));
        match (field("ResponseCode"), field("faultstring")) {
            (Some(code), fault) if code != "ErrorInternalServerError" && !is_transient_code(&code) => {
                SourceError::permanent(format!(
                    "EWS refused the request for mailbox {mailbox}: {code}: {}",
                    fault.unwrap_or_default()
                ))
            }
            (_, Some(fault)) => {
                SourceError::transient(format!("EWS failed (HTTP {status}) for mailbox {mailbox}: {fault}"))
            }
            _ => SourceError::transient(format!("EWS failed (HTTP {status}) for mailbox {mailbox}")),
        }
    }

    fn request(&self, envelope: &str) -> reqwest::RequestBuilder {
        self.http
            .post(&self.cfg.url)
            .header(CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("X-AnchorMailbox", &self.cfg.address)
            .body(envelope.to_string())
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, SourceError> {
        request.send().await.map_err(|e| {
            SourceError::transient(format!(
                "EWS at {} for mailbox {}: {}",
                self.cfg.url,
                self.cfg.address,
                e.without_url()
            ))
        })
    }

    /// The status and text of an answer, read no further than the cap of
    /// the call in flight.
    async fn read(&self, response: reqwest::Response) -> Result<(u16, String), SourceError> {
        let status = response.status().as_u16();
        let cap = self.answer_cap.load(std::sync::atomic::Ordering::Relaxed);
        match crate::http_body::read_capped(response, cap).await {
            Ok(body) => Ok((status, String::from_utf8_lossy(&body).into_owned())),
            Err(crate::http_body::BodyError::TooLarge { at_least, .. }) => Err(SourceError::too_large(
                format!("EWS at {} sent an answer over {cap} bytes for mailbox {}", self.cfg.url, self.cfg.address),
                at_least,
            )),
            Err(e) => {
                Err(SourceError::transient(format!("EWS at {} for mailbox {}: {e}", self.cfg.url, self.cfg.address))
                    .with_source(e))
            }
        }
    }

    /// Reads a 401's body to its end, so its connection can be reused.
    async fn drain(&self, response: reqwest::Response) -> Result<(), SourceError> {
        response.bytes().await.map(drop).map_err(|e| {
            SourceError::transient(format!(
                "EWS at {} for mailbox {}: {}",
                self.cfg.url,
                self.cfg.address,
                e.without_url()
            ))
        })
    }

    /// OAuth: a 401 gets one retry with a fresh token.
    async fn post_with_token(&self, tokens: &dyn BearerTokens, envelope: &str) -> Result<(u16, String), SourceError> {
        for renew in [false, true] {
            let response = self.send(self.request(envelope).bearer_auth(tokens.token(renew).await?)).await?;
            if response.status() != 401 {
                return self.read(response).await;
            }
        }
        Err(SourceError::permanent(format!(
            "EWS refused the credentials for mailbox {} (HTTP 401); check the connection or the password",
            self.cfg.address
        )))
    }

    fn remembered_login(&self) -> Option<Login> {
        *self.login.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember_login(&self, login: Login) {
        *self.login.lock().unwrap_or_else(|e| e.into_inner()) = Some(login);
    }

    /// A password login: Basic or NTLM as configured, or as the server's
    /// first 401 offers ([`PasswordScheme::Auto`]).
    async fn post_with_password(
        &self,
        username: &str,
        password: &str,
        scheme: PasswordScheme,
        envelope: &str,
    ) -> Result<(u16, String), SourceError> {
        let login = match (self.remembered_login(), scheme) {
            (Some(login), _) => login,
            (None, PasswordScheme::Basic) => Login::Basic,
            (None, PasswordScheme::Ntlm) => Login::Ntlm("NTLM"),
            (None, PasswordScheme::Auto) => {
                let response = self.send(self.request(envelope)).await?;
                if response.status() != 401 {
                    return self.read(response).await; // no login wanted; ask again next time
                }
                let offered = www_authenticate::from_headers(response.headers());
                self.drain(response).await?;
                let login = www_authenticate::choose(&offered).ok_or_else(|| {
                    SourceError::permanent(format!(
                        "EWS at {} offers no login the robot can use with a password for mailbox {} \
                         (it offers: {}; the robot speaks NTLM, Negotiate with NTLM, and Basic)",
                        self.cfg.url,
                        self.cfg.address,
                        www_authenticate::names(&offered)
                    ))
                })?;
                tracing::info!(
                    mailbox = %self.cfg.address,
                    offered = %www_authenticate::names(&offered),
                    login = login.name(),
                    "EWS password login chosen"
                );
                if login == Login::Basic && self.cfg.url.to_ascii_lowercase().starts_with("http:") {
                    tracing::warn!(mailbox = %self.cfg.address, "EWS offers only Basic, over plain HTTP: the password travels readable");
                }
                login
            }
        };
        self.remember_login(login);
        match login {
            Login::Basic => {
                let response = self.send(self.request(envelope).basic_auth(username, Some(password))).await?;
                if response.status() == 401 {
                    return Err(SourceError::permanent(format!(
                        "EWS refused the user name or password for mailbox {} (Basic)",
                        self.cfg.address
                    )));
                }
                self.read(response).await
            }
            Login::Ntlm(http_scheme) => self.post_with_ntlm(http_scheme, username, password, envelope).await,
        }
    }

    /// One NTLM handshake carrying the request: NEGOTIATE, the server's 401
    /// with its CHALLENGE, then AUTHENTICATE, all on one connection the
    /// source holds (NTLM authenticates the connection; see [`crate::http1`]).
    /// Neither the password nor the messages are logged.
    async fn post_with_ntlm(
        &self,
        http_scheme: &'static str,
        username: &str,
        password: &str,
        envelope: &str,
    ) -> Result<(u16, String), SourceError> {
        let mut held = self.ntlm_connection.lock().await;
        let result = self.ntlm_handshake(&mut held, http_scheme, username, password, envelope).await;
        if result.is_err() {
            *held = None; // start the next request on a fresh connection
        }
        result
    }

    async fn ntlm_handshake(
        &self,
        held: &mut Option<crate::http1::Connection>,
        mut http_scheme: &'static str,
        username: &str,
        password: &str,
        envelope: &str,
    ) -> Result<(u16, String), SourceError> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        let mailbox = &self.cfg.address;
        loop {
            let negotiate = format!("{http_scheme} {}", b64.encode(ntlm::negotiate_message()));
            let answer = self.post_held(held, negotiate, envelope, true).await?;
            if answer.status != 401 {
                return Ok((answer.status, answer.text())); // let in (or failed) without a handshake
            }
            let offered = www_authenticate::from_headers(&answer.headers);
            let Some(token) = www_authenticate::token(&offered, http_scheme) else {
                if http_scheme == "NTLM" && www_authenticate::offers(&offered, "Negotiate") {
                    http_scheme = "Negotiate"; // NTLM inside Negotiate, as Windows accepts it
                    self.remember_login(Login::Ntlm(http_scheme));
                    continue;
                }
                return Err(SourceError::permanent(format!(
                    "EWS at {} answered the NTLM negotiation for mailbox {mailbox} without a challenge (it offers: {}); \
                     if the server allows only Basic, add the mailbox with --ews-auth basic",
                    self.cfg.url,
                    www_authenticate::names(&offered)
                )));
            };
            if answer.closes() {
                return Err(SourceError::permanent(format!(
                    "EWS at {} closed the connection after its NTLM challenge for mailbox {mailbox}, but NTLM needs the \
                     answer on the same connection (is a proxy in between?)",
                    self.cfg.url
                )));
            }
            let unusable = |why: String| {
                SourceError::permanent(format!("EWS sent an unusable NTLM challenge for mailbox {mailbox}: {why}"))
            };
            let bytes = b64.decode(token.trim()).map_err(|_| unusable("it is not base64".into()))?;
            let challenge = ntlm::ChallengeMessage::parse(&bytes).map_err(|e| unusable(e.to_string()))?;
            let identity = ntlm::Identity::new(username, password);
            let client_challenge: [u8; 8] = rand::random();
            let authenticate =
                ntlm::authenticate_message(&identity, &challenge, &client_challenge, ntlm::filetime(SystemTime::now()))
                    .map_err(|e| SourceError::permanent(format!("NTLM login for mailbox {mailbox}: {e}")))?;
            let header = format!("{http_scheme} {}", b64.encode(authenticate));
            let answer = self.post_held(held, header, envelope, false).await?;
            if answer.status == 401 {
                return Err(SourceError::permanent(format!(
                    "EWS refused the user name or password for mailbox {mailbox} (NTLM)"
                )));
            }
            return Ok((answer.status, answer.text()));
        }
    }

    /// Posts on the held connection. A handshake's first request may open
    /// one (again, if the server closed the one kept from before); its
    /// answer must go on the same connection or not at all.
    async fn post_held(
        &self,
        held: &mut Option<crate::http1::Connection>,
        authorization: String,
        envelope: &str,
        opens_handshake: bool,
    ) -> Result<crate::http1::Answer, SourceError> {
        let cap = self.answer_cap.load(std::sync::atomic::Ordering::Relaxed);
        let network = |e: SourceError| match e.is_transient() {
            true => SourceError::transient(format!("EWS at {} for mailbox {}: {e}", self.cfg.url, self.cfg.address)),
            false => e,
        };
        if held.as_ref().is_some_and(|c| c.is_closed()) {
            *held = None;
        }
        let headers: [(HeaderName, String); 3] = [
            (CONTENT_TYPE, "text/xml; charset=utf-8".into()),
            (HeaderName::from_static("x-anchormailbox"), self.cfg.address.clone()),
            (AUTHORIZATION, authorization),
        ];
        let reused = held.is_some();
        if !reused {
            if !opens_handshake {
                return Err(SourceError::permanent(format!(
                    "EWS at {} closed the connection after its NTLM challenge for mailbox {}, but NTLM needs the \
                     answer on the same connection (is a proxy in between?)",
                    self.cfg.url, self.cfg.address
                )));
            }
            *held = Some(self.open_held().await.map_err(network)?);
        }
        let connection = held.as_mut().expect("a connection is held");
        match connection.post(&headers, envelope, cap).await {
            // The rest of that answer was not read: the connection is done.
            Err(e) if matches!(e.kind(), crate::ErrorKind::TooLarge(_)) => {
                *held = None;
                Err(e)
            }
            Err(e) if reused && opens_handshake && e.is_transient() => {
                // The kept connection went stale; a NEGOTIATE is safe to send again.
                tracing::debug!(mailbox = %self.cfg.address, error = %e, "EWS connection went stale; opening another");
                let connection = held.insert(self.open_held().await.map_err(network)?);
                connection.post(&headers, envelope, cap).await.map_err(network)
            }
            result => result.map_err(network),
        }
    }

    async fn open_held(&self) -> Result<crate::http1::Connection, SourceError> {
        let url = url::Url::parse(&self.cfg.url)
            .map_err(|e| SourceError::permanent(format!("bad EWS URL {}: {e}", self.cfg.url)))?;
        crate::http1::Connection::open(&url, self.tls.clone(), self.cfg.timeout).await
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
        let find = format!(
            "<m:FindFolder Traversal=\"Shallow\"><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>\
             <m:ParentFolderIds>{}</m:ParentFolderIds></m:FindFolder>",
            soap::distinguished("msgfolderroot", mailbox)
        );
        let text = self.call(&find).await?;
        match self.folder_named(&text, name)? {
            Some(id) => Ok(id),
            None if create => {
                let body = format!(
                    "<m:CreateFolder><m:ParentFolderId>{}</m:ParentFolderId><m:Folders><t:Folder><t:DisplayName>{}</t:DisplayName></t:Folder></m:Folders></m:CreateFolder>",
                    soap::distinguished("msgfolderroot", mailbox),
                    soap::escape(name)
                );
                tracing::info!(mailbox = %self.cfg.address, folder = name, "creating EWS folder");
                match self
                    .call(&body)
                    .await
                    .and_then(|text| self.folder_id_from(&text, &format!("creating folder {name}")))
                {
                    Ok(id) => Ok(id),
                    // Another process made it since we looked
                    // (ErrorFolderExists): its folder is ours.
                    Err(refused) => self.folder_named(&self.call(&find).await?, name)?.ok_or(refused),
                }
            }
            None => Err(SourceError::permanent(format!("mailbox {} has no folder {name:?}", self.cfg.address))),
        }
    }

    /// The id of the folder called `name` in a FindFolder answer.
    fn folder_named(&self, text: &str, name: &str) -> Result<Option<String>, SourceError> {
        let doc = soap::parse(text)?;
        if let Some((_, m)) = soap::responses(&doc).into_iter().find(|(_, m)| m.class != "Success") {
            return Err(self.error("listing folders", &m));
        }
        Ok(doc
            .descendants()
            .filter(|n| n.tag_name().name() == "Folder")
            .find(|f| soap::text_of(*f, "DisplayName").is_some_and(|d| d.eq_ignore_ascii_case(name)))
            .and_then(|f| f.descendants().find(|d| d.tag_name().name() == "FolderId"))
            .and_then(|id| id.attribute("Id").map(str::to_string)))
    }

    fn folder_id_from(&self, text: &str, doing: &str) -> Result<String, SourceError> {
        let doc = soap::parse(text)?;
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
    async fn sync(&self, state: Option<&str>) -> Result<(Vec<(String, Option<u64>)>, String), SourceError> {
        let mut state = state.map(str::to_string);
        let mut created = Created::default();
        let mut paging = Paging::new(format!("SyncFolderItems pages for mailbox {}", self.cfg.address));
        loop {
            let body = format!(
                "<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>\
                 <t:FieldURI FieldURI=\"item:DateTimeReceived\"/><t:FieldURI FieldURI=\"item:Size\"/>\
                 </t:AdditionalProperties></m:ItemShape>\
                 <m:SyncFolderId><t:FolderId Id=\"{}\"/></m:SyncFolderId>{}<m:MaxChangesReturned>{SYNC_PAGE}</m:MaxChangesReturned>\
                 </m:SyncFolderItems>",
                soap::escape(&self.folder_id),
                state.as_deref().map(|s| format!("<m:SyncState>{}</m:SyncState>", soap::escape(s))).unwrap_or_default()
            );
            let text = self.call(&body).await?;
            let (next_state, last, changes) = self.sync_page(&text, &mut created)?;
            state = next_state;
            if !last {
                paging.next_page(changes, created.at.len())?;
            }
            if last {
                let mut created = created.items();
                created.sort_by(|a, b| a.1.cmp(&b.1));
                let state = state.ok_or_else(|| SourceError::transient("EWS sync answer without SyncState"))?;
                return Ok((created.into_iter().map(|(id, _, size)| (id, size)).collect(), state));
            }
        }
    }

    /// Reads one SyncFolderItems page into `created` (id, received, size); returns
    /// its SyncState, whether it was the last page, and how many changes it had.
    fn sync_page(&self, text: &str, created: &mut Created) -> Result<(Option<String>, bool, usize), SourceError> {
        let doc = soap::parse(text)?;
        if let Some((_, m)) = soap::responses(&doc).into_iter().find(|(_, m)| m.class != "Success") {
            if m.code == "ErrorInvalidSyncStateData" {
                return Err(SourceError::sync_state_expired(format!(
                    "EWS no longer knows the sync state of mailbox {} (ErrorInvalidSyncStateData)",
                    self.cfg.address
                )));
            }
            return Err(self.error("synchronising the folder", &m));
        }
        let mut changes = 0;
        for change in doc.descendants().filter(|n| n.tag_name().name() == "Changes").flat_map(|c| c.children()) {
            let id = change
                .descendants()
                .find(|d| d.tag_name().name() == "ItemId")
                .and_then(|d| d.attribute("Id"))
                .map(str::to_string);
            let Some(id) = id else { continue };
            changes += 1;
            match change.tag_name().name() {
                "Create" => {
                    let received = soap::text_of(change, "DateTimeReceived").unwrap_or_default();
                    let size = soap::text_of(change, "Size").and_then(|s| s.trim().parse().ok());
                    created.create(id, received, size);
                }
                "Delete" => created.delete(&id),
                _ => {}
            }
        }
        let state = soap::text_of(doc.root(), "SyncState");
        let last = soap::text_of(doc.root(), "IncludesLastItemInRange").is_none_or(|v| v == "true");
        Ok((state, last, changes))
    }

    /// The mails of a GetItem answer; items gone since the listing are left out.
    fn mime_items(&self, text: &str) -> Result<Vec<RemoteMail>, SourceError> {
        let doc = soap::parse(text)?;
        let mut mails = Vec::new();
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
            mails.push(RemoteMail::new(id, raw));
        }
        Ok(mails)
    }

    /// Whether an item operation's answer says every item was done
    /// (ErrorItemNotFound counts as done).
    fn items_done(&self, text: &str, doing: &str) -> Result<(), SourceError> {
        let doc = soap::parse(text)?;
        for (_, m) in soap::responses(&doc) {
            if m.class != "Success" && m.code != "ErrorItemNotFound" {
                return Err(self.error(doing, &m));
            }
        }
        Ok(())
    }

    /// Runs an item operation in chunks; ErrorItemNotFound counts as done
    /// (settling is idempotent).
    async fn per_items(&self, ids: &[String], doing: &str, body: impl Fn(&str) -> String) -> Result<(), SourceError> {
        for chunk in ids.chunks(ITEMS_PER_REQUEST) {
            let text = self.call(&body(&soap::item_ids(chunk))).await?;
            self.items_done(&text, doing)?;
        }
        Ok(())
    }
}

impl EwsSource {
    /// Splits ids into GetItem requests of at most [`ITEMS_PER_REQUEST`]
    /// items and about [`GET_ITEM_BYTES`] of listed size (one item alone
    /// when it is larger).
    fn get_item_chunks(&self, ids: &[String]) -> Vec<Vec<String>> {
        let mut chunks: Vec<Vec<String>> = Vec::new();
        let mut bytes = 0u64;
        for id in ids {
            let size = self.expected_size(id);
            match chunks.last_mut() {
                Some(chunk) if chunk.len() < ITEMS_PER_REQUEST && bytes + size <= GET_ITEM_BYTES => {
                    chunk.push(id.clone());
                    bytes += size;
                }
                _ => {
                    chunks.push(vec![id.clone()]);
                    bytes = size;
                }
            }
        }
        chunks
    }

    /// The listed size, or the limit when the server listed none.
    fn expected_size(&self, id: &str) -> u64 {
        self.sizes.get(id).copied().unwrap_or(self.cfg.max_message_bytes).min(self.cfg.max_message_bytes)
    }

    /// One GetItem with MIME content; its answer is read no further than
    /// the items' sizes allow (base64 adds a third, plus the envelope).
    async fn get_items(&self, ids: &[String]) -> Result<Vec<RemoteMail>, SourceError> {
        let cap = ids.iter().map(|id| self.expected_size(id).saturating_mul(4) / 3 + 8192).sum::<u64>() + 64 * 1024;
        let body = format!(
            "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:IncludeMimeContent>true</t:IncludeMimeContent></m:ItemShape>\
             <m:ItemIds>{}</m:ItemIds></m:GetItem>",
            soap::item_ids(ids)
        );
        let text = self.call_capped(&body, cap).await?;
        self.mime_items(&text)
    }
}

/// Response codes the ResponseCode reference describes as passing: the
/// server busy, overloaded or failing over, the mailbox or directory
/// unavailable for now, a submission quota that refills. Any other code will
/// not change by trying again.
fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "ErrorServerBusy"
            | "ErrorInternalServerTransientError"
            | "ErrorInsufficientResources"
            | "ErrorADUnavailable"
            | "ErrorMailboxStoreUnavailable"
            | "ErrorMailboxMoveInProgress"
            | "ErrorMailboxFailover"
            | "ErrorConnectionFailed"
            | "ErrorTimeoutExpired"
            | "ErrorSubmissionQuotaExceeded"
            | "ErrorExceededConnectionCount"
    )
}

/// Why EWS did not send a mail, from CreateItem's response message: the
/// ResponseCode and its text, what to do where that is known, transient only
/// for the codes that pass ([`is_transient_code`]).
fn send_error(mailbox: &str, m: &soap::ResponseMessage) -> SourceError {
    let said = if m.text.is_empty() { m.code.clone() } else { format!("{}: {}", m.code, m.text) };
    let hint = match m.code.as_str() {
        "ErrorSendAsDenied" => {
            "; the account the robot signs in with needs Send As on this mailbox (Exchange Online: \
             Add-RecipientPermission -AccessRights SendAs; on-premises: Add-ADPermission -ExtendedRights \"Send As\"); \
             full access alone does not let it send"
        }
        "ErrorAccessDenied" | "ErrorImpersonateUserDenied" | "ErrorNonExistentMailbox" => {
            "; delegated connections and password logins need access to the mailbox, application connections \
             full_access_as_app"
        }
        "ErrorQuotaExceeded" => "; the mailbox is over its storage quota",
        "ErrorMessageSizeExceeded" => "; the mail is larger than the server lets this mailbox send",
        "ErrorInvalidRecipients" => "; the server found no recipient it can send to",
        _ => "",
    };
    let text = format!("EWS did not send the mail from mailbox {mailbox} ({said}){hint}");
    match m.code.as_str() {
        "ErrorServerBusy" => SourceError::throttled(text, Duration::from_millis(m.back_off_ms.unwrap_or(30_000))),
        code if is_transient_code(code) => SourceError::transient(text),
        _ => SourceError::permanent(text),
    }
}

/// ErrorServerBusy in any response message of an answer: the longest wait
/// asked for, as a throttle.
fn busy_items(text: &str, mailbox: &str) -> Option<SourceError> {
    let doc = soap::parse(text).ok()?;
    let wait = soap::responses(&doc)
        .into_iter()
        .filter(|(_, m)| m.code == "ErrorServerBusy")
        .map(|(_, m)| Duration::from_millis(m.back_off_ms.unwrap_or(30_000)))
        .max()?;
    Some(SourceError::throttled(format!("EWS is busy for mailbox {mailbox} (ErrorServerBusy)"), wait))
}

/// HTTP 403: EWS itself is closed to this app or mailbox. Exchange Online
/// blocks EWS from 2026-10-01 unless the organisation enables it and
/// allows the app's id; its refusals often come with a body that is not
/// SOAP. Retrying cannot help until an admin acts.
fn forbidden(cfg: &EwsConfig, text: &str) -> SourceError {
    let mailbox = &cfg.address;
    let parsed = soap::parse(text).ok();
    let field = |name: &str| parsed.as_ref().and_then(|doc| soap::text_of(doc.root(), name));
    let said = match (field("ResponseCode"), field("faultstring").or_else(|| field("MessageText"))) {
        (Some(code), Some(text)) => format!("{code}: {text}"),
        (Some(code), None) => code,
        (None, Some(text)) => text,
        // Not SOAP (often an HTML or plain-text page): a short, tag-free excerpt.
        (None, None) => {
            let mut plain = String::new();
            let mut in_tag = false;
            for c in text.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' => {
                        in_tag = false;
                        plain.push(' ');
                    }
                    c if !in_tag => plain.push(c),
                    _ => {}
                }
            }
            plain.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(160).collect()
        }
    };
    let said = if said.is_empty() { String::new() } else { format!(" (the server said: {said})") };
    let what_to_do = match cfg.auth {
        EwsAuth::Password { .. } => {
            "an Exchange admin must allow EWS for this mailbox and client: check EWSEnabled \
             (Set-OrganizationConfig, Set-CASMailbox) and the EWS allow and block lists"
        }
        _ => {
            "Exchange Online blocks EWS from 2026-10-01 unless the organisation allows it: an Exchange admin must \
             set EWSEnabled to true (Set-OrganizationConfig, and Set-CASMailbox for this mailbox) and add this \
             app's client id to the EWS allow list (EWSAllowedAppIDs) — or move the mailbox to Graph \
             (mailbox add --kind graph)"
        }
    };
    SourceError::permanent(format!(
        "EWS at {} refused mailbox {mailbox} with HTTP 403 Forbidden{said}: EWS is blocked for this app or \
         mailbox. {what_to_do}",
        cfg.url
    ))
}

/// Fuzzing ([`crate::fuzzing`]): every reader of an EWS answer, with
/// `text` as the answer; panics where a result breaks what the session
/// relies on.
pub(crate) fn read_answer(text: &str) {
    thread_local! {
        static SOURCE: EwsSource = EwsSource::unconnected(EwsConfig {
            url: "https://ews.fuzz.invalid/EWS/Exchange.asmx".into(),
            address: "desk@fuzz.invalid".into(),
            folder: "inbox".into(),
            processed_folder: "Processed".into(),
            error_folder: "Failed".into(),
            settle: SettleAction::Move,
            auth: EwsAuth::Password { username: "robot".into(), password: "secret".into(), scheme: PasswordScheme::Auto },
            timeout: Duration::from_secs(5),
            sync_state: None,
            max_message_bytes: 1 << 20,
        })
        .expect("an EWS source without a server");
    }
    SOURCE.with(|source| {
        for status in [200, 401, 500, 503] {
            let _ = source.answer(status, text.to_string());
            let _ = source.soap_fault(status, text);
        }
        let _ = source.folder_id_from(text, "finding folder inbox");
        let _ = source.folder_named(text, "Processed");
        let mut created = Created::default();
        if source.sync_page(text, &mut created).is_ok() {
            let created = created.items();
            let unique: std::collections::HashSet<&String> = created.iter().map(|(id, _, _)| id).collect();
            assert_eq!(unique.len(), created.len(), "a sync page listed an item twice");
        }
        let _ = source.mime_items(text);
        let _ = source.items_done(text, "moving a mail");
        let _ = source.sent(text);
    });
}

/// Fuzzing ([`crate::fuzzing`]): a `WWW-Authenticate` value as the
/// password login reads it.
pub(crate) fn read_www_authenticate(value: &str) {
    let offered = www_authenticate::parse(value);
    let _ = www_authenticate::choose(&offered);
    let _ = www_authenticate::names(&offered);
    for scheme in ["NTLM", "Negotiate", "Basic"] {
        if let Some(token) = www_authenticate::token(&offered, scheme) {
            assert!(www_authenticate::offers(&offered, scheme), "a token for a scheme not offered");
            assert!(!token.is_empty() && value.contains(token), "a token that is not in the header");
        }
    }
}

#[async_trait::async_trait]
impl MailSource for EwsSource {
    async fn list(&mut self) -> Result<Vec<Listing>, SourceError> {
        let (ids, state) = match self.sync(self.cfg.sync_state.clone().as_deref()).await {
            Err(e) if e.is_sync_state_expired() => {
                tracing::warn!(mailbox = %self.cfg.address, "EWS sync state no longer valid; synchronising from the start");
                self.sync(None).await?
            }
            other => other?,
        };
        self.next_sync_state = Some(state);
        self.sizes = ids.iter().filter_map(|(id, size)| Some((id.clone(), (*size)?))).collect();
        Ok(ids.into_iter().map(|(remote_id, size)| Listing { remote_id, size }).collect())
    }

    async fn fetch(&mut self, remote_ids: &[String]) -> Result<Vec<RemoteMail>, SourceError> {
        let mut mails = Vec::with_capacity(remote_ids.len());
        for chunk in self.get_item_chunks(remote_ids) {
            match self.get_items(&chunk).await {
                Ok(got) => mails.extend(got),
                // The server sent more than the listed sizes: ask one by
                // one, and refuse the one that is really too large.
                Err(e) if matches!(e.kind(), crate::ErrorKind::TooLarge(_)) => {
                    for id in chunk {
                        match self.get_items(std::slice::from_ref(&id)).await {
                            Ok(got) => mails.extend(got),
                            Err(e) => match e.kind() {
                                crate::ErrorKind::TooLarge(at_least) => {
                                    tracing::warn!(mailbox = %self.cfg.address, remote_id = %id, "EWS mail larger than listed and than the limit; refused");
                                    mails.push(RemoteMail::oversized(id, at_least * 3 / 4));
                                }
                                _ => return Err(e),
                            },
                        }
                    }
                }
                Err(e) => return Err(e),
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
            SettleAction::Delete => self.per_items(&processed, "deleting a mail", soap::delete_items).await,
            SettleAction::MarkRead => {
                for id in &processed {
                    let body = soap::mark_read(id);
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

    /// Four GetItem requests per batch: a throttled fetch discards little.
    fn max_batch(&self) -> Option<usize> {
        Some(4 * ITEMS_PER_REQUEST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> EwsSource {
        EwsSource::unconnected(EwsConfig {
            url: "https://mail.contoso.local/EWS/Exchange.asmx".into(),
            address: "desk@contoso.local".into(),
            folder: "inbox".into(),
            processed_folder: "Processed".into(),
            error_folder: "Failed".into(),
            settle: SettleAction::Move,
            auth: EwsAuth::Password { username: "u".into(), password: "p".into(), scheme: PasswordScheme::Auto },
            timeout: Duration::from_secs(5),
            sync_state: None,
            max_message_bytes: 50 << 20,
        })
        .unwrap()
    }

    fn sync_answer(changes: &str) -> String {
        format!(
            "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
             <m:SyncFolderItemsResponse xmlns:m=\"{}\" xmlns:t=\"{}\"><m:ResponseMessages>\
             <m:SyncFolderItemsResponseMessage ResponseClass=\"Success\"><m:ResponseCode>NoError</m:ResponseCode>\
             <m:SyncState>S</m:SyncState><m:IncludesLastItemInRange>true</m:IncludesLastItemInRange>\
             <m:Changes>{changes}</m:Changes></m:SyncFolderItemsResponseMessage></m:ResponseMessages>\
             </m:SyncFolderItemsResponse></s:Body></s:Envelope>",
            soap::NS_MESSAGES,
            soap::NS_TYPES
        )
    }

    fn create(id: &str) -> String {
        format!("<t:Create><t:Message><t:ItemId Id=\"{id}\"/></t:Message></t:Create>")
    }

    #[test]
    fn sync_pages_keep_creates_in_order_without_the_deleted() {
        let changes =
            [create("a"), create("b"), "<t:Delete><t:ItemId Id=\"a\"/></t:Delete>".into(), create("b"), create("a")];
        let mut created = Created::default();
        let (state, last, _) = source().sync_page(&sync_answer(&changes.concat()), &mut created).unwrap();
        assert_eq!((state.as_deref(), last), (Some("S"), true));
        let ids: Vec<String> = created.items().into_iter().map(|(id, _, _)| id).collect();
        assert_eq!(ids, ["b", "a"]);
    }

    /// Found by fuzzing: each change was looked up in every item created
    /// before it, so the first sync of a big folder took quadratic time.
    #[test]
    fn a_sync_page_of_many_items_reads_in_linear_time() {
        let changes: String = (0..100_000).map(|i| create(&format!("AAMk{i}"))).collect();
        let text = sync_answer(&changes);
        let started = std::time::Instant::now();
        let mut created = Created::default();
        source().sync_page(&text, &mut created).unwrap();
        assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
        assert_eq!(created.items().len(), 100_000);
    }

    /// Found by fuzzing: a deeply nested answer overflowed the stack inside
    /// the XML parser, which aborts the process; now it is refused first.
    #[test]
    fn deeply_nested_answers_are_refused_not_a_stack_overflow() {
        let deep = sync_answer(&"<t:Create>".repeat(200_000));
        let source = source();
        // The robot reads answers on tokio's worker threads (2 MiB stacks).
        let errors = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let mut created = Created::default();
                // Read for ErrorServerBusy and faults, then passed on.
                assert!(source.answer(500, deep.clone()).is_ok());
                assert!(source.soap_fault(500, &deep).to_string().contains("EWS failed (HTTP 500)"));
                [
                    source.sync_page(&deep, &mut created).unwrap_err(),
                    source.mime_items(&deep).unwrap_err(),
                    source.folder_id_from(&deep, "finding folder").unwrap_err(),
                    source.items_done(&deep, "moving").unwrap_err(),
                ]
                .map(|e| e.to_string())
            })
            .unwrap()
            .join()
            .unwrap();
        for e in errors {
            assert!(e.contains("nested deeper than 256"), "{e}");
        }
        // Nesting as EWS sends it, with comments, CDATA, quoted '>' and
        // self-closing tags, passes.
        assert!(soap::nests_within(&sync_answer(&create("a>b")), 20));
        assert!(soap::nests_within(&"<a/><!-- <x> --><![CDATA[<y>]]><?pi <z>?>".repeat(1000), 1));
        assert!(!soap::nests_within("<a><b><c>", 2));
        assert!(soap::nests_within("<a><b></b><b x='>'></b></a>", 2));
    }

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

    /// Marking read and deleting never send read receipts, and the request
    /// names a schema version that has the attribute.
    #[test]
    fn settling_suppresses_read_receipts() {
        for body in [soap::mark_read("AAMk&1"), soap::delete_items(&soap::item_ids(&["AAMk1".into()]))] {
            let envelope = soap::envelope(None, &body);
            let doc = roxmltree::Document::parse(&envelope).unwrap();
            let op = doc.descendants().find(|n| n.tag_name().name() == "Body").unwrap().first_element_child().unwrap();
            assert_eq!(op.attribute("SuppressReadReceipts"), Some("true"), "{body}");
            let version = doc.descendants().find(|n| n.tag_name().name() == "RequestServerVersion").unwrap();
            assert_eq!(version.attribute("Version"), Some("Exchange2013_SP1"));
        }
    }

    struct NoTokens;

    #[async_trait::async_trait]
    impl BearerTokens for NoTokens {
        async fn token(&self, _renew: bool) -> Result<String, SourceError> {
            Err(SourceError::permanent("no tokens in unit tests"))
        }
    }

    fn config(auth: EwsAuth) -> EwsConfig {
        EwsConfig {
            url: "https://outlook.office365.com/EWS/Exchange.asmx".into(),
            address: "desk@contoso.test".into(),
            folder: "inbox".into(),
            processed_folder: "Processed".into(),
            error_folder: "Failed".into(),
            settle: SettleAction::Move,
            auth,
            timeout: Duration::from_secs(5),
            sync_state: None,
            max_message_bytes: 50 << 20,
        }
    }

    /// A 403 (EWS blocked, or refused by the allow or block list) is
    /// permanent and says what to do, whatever its body.
    #[test]
    fn a_403_is_permanent_and_says_what_to_do() {
        let oauth = config(EwsAuth::Application(Arc::new(NoTokens)));
        let html =
            "<html><head><title>403</title></head><body><h1>EWS is disabled for this organization</h1></body></html>";
        let e = forbidden(&oauth, html);
        let text = e.to_string();
        assert!(e.is_permanent(), "{text}");
        assert!(text.contains("HTTP 403") && text.contains("EWS is disabled for this organization"), "{text}");
        assert!(!text.contains('<'), "tags stripped: {text}");
        assert!(text.contains("EWSAllowedAppIDs") && text.contains("--kind graph"), "{text}");
        assert!(forbidden(&oauth, "").to_string().contains("HTTP 403 Forbidden: EWS is blocked"));
        let soap = "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><s:Fault>\
                    <faultcode>a:ErrorAccessDenied</faultcode><faultstring>EWS is not allowed for this app.</faultstring>\
                    <detail><e:ResponseCode xmlns:e=\"urn:e\">ErrorAccessDenied</e:ResponseCode></detail></s:Fault></s:Body></s:Envelope>";
        let text = forbidden(&oauth, soap).to_string();
        assert!(text.contains("ErrorAccessDenied: EWS is not allowed for this app."), "{text}");
        let onprem =
            config(EwsAuth::Password { username: "u".into(), password: "p".into(), scheme: PasswordScheme::Auto });
        let text = forbidden(&onprem, "Forbidden").to_string();
        assert!(text.contains("Set-CASMailbox") && !text.contains("--kind graph"), "{text}");
    }

    /// CreateItem's answer with one response message of `class` and `code`
    /// (and `extra` inside it), in the shape of the CreateItem reference.
    fn create_answer(class: &str, code: &str, extra: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
             <m:CreateItemResponse xmlns:m=\"{}\" xmlns:t=\"{}\"><m:ResponseMessages>\
             <m:CreateItemResponseMessage ResponseClass=\"{class}\">{extra}<m:ResponseCode>{code}</m:ResponseCode>\
             <m:Items/></m:CreateItemResponseMessage></m:ResponseMessages></m:CreateItemResponse></s:Body></s:Envelope>",
            soap::NS_MESSAGES,
            soap::NS_TYPES
        )
    }

    #[test]
    fn a_send_is_create_item_with_the_mime_and_a_copy_in_sent_items() {
        let mime = b"From: desk@contoso.local\r\nTo: ann@example.com\r\nSubject: [TKT-1] <&>\r\n\r\nHi\r\n";
        let encoded = base64::engine::general_purpose::STANDARD.encode(mime);
        for (mailbox, named) in [(Some("desk@contoso.local"), true), (None, false)] {
            let envelope = soap::envelope(None, &soap::send_mime(&encoded, mailbox));
            let doc = roxmltree::Document::parse(&envelope).unwrap();
            let find = |name: &str| doc.descendants().find(|n| n.tag_name().name() == name).unwrap();
            let op = find("CreateItem");
            assert_eq!(op.tag_name().namespace(), Some(soap::NS_MESSAGES));
            assert_eq!(op.attribute("MessageDisposition"), Some("SendAndSaveCopy"));
            let folder = find("SavedItemFolderId").first_element_child().unwrap();
            assert_eq!(
                (folder.tag_name().name(), folder.attribute("Id")),
                ("DistinguishedFolderId", Some("sentitems"))
            );
            assert_eq!(soap::text_of(folder, "EmailAddress").is_some(), named);
            let content = find("MimeContent");
            assert_eq!(content.parent().unwrap().tag_name().name(), "Message");
            assert_eq!(content.tag_name().namespace(), Some(soap::NS_TYPES));
            assert_eq!(base64::engine::general_purpose::STANDARD.decode(content.text().unwrap()).unwrap(), mime);
        }
    }

    /// Each answer to a send, and what the outbox makes of it: sent, retried
    /// later (transient), or failed with the ResponseCode and its text.
    #[test]
    fn send_answers_map_to_sent_transient_or_permanent() {
        let source = source();
        assert!(source.sent(&create_answer("Success", "NoError", "")).is_ok());
        let refused = |code: &str, text: &str| {
            let said = format!("<m:MessageText>{text}</m:MessageText>");
            source.sent(&create_answer("Error", code, &said)).unwrap_err()
        };
        let e = refused(
            "ErrorSendAsDenied",
            "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account.",
        );
        let text = e.to_string();
        assert!(e.is_permanent(), "{text}");
        assert!(text.contains("ErrorSendAsDenied: The user account") && text.contains("desk@contoso.local"), "{text}");
        assert!(text.contains("Send As"), "says what to do: {text}");
        for code in [
            "ErrorAccessDenied",
            "ErrorInvalidRecipients",
            "ErrorQuotaExceeded",
            "ErrorMessageSizeExceeded",
            "ErrorMimeContentInvalid",
            "ErrorSomethingNew",
        ] {
            let e = refused(code, "refused");
            assert!(e.is_permanent() && e.to_string().contains(&format!("{code}: refused")), "{code}: {e}");
        }
        for code in [
            "ErrorMailboxStoreUnavailable",
            "ErrorInternalServerTransientError",
            "ErrorTimeoutExpired",
            "ErrorSubmissionQuotaExceeded",
        ] {
            let e = refused(code, "later");
            assert!(e.is_transient() && e.retry_after().is_none(), "{code}: {e}");
        }
        let busy = "<m:MessageText>busy</m:MessageText><m:MessageXml><t:Value Name=\"BackOffMilliseconds\">1500</t:Value></m:MessageXml>";
        let e = source.sent(&create_answer("Error", "ErrorServerBusy", busy)).unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)), "{e}");
        assert!(source.sent("<not-xml").unwrap_err().is_transient());
        assert!(source.sent(&sync_answer("")).is_ok(), "a Success message");
    }

    /// Faults of the whole request (HTTP 500): busy and transient codes pass,
    /// other codes do not, an unexplained 5xx might.
    #[test]
    fn request_faults_are_transient_only_where_documented() {
        let source = source();
        let fault = |code: &str| {
            format!(
                "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><s:Fault><faultcode>a:{code}</faultcode>\
                 <faultstring>no</faultstring><detail><e:ResponseCode xmlns:e=\"urn:e\">{code}</e:ResponseCode>\
                 <t:MessageXml xmlns:t=\"urn:t\"><t:Value Name=\"BackOffMilliseconds\">250</t:Value></t:MessageXml>\
                 </detail></s:Fault></s:Body></s:Envelope>"
            )
        };
        assert_eq!(
            source.answer(500, fault("ErrorServerBusy")).unwrap_err().retry_after(),
            Some(Duration::from_millis(250))
        );
        assert!(source.answer(500, fault("ErrorInternalServerTransientError")).unwrap_err().is_transient());
        assert!(source.answer(500, fault("ErrorInternalServerError")).unwrap_err().is_transient());
        assert!(source.answer(500, fault("ErrorImpersonateUserDenied")).unwrap_err().is_permanent());
        assert!(source.answer(503, "<html>Service Unavailable</html>".into()).unwrap_err().is_transient());
    }

    fn challenge(scheme: &str, token: Option<&str>) -> www_authenticate::Challenge {
        www_authenticate::Challenge { scheme: scheme.into(), token: token.map(str::to_string) }
    }

    #[test]
    fn www_authenticate_values_parse() {
        use www_authenticate::parse;
        assert_eq!(parse("NTLM"), vec![challenge("NTLM", None)]);
        assert_eq!(parse("Negotiate, NTLM"), vec![challenge("Negotiate", None), challenge("NTLM", None)]);
        assert_eq!(
            parse("NTLM TlRMTVNTUAACAAAADAAMADgAAAA="),
            vec![challenge("NTLM", Some("TlRMTVNTUAACAAAADAAMADgAAAA="))]
        );
        // Auth-params, with commas and escaped quotes inside quoted strings, are not schemes.
        assert_eq!(
            parse(r#"Basic realm="mail, \"contoso\"", charset="UTF-8", NTLM,Negotiate"#),
            vec![challenge("Basic", None), challenge("NTLM", None), challenge("Negotiate", None)]
        );
        assert_eq!(
            parse(r#"Bearer realm = "", error="invalid_token", Basic realm=x"#),
            vec![challenge("Bearer", None), challenge("Basic", None)]
        );
        assert!(parse("").is_empty() && parse(" , ,").is_empty());
    }

    #[test]
    fn www_authenticate_headers_are_read_together() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.append(reqwest::header::WWW_AUTHENTICATE, "Negotiate".parse().unwrap());
        headers.append(reqwest::header::WWW_AUTHENTICATE, "NTLM".parse().unwrap());
        headers.append(reqwest::header::WWW_AUTHENTICATE, r#"Basic realm="mail.contoso.local""#.parse().unwrap());
        let offered = www_authenticate::from_headers(&headers);
        assert_eq!(www_authenticate::names(&offered), "Negotiate, NTLM, Basic");
        assert_eq!(www_authenticate::choose(&offered), Some(Login::Ntlm("NTLM")));
    }

    #[test]
    fn password_logins_prefer_ntlm() {
        use www_authenticate::{choose, names, parse, token};
        assert_eq!(choose(&parse("Basic realm=\"x\", ntlm")), Some(Login::Ntlm("NTLM")));
        assert_eq!(choose(&parse("Basic realm=\"x\", Negotiate")), Some(Login::Ntlm("Negotiate")));
        assert_eq!(choose(&parse("Basic realm=\"x\"")), Some(Login::Basic));
        let none = parse("Bearer realm=\"x\", Digest realm=\"y\", nonce=\"z\"");
        assert_eq!(choose(&none), None);
        assert_eq!(names(&none), "Bearer, Digest");
        assert_eq!(names(&[]), "none");
        let offered = parse("Negotiate abc=, NTLM TlRMTVNT");
        assert_eq!(token(&offered, "ntlm"), Some("TlRMTVNT"));
        assert_eq!(token(&offered, "Negotiate"), Some("abc="));
        assert_eq!(token(&parse("NTLM"), "NTLM"), None);
    }

    #[test]
    fn password_schemes_read_and_show() {
        for scheme in [PasswordScheme::Auto, PasswordScheme::Basic, PasswordScheme::Ntlm] {
            assert_eq!(scheme.to_string().parse::<PasswordScheme>(), Ok(scheme));
            assert_eq!(serde_json::to_value(scheme).unwrap(), scheme.as_str());
        }
        assert_eq!(PasswordScheme::default(), PasswordScheme::Auto);
        assert!("kerberos".parse::<PasswordScheme>().unwrap_err().contains("kerberos"));
    }
}
