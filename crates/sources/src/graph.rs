//! Exchange / Microsoft Graph: one mailbox folder read through per-folder
//! delta queries, raw MIME through `/$value`, settled by move, PATCH isRead
//! or delete. Every request asks for immutable ids, so a message keeps its
//! id when it moves and the journal's remote ids stay true.
//!
//! Layers: [`GraphClient`] speaks HTTP and Graph's error JSON (throttling
//! with Retry-After, a fresh token after a 401); [`GraphSource`] is the
//! mailbox logic on top.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::paging::Paging;
use crate::{BearerTokens, Listing, MailSource, Outcome, RemoteMail, SettleAction, SourceError};

/// Outlook allows 4 concurrent requests per app and mailbox.
const MAX_CONCURRENT: usize = 4;
/// After a `MailboxConcurrency` refusal, one more request in flight is tried
/// again once this long has passed without one.
const PROBE_AFTER: Duration = Duration::from_secs(5);
/// Asked of the delta query; Graph may send fewer.
const DELTA_PAGE_SIZE: usize = 200;
/// A delta page of 200 ids and dates is tens of kilobytes; a server's page
/// is read no further than this.
const DELTA_PAGE_BYTES: u64 = 4 << 20;
/// When Graph throttles without Retry-After, wait this long (peers report
/// that guessing short leads to longer penalties).
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);
use crate::throttle::{MAX_ATTEMPTS, MAX_WAIT_IN_PASS};
/// Mails per fetch (see [`MailSource::max_batch`]).
const MAX_BATCH: usize = 100;
/// Bytes of mail one fetch holds before it defers the rest (Graph lists
/// no sizes, so the pipeline cannot size batches by bytes).
const FETCH_BYTES: u64 = 32 << 20;
/// Graph's JSON batching takes up to 20 requests per `POST /$batch`.
const BATCH_SIZE: usize = 20;

/// Graph has no `SuppressReadReceipts`: Outlook sends the read receipt a
/// sender asked for when a message is PATCHed `isRead` (reported in
/// msgraph-sdk-php#1169; Microsoft documents no way around it).
pub const MARK_READ_WARNING: &str = "settling by mark-read through Graph makes Exchange send a read receipt to every \
     sender who asked for one (Graph cannot suppress it, unlike EWS): use --settle move (the default) for mailboxes \
     that strangers write to";

#[derive(Clone)]
pub struct GraphConfig {
    /// Graph host without version, e.g. `https://graph.microsoft.com`.
    pub base_url: String,
    /// The mailbox: a user's or a shared mailbox's address.
    pub address: String,
    /// Well-known name (`inbox`) or display-name path (`Inbox/Support`).
    pub folder: String,
    pub processed_folder: String,
    pub error_folder: String,
    pub settle: SettleAction,
    pub tokens: Arc<dyn BearerTokens>,
    pub timeout: Duration,
    /// The deltaLink stored after the last complete pass, if any.
    pub delta_link: Option<String>,
    /// Mails over this many bytes are not downloaded (Graph lists no sizes:
    /// Content-Length tells, or reading stops there).
    pub max_message_bytes: Option<u64>,
}

/// Graph's error JSON: `{"error":{"code","message","innerError":{…}}}`.
#[derive(Debug, Default, Deserialize)]
struct GraphErrorBody {
    #[serde(default)]
    error: GraphErrorDetail,
}

#[derive(Debug, Default, Deserialize)]
struct GraphErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl GraphErrorBody {
    /// Outlook's refusal for too many requests of one app on one mailbox at
    /// once ("Application is over its MailboxConcurrency limit."): another
    /// client of the same app holds some of the 4 slots.
    fn is_concurrency_refusal(&self, status: u16) -> bool {
        status == 429 && self.error.message.to_ascii_lowercase().contains("mailboxconcurrency")
    }
}

/// How many requests of this mailbox may be in flight: Outlook's 4, fewer
/// while other clients of the same app hold some of them. A
/// `MailboxConcurrency` refusal takes one away; after [`PROBE_AFTER`]
/// without one, a success gives one back.
struct Allowance {
    state: std::sync::Mutex<AllowanceState>,
    freed: tokio::sync::Notify,
}

struct AllowanceState {
    allowed: usize,
    in_flight: usize,
    changed: tokio::time::Instant,
}

/// One request in flight; dropping it frees its place.
struct InFlight<'a>(&'a Allowance);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
        self.0.freed.notify_waiters();
    }
}

impl Allowance {
    fn new() -> Self {
        let state = AllowanceState { allowed: MAX_CONCURRENT, in_flight: 0, changed: tokio::time::Instant::now() };
        Self { state: std::sync::Mutex::new(state), freed: tokio::sync::Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AllowanceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a place among the allowed requests in flight.
    async fn acquire(&self) -> InFlight<'_> {
        loop {
            // Registered before looking, so a place freed in between wakes it.
            let freed = self.freed.notified();
            {
                let mut state = self.lock();
                if state.in_flight < state.allowed {
                    state.in_flight += 1;
                    return InFlight(self);
                }
            }
            freed.await;
        }
    }

    fn allowed(&self) -> usize {
        self.lock().allowed
    }

    fn refused(&self) {
        let mut state = self.lock();
        state.allowed = state.allowed.saturating_sub(1).max(1);
        state.changed = tokio::time::Instant::now();
    }

    fn succeeded(&self) {
        let mut state = self.lock();
        if state.allowed < MAX_CONCURRENT && state.changed.elapsed() >= PROBE_AFTER {
            state.allowed += 1;
            state.changed = tokio::time::Instant::now();
            drop(state);
            self.freed.notify_waiters();
        }
    }
}

/// One request inside a `$batch`: its URL is relative to the version
/// (`/users/{address}/messages/{id}/move`).
#[derive(Debug, Clone)]
struct BatchRequest {
    method: &'static str,
    url: String,
    body: Option<Value>,
}

impl BatchRequest {
    fn to_json(&self, id: usize) -> Value {
        let mut item = json!({
            "id": id.to_string(),
            "method": self.method,
            "url": self.url,
            // Headers are per item: immutable ids must be asked for in each.
            "headers": {"Prefer": "IdType=\"ImmutableId\""},
        });
        if let Some(body) = &self.body {
            item["body"] = body.clone();
            item["headers"]["Content-Type"] = json!("application/json");
        }
        item
    }
}

/// A `$batch` response, read in place from its bytes.
#[derive(Debug, Deserialize)]
struct BatchAnswer<'a> {
    #[serde(borrow, default)]
    responses: Vec<BatchResponse<'a>>,
}

