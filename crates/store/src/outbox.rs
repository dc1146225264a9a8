//! Webhooks and the outbox their deliveries wait in.
//!
//! A ticket change writes one outbox row per subscribed webhook in the
//! change's own transaction, so an event exists exactly when its change does.
//! A delivery engine (crate `mailrobot-outbox`) takes due rows, renders and
//! sends them, and records each attempt here. The store decides nothing about
//! retries: the engine says when the next attempt is due.

use serde::{Deserialize, Serialize};

use crate::{DeliveryState, Result, StoreError, TicketStatus, WebhookEvent};

/// A receiver of ticket events (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    pub events: Vec<WebhookEvent>,
    pub enabled: bool,
    pub created_at: String,
}

/// What happened, as the outbox keeps it from the ticket change until the
/// event's document is rendered for its first attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub ticket_id: i64,
    /// The entry the event is about (ticket.created: the first one).
    pub entry_position: Option<i64>,
    /// The ticket's status when it happened.
    pub status: TicketStatus,
    /// ticket.status_changed: the status before.
    pub previous_status: Option<TicketStatus>,
    pub occurred_at: String,
}

/// A delivery due for an attempt, leased to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    pub url: String,
    /// The same on every attempt (the `webhook-id` header).
    pub event_id: String,
    pub event_type: WebhookEvent,
    pub event: EventRecord,
    /// The document as first sent; None before the first attempt.
    pub body: Option<String>,
    pub attempts: i64,
    pub created_at: String,
}

/// How one attempt went, and what comes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// What it answered (shortened), or why there was no answer.
    pub answer: String,
    pub next: AfterAttempt,
    /// The message as first rendered (a mail), kept so a retry sends the same
    /// bytes; None keeps what is stored.
    pub body: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterAttempt {
    Delivered,
    /// Try again at this time (RFC 3339).
    RetryAt(String),
    /// The retry window is over.
    GiveUp,
}

/// One delivery, as lists show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    pub id: i64,
    pub webhook_id: i64,
    pub url: String,
    pub event_id: String,
    pub event_type: WebhookEvent,
    pub ticket_id: Option<i64>,
    pub state: DeliveryState,
    pub attempts: i64,
    pub last_status: Option<u16>,
    pub last_answer: Option<String>,
    pub last_attempt_at: Option<String>,
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
    pub created_at: String,
}

/// Which deliveries to list: newest first; `before` is a cursor (an id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub webhook_id: Option<i64>,
    pub state: Option<DeliveryState>,
    pub before: Option<i64>,
    pub limit: Option<usize>,
}

/// A queued mail, leased to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMail {
    pub id: i64,
    pub mail: mailrobot_core::OutgoingMail,
    /// The message as first rendered; None before the first attempt.
    pub body: Option<String>,
    pub attempts: i64,
}

/// One outbound mail, as `outbox list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailView {
    pub id: i64,
    pub mailbox_id: Option<i64>,
    pub ticket_id: Option<i64>,
    pub to: Option<String>,
    pub subject: Option<String>,
    /// `acknowledgement`, …
    pub kind: Option<String>,
    pub state: DeliveryState,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub sent_at: Option<String>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
}

pub trait OutboxStore: Send + Sync {
    /// Adds a webhook; `seal` seals its secret for the new id (the id is in
    /// the sealing context), in the same transaction.
    fn add_webhook(&self, url: &str, events: &[WebhookEvent], seal: &mut dyn FnMut(i64) -> Vec<u8>) -> Result<Webhook>;
    fn webhooks(&self) -> Result<Vec<Webhook>>;
    fn webhook(&self, id: i64) -> Result<Option<Webhook>>;
    fn webhook_secret(&self, id: i64) -> Result<Option<Vec<u8>>>;
    /// Returns whether the webhook exists.
    fn set_webhook_enabled(&self, id: i64, enabled: bool) -> Result<bool>;
    /// Removes the webhook and its deliveries. Returns whether it existed.
    fn remove_webhook(&self, id: i64) -> Result<bool>;

