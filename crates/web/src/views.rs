//! How the UI words the robot's states.

use mailrobot_store::{Capability, Connection, ConnectionState, Mailbox, MailboxKind, MailboxStatus, Mode, Tenant};

/// The mailbox type as the forms name it.
pub fn kind_label(kind: MailboxKind) -> &'static str {
    match kind {
        MailboxKind::Graph => "Exchange / Microsoft Graph",
        MailboxKind::Ews => "Exchange / Office 365 (EWS)",
        MailboxKind::Imap => "IMAP",
        MailboxKind::Pop3 => "POP3",
        MailboxKind::DropFolder => "Drop folder",
    }
}

/// A mailbox's state in words, and a one-word class for styling.
pub fn mailbox_state(m: &Mailbox) -> (String, &'static str) {
    if !m.enabled {
        return ("disabled".to_string(), "disabled");
    }
    let reason = m.last_error.as_deref().unwrap_or("no reason recorded");
    match m.status {
        MailboxStatus::New => ("not polled yet".to_string(), "new"),
        MailboxStatus::Ok => ("ok".to_string(), "ok"),
        MailboxStatus::Throttled => match &m.throttled_until {
            Some(until) => (format!("waiting for the server until {}", short_time(until)), "waiting"),
            None => ("waiting for the server".to_string(), "waiting"),
        },
        MailboxStatus::Paused => (format!("paused: Setup Authentication needed — {reason}"), "paused"),
        MailboxStatus::Error => (format!("failing: {reason}"), "failing"),
    }
}

/// What needs a person about a connection, if anything.
pub fn connection_attention(c: &Connection) -> Option<String> {
    let reason = c.last_error.as_deref().unwrap_or("");
    let label = c.capability.label();
    match c.state {
        ConnectionState::ReauthRequired => {
            Some(format!("Connection {} ({label}) needs Setup Authentication again: {reason}", c.name))
        }
        ConnectionState::SecretInvalid | ConnectionState::SecretExpired => {
            Some(format!("Connection {} ({label}) cannot get tokens: {reason}", c.name))
        }
        ConnectionState::NotAuthenticated if c.mode == Mode::Delegated => {
            Some(format!("Connection {} ({label}) is waiting for Setup Authentication", c.name))
        }
        ConnectionState::NotAuthenticated | ConnectionState::Ready => None,
    }
}

/// A tenant whose client secret has expired or expires within 30 days.
pub fn tenant_attention(t: &Tenant, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    let expires = chrono::DateTime::parse_from_rfc3339(t.secret_expires_at.as_deref()?).ok()?;
    let left = expires.signed_duration_since(now);
    if left <= chrono::Duration::zero() {
        Some(format!(
            "Tenant {}: the client secret expired on {}; create a new one in the Azure portal",
            t.name,
            expires.date_naive()
        ))
    } else if left <= chrono::Duration::days(30) {
        Some(format!(
            "Tenant {}: the client secret expires on {} ({} days left)",
            t.name,
            expires.date_naive(),
            left.num_days()
        ))
    } else {
        None
    }
}

/// `2026-12-02 14:05` from an RFC 3339 time (UTC); the text as is otherwise.
pub fn short_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// The capability as the connection form names it (`POP3`, not `POP`).
pub fn capability_label(c: Capability) -> &'static str {
    match c {
        Capability::Pop => "POP3",
        other => other.label(),
    }
}