/// One answer inside a `$batch` response. Its body stays raw JSON text
/// (a move answers with the whole message): only an error's is read.
#[derive(Debug, Deserialize)]
struct BatchResponse<'a> {
    id: String,
    status: u16,
    #[serde(default)]
    headers: std::collections::HashMap<String, String>,
    #[serde(borrow, default)]
    body: Option<&'a serde_json::value::RawValue>,
}

impl BatchResponse<'_> {
    fn error_body(&self) -> GraphErrorBody {
        self.body.and_then(|b| serde_json::from_str(b.get()).ok()).unwrap_or_default()
    }

    fn retry_after(&self) -> Option<Duration> {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
            .and_then(|(_, v)| crate::throttle::parse_retry_after(v))
    }
}

/// What a `$batch` answer said about one request.
#[derive(Debug)]
enum ItemOutcome {
    Done,
    /// 404 ErrorItemNotFound: settled before (settling is idempotent).
    Gone,
    /// No answer for it: sent again.
    Unanswered,
    /// 424: not run, the item before it in a sequential batch failed.
    NotRun,
    /// A transient error (with the item's Retry-After): sent again;
    /// `concurrency` when Outlook's MailboxConcurrency limit refused it.
    Retry {
        error: SourceError,
        retry_after: Option<Duration>,
        concurrency: bool,
    },
}

