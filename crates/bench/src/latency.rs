//! Arrival → ticket latency (issue 11's push part): how long after the mail
//! server accepts a mail its ticket exists, with push and with polling, for
//! IMAP and Graph, side by side in one run.
//!
//! One Dovecot announces IDLE, another does not (its capabilities leave it
//! out, as servers without push do); the Graph mailbox is in the emulator,
//! with change notifications, then without (`MAILROBOT_GRAPH_PUSH=off`). A
//! `serve` watches each: with push on a 60 s safety poll (push brings mail
//! in), without it polling every `--latency-poll-seconds`. Mails are delivered one by one at
//! random gaps; a mail's latency is its ticket's `created_at` (the robot's
//! clock) minus the moment the delivery returned (the Maildir rename that
//! makes it visible to the server — the same machine's clock).

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, ensure};
use mailrobot_testkit::dovecot::{Dovecot, Options};
use serde_json::{Value, json};

use crate::api::Serving;
use crate::{PASSWORD, add_imap_mailbox, robot};

const USER: &str = "latency";

fn mail(run: &str, n: usize) -> Vec<u8> {
    format!(
        "From: Ann <ann@example.com>\r\nTo: desk@example.com\r\nSubject: {run} latency {n}\r\n\
         Message-ID: <{run}-latency-{n}@example.com>\r\n\r\nHow long did this take?\r\n"
    )
    .into_bytes()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Puts one mail into the watched mailbox.
type Deliver = Box<dyn Fn(&[u8]) -> anyhow::Result<()>>;

/// Where the mails of one run arrive, and the robot watching it.
struct World {
    data: std::path::PathBuf,
    deliver: Deliver,
    _keep: Box<dyn std::any::Any>,
}

/// One Dovecot user, with IDLE offered or not.
fn imap_world(bin: &Path, push: bool, poll_seconds: u64) -> anyhow::Result<World> {
    let dc = Dovecot::start_with(&[(USER, PASSWORD)], &Options { without_idle: !push, ..Default::default() })?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    add_imap_mailbox(bin, &data, dc.imap_port(), USER, &["--poll-seconds", &poll_seconds.to_string()])?;
    let dc = std::rc::Rc::new(dc);
    let server = dc.clone();
    Ok(World {
        data,
        deliver: Box::new(move |mail| Ok(server.deliver(USER, "INBOX", mail)?)),
        _keep: Box::new((dc, dir)),
    })
}

/// A Graph mailbox in the emulator (application connection).
fn graph_world(bin: &Path, poll_seconds: u64) -> anyhow::Result<World> {
    let (emu, dir) = crate::graph_world(bin, Vec::new(), &["--poll-seconds", &poll_seconds.to_string()])?;
    let data = dir.path().join("data");
    let emu = std::rc::Rc::new(emu);
    let server = emu.clone();
    let deliver = move |mail: &[u8]| {
        server.deliver_mime("shared@bench.test", "inbox", &String::from_utf8_lossy(mail))?;
        Ok(())
    };
    Ok(World { data, deliver: Box::new(deliver), _keep: Box::new((emu, dir)) })
}

/// Delivers `mails` mails to a fresh robot watching one mailbox and returns
/// the latencies in seconds, sorted.
fn run(
    bin: &Path,
    name: &str,
    world: &World,
    env: &[(&str, &str)],
    poll_seconds: u64,
    mails: usize,
) -> anyhow::Result<Vec<f64>> {
    let data = &world.data;
    let _serving = Serving::start_with_env(bin, data, env)?;
    // The first poll (and, with push, the IDLE session or the Graph
    // subscription) is under way.
    std::thread::sleep(Duration::from_secs(2));
    let mut delivered_at = Vec::with_capacity(mails);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for n in 0..mails {
        (world.deliver)(&mail(name, n))?;
        delivered_at.push(SystemTime::now());
        // Random gaps of 0.2–1.2 s (xorshift: no dependency for this).
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(200 + seed % 1000));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(poll_seconds * 2 + 30);
    let tickets = loop {
        let out = robot(bin, data, &["tickets", "list", "--json"]).output()?;
        let tickets: Vec<Value> = serde_json::from_slice(&out.stdout).context("tickets list --json")?;
        if tickets.len() >= mails || std::time::Instant::now() > deadline {
            break tickets;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    ensure!(tickets.len() == mails, "{name}: {} tickets for {mails} mails", tickets.len());
    let mut latencies = Vec::with_capacity(mails);
    for ticket in &tickets {
        let subject = ticket["subject"].as_str().context("subject")?;
        let n: usize = subject.rsplit(' ').next().context("number")?.parse()?;
        let created = chrono::DateTime::parse_from_rfc3339(ticket["created_at"].as_str().context("created_at")?)?;
        let created = SystemTime::UNIX_EPOCH + Duration::from_millis(created.timestamp_millis() as u64);
        let latency = created.duration_since(delivered_at[n]).unwrap_or_default();
        latencies.push(latency.as_secs_f64());
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(latencies)
}

pub(crate) fn latency(bin: &Path, mails: usize, poll_seconds: u64) -> anyhow::Result<Value> {
    let mut results = serde_json::Map::new();
    let push_off = [("MAILROBOT_GRAPH_PUSH", "off")];
    type Run<'a> = (&'a str, bool, u64, &'a [(&'a str, &'a str)]);
    let runs: [Run; 4] = [
        ("push (IMAP IDLE)", true, 60, &[]),
        ("polling (IMAP)", false, poll_seconds, &[]),
        ("push (Graph change notifications)", true, 60, &[]),
        ("polling (Graph)", false, poll_seconds, &push_off),
    ];
    for (i, (name, push, poll, env)) in runs.into_iter().enumerate() {
        eprintln!("== {name}: {mails} mails, poll every {poll} s");
        let world = if i < 2 { imap_world(bin, push, poll)? } else { graph_world(bin, poll)? };
        let latencies = run(bin, &format!("run{i}"), &world, env, poll, mails)?;
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        eprintln!("   p50 {p50:.3} s, p99 {p99:.3} s, max {:.3} s", latencies[latencies.len() - 1]);
        results.insert(
            name.into(),
            json!({"poll_seconds": poll, "mails": mails, "p50_seconds": p50, "p99_seconds": p99,
                   "max_seconds": latencies[latencies.len() - 1]}),
        );
    }
    Ok(Value::Object(results))
}
