//! Many mailboxes on one node (issue 11's part 4): one `serve` over N IMAP
//! mailboxes in one Dovecot, with IMAP IDLE offered or not. Each mailbox
//! holds one mail at the start; the run measures how long until every one
//! is a ticket, then watches the idle node for a while: its resident
//! memory (VmRSS, and the high-water mark VmHWM), open file descriptors and
//! threads, sampled from /proc.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mailrobot_testkit::dovecot::{Dovecot, Options};
use serde_json::{Value, json};

use crate::api::Serving;
use crate::{PASSWORD, robot};

fn user(i: usize) -> String {
    format!("box{i:05}")
}

fn mail(i: usize) -> Vec<u8> {
    format!(
        "From: Requester {i} <req{i}@example.com>\r\nTo: {u}@example.test\r\nSubject: Mailbox {i}\r\n\
         Message-ID: <many-{i}@example.com>\r\n\r\nOne mail in mailbox {i}.\r\n",
        u = user(i)
    )
    .into_bytes()
}

/// What /proc says of a process now.
#[derive(Default, Clone, Copy)]
struct Sample {
    rss_kb: i64,
    hwm_kb: i64,
    threads: i64,
    fds: usize,
}

fn sample(pid: u32) -> anyhow::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> i64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok(Sample { rss_kb: field("VmRSS:"), hwm_kb: field("VmHWM:"), threads: field("Threads:"), fds })
}

/// Runs `add(i)` for every i below `n`, a few processes at a time (the
/// first alone: it creates the database).
pub(crate) fn add_all(n: usize, add: impl Fn(usize) -> anyhow::Result<()> + Sync) -> anyhow::Result<()> {
    add(0)?;
    let next = std::sync::atomic::AtomicUsize::new(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        add(i)?;
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().expect("worker panicked"))
    })
}

