//! Prometheus metrics. Recorded through the `metrics` facade: without an
//! installed recorder (run-once, CLI) they cost nothing.

use mailrobot_store::ProcessedMail;
use metrics::{counter, gauge};

pub fn record_processed(mailbox: &str, done: &[ProcessedMail]) {
    for mail in done {
        let kind = mail.kind.map_or("none", |k| k.as_str());
        counter!("mailrobot_mails_total", "mailbox" => mailbox.to_string(), "state" => mail.state.as_str(), "kind" => kind)
            .increment(1);
        if mail.created_ticket {
            counter!("mailrobot_tickets_created_total", "mailbox" => mailbox.to_string()).increment(1);
        }
    }
}

pub fn record_poll(mailbox: &str, ok: bool, seconds: f64, consecutive_failures: i64) {
    let outcome = if ok { "ok" } else { "error" };
    counter!("mailrobot_polls_total", "mailbox" => mailbox.to_string(), "outcome" => outcome).increment(1);
    metrics::histogram!("mailrobot_poll_seconds", "mailbox" => mailbox.to_string()).record(seconds);
    gauge!("mailrobot_mailbox_consecutive_failures", "mailbox" => mailbox.to_string()).set(consecutive_failures as f64);
}
