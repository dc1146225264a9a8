//! Webhooks and the outbox their deliveries wait in.
//!
//! A ticket change writes one outbox row per subscribed webhook in the
//! change's own transaction, so an event exists exactly when its change does.
//! A delivery engine (crate `mailrobot-outbox`) takes due rows, renders and
//! sends them, and records each attempt here. The store decides nothing about
//! retries: the engine says when the next attempt is due.

use serde::{Deserialize, Serialize};

use crate::{DeliveryState, Result, TicketStatus, WebhookEvent};

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