/// `mailrobot mailbox add` with these arguments.
fn add_mailbox(bin: &Path, data: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = robot(bin, data, &[&["mailbox", "add"][..], args].concat()).output()?;
    ensure!(out.status.success(), "mailbox add {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Adds `n` IMAP mailboxes, one per Dovecot user.
fn add_mailboxes(bin: &Path, data: &Path, port: u16, n: usize, poll_seconds: u64) -> anyhow::Result<()> {
    let poll = poll_seconds.to_string();
    add_all(n, |i| crate::add_imap_mailbox_named(bin, data, &user(i), port, &user(i), &["--poll-seconds", &poll], &[]))
}

/// Samples `pid` into `peak` and returns the sample.
fn observe(pid: u32, peak: &mut Sample) -> anyhow::Result<Sample> {
    let now = sample(pid)?;
    peak.rss_kb = peak.rss_kb.max(now.rss_kb);
    peak.hwm_kb = peak.hwm_kb.max(now.hwm_kb);
    peak.threads = peak.threads.max(now.threads);
    peak.fds = peak.fds.max(now.fds);
    Ok(now)
}

/// Waits until the robot has `n` tickets (10 minutes at most), sampling.
fn wait_for_tickets(bin: &Path, data: &Path, n: usize, pid: u32, peak: &mut Sample) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        observe(pid, peak)?;
        let out = robot(bin, data, &["tickets", "list", "--json"]).output()?;
        let tickets: Vec<Value> = serde_json::from_slice(&out.stdout).context("tickets list --json")?;
        if tickets.len() >= n {
            return Ok(started.elapsed());
        }
        ensure!(started.elapsed() < Duration::from_secs(600), "only {} of {n} tickets in 10 minutes", tickets.len());
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Samples the node for `seconds`; returns the last sample.
fn watch_idle(pid: u32, seconds: u64, peak: &mut Sample) -> anyhow::Result<Sample> {
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut now = Sample::default();
    while Instant::now() < until {
        now = observe(pid, peak)?;
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(now)
}

fn mb(kb: i64) -> f64 {
    kb as f64 / 1024.0
}

fn report(n: usize, all_in: Duration, idle: Sample, peak: Sample, watch_seconds: u64) -> Value {
    eprintln!(
        "   every mailbox polled, {n} tickets in {:.1} s; idle: RSS {:.1} MB, {} fds, {} threads; \
         peak RSS {:.1} MB (VmHWM {:.1} MB), peak fds {}",
        all_in.as_secs_f64(),
        mb(idle.rss_kb),
        idle.fds,
        idle.threads,
        mb(peak.rss_kb),
        mb(peak.hwm_kb),
        peak.fds
    );
    json!({
        "mailboxes": n, "seconds_until_every_mail_in": all_in.as_secs_f64(),
        "idle_rss_mb": mb(idle.rss_kb), "idle_fds": idle.fds, "idle_threads": idle.threads,
        "peak_rss_mb": mb(peak.rss_kb), "vm_hwm_mb": mb(peak.hwm_kb), "peak_fds": peak.fds,
        "peak_threads": peak.threads, "watched_seconds": watch_seconds,
    })
}

/// One run over `n` mailboxes, IDLE offered or not.
fn run(bin: &Path, n: usize, idle: bool, watch_seconds: u64) -> anyhow::Result<Value> {
    let names: Vec<String> = (0..n).map(user).collect();
    let accounts: Vec<(&str, &str)> = names.iter().map(|u| (u.as_str(), PASSWORD)).collect();
    let dc = Dovecot::start_with(&accounts, &Options { without_idle: !idle, ..Default::default() })?;
    for (i, name) in names.iter().enumerate() {
        dc.deliver(name, "INBOX", &mail(i))?;
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let started = Instant::now();
    add_mailboxes(bin, &data, dc.imap_port(), n, 300)?;
    eprintln!("   {n} mailboxes added in {:.1} s", started.elapsed().as_secs_f64());

    let serving = Serving::start(bin, &data)?;
    let pid = serving.pid();
    let mut peak = Sample::default();
    let all_in = wait_for_tickets(bin, &data, n, pid, &mut peak)?;
    // Then the node idles: IDLE sessions open, or polls waiting their turn.
    let idle_now = watch_idle(pid, watch_seconds, &mut peak)?;
    let mut result = report(n, all_in, idle_now, peak, watch_seconds);
    result["idle_offered"] = json!(idle);
    Ok(result)
}

/// `n` Graph mailboxes of one tenant in the emulator, all on one
/// application connection, with change notifications: how long until each
/// one's mail is in, token requests (one per token lifetime), subscriptions,
/// memory and descriptors; then one more mail in each of 100 mailboxes.
fn graph_run(bin: &Path, n: usize, watch_seconds: u64) -> anyhow::Result<Value> {
    // The world's own mailbox is the first one.
    let (emu, dir) = crate::graph_world(bin, Vec::new(), &["--poll-seconds", "300"])?;
    let data = dir.path().join("data");
    let address = |i: usize| if i == 0 { "shared@bench.test".to_string() } else { format!("{}@bench.test", user(i)) };
    for i in 1..n {
        emu.create_mailbox(m365_emulator::MailboxSpec::new("bench.test", address(i)))?;
    }
    let started = Instant::now();
    add_all(n, |i| {
        if i == 0 {
            return Ok(());
        }
        let (name, address) = (user(i), address(i));
        add_mailbox(
            bin,
            &data,
            &[
                "--name",
                &name,
                "--kind",
                "graph",
                "--connection",
                "app",
                "--address",
                &address,
                "--poll-seconds",
                "300",
            ],
        )
    })?;
    eprintln!("   {n} mailboxes added in {:.1} s", started.elapsed().as_secs_f64());
    let deliver = |i: usize| emu.deliver_mime(&address(i), "inbox", &String::from_utf8_lossy(&mail(i)));
    for i in 0..n {
        deliver(i)?;
    }
    emu.reset_stats();
    let serving = Serving::start(bin, &data)?;
    let pid = serving.pid();
    let mut peak = Sample::default();
    let all_in = wait_for_tickets(bin, &data, n, pid, &mut peak)?;
    let subscribed = Instant::now();
    while emu.subscriptions().len() < n && subscribed.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let subscriptions = emu.subscriptions().len();
    // One more mail in 100 mailboxes: brought in by notifications.
    let pushed = Instant::now();
    for i in (0..n).step_by((n / 100).max(1)).take(100) {
        emu.deliver_mime(&address(i), "inbox", &String::from_utf8_lossy(&mail(n + i)))?;
    }
    let extra = (0..n).step_by((n / 100).max(1)).take(100).count();
    wait_for_tickets(bin, &data, n + extra, pid, &mut peak)?;
    let pushed_in = pushed.elapsed();
    let idle_now = watch_idle(pid, watch_seconds, &mut peak)?;
    let stats = emu.stats();
    let token_requests = stats.requests("token");
    eprintln!(
        "   {token_requests} token request(s), {subscriptions} subscriptions; {extra} more mails by push in {:.1} s",
        pushed_in.as_secs_f64()
    );
    let mut result = report(n, all_in, idle_now, peak, watch_seconds);
    result["token_requests"] = json!(token_requests);
    result["subscriptions"] = json!(subscriptions);
    result["pushed_mails"] = json!(extra);
    result["seconds_until_pushed_mails_in"] = json!(pushed_in.as_secs_f64());
    Ok(result)
}

/// `n` Graph mailboxes on one application connection.
pub(crate) fn graph_mailboxes(bin: &Path, n: usize, watch_seconds: u64) -> anyhow::Result<Value> {
    eprintln!("== {n} Graph mailboxes on one node, one application connection");
    graph_run(bin, n, watch_seconds)
}

/// N mailboxes without IDLE (polling only), then with IDLE.
pub(crate) fn mailboxes(bin: &Path, n: usize, watch_seconds: u64) -> anyhow::Result<Value> {
    let mut results = serde_json::Map::new();
    for idle in [false, true] {
        let name = if idle { "with IDLE" } else { "without IDLE" };
        eprintln!("== {n} IMAP mailboxes on one node, {name}");
        results.insert(name.into(), run(bin, n, idle, watch_seconds)?);
    }
    Ok(Value::Object(results))
}

/// Fair scheduling: one mailbox holding `big` mails beside ten that get a
/// mail a second while it drains. How long the small ones' mails wait for
/// their ticket (arrival → ticket) tells whether the big one starves them.
pub(crate) fn fairness(bin: &Path, big: usize) -> anyhow::Result<Value> {
    const SMALL: usize = 10;
    const ROUNDS: usize = 15;
    eprintln!("== one mailbox with {big} mails beside {SMALL} getting a mail a second");
    let names: Vec<String> = std::iter::once("big".to_string()).chain((0..SMALL).map(user)).collect();
    let accounts: Vec<(&str, &str)> = names.iter().map(|u| (u.as_str(), PASSWORD)).collect();
    let dc = Dovecot::start_with(&accounts, &Options { without_idle: true, ..Default::default() })?;
    let small_mail = |i: usize| {
        format!(
            "From: Busy {i} <busy{i}@example.com>\r\nSubject: Backlog {i}\r\nMessage-ID: <backlog-{i}@example.com>\r\n\r\nOne of many.\r\n"
        )
        .into_bytes()
    };
    dc.deliver_many("big", "INBOX", (0..big).map(small_mail))?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    add_all(names.len(), |i| {
        let poll = if i == 0 { "60" } else { "1" };
        crate::add_imap_mailbox_named(bin, &data, &names[i], dc.imap_port(), &names[i], &["--poll-seconds", poll], &[])
    })?;
    let serving = Serving::start(bin, &data)?;
    let started = Instant::now();
    // The big mailbox's pass is under way once its inbox starts emptying.
    while dc.count("big", "INBOX") + 2000 > big && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut delivered = Vec::new();
    for round in 0..ROUNDS {
        for (i, name) in names.iter().enumerate().skip(1) {
            let subject = format!("Small {i}-{round}");
            let raw = format!(
                "From: Small <small{i}@example.com>\r\nSubject: {subject}\r\nMessage-ID: <small-{i}-{round}@example.com>\r\n\r\nHello.\r\n"
            );
            dc.deliver(name, "INBOX", raw.as_bytes())?;
            delivered.push((subject, std::time::SystemTime::now()));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let still_draining = dc.count("big", "INBOX");
    while dc.count("big", "INBOX") > 0 && started.elapsed() < Duration::from_secs(900) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let drained = started.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let out = robot(bin, &data, &["tickets", "list", "--json"]).output()?;
    drop(serving);
    let tickets: Vec<Value> = serde_json::from_slice(&out.stdout).context("tickets list --json")?;
    let created: std::collections::HashMap<&str, &str> = tickets
        .iter()
        .filter_map(|t| Some((t["subject"].as_str()?, t["created_at"].as_str()?)))
        .filter(|(s, _)| s.starts_with("Small "))
        .collect();
    let mut latencies = Vec::new();
    for (subject, at) in &delivered {
        let ticket = created.get(subject.as_str()).with_context(|| format!("no ticket for {subject}"))?;
        let ticket = chrono::DateTime::parse_from_rfc3339(ticket)?;
        let ticket = std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(ticket.timestamp_millis() as u64);
        latencies.push(ticket.duration_since(*at).unwrap_or_default().as_secs_f64());
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pick = |p: f64| latencies[(((latencies.len() - 1) as f64) * p).round() as usize];
    let big_tickets = tickets.len() - created.len();
    eprintln!(
        "   small mailboxes' mails while the big one drained ({still_draining} of {big} left when the last was sent): \
         p50 {:.2} s, p99 {:.2} s, max {:.2} s; the big one drained in {:.1} s ({big_tickets} tickets)",
        pick(0.5),
        pick(0.99),
        latencies[latencies.len() - 1],
        drained.as_secs_f64()
    );
    Ok(json!({
        "big_mails": big, "small_mailboxes": SMALL, "small_mails": latencies.len(),
        "big_left_when_last_small_sent": still_draining,
        "small_p50_seconds": pick(0.5), "small_p99_seconds": pick(0.99),
        "small_max_seconds": latencies[latencies.len() - 1],
        "big_drained_seconds": drained.as_secs_f64(), "big_tickets": big_tickets,
    }))
}
