//! The delivery engine: takes due deliveries from the outbox, renders each
//! event once (the body every retry sends again), signs and POSTs it, and
//! records the answer with the next attempt's time.
//!
//! At least once: a delivery is marked delivered only after a 2xx answer, so
//! a crash between the answer and the record sends it again — with the same
//! `webhook-id`, by which receivers drop duplicates. In order per ticket: the
//! outbox hands out only the oldest pending delivery of each (webhook, ticket).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;

/// How many mails each concurrent sender takes per round: a round costs two
/// commits (claim, answers), so 10,000 acknowledgements cost about 160.
const MAILS_PER_SENDER_AND_ROUND: usize = 16;
use mailrobot_core::TagFormat;
use mailrobot_secrets::SecretBox;
use mailrobot_store::{AfterAttempt, Attempt, Delivery, OutboxStore, Store};
use mailrobot_views::EventJson;
use tokio::sync::{Notify, watch};

use crate::mail::MailTransport;
use crate::schedule::wait_after;
use crate::signature::WebhookSecret;

/// How long a claimed delivery is ours by default: past it (a crash),
/// another engine may take it. Longer than a request may take.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(120);
/// The longest answer kept for the deliveries list.
const ANSWER_CHARS: usize = 300;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The robot's public URL: attachments' download URLs start with it.
    pub public_url: String,
    pub tag: TagFormat,
    /// Deliveries attempted at once (to different tickets or webhooks).
    pub concurrency: usize,
    pub request_timeout: Duration,
    /// How often the outbox is looked at when nothing wakes the engine (other
    /// processes — `run-once`, the CLI — write events too).
    pub idle_poll: Duration,
    /// How long a claimed row waits after its process died before another
    /// takes it (`MAILROBOT_OUTBOX_LEASE_SECS`).
    pub lease: Duration,
}

