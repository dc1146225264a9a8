//! Prometheus metrics. Recorded through the `metrics` facade: without an
//! installed recorder (run-once, CLI) they cost nothing.
//!
//! Mailbox and connection names can be sensitive (a mailbox called after a
//! customer), so series carry their ids unless the operator sets
//! `MAILROBOT_METRICS_NAMES=1`; `mailbox list --json` and `connection list
//! --json` show the ids.

use std::sync::atomic::{AtomicBool, Ordering};

use mailrobot_store::{Mailbox, MailboxStatus, ProcessedMail};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Set to `1` to label series with mailbox and connection names.
pub const NAMES_ENV: &str = "MAILROBOT_METRICS_NAMES";

static NAMES: AtomicBool = AtomicBool::new(false);

/// Bucket bounds of every `*_seconds` histogram: from a fast local batch to
/// a slow first sync of a large mailbox.
const SECONDS_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Installs the recorder `/metrics` renders, and reads the naming choice.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let names = std::env::var(NAMES_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    NAMES.store(names, Ordering::Relaxed);
    mailrobot_auth::broker::label_connections_by_name(names);
    use anyhow::Context;
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .context("histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")
}

/// The `mailbox` label of a mailbox's series.
pub fn mailbox_label(id: i64, name: &str) -> String {
    if NAMES.load(Ordering::Relaxed) { name.to_string() } else { id.to_string() }
}

pub fn record_processed(label: &str, done: &[ProcessedMail]) {
    for mail in done {
        let kind = mail.kind.map_or("none", |k| k.as_str());
        counter!("mailrobot_mails_total", "mailbox" => label.to_string(), "state" => mail.state.as_str(), "kind" => kind)
            .increment(1);
        if mail.created_ticket {
            counter!("mailrobot_tickets_created_total", "mailbox" => label.to_string()).increment(1);
        }
    }
}

/// One processing batch: how long its transaction took and how many mails it held.
pub fn record_batch(label: &str, seconds: f64, mails: usize) {
    histogram!("mailrobot_batch_seconds", "mailbox" => label.to_string()).record(seconds);
    histogram!("mailrobot_batch_mails", "mailbox" => label.to_string()).record(mails as f64);
}

/// Fetched mail not yet filed across the node's polls, now and at most
/// since start (see [`crate::mail_in_memory`]).
pub fn record_mail_in_memory(bytes: u64, peak_bytes: u64) {
    gauge!("mailrobot_mail_in_memory_bytes").set(bytes as f64);
    gauge!("mailrobot_mail_in_memory_peak_bytes").set(peak_bytes as f64);
}

pub fn record_poll(label: &str, ok: bool, seconds: f64, consecutive_failures: i64, fetched: usize) {
    let outcome = if ok { "ok" } else { "error" };
    counter!("mailrobot_polls_total", "mailbox" => label.to_string(), "outcome" => outcome).increment(1);
    counter!("mailrobot_mails_fetched_total", "mailbox" => label.to_string()).increment(fetched as u64);
    histogram!("mailrobot_poll_seconds", "mailbox" => label.to_string()).record(seconds);
    gauge!("mailrobot_mailbox_consecutive_failures", "mailbox" => label.to_string()).set(consecutive_failures as f64);
}

/// Each mailbox's state (1 for the state it is in, 0 for the others) and
/// how many mailboxes are in each state.
pub fn record_mailbox_states(mailboxes: &[Mailbox]) {
    for status in MailboxStatus::ALL {
        let count = mailboxes.iter().filter(|m| m.enabled && m.status == *status).count();
        gauge!("mailrobot_mailboxes", "state" => status.as_str()).set(count as f64);
    }
    let disabled = mailboxes.iter().filter(|m| !m.enabled).count();
    gauge!("mailrobot_mailboxes", "state" => "disabled").set(disabled as f64);
    for m in mailboxes {
        let label = mailbox_label(m.id, &m.name);
        for status in MailboxStatus::ALL {
            let on = m.enabled && m.status == *status;
            gauge!("mailrobot_mailbox_state", "mailbox" => label.clone(), "state" => status.as_str())
                .set(f64::from(u8::from(on)));
        }
    }
}