/// What a request carries.
#[derive(Clone, Copy)]
enum RequestBody<'a> {
    Json(&'a Value),
    /// `text/plain` (sendMail's base64 MIME).
    Text(&'a str),
}

/// HTTP to Graph for one mailbox.
pub struct GraphClient {
    http: reqwest::Client,
    pub(crate) cfg: GraphConfig,
    token: tokio::sync::Mutex<Option<String>>,
    /// The server asked for quiet until then: shared by every request of
    /// this mailbox.
    quiet_until: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Requests of this mailbox in flight at once.
    allowance: Allowance,
}

impl GraphClient {
    pub fn new(cfg: GraphConfig) -> Result<Self, SourceError> {
        let tls = crate::tls::client_config(None)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(cfg.timeout)
            .user_agent(concat!("mailrobot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::permanent(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            cfg,
            token: tokio::sync::Mutex::new(None),
            quiet_until: std::sync::Mutex::new(None),
            allowance: Allowance::new(),
        })
    }

    /// `{base}/v1.0/users/{address}{path}`.
    pub fn user_url(&self, path: &str) -> String {
        format!("{}/v1.0{}", self.cfg.base_url.trim_end_matches('/'), self.user_path(path))
    }

    /// `/users/{address}{path}`, relative to the version (as `$batch` items want it).
    fn user_path(&self, path: &str) -> String {
        let address: String = url::form_urlencoded::byte_serialize(self.cfg.address.as_bytes()).collect();
        format!("/users/{address}{path}")
    }

    async fn bearer(&self, renew: bool) -> Result<String, SourceError> {
        let mut cached = self.token.lock().await;
        if renew || cached.is_none() {
            *cached = Some(self.cfg.tokens.token(renew).await?);
        }
        Ok(cached.clone().unwrap_or_default())
    }

    /// Sends a request. Throttling (429/503, with or without Retry-After)
    /// and dropped connections are retried a few times with backoff, and a
    /// throttle holds back every request of this mailbox, not just the one
    /// that got it; a 401 gets one retry with a fresh token. What still fails
    /// is mapped to what the mailbox's state should say.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, SourceError> {
        self.send_body(method, url, body.map(RequestBody::Json)).await
    }

    /// [`send`](Self::send) with any kind of body.
    async fn send_body(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<RequestBody<'_>>,
    ) -> Result<reqwest::Response, SourceError> {
        // The bearer token is for the configured Graph only, whatever link
        // a server answered or the database handed back.
        if !crate::plaintext::same_origin(url, &self.cfg.base_url) {
            return Err(SourceError::permanent(format!(
                "refusing to send this mailbox's token to {}: not the configured Graph {}",
                origin_of(url),
                self.cfg.base_url
            )));
        }
        let mut renew = false;
        let mut backoff = Duration::from_millis(500);
        for attempt in 1..=MAX_ATTEMPTS {
            // A place among the requests this mailbox may have in flight,
            // given back once the answer is in.
            let in_flight = self.allowance.acquire().await;
            self.wait_for_quiet().await;
            let token = self.bearer(renew).await?;
            let mut request = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token)
                // Ids survive moves within the mailbox (case-sensitive value).
                .header("Prefer", "IdType=\"ImmutableId\"");
            match body {
                Some(RequestBody::Json(value)) => request = request.json(value),
                Some(RequestBody::Text(text)) => {
                    request = request.header(reqwest::header::CONTENT_TYPE, "text/plain").body(text.to_string())
                }
                None => {}
            }
            let (error, asked) = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    self.allowance.succeeded();
                    return Ok(response);
                }
                Ok(response) if response.status().as_u16() == 401 && !renew => {
                    renew = true;
                    continue;
                }
                Ok(response) => {
                    let asked = retry_after(&response);
                    (self.error_from(response).await, asked)
                }
                Err(e) => (network_error(&self.cfg, &e), None),
            };
            drop(in_flight);
            if !error.is_transient() || attempt == MAX_ATTEMPTS {
                return Err(error);
            }
            // The server's Retry-After, else our own growing backoff.
            let wait = asked.unwrap_or(backoff);
            if wait > MAX_WAIT_IN_PASS {
                // A long quiet: end the pass; the stored not-before time
                // keeps every process away until then.
                return Err(error);
            }
            if error.retry_after().is_some() {
                // Throttled: hold back every request of this mailbox.
                self.hold_back(wait);
            }
            tracing::debug!(mailbox = %self.cfg.address, attempt, wait_ms = wait.as_millis() as u64, error = %error, "retrying a Graph request");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(8));
        }
        unreachable!("the last attempt returns")
    }

    /// Sends a mail as this mailbox: `POST /users/{address}/sendMail` with the
    /// MIME message as base64 `text/plain` (Graph keeps it in Sent Items).
    /// Needs `Mail.Send` (application) or `Mail.Send.Shared` (delegated, for
    /// a shared mailbox).
    pub async fn send_mime(&self, mime: &[u8]) -> Result<(), SourceError> {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(mime);
        let url = self.user_url("/sendMail");
        self.send_body(reqwest::Method::POST, &url, Some(RequestBody::Text(&encoded))).await?;
        Ok(())
    }

    /// Waits until the mailbox's throttle (if any) has passed.
    async fn wait_for_quiet(&self) {
        loop {
            let until = *self.quiet_until.lock().unwrap_or_else(|p| p.into_inner());
            match until {
                Some(until) if until > tokio::time::Instant::now() => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }

    /// No request for this mailbox before `wait` has passed.
    fn hold_back(&self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        let mut quiet = self.quiet_until.lock().unwrap_or_else(|p| p.into_inner());
        if quiet.is_none_or(|current| current < until) {
            *quiet = Some(until);
        }
    }

    pub(crate) async fn json(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, SourceError> {
        self.json_capped(method, url, body, crate::http_body::JSON_PAGE).await
    }

    /// The answer's body, read no further than `cap` bytes; empty for 204.
    async fn answer(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        cap: u64,
    ) -> Result<Vec<u8>, SourceError> {
        let response = self.send(method, url, body).await?;
        if response.status().as_u16() == 204 {
            return Ok(Vec::new());
        }
        crate::http_body::read_capped(response, cap)
            .await
            .map_err(|e| SourceError::transient(format!("reading Graph's answer: {e}")).with_source(e))
    }

    /// An answer read into the type that holds what the robot uses: unknown
    /// fields are skipped, not kept (a `Value` tree costs 60–100 bytes per
    /// byte of small objects).
    async fn typed<T: serde::de::DeserializeOwned>(&self, url: &str, cap: u64) -> Result<T, SourceError> {
        let body = self.answer(reqwest::Method::GET, url, None, cap).await?;
        serde_json::from_slice(&body)
            .map_err(|e| SourceError::transient(format!("Graph sent unreadable JSON: {e}")).with_source(e))
    }

    /// [`json`](Self::json) for an answer that may be up to `cap` bytes.
    async fn json_capped(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
        cap: u64,
    ) -> Result<Value, SourceError> {
        let body = self.answer(method, url, body, cap).await?;
        if body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body)
            .map_err(|e| SourceError::transient(format!("Graph sent unreadable JSON: {e}")).with_source(e))
    }

    /// Runs `requests` through JSON batching, [`BATCH_SIZE`] per `POST
    /// /$batch` — or, while other clients of the app hold some of the
    /// mailbox's 4 slots, only as many as this mailbox may have in flight:
    /// Graph runs up to 4 items of a batch at once, each counting against
    /// Outlook's limit like a request of its own. Graph throttles each item
    /// on its own: items answered 429/503 (or 5xx) go out again after the
    /// longest Retry-After among them, holding back the whole mailbox
    /// meanwhile (the next batch waits too). An item answered 404
    /// ErrorItemNotFound counts as done (settling is idempotent). The pass
    /// gives up after [`MAX_ATTEMPTS`] batches in a row that settled nothing.
    async fn batch(&self, requests: Vec<BatchRequest>) -> Result<(), SourceError> {
        let url = format!("{}/v1.0/$batch", self.cfg.base_url.trim_end_matches('/'));
        let mut pending: std::collections::VecDeque<(usize, BatchRequest)> = requests.into_iter().enumerate().collect();
        let mut backoff = Duration::from_millis(500);
        let mut fruitless = 0;
        while !pending.is_empty() {
            // With one place left, a fully sequential batch (each item
            // depends on the one before) still carries 20 items on one slot.
            let (size, sequential) = match self.allowance.allowed() {
                1 => (BATCH_SIZE, true),
                MAX_CONCURRENT.. => (BATCH_SIZE, false),
                fewer => (fewer, false),
            };
            let chunk: Vec<(usize, BatchRequest)> = pending.drain(..size.min(pending.len())).collect();
            let items: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(k, (i, r))| {
                    let mut item = r.to_json(*i);
                    if sequential && k > 0 {
                        item["dependsOn"] = json!([chunk[k - 1].0.to_string()]);
                    }
                    item
                })
                .collect();
            // A move answers with the whole message, body included: up to
            // about twice each mail's size once escaped into JSON.
            let per_item = self.cfg.max_message_bytes.unwrap_or(50 << 20).saturating_mul(2);
            let cap = crate::http_body::JSON_PAGE.saturating_add(per_item.saturating_mul(items.len() as u64));
            let answer = self.answer(reqwest::Method::POST, &url, Some(&json!({ "requests": items })), cap).await?;
            let sent = chunk.len();
            let mut again: Vec<(usize, BatchRequest)> = Vec::new();
            let mut last_error = None;
            let mut asked: Option<Duration> = None;
            let mut throttled = false;
            let mut unanswered = false;
            for (i, request, outcome) in self.batch_answer(&answer, &chunk)? {
                match outcome {
                    ItemOutcome::Done => self.allowance.succeeded(),
                    ItemOutcome::Gone => {}
                    ItemOutcome::Unanswered => {
                        unanswered = true;
                        again.push((i, request));
                    }
                    ItemOutcome::NotRun => again.push((i, request)),
                    ItemOutcome::Retry { error, retry_after: item_retry_after, concurrency } => {
                        if concurrency {
                            self.allowance.refused();
                        }
                        // As for single requests: the server's Retry-After, else our backoff.
                        asked = asked.max(item_retry_after);
                        throttled |= error.retry_after().is_some();
                        last_error = Some(error);
                        again.push((i, request));
                    }
                }
            }
            let settled_some = again.len() < sent;
            if last_error.is_none() && !unanswered && settled_some {
                // Done, or only items behind one that is gone (404, settled):
                // those go out again at once.
                fruitless = 0;
                for item in again.into_iter().rev() {
                    pending.push_front(item);
                }
                continue;
            }
            fruitless = if settled_some { 0 } else { fruitless + 1 };
            let error = last_error
                .unwrap_or_else(|| SourceError::transient("Graph left $batch requests unanswered or not run"));
            let wait = asked.unwrap_or(backoff);
            if fruitless >= MAX_ATTEMPTS || wait > MAX_WAIT_IN_PASS {
                return Err(error);
            }
            tracing::debug!(mailbox = %self.cfg.address, fruitless, items = again.len(), wait_ms = wait.as_millis() as u64, error = %error, "sending $batch items again");
            if throttled {
                // Every request of the mailbox waits, the next batch too.
                self.hold_back(wait);
            } else {
                tokio::time::sleep(wait).await;
            }
            if !settled_some {
                backoff = (backoff * 2).min(Duration::from_secs(8));
            }
            // Sent again first, in their order.
            for item in again.into_iter().rev() {
                pending.push_front(item);
            }
        }
        Ok(())
    }

    /// Reads one `$batch` answer for `chunk`: what became of each request.
    /// A permanent error ends the batch. The fuzz target reads answers
    /// through this very function.
    fn batch_answer(
        &self,
        answer: &[u8],
        chunk: &[(usize, BatchRequest)],
    ) -> Result<Vec<(usize, BatchRequest, ItemOutcome)>, SourceError> {
        let BatchAnswer { responses } = serde_json::from_slice(answer)
            .map_err(|e| SourceError::transient(format!("Graph sent an unreadable $batch answer: {e}")))?;
        let mut out = Vec::with_capacity(chunk.len());
        // Answers may come in any order; an item without one is sent again.
        for (i, request) in chunk {
            let Some(r) = responses.iter().find(|r| r.id == i.to_string()) else {
                out.push((*i, request.clone(), ItemOutcome::Unanswered));
                continue;
            };
            if (200..300).contains(&r.status) {
                out.push((*i, request.clone(), ItemOutcome::Done));
                continue;
            }
            if r.status == 424 {
                // Not run: the item before it in a sequential batch failed.
                out.push((*i, request.clone(), ItemOutcome::NotRun));
                continue;
            }
            let body = r.error_body();
            if r.status == 404 && matches!(body.error.code.as_str(), "ErrorItemNotFound" | "") {
                out.push((*i, request.clone(), ItemOutcome::Gone));
                continue;
            }
            let retry_after = r.retry_after();
            let error = self.error_for(r.status, retry_after, &body);
            if !error.is_transient() {
                return Err(error);
            }
            let concurrency = body.is_concurrency_refusal(r.status);
            out.push((*i, request.clone(), ItemOutcome::Retry { error, retry_after, concurrency }));
        }
        Ok(out)
    }

    /// What an error answer means; a `MailboxConcurrency` refusal also
    /// takes a request away from those this mailbox may have in flight.
    async fn error_from(&self, response: reqwest::Response) -> SourceError {
        let status = response.status().as_u16();
        let retry_after = retry_after(&response);
        let body: GraphErrorBody = crate::http_body::read_capped(response, crate::http_body::SMALL)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if body.is_concurrency_refusal(status) {
            self.allowance.refused();
        }
        self.error_for(status, retry_after, &body).with_http_status(status)
    }

    /// What a Graph error answer means for the mailbox.
    fn error_for(&self, status: u16, retry_after: Option<Duration>, body: &GraphErrorBody) -> SourceError {
        let detail = if body.error.code.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("{}: {}", body.error.code, body.error.message)
        };
        let mailbox = &self.cfg.address;
        // An expired delta state: Outlook answers 410 Gone with
        // `SyncStateNotFound` (the docs write `syncStateNotFound`, and
        // `resyncRequired` occurs too). Any 410, and these codes in any case.
        let code = body.error.code.as_str();
        if status == 410 || ["syncStateNotFound", "resyncRequired"].iter().any(|c| c.eq_ignore_ascii_case(code)) {
            return SourceError::sync_state_expired(format!(
                "Graph no longer knows the delta state of mailbox {mailbox} ({detail}); listing the folder again"
            ));
        }
        match (status, code) {
            (429, _) | (503, _) | (509, _) => SourceError::throttled(
                format!("Graph throttles mailbox {mailbox} ({detail}); waiting before the next request"),
                retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
            ),
            (s, _) if s >= 500 => SourceError::transient(format!("Graph failed for mailbox {mailbox}: {detail}")),
            (403, _) => SourceError::permanent(format!(
                "access to mailbox {mailbox} denied ({detail}). Delegated connections reach only mailboxes the \
                 signed-in user can open (grant that user Full Access); application connections need Mail.ReadWrite \
                 with admin consent, and an application access policy may exclude this mailbox"
            )),
            (404, "MailboxNotEnabledForRESTAPI") => SourceError::permanent(format!(
                "mailbox {mailbox} cannot be reached through Graph ({detail}): it is on-premises or not licensed for \
                 Exchange Online; use EWS or IMAP for it"
            )),
            (400, "ErrorInvalidIdMalformed") => SourceError::permanent(format!(
                "Graph does not take a message id stored for mailbox {mailbox} ({detail}): ids from EWS or from \
                 another mailbox do not work here; `mailrobot messages list --mailbox` shows the id"
            )),
            (404, "ErrorInvalidUser") | (404, "ResourceNotFound") => {
                SourceError::permanent(format!("no mailbox {mailbox} in this tenant ({detail}); check the address"))
            }
            (401, _) => SourceError::permanent(format!(
                "Graph refused the connection's token for mailbox {mailbox} ({detail}); check the connection's scopes"
            )),
            _ => SourceError::permanent(format!("Graph refused a request for mailbox {mailbox}: {detail}")),
        }
    }
}

