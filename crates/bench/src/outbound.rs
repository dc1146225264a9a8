//! Outbound mail beside ingestion (issue 10's performance part): the
//! acknowledgements of MAILS new tickets sent through Postfix's smtp-sink on
//! loopback (which answers 250 and keeps nothing: a file per mail would cost
//! this machine more than the robot), with the robot's pool of SMTP sessions; and what sending costs
//! ingestion, measured both ways in one run.
//!
//! Four runs per round, each on its own freshly filled Dovecot mailbox, the
//! order rotated each round:
//! - `run-once`, no transport: ingest alone (seconds `i`);
//! - `run-once`, SMTP to the sink: ingest, then every acknowledgement sent
//!   before it exits (seconds `i + s`): sending alone takes `s`;
//! - `serve`, no transport: ingest alone, as the service does it;
//! - `serve`, SMTP to a server that never answers: ingest that writes every
//!   acknowledgement to the outbox (in the ticket's transaction) but sends
//!   none — what acknowledging costs ingestion;
//! - `serve`, SMTP: ingest while the outbox sends beside it; the ingest time
//!   (until the INBOX is empty) against the previous one is what sending
//!   costs ingestion, and the time until the last acknowledgement reached the
//!   sink is the sending rate under load.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use mailrobot_testkit::dovecot::Dovecot;
use mailrobot_testkit::generate::{GenOptions, generate_corpus};
use mailrobot_testkit::smtp_sink::SmtpSink;
use serde_json::{Value, json};

use crate::{PASSWORD, median, robot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    OnceAlone,
    OnceSending,
    ServeAlone,
    ServeQueueing,
    ServeSending,
}

impl Run {
    const ALL: [Run; 5] = [Run::OnceAlone, Run::OnceSending, Run::ServeAlone, Run::ServeQueueing, Run::ServeSending];

    fn name(self) -> &'static str {
        match self {
            Run::OnceAlone => "run-once, no transport",
            Run::OnceSending => "run-once, SMTP",
            Run::ServeAlone => "serve, no transport",
            Run::ServeQueueing => "serve, SMTP server silent",
            Run::ServeSending => "serve, SMTP",
        }
    }

    fn sends(self) -> bool {
        matches!(self, Run::OnceSending | Run::ServeSending)
    }
}

/// A TCP server that accepts connections and never says a word: the robot
/// waits for its greeting (and queues meanwhile) without sending anything.
fn silent_server() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    Ok(port)
}