impl EngineConfig {
    pub fn new(public_url: &str, tag: TagFormat) -> Self {
        Self {
            public_url: public_url.trim_end_matches('/').to_string(),
            tag,
            concurrency: 8,
            request_timeout: Duration::from_secs(15),
            idle_poll: Duration::from_secs(1),
            lease: DEFAULT_LEASE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot make the HTTP client: {0}")]
    Client(String),
}

pub struct Engine {
    store: Arc<dyn Store>,
    outbox: Arc<dyn OutboxStore>,
    secrets: Arc<SecretBox>,
    http: reqwest::Client,
    config: EngineConfig,
    wake: Arc<Notify>,
    /// Sends mail rows; without one they wait (a process that sends no mail).
    mail: Option<Arc<dyn MailTransport>>,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        outbox: Arc<dyn OutboxStore>,
        secrets: Arc<SecretBox>,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        let tls = mailrobot_sources::tls::client_config(None).map_err(|e| EngineError::Client(e.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            // A redirect is an answer like any other that is not 2xx: the
            // administrator gave this URL, the signed body goes nowhere else.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.request_timeout)
            .user_agent(concat!("mailrobot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EngineError::Client(e.to_string()))?;
        Ok(Self { store, outbox, secrets, http, config, wake: Arc::new(Notify::new()), mail: None })
    }

    /// Sends queued mail through `transport` too.
    pub fn with_mail(mut self, transport: Arc<dyn MailTransport>) -> Self {
        self.mail = Some(transport);
        self
    }

    /// Notify it to look at the outbox now (after a ticket change here).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Delivers until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!("webhook delivery engine started");
        loop {
            if *stop.borrow() {
                break;
            }
            let attempted = self.run_once().await;
            self.record_queue_depth();
            if attempted > 0 {
                continue;
            }
            let wait = self.until_next_due().min(self.config.idle_poll);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One round: attempts the webhook deliveries and mails due now, up to
    /// a few per concurrent sender. Returns how many.
    pub async fn run_once(&self) -> usize {
        self.deliver_webhooks().await + self.send_mails().await
    }

    /// Rounds until nothing is due: every row due now is tried once (one
    /// that fails waits for its retry time, so it is not tried again here).
    /// What `run-once` does before it exits. Returns how many attempts.
    pub async fn drain(&self) -> usize {
        let mut attempted = 0;
        loop {
            match self.run_once().await {
                0 => return attempted,
                n => attempted += n,
            }
        }
    }

    async fn send_mails(&self) -> usize {
        let Some(transport) = &self.mail else { return 0 };
        let (now, until) = self.lease_window();
        // A large round: its claim and its answers are one commit each.
        let claimed = self.outbox.claim_due_mails(&now, &until, self.config.concurrency * MAILS_PER_SENDER_AND_ROUND);
        // The transport's answer is recorded before anything else: a crash
        // between the send and that record sends it once more, at most (the
        // same Message-ID: receivers can tell).
        self.round("mail", claimed, |q| q.id, |q| self.send_mail(transport.as_ref(), q)).await
    }

    /// Now, and when a row claimed now is free again.
    fn lease_window(&self) -> (String, String) {
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::seconds(120));
        (rfc3339(now), rfc3339(now + lease))
    }

    /// Attempts every claimed row (a few at a time), then records the
    /// answers in one write. A row whose answer cannot be recorded is tried
    /// again once its lease runs out.
    async fn round<T, Fut>(
        &self,
        what: &'static str,
        claimed: Result<Vec<T>, mailrobot_store::StoreError>,
        id_of: fn(&T) -> i64,
        attempt: impl Fn(T) -> Fut,
    ) -> usize
    where
        Fut: std::future::Future<Output = Attempt>,
    {
        // Rows are claimed for `lease`; one whose turn comes too late in a
        // slow round is left to its lease running out (and a later round),
        // so no other process can hold it at the same time.
        let deadline = tokio::time::Instant::now() + self.config.lease.mul_f32(0.8);
        let due = match claimed {
            Ok(due) => due,
            Err(err) => {
                tracing::error!(what, error = %err, "cannot read the outbox; trying again shortly");
                return 0;
            }
        };
        let count = due.len();
        let attempt = &attempt;
        // Answers are recorded as they come, a few per commit: few commits,
        // and little sent-but-unrecorded at any moment (a crash or a slow
        // round resends at most those).
        let mut finished = std::pin::pin!(
            futures::stream::iter(due)
                .map(|row| async move {
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                    Some((id_of(&row), attempt(row).await))
                })
                .buffer_unordered(self.config.concurrency)
                .filter_map(|done| async move { done })
                .ready_chunks(self.config.concurrency * 2)
        );
        while let Some(done) = finished.next().await {
            if let Err(err) = self.outbox.record_attempts(&done, &rfc3339(Utc::now())) {
                tracing::error!(what, rows = done.len(), error = %err, "cannot record the attempts");
            }
        }
        count
    }

    async fn send_mail(&self, transport: &dyn MailTransport, queued: mailrobot_store::QueuedMail) -> Attempt {
        // Rendered at the first attempt and kept with its answer, so every
        // retry sends the same bytes.
        let (body, rendered) = match queued.body {
            Some(body) => (body, false),
            None => {
                let mut files = Vec::with_capacity(queued.mail.attachments.len());
                for a in &queued.mail.attachments {
                    match self.store.blob(&a.sha256) {
                        Ok(Some(bytes)) => files.push(bytes),
                        Ok(None) => {
                            let answer = format!("the attachment {} is no longer stored", a.filename);
                            return Attempt { status: None, answer, next: AfterAttempt::GiveUp, body: None };
                        }
                        Err(err) => {
                            return Attempt {
                                status: None,
                                answer: format!("cannot read the attachment {}: {err}", a.filename),
                                next: AfterAttempt::RetryAt(rfc3339(Utc::now() + chrono::Duration::seconds(30))),
                                body: None,
                            };
                        }
                    }
                }
                (crate::mail::render(&queued.mail, Utc::now(), &files), true)
            }
        };
        let mail = &queued.mail;
        let sent = transport.send(mail.mailbox_id, &mail.from, &mail.to, body.as_bytes()).await;
        let keep = rendered.then_some(body);
        match sent {
            Ok(()) => {
                tracing::info!(mail = queued.id, to = %mail.to, kind = mail.kind.as_str(), "mail sent");
                metrics::counter!("mailrobot_mails_sent_total", "result" => "sent").increment(1);
                Attempt { status: None, answer: "sent".into(), next: AfterAttempt::Delivered, body: keep }
            }
            Err(failure) => {
                let answer = shorten(&failure.text);
                let next = match wait_after(queued.attempts + 1).filter(|_| failure.transient) {
                    Some(wait) => {
                        tracing::warn!(mail = queued.id, to = %mail.to, %answer, "sending failed; will retry");
                        metrics::counter!("mailrobot_mails_sent_total", "result" => "retry").increment(1);
                        AfterAttempt::RetryAt(rfc3339(Utc::now() + chrono::Duration::from_std(wait).expect("small")))
                    }
                    None => {
                        tracing::error!(mail = queued.id, to = %mail.to, %answer, "sending failed for good");
                        metrics::counter!("mailrobot_mails_sent_total", "result" => "failed").increment(1);
                        AfterAttempt::GiveUp
                    }
                };
                Attempt { status: None, answer, next, body: keep }
            }
        }
    }

    async fn deliver_webhooks(&self) -> usize {
        let (now, until) = self.lease_window();
        let claimed = self.outbox.claim_due_deliveries(&now, &until, self.config.concurrency * 4);
        self.round("webhook delivery", claimed, |d| d.id, |d| self.attempt(d)).await
    }

    async fn attempt(&self, delivery: Delivery) -> Attempt {
        let failed_before = delivery.attempts;
        let prepared = match self.prepare(&delivery) {
            Ok(prepared) => prepared,
            // Nothing to send will ever exist (a broken row): stop at once,
            // visibly, rather than retry for days.
            Err(reason) => {
                tracing::error!(delivery = delivery.id, %reason, "webhook delivery cannot be made");
                metrics::counter!("mailrobot_webhook_deliveries_total", "result" => "given_up").increment(1);
                return Attempt { status: None, answer: reason, next: AfterAttempt::GiveUp, body: None };
            }
        };
        let (secret, body) = prepared;
        let timestamp = Utc::now().timestamp();
        let signature = secret.sign(&delivery.event_id, timestamp, body.as_bytes());
        let sent = self
            .http
            .post(&delivery.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let (status, answer, asked_wait) = match sent {
            Ok(response) => {
                let status = response.status();
                let asked_wait = mailrobot_sources::throttle::retry_after(response.headers());
                let text = response.text().await.unwrap_or_default();
                (Some(status.as_u16()), shorten(&format!("HTTP {}: {}", status.as_u16(), text.trim())), asked_wait)
            }
            Err(err) => (None, shorten(&describe_send_error(&err)), None),
        };
        if status.is_some_and(|s| (200..300).contains(&s)) {
            tracing::info!(delivery = delivery.id, event = %delivery.event_id, url = %delivery.url, "webhook delivered");
            metrics::counter!("mailrobot_webhook_deliveries_total", "result" => "delivered").increment(1);
            return Attempt { status, answer, next: AfterAttempt::Delivered, body: None };
        }
        let next = match wait_after(failed_before + 1) {
            Some(wait) => {
                // A receiver that asks for longer gets it, within the hour.
                let wait = asked_wait.map_or(wait, |asked| asked.clamp(wait, Duration::from_secs(3600)));
                let at = Utc::now() + chrono::Duration::from_std(wait).expect("at most an hour");
                tracing::warn!(delivery = delivery.id, url = %delivery.url, %answer, retry_at = %rfc3339(at),
                    "webhook delivery failed; will retry");
                metrics::counter!("mailrobot_webhook_deliveries_total", "result" => "retry").increment(1);
                AfterAttempt::RetryAt(rfc3339(at))
            }
            None => {
                tracing::error!(delivery = delivery.id, url = %delivery.url, %answer,
                    "webhook delivery failed for the whole retry window; marked failed (resendable)");
                metrics::counter!("mailrobot_webhook_deliveries_total", "result" => "given_up").increment(1);
                AfterAttempt::GiveUp
            }
        };
        Attempt { status, answer, next, body: None }
    }

    /// The webhook's secret, and the body: rendered and kept on the first
    /// attempt, the kept one after.
    fn prepare(&self, delivery: &Delivery) -> Result<(WebhookSecret, String), String> {
        let sealed = self
            .outbox
            .webhook_secret(delivery.webhook_id)
            .map_err(|e| format!("cannot read the webhook: {e}"))?
            .ok_or("the webhook was removed")?;
        let opened = self
            .secrets
            .open_str(&sealed, &crate::secret_context(delivery.webhook_id))
            .map_err(|e| format!("cannot open the webhook's secret: {e}"))?;
        let secret = WebhookSecret::parse(opened.expose()).map_err(|e| e.to_string())?;
        if let Some(body) = &delivery.body {
            return Ok((secret, body.clone()));
        }
        let ticket = self
            .store
            .ticket(delivery.event.ticket_id)
            .map_err(|e| format!("cannot read the ticket: {e}"))?
            .ok_or("the ticket no longer exists")?;
        let event = EventJson::of(
            &delivery.event_id,
            delivery.event_type,
            &delivery.event,
            &ticket,
            &self.config.tag,
            &self.config.public_url,
        )
        .ok_or("the entry the event is about no longer exists")?;
        let body = serde_json::to_string(&event).map_err(|e| e.to_string())?;
        self.outbox.set_delivery_body(delivery.id, &body).map_err(|e| format!("cannot keep the event: {e}"))?;
        Ok((secret, body))
    }

    fn until_next_due(&self) -> Duration {
        match self.outbox.next_delivery_due() {
            Ok(Some(at)) => DateTime::parse_from_rfc3339(&at)
                .ok()
                .and_then(|at| (at.with_timezone(&Utc) - Utc::now()).to_std().ok())
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_millis(50)),
            _ => self.config.idle_poll,
        }
    }

    fn record_queue_depth(&self) {
        if let Ok(pending) = self.outbox.pending_deliveries() {
            let depth: i64 = pending.iter().map(|(_, n)| n).sum();
            metrics::gauge!("mailrobot_webhook_queue_depth").set(depth as f64);
        }
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(ANSWER_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Why a request got no answer, in the words an operator acts on.
fn describe_send_error(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "no answer in time".to_string()
    } else if err.is_connect() {
        "cannot connect to the receiver".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