/// Retry-After, when the server sent one.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    crate::throttle::retry_after(response.headers())
}

fn network_error(cfg: &GraphConfig, e: &reqwest::Error) -> SourceError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    SourceError::transient(format!("a request to Graph ({}) for mailbox {} {what}", cfg.base_url, cfg.address))
}

fn is_not_found(e: &SourceError) -> bool {
    e.is_permanent() && (e.to_string().contains("ErrorItemNotFound") || e.to_string().contains("HTTP 404"))
}

/// Where a delta page leads.
#[derive(Debug, PartialEq, Eq)]
enum DeltaNext {
    /// Another page: its nextLink.
    Page(String),
    /// The last page: the deltaLink for the next pass.
    Done(String),
}

/// Messages listed by the delta pages so far: (id, receivedDateTime) in
/// the order first seen, each once.
#[derive(Debug, Default)]
struct Found {
    messages: Vec<(String, String)>,
    /// The ids in `messages`: a folder's first listing runs to many
    /// thousands, and looking each up in the list took quadratic time.
    ids: std::collections::HashSet<String>,
}

/// One page of a messages delta: what the robot reads of it.
#[derive(Debug, Deserialize)]
struct DeltaPage {
    #[serde(default)]
    value: Vec<DeltaItem>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DeltaItem {
    id: Option<String>,
    #[serde(rename = "receivedDateTime")]
    received: Option<String>,
    /// Present (any value) when the message left the folder.
    #[serde(rename = "@removed")]
    removed: Option<serde::de::IgnoredAny>,
}

/// Reads one delta page's messages into `found`; `paging` ends a listing
/// whose pages never end.
fn delta_page(page: DeltaPage, found: &mut Found, paging: &mut Paging) -> Result<DeltaNext, SourceError> {
    let items = page.value.len();
    for item in page.value {
        let Some(id) = item.id else { continue };
        // The same change can come twice; removed ones are gone.
        if item.removed.is_none() && found.ids.insert(id.clone()) {
            found.messages.push((id, item.received.unwrap_or_default()));
        }
    }
    if let Some(next) = page.next_link {
        paging.next_page(items, found.messages.len())?;
        Ok(DeltaNext::Page(next))
    } else if let Some(delta) = page.delta_link {
        Ok(DeltaNext::Done(delta))
    } else {
        Err(SourceError::transient("a Graph delta page had neither nextLink nor deltaLink"))
    }
}

/// A Graph mailbox folder as a [`MailSource`].
pub struct GraphSource {
    client: GraphClient,
    folder_id: String,
    processed_id: Option<String>,
    error_id: String,
    /// The deltaLink reached by the last complete `list`.
    next_delta: Option<String>,
}

impl GraphSource {
    /// Resolves the folders (creating the processed and error folders if
    /// missing), which also proves the token and the mailbox work.
    pub async fn connect(cfg: GraphConfig) -> Result<Self, SourceError> {
        let client = GraphClient::new(cfg.clone())?;
        let folder_id = resolve_folder(&client, &cfg.folder, false).await?;
        let processed_id = match cfg.settle {
            SettleAction::Move => Some(resolve_folder(&client, &cfg.processed_folder, true).await?),
            _ => None,
        };
        let error_id = resolve_folder(&client, &cfg.error_folder, true).await?;
        Ok(Self { client, folder_id, processed_id, error_id, next_delta: None })
    }