    /// Up to `limit` deliveries due at `now`, each the oldest pending one of
    /// its (webhook, ticket) — so a ticket's events arrive in order — and
    /// leased until `lease_until` so no other engine takes them meanwhile.
    /// Deliveries of disabled webhooks wait.
    fn claim_due_deliveries(&self, now: &str, lease_until: &str, limit: usize) -> Result<Vec<Delivery>>;
    /// Keeps the rendered document, once, before the first attempt.
    fn set_delivery_body(&self, id: i64, body: &str) -> Result<()>;
    /// Records an attempt and ends the lease.
    /// Records the answers of one round of attempts, in one transaction
    /// (one commit for the round, not one per row: sending beside ingestion
    /// takes little of the write lock).
    fn record_attempts(&self, done: &[(i64, Attempt)], at: &str) -> Result<()>;
    /// When the next pending delivery is due, if any (for the engine's sleep).
    fn next_delivery_due(&self) -> Result<Option<String>>;
    fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryView>>;
    fn delivery(&self, id: i64) -> Result<Option<DeliveryView>>;
    /// Puts a delivery back in the queue, due now, with the same event id.
    /// Returns whether it exists.
    fn resend_delivery(&self, id: i64) -> Result<bool>;
    /// Queues a person's mail (an agent's reply) with its files, which are
    /// stored as blobs in the same transaction. Returns the outbox row's id.
    fn queue_reply(&self, mail: &mailrobot_core::OutgoingMail, files: &[Vec<u8>]) -> Result<i64>;
    /// Sets the ticket's status; when it changed, queues `notification`
    /// (to the requester) in the same transaction. False: no such ticket.
    fn set_status_notifying(
        &self,
        ticket_id: i64,
        status: crate::TicketStatus,
        notification: Option<&mailrobot_core::OutgoingMail>,
    ) -> Result<bool>;
    /// The mailbox a ticket came in through (its first entry's), and the
    /// address that mailbox sends from, if it sends mail.
    fn ticket_mailbox(&self, ticket_id: i64) -> Result<Option<(i64, Option<String>)>>;
    /// Up to `limit` mails due at `now`, leased until `lease_until`.
    fn claim_due_mails(&self, now: &str, lease_until: &str, limit: usize) -> Result<Vec<QueuedMail>>;
    /// Every outbound mail, oldest first.
    fn mails(&self) -> Result<Vec<MailView>>;
    /// Queues a mail again, due now (its Message-ID stays). Whether it exists.
    fn resend_mail(&self, id: i64) -> Result<bool>;
    /// The sealed password of a mailbox's SMTP reply transport.
    fn set_mailbox_reply_secret(&self, mailbox_id: i64, sealed: Option<&[u8]>) -> Result<()>;
    fn mailbox_reply_secret(&self, mailbox_id: i64) -> Result<Option<Vec<u8>>>;
    /// Deliveries waiting (pending), per webhook id.
    fn pending_deliveries(&self) -> Result<Vec<(i64, i64)>>;
}

// --- What both backends share: no SQL below. ---

/// The outbox kind of a webhook delivery (outbound mail rows are `mail`).
pub(crate) const KIND_WEBHOOK: &str = "webhook";

/// An event's id (the `webhook-id` header) from 12 random bytes in hex,
/// which each backend draws in its own SQL.
pub(crate) fn event_id(random_hex: &str) -> String {
    format!("evt_{random_hex}")
}

/// A webhook's events as stored: their names, separated by spaces.
pub(crate) fn events_text(events: &[WebhookEvent]) -> String {
    events.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(" ")
}

/// The stored events of a webhook; names this version does not know are
/// left out.
pub(crate) fn parse_events(text: &str) -> Vec<WebhookEvent> {
    text.split_whitespace().filter_map(|e| e.parse().ok()).collect()
}

/// Of `webhooks` (id, stored events), the ids of those that receive
/// `event_type`.
pub(crate) fn subscribers(webhooks: Vec<(i64, String)>, event_type: WebhookEvent) -> Vec<i64> {
    webhooks
        .into_iter()
        .filter(|(_, events)| events.split_whitespace().any(|e| e == event_type.as_str()))
        .map(|(id, _)| id)
        .collect()
}

