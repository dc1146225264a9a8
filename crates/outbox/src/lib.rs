//! Ticket events to the systems that want them (a helpdesk), as webhooks.
//!
//! - [`signature`]: the Standard Webhooks signature (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`) and
//!   its `whsec_` secrets, so receivers can verify with that project's
//!   libraries.
//! - [`schedule`]: when a failed delivery is tried again, and when it stops.
//! - [`engine`]: takes due deliveries from the outbox, renders each event
//!   once, POSTs it signed afresh on every attempt, and records the answer.
//!
//! Events are written to the outbox by the store, in the transaction of the
//! ticket change itself: an event exists exactly when its change does.

pub mod engine;
pub mod mail;
pub mod schedule;
pub mod signature;

pub use engine::{Engine, EngineConfig};
pub use mail::{MailTransport, SendFailure};
pub use signature::{SecretError, WebhookSecret};

/// The sealing context of a webhook's secret (the id binds the sealed bytes
/// to their row).
pub fn secret_context(webhook_id: i64) -> String {
    format!("webhook:{webhook_id}:secret")
}