    /// Follows delta pages from `start` to the deltaLink; returns the ids of
    /// messages present (not removed), oldest first, and the deltaLink.
    async fn delta(&self, start: &str) -> Result<(Vec<String>, String), SourceError> {
        let mut url = start.to_string();
        if !crate::plaintext::same_origin(&url, &self.client.cfg.base_url) {
            // A stored link elsewhere (the Graph URL changed, or the database
            // was edited): start over at the configured Graph.
            tracing::warn!(mailbox = %self.client.cfg.address, link_origin = %origin_of(&url), "stored Graph delta link is not on the configured Graph; listing the folder again");
            url = self.initial_delta_url();
        }
        let mut found = Found::default();
        let mut paging = Paging::new(format!("Graph delta pages for mailbox {}", self.client.cfg.address));
        loop {
            let page = self.client.typed(&url, DELTA_PAGE_BYTES).await?;
            match delta_page(page, &mut found, &mut paging)? {
                DeltaNext::Page(next) => url = next,
                DeltaNext::Done(delta) => {
                    // Delta pages come in no particular order; a reply must be
                    // processed after the mail it answers.
                    let mut found = found.messages;
                    found.sort_by(|a, b| a.1.cmp(&b.1));
                    return Ok((found.into_iter().map(|(id, _)| id).collect(), delta));
                }
            }
        }
    }