/// An outbox row's payload: an event record or an outgoing mail as JSON.
pub(crate) fn payload(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The event record kept in delivery `id`'s payload.
pub(crate) fn event_of(id: i64, payload: &str) -> Result<EventRecord> {
    serde_json::from_str(payload)
        .map_err(|e| StoreError::Corrupt(format!("outbox row {id} has an unreadable payload: {e}")))
}

/// The mail kept in outbox row `id`'s payload.
pub(crate) fn mail_of(id: i64, payload: &str) -> Result<mailrobot_core::OutgoingMail> {
    serde_json::from_str(payload)
        .map_err(|e| StoreError::Corrupt(format!("outbox row {id} has an unreadable mail: {e}")))
}

/// `mail` with its attachments' hashes and sizes set from `files` (in
/// order), each stored by `put_blob`.
pub(crate) fn with_files(
    mail: &mailrobot_core::OutgoingMail,
    files: &[Vec<u8>],
    mut put_blob: impl FnMut(&[u8]) -> Result<String>,
) -> Result<mailrobot_core::OutgoingMail> {
    let mut mail = mail.clone();
    for (meta, bytes) in mail.attachments.iter_mut().zip(files) {
        meta.sha256 = put_blob(bytes)?;
        meta.size = bytes.len() as u64;
    }
    Ok(mail)
}

impl AfterAttempt {
    /// The row's new state, next attempt time and delivery time after an
    /// attempt at `at`.
    pub(crate) fn outcome<'a>(&'a self, at: &'a str) -> (DeliveryState, Option<&'a str>, Option<&'a str>) {
        match self {
            AfterAttempt::Delivered => (DeliveryState::Sent, None, Some(at)),
            AfterAttempt::RetryAt(when) => (DeliveryState::Queued, Some(when.as_str()), None),
            AfterAttempt::GiveUp => (DeliveryState::Failed, None, None),
        }
    }
}

/// A mailbox's stored settings (`mailboxes.config`); unreadable ones read
/// as empty.
pub(crate) fn mailbox_config(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_default()
}

/// Where a mailbox's mail is sent from: its reply settings' `from`, else its
/// address, else a user name that is an address. None: it sends no mail.
pub(crate) fn reply_from(config: &serde_json::Value) -> Option<String> {
    let reply = config.get("reply")?;
    if reply.get("via").and_then(|v| v.as_str()).is_none_or(|v| v == "none") {
        return None;
    }
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
    text(reply.get("from"))
        .or_else(|| text(config.get("address")))
        .or_else(|| text(config.get("username")).filter(|u| u.contains('@')))
}

/// Every address the robot's mailboxes receive or send as, from their
/// stored settings.
pub(crate) fn own_addresses<S: AsRef<str>>(configs: impl IntoIterator<Item = S>) -> Vec<String> {
    let mut own = Vec::new();
    for config in configs {
        let config = mailbox_config(config.as_ref());
        for value in
            [config.get("address"), config.get("username"), config.pointer("/reply/from")].into_iter().flatten()
        {
            if let Some(address) = value.as_str().filter(|a| a.contains('@')) {
                own.push(address.to_string());
            }
        }
    }
    own
}

fn minus_minutes(at: &str, minutes: u32) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| t.with_timezone(&chrono::Utc) - chrono::Duration::minutes(i64::from(minutes)))
        .unwrap_or_else(|_| chrono::Utc::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What an answer's context is made of before the store counts the mails
/// already sent: the mailbox's sending settings and the windows to count in.
pub(crate) struct AnswerQuery {
    config: serde_json::Value,
    from: String,
    /// Automatic mails to the sender count from this time on (RFC 3339).
    pub(crate) since_sender: String,
    /// Automatic mails on the ticket count from the start of `at`'s day (UTC).
    pub(crate) day_start: String,
}

impl AnswerQuery {
    /// None: the mailbox (with settings `config`, as stored) sends no mail.
    pub(crate) fn new(config: &str, at: &str, limits: &mailrobot_core::AnswerLimits) -> Option<Self> {
        let config = mailbox_config(config);
        let from = reply_from(&config)?;
        Some(Self {
            config,
            from,
            since_sender: minus_minutes(at, limits.sender_window_minutes),
            day_start: format!("{}T00:00:00.000Z", at.get(..10).unwrap_or(at)),
        })
    }

    pub(crate) fn context(
        self,
        mailbox_id: i64,
        mailbox_name: String,
        own_addresses: Vec<String>,
        sent_to_sender_recently: u32,
        sent_on_ticket_today: u32,
    ) -> mailrobot_core::AnswerContext {
        mailrobot_core::AnswerContext {
            mailbox_id,
            reply_to: self.config.pointer("/reply/reply_to").and_then(|v| v.as_str()).map(str::to_string),
            from: self.from,
            mailbox_name,
            own_addresses,
            sent_to_sender_recently,
            sent_on_ticket_today,
        }
    }
}