/// A data directory with the mailbox `bench` over `user`, acknowledging
/// through the sink when `sink` is given.
fn prepare(bin: &Path, data: &Path, dovecot: &Dovecot, user: &str, smtp_port: Option<u16>) -> anyhow::Result<()> {
    crate::add_imap_mailbox(bin, data, dovecot.imap_port(), user, &["--poll-seconds", "3600", "--disabled"])?;
    // 16 people write the corpus: each may get all their acknowledgements.
    for (key, value) in [("answer.per_sender", "1000"), ("answer.sender_window_minutes", "1")] {
        let out = robot(bin, data, &["settings", "set", key, value]).output()?;
        ensure!(out.status.success(), "settings set {key}: {}", String::from_utf8_lossy(&out.stderr));
    }
    if let Some(port) = smtp_port {
        let server = format!("127.0.0.1:{port}");
        let args = [
            "mailbox",
            "set",
            "bench",
            "--reply-via",
            "smtp",
            "--smtp-server",
            &server,
            "--smtp-tls",
            "none",
            "--from",
            "helpdesk@contoso.example",
        ];
        let out = robot(bin, data, &args).output()?;
        ensure!(out.status.success(), "mailbox set: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = robot(bin, data, &["mailbox", "enable", "bench"]).output()?;
    ensure!(out.status.success(), "mailbox enable: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// (queued or sent, sent) mails in the robot's outbox, read from its
/// database directly (a list of 10,000 rows every few milliseconds would
/// load the machine the run measures). A row is `sent` once the sink said 250.
fn sent_count(data: &Path) -> anyhow::Result<(usize, usize)> {
    let db = rusqlite::Connection::open_with_flags(
        data.join("mailrobot.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    db.busy_timeout(Duration::from_secs(5))?;
    let (all, sent): (i64, i64) =
        db.query_row("SELECT COUNT(*), COALESCE(SUM(state = 'sent'), 0) FROM outbox WHERE kind = 'mail'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    Ok((all as usize, sent as usize))
}

fn one_run(bin: &Path, dovecot: &Dovecot, user: &str, mails: usize, run: Run) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let data: PathBuf = dir.path().join("data");
    let sink = if run.sends() { Some(SmtpSink::start_discarding()?) } else { None };
    if let Some(sink) = &sink {
        // The SMTP server stands for another machine: here it yields the
        // cores to the robot, whose share is what is measured.
        // SAFETY: setpriority on a child process's id.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, sink.pid(), 19) };
    }
    let smtp_port = match (&sink, run) {
        (Some(sink), _) => Some(sink.port()),
        (None, Run::ServeQueueing) => Some(silent_server()?),
        (None, _) => None,
    };
    prepare(bin, &data, dovecot, user, smtp_port)?;
    let mut result = json!({"run": run.name()});
    match run {
        Run::OnceAlone | Run::OnceSending => {
            let started = Instant::now();
            let out = robot(bin, &data, &["run-once", "--json"]).output()?;
            let seconds = started.elapsed().as_secs_f64();
            ensure!(out.status.success(), "run-once: {}", String::from_utf8_lossy(&out.stderr));
            ensure!(dovecot.count(user, "INBOX") == 0, "mails left in the INBOX");
            result["seconds"] = json!(seconds);
        }
        Run::ServeAlone | Run::ServeQueueing | Run::ServeSending => {
            let serving = crate::api::Serving::start(bin, &data)?;
            let started = Instant::now();
            while dovecot.count(user, "INBOX") > 0 {
                if started.elapsed() > Duration::from_secs(600) {
                    bail!("ingest of {mails} mails did not finish in 10 minutes");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let ingest = started.elapsed().as_secs_f64();
            result["ingest_seconds"] = json!(ingest);
            result["ingest_mails_per_second"] = json!(mails as f64 / ingest);
            if sink.is_some() {
                // Done when every acknowledgement queued is sent.
                let queued = loop {
                    let (queued, _) = sent_count(&data)?;
                    if queued > 0 {
                        break queued;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                };
                while sent_count(&data)?.1 < queued {
                    if started.elapsed() > Duration::from_secs(600) {
                        bail!("{queued} acknowledgements were not sent in 10 minutes");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let seconds = started.elapsed().as_secs_f64();
                result["all_sent_seconds"] = json!(seconds);
                result["sent_per_second_beside_ingest"] = json!(queued as f64 / seconds);
            }
            drop(serving);
        }
    }
    if sink.is_some() {
        let (queued, sent) = sent_count(&data)?;
        ensure!(queued > mails / 2, "only {queued} acknowledgements for {mails} new tickets");
        ensure!(sent == queued, "{sent} of {queued} acknowledgements sent");
        result["acknowledgements"] = json!(queued);
    }
    Ok(result)
}

pub fn outbound_run(bin: &Path, mails: usize, rounds: usize, seed: u64) -> anyhow::Result<Value> {
    let rounds = rounds.max(1);
    let users: Vec<String> = (0..rounds * Run::ALL.len()).map(|i| format!("outbound{i}@example.test")).collect();
    let dovecot = Dovecot::start(&users.iter().map(|u| (u.as_str(), PASSWORD)).collect::<Vec<_>>())?;
    // Every mail a new ticket: each one is acknowledged.
    let opts = GenOptions { reply_ratio: 0.0, ..GenOptions::default() };
    let mut runs: Vec<Value> = Vec::new();
    for round in 0..rounds {
        for i in 0..Run::ALL.len() {
            let run = Run::ALL[(i + round) % Run::ALL.len()];
            let user = &users[round * Run::ALL.len() + i];
            dovecot.deliver_many(user, "INBOX", generate_corpus(mails, seed, &opts))?;
            let result = one_run(bin, &dovecot, user, mails, run)?;
            eprintln!("   round {round}, {}: {result}", run.name());
            runs.push(result);
        }
    }
    let of = |run: Run, key: &str| -> Vec<f64> {
        runs.iter().filter(|r| r["run"] == run.name()).filter_map(|r| r[key].as_f64()).collect()
    };
    let acks = median(of(Run::OnceSending, "acknowledgements"));
    let once_alone = median(of(Run::OnceAlone, "seconds"));
    let once_sending = median(of(Run::OnceSending, "seconds"));
    let send_seconds = once_sending - once_alone;
    let serve_alone = median(of(Run::ServeAlone, "ingest_mails_per_second"));
    let serve_queueing = median(of(Run::ServeQueueing, "ingest_mails_per_second"));
    let serve_sending = median(of(Run::ServeSending, "ingest_mails_per_second"));
    Ok(json!({
        "mails": mails,
        "rounds": rounds,
        "runs": runs,
        "acknowledgements": acks,
        "run_once_ingest_seconds": once_alone,
        "run_once_ingest_and_send_seconds": once_sending,
        "sent_per_second_alone": acks / send_seconds,
        "serve_ingest_per_second_alone": serve_alone,
        "serve_ingest_per_second_acknowledging_unsent": serve_queueing,
        "serve_ingest_per_second_while_sending": serve_sending,
        "acknowledging_over_alone": serve_queueing / serve_alone,
        "sending_over_acknowledging_unsent": serve_sending / serve_queueing,
        "ingest_while_sending_over_alone": serve_sending / serve_alone,
        "sent_per_second_beside_ingest": median(of(Run::ServeSending, "sent_per_second_beside_ingest")),
    }))
}