    fn initial_delta_url(&self) -> String {
        let folder: String = url::form_urlencoded::byte_serialize(self.folder_id.as_bytes()).collect();
        self.client.user_url(&format!(
            "/mailFolders/{folder}/messages/delta?$select=id,receivedDateTime&$top={DELTA_PAGE_SIZE}"
        ))
    }
}

/// A folder's id from a well-known name or a `/`-separated display-name
/// path, created (at the mailbox root) if `create` and missing.
pub(crate) async fn resolve_folder(client: &GraphClient, name: &str, create: bool) -> Result<String, SourceError> {
    const WELL_KNOWN: &[&str] = &[
        "archive",
        "clutter",
        "conflicts",
        "conversationhistory",
        "deleteditems",
        "drafts",
        "inbox",
        "junkemail",
        "localfailures",
        "msgfolderroot",
        "outbox",
        "recoverableitemsdeletions",
        "scheduled",
        "searchfolders",
        "sentitems",
        "serverfailures",
        "syncissues",
    ];
    if WELL_KNOWN.contains(&name.to_ascii_lowercase().as_str()) {
        let folder = client
            .json(reqwest::Method::GET, &client.user_url(&format!("/mailFolders/{}", name.to_ascii_lowercase())), None)
            .await?;
        return folder["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| SourceError::transient("Graph folder without id"));
    }
    let mut parent: Option<String> = None;
    for part in name.split('/').filter(|p| !p.is_empty()) {
        let id = match child_folder(client, parent.as_deref(), part).await? {
            Some(id) => id,
            None if create => {
                let create_url = match &parent {
                    None => client.user_url("/mailFolders"),
                    Some(id) => client.user_url(&format!("/mailFolders/{id}/childFolders")),
                };
                match client.json(reqwest::Method::POST, &create_url, Some(&json!({"displayName": part}))).await {
                    Ok(made) => {
                        tracing::info!(folder = name, "created Graph mail folder");
                        made["id"]
                            .as_str()
                            .map(str::to_string)
                            .ok_or_else(|| SourceError::transient("created folder without id"))?
                    }
                    // Another process (a poll, a connection test, another
                    // node) made it since we looked: Exchange refuses the
                    // duplicate name. Its folder is ours.
                    Err(refused) => child_folder(client, parent.as_deref(), part).await?.ok_or(refused)?,
                }
            }
            None => {
                return Err(SourceError::permanent(format!(
                    "mailbox {} has no folder {name:?}; give a well-known name (inbox) or an existing folder path",
                    client.cfg.address
                )));
            }
        };
        parent = Some(id);
    }
    parent.ok_or_else(|| SourceError::permanent("an empty folder name"))
}

/// The id of the folder called `name` (any case) at the mailbox root or
/// under `parent`, if there is one.
async fn child_folder(client: &GraphClient, parent: Option<&str>, name: &str) -> Result<Option<String>, SourceError> {
    let list_url = match parent {
        None => client.user_url("/mailFolders?$top=250&includeHiddenFolders=false"),
        Some(id) => client.user_url(&format!("/mailFolders/{id}/childFolders?$top=250")),
    };
    let listing = client.json(reqwest::Method::GET, &list_url, None).await?;
    Ok(listing["value"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["displayName"].as_str().is_some_and(|d| d.eq_ignore_ascii_case(name)))
        .and_then(|f| f["id"].as_str().map(str::to_string)))
}

#[async_trait::async_trait]
impl MailSource for GraphSource {
    async fn list(&mut self) -> Result<Vec<Listing>, SourceError> {
        let (ids, delta) = match self.client.cfg.delta_link.clone() {
            Some(link) => match self.delta(&link).await {
                Ok(result) => result,
                // The stored link is dropped: start over. The journal knows
                // what it already has, so nothing becomes a ticket twice.
                Err(e) if e.is_sync_state_expired() => {
                    tracing::warn!(mailbox = %self.client.cfg.address, error = %e, "Graph delta state expired; listing the folder again");
                    self.delta(&self.initial_delta_url()).await?
                }
                Err(e) => return Err(e),
            },
            None => self.delta(&self.initial_delta_url()).await?,
        };
        self.next_delta = Some(delta);
        Ok(ids.into_iter().map(|remote_id| Listing { remote_id, size: None }).collect())
    }

    async fn fetch(&mut self, remote_ids: &[String]) -> Result<Vec<RemoteMail>, SourceError> {
        let client = &self.client;
        // Graph lists no sizes: once this fetch holds FETCH_BYTES, the mails
        // not yet started are handed back for the next batch (those in
        // flight finish), so a fetch holds at most FETCH_BYTES plus four
        // mails whatever their sizes.
        let held = &std::sync::atomic::AtomicU64::new(0);
        // Owned ids: async_trait futures must not borrow through closures.
        let results: Vec<Result<Option<RemoteMail>, SourceError>> = futures::stream::iter(remote_ids.to_vec())
            .map(|id: String| async move {
                if held.load(std::sync::atomic::Ordering::Relaxed) >= FETCH_BYTES {
                    return Ok(Some(RemoteMail::deferred(id)));
                }
                let url = client.user_url(&format!("/messages/{}/$value", encode(&id)));
                match client.send(reqwest::Method::GET, &url, None).await {
                    Ok(response) => {
                        let mail = read_mime(&client.cfg, id, response).await?;
                        held.fetch_add(mail.raw.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        Ok(Some(mail))
                    }
                    // Gone since the listing: left out, as the trait asks.
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            // In listing order (oldest first), four at a time.
            .buffered(MAX_CONCURRENT)
            .collect()
            .await;
        let mut mails = Vec::with_capacity(results.len());
        for result in results {
            if let Some(mail) = result? {
                mails.push(mail);
            }
        }
        Ok(mails)
    }

    /// Moves, marks read or deletes through `$batch`: 20 mails per request
    /// instead of one request each.
    async fn settle(&mut self, outcomes: &[(String, Outcome)]) -> Result<(), SourceError> {
        let client = &self.client;
        let move_to = |folder: &str, message: String| BatchRequest {
            method: "POST",
            url: format!("{message}/move"),
            body: Some(json!({ "destinationId": folder })),
        };
        let requests = outcomes
            .iter()
            .map(|(id, outcome)| {
                let message = client.user_path(&format!("/messages/{}", encode(id)));
                match (outcome, client.cfg.settle) {
                    (Outcome::Failed, _) => move_to(&self.error_id, message),
                    (Outcome::Processed, SettleAction::Move) => {
                        move_to(self.processed_id.as_deref().unwrap_or_default(), message)
                    }
                    (Outcome::Processed, SettleAction::MarkRead) => {
                        BatchRequest { method: "PATCH", url: message, body: Some(json!({"isRead": true})) }
                    }
                    (Outcome::Processed, SettleAction::Delete) => {
                        BatchRequest { method: "DELETE", url: message, body: None }
                    }
                }
            })
            .collect();
        client.batch(requests).await
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    fn resettle_if_listed_again(&self) -> bool {
        true
    }

    fn sync_state(&self) -> Option<String> {
        self.next_delta.clone()
    }

    /// One `$value` request per mail: batches of 100 keep a throttled fetch
    /// from discarding much.
    fn max_batch(&self) -> Option<usize> {
        Some(MAX_BATCH)
    }

    async fn probe(&mut self) -> Result<crate::Probe, SourceError> {
        let listing =
            self.client.json(reqwest::Method::GET, &self.client.user_url("/mailFolders?$top=250"), None).await?;
        let mut folders = Vec::new();
        let mut unread = None;
        for folder in listing["value"].as_array().into_iter().flatten() {
            let probe = crate::FolderProbe {
                name: folder["displayName"].as_str().unwrap_or_default().to_string(),
                total: folder["totalItemCount"].as_u64(),
                unread: folder["unreadItemCount"].as_u64(),
            };
            if folder["id"].as_str() == Some(self.folder_id.as_str()) {
                unread = probe.unread;
            }
            folders.push(probe);
        }
        // Counting what waits would move the delta state; this only looks.
        let waiting = self.delta(&self.initial_delta_url()).await?.0.len();
        Ok(crate::Probe { folders, waiting, unread })
    }
}

/// Fuzzing ([`crate::fuzzing`]): every reader of a Graph answer, with
/// `body` as the answer: the error JSON (for each status that has a
/// meaning), a delta page, a `$batch` answer.
pub(crate) fn read_answer(body: &[u8]) {
    struct NoTokens;
    #[async_trait::async_trait]
    impl BearerTokens for NoTokens {
        async fn token(&self, _renew: bool) -> Result<String, SourceError> {
            Err(SourceError::permanent("no tokens while fuzzing"))
        }
    }
    thread_local! {
        static CLIENT: GraphClient = GraphClient::new(GraphConfig {
            base_url: "https://graph.fuzz.invalid".into(),
            address: "desk@fuzz.invalid".into(),
            folder: "inbox".into(),
            processed_folder: "Processed".into(),
            error_folder: "Failed".into(),
            settle: SettleAction::Move,
            tokens: Arc::new(NoTokens),
            timeout: Duration::from_secs(5),
            delta_link: None,
            max_message_bytes: Some(1 << 20),
        })
        .expect("a Graph client without a server");
    }
    CLIENT.with(|client| {
        let error: GraphErrorBody = serde_json::from_slice(body).unwrap_or_default();
        for status in [400, 401, 403, 404, 409, 410, 429, 500, 503, 509] {
            let _ = client.error_for(status, Some(Duration::from_secs(1)), &error);
        }
        let mut found = Found::default();
        if let Ok(page) = serde_json::from_slice::<DeltaPage>(body) {
            let _ = delta_page(page, &mut found, &mut Paging::new("fuzzed pages"));
        }
        let unique: std::collections::HashSet<&String> = found.messages.iter().map(|(id, _)| id).collect();
        assert_eq!(unique.len(), found.messages.len(), "a delta page listed a message twice");
        let chunk: Vec<(usize, BatchRequest)> = (0..BATCH_SIZE)
            .map(|i| (i, BatchRequest { method: "POST", url: format!("/users/x/messages/{i}/move"), body: None }))
            .collect();
        if let Ok(outcomes) = client.batch_answer(body, &chunk) {
            assert_eq!(outcomes.len(), chunk.len(), "a $batch answer lost requests");
        }
    });
}

/// Reads a `$value` body as it streams in, giving up on a mail over the
/// mailbox's limit as soon as that is known.
async fn read_mime(cfg: &GraphConfig, id: String, mut response: reqwest::Response) -> Result<RemoteMail, SourceError> {
    let limit = cfg.max_message_bytes.unwrap_or(u64::MAX);
    let announced = response.content_length();
    if let Some(size) = announced.filter(|size| *size > limit) {
        return Ok(RemoteMail::oversized(id, size));
    }
    let mut raw = Vec::with_capacity(announced.unwrap_or(0) as usize);
    while let Some(chunk) = response.chunk().await.map_err(|e| network_error(cfg, &e))? {
        raw.extend_from_slice(&chunk);
        if raw.len() as u64 > limit {
            return Ok(RemoteMail::oversized(id, raw.len() as u64));
        }
    }
    Ok(RemoteMail::new(id, raw))
}

/// `scheme://host[:port]` of a URL, for messages (never its path or query,
/// which may carry tokens).
fn origin_of(url: &str) -> String {
    url::Url::parse(url).map(|u| u.origin().ascii_serialization()).unwrap_or_else(|_| "an unreadable URL".into())
}

fn encode(id: &str) -> String {
    // Graph ids are base64 with '/', '+' and '=': keep them out of the path syntax.
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>().replace('+', "%2B")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoTokens;

    #[async_trait::async_trait]
    impl BearerTokens for NoTokens {
        async fn token(&self, _renew: bool) -> Result<String, SourceError> {
            Err(SourceError::permanent("no tokens in unit tests"))
        }
    }

    fn client() -> GraphClient {
        GraphClient::new(GraphConfig {
            base_url: "https://graph.example.test".into(),
            address: "desk@contoso.test".into(),
            folder: "inbox".into(),
            processed_folder: "Processed".into(),
            error_folder: "Failed".into(),
            settle: SettleAction::Move,
            tokens: Arc::new(NoTokens),
            timeout: Duration::from_secs(5),
            delta_link: None,
            max_message_bytes: None,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn the_token_never_goes_to_another_origin() {
        let client = client();
        for url in ["https://evil.example/v1.0/users/x/messages", "http://graph.example.test/v1.0/x"] {
            let err = client.send(reqwest::Method::GET, url, None).await.unwrap_err();
            assert!(err.is_permanent() && err.to_string().contains("refusing to send"), "{err}");
            assert!(!err.to_string().contains("/v1.0"), "no path in the message: {err}");
        }
    }

    fn error(status: u16, code: &str, retry_after: Option<u64>) -> SourceError {
        let body = GraphErrorBody { error: GraphErrorDetail { code: code.into(), message: "m".into() } };
        client().error_for(status, retry_after.map(Duration::from_secs), &body)
    }

    /// Whether a request would wait for a place.
    async fn waits(a: &Allowance) -> bool {
        tokio::time::timeout(Duration::from_millis(50), a.acquire()).await.is_err()
    }

    #[tokio::test]
    async fn concurrency_refusals_narrow_the_requests_in_flight_and_time_widens_them_again() {
        let a = Allowance::new();
        let mut held = vec![a.acquire().await, a.acquire().await, a.acquire().await, a.acquire().await];
        assert!(waits(&a).await, "Outlook's 4, no more");
        // Two answered "over its MailboxConcurrency limit": two fewer.
        a.refused();
        a.refused();
        assert_eq!(a.allowed(), 2);
        held.truncate(2);
        assert!(waits(&a).await, "two in flight are all that is allowed now");
        held.pop();
        assert!(!waits(&a).await, "a freed place is taken");
        drop(held);
        for _ in 0..3 {
            a.refused();
        }
        assert_eq!(a.allowed(), 1, "never below one");
        a.succeeded();
        assert_eq!(a.allowed(), 1, "not widened at once");
        let earlier = tokio::time::Instant::now().checked_sub(PROBE_AFTER).unwrap();
        a.lock().changed = earlier;
        a.succeeded();
        assert_eq!(a.allowed(), 2, "one more after a quiet while");
        a.succeeded();
        assert_eq!(a.allowed(), 2, "one at a time");
    }

    #[test]
    fn only_mailbox_concurrency_refusals_narrow_the_requests_in_flight() {
        let body = |code: &str, message: &str| GraphErrorBody {
            error: GraphErrorDetail { code: code.into(), message: message.into() },
        };
        let outlook = body("ApplicationThrottled", "Application is over its MailboxConcurrency limit.");
        assert!(outlook.is_concurrency_refusal(429));
        assert!(!body("TooManyRequests", "Too many requests.").is_concurrency_refusal(429), "a rate, not a count");
        assert!(
            !body("ApplicationThrottled", "Application is over its IncomingBytes limit.").is_concurrency_refusal(429)
        );
        assert!(!outlook.is_concurrency_refusal(503));
    }

    /// Found by fuzzing: each message was looked up in every one listed
    /// before it, so the first listing of a big folder took quadratic time
    /// (minutes for this page).
    #[test]
    fn a_delta_page_of_many_messages_reads_in_linear_time() {
        let mut items: Vec<Value> = (0..200_000)
            .map(|i| json!({"id": format!("AAMk{i}"), "receivedDateTime": "2024-01-01T00:00:00Z"}))
            .collect();
        items.push(json!({"id": "AAMk7"}));
        items.push(json!({"id": "AAMk8", "@removed": {"reason": "deleted"}}));
        let page = serde_json::to_vec(&json!({"value": items, "@odata.deltaLink": "next-time"})).unwrap();
        let started = std::time::Instant::now();
        let mut found = Found::default();
        let mut paging = Paging::new("test pages");
        let page: DeltaPage = serde_json::from_slice(&page).unwrap();
        assert_eq!(delta_page(page, &mut found, &mut paging).unwrap(), DeltaNext::Done("next-time".into()));
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        assert_eq!(found.messages.len(), 200_000);
        assert_eq!(found.messages[7].0, "AAMk7");
    }

    #[test]
    fn each_documented_error_gives_a_clear_state() {
        let denied = error(403, "ErrorAccessDenied", None);
        assert!(denied.is_permanent() && denied.to_string().contains("application access policy"), "{denied}");
        let rest = error(404, "MailboxNotEnabledForRESTAPI", None);
        assert!(rest.is_permanent() && rest.to_string().contains("EWS or IMAP"), "{rest}");
        let malformed = error(400, "ErrorInvalidIdMalformed", None);
        assert!(malformed.is_permanent() && malformed.to_string().contains("ids from EWS"), "{malformed}");
        let gone = error(404, "ErrorItemNotFound", None);
        assert!(is_not_found(&gone), "{gone}");
        let throttled = error(429, "ApplicationThrottled", Some(7));
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(7)));
        let unannounced = error(503, "", None);
        assert_eq!(unannounced.retry_after(), Some(DEFAULT_RETRY_AFTER), "no Retry-After: wait long, not short");
    }

    /// Outlook answers `SyncStateNotFound` (capital S), the docs write
    /// `syncStateNotFound`; `resyncRequired` occurs; a 410 may come bare.
    #[test]
    fn every_expired_delta_answer_means_start_over() {
        for (status, code) in [
            (410, "SyncStateNotFound"),
            (410, "syncStateNotFound"),
            (400, "syncStateNotFound"),
            (400, "resyncRequired"),
            (410, "ResyncRequired"),
            (410, ""),
            (410, "SomethingElse"),
        ] {
            let e = error(status, code, None);
            assert!(e.is_sync_state_expired(), "{status} {code}: {e}");
            assert!(!e.is_transient(), "not retried as it is: {status} {code}");
        }
        for (status, code) in [(404, "ErrorItemNotFound"), (400, "BadRequest"), (403, "ErrorAccessDenied")] {
            assert!(!error(status, code, None).is_sync_state_expired(), "{status} {code}");
        }
    }

    /// Without Content-Length (chunked), reading stops once the limit is
    /// passed instead of taking the whole body.
    #[tokio::test]
    async fn a_chunked_body_over_the_limit_stops_streaming() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for _ in 0..2 {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 4096];
                let _ = s.read(&mut request).await;
                let _ =
                    s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").await;
                for _ in 0..64 {
                    let chunk = [b"400\r\n".as_slice(), &[b'x'; 1024], b"\r\n"].concat();
                    if s.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
            }
        });
        let url = format!("http://127.0.0.1:{port}/value");
        let mut cfg = client().cfg.clone();
        cfg.max_message_bytes = Some(10_000);
        let mail = read_mime(&cfg, "big".into(), reqwest::get(&url).await.unwrap()).await.unwrap();
        let seen = mail.oversized_at_least().expect("refused");
        assert!(mail.raw.is_empty() && seen > 10_000 && seen < 64 * 1024, "{seen}");

        cfg.max_message_bytes = Some(1 << 20);
        let mail = read_mime(&cfg, "fits".into(), reqwest::get(&url).await.unwrap()).await.unwrap();
        assert_eq!((mail.raw.len(), mail.refused), (64 * 1024, None));
    }

    #[test]
    fn batch_items_carry_immutable_ids_and_json_bodies() {
        let item = BatchRequest { method: "POST", url: "/users/a/messages/X/move".into(), body: Some(json!({"d": 1})) };
        let v = item.to_json(3);
        assert_eq!(v["id"], "3");
        assert_eq!(v["headers"]["Prefer"], "IdType=\"ImmutableId\"");
        assert_eq!(v["headers"]["Content-Type"], "application/json");
        let delete = BatchRequest { method: "DELETE", url: "/users/a/messages/X".into(), body: None }.to_json(0);
        assert!(delete.get("body").is_none() && delete["headers"].get("Content-Type").is_none());
        let answer: BatchResponse =
            serde_json::from_str(r#"{"id": "3", "status": 429, "headers": {"retry-after": "12"}}"#).unwrap();
        assert_eq!(answer.retry_after(), Some(Duration::from_secs(12)));
    }
}
