//! `mailrobot-bench`: the ingest benchmark of docs/benchmarks.md.
//!
//! Fills a real Dovecot with generated mail (~10 KB, text/HTML/attachments,
//! 10% replies), then measures `mailrobot run-once` over it: mails/s and peak
//! RSS; then one mail with a 25 MB attachment; then, side by side on the same
//! mails from the same Dovecot, django-helpdesk's `get_email`.

mod api;
mod backlog;
mod latency;
mod mailboxes;
mod nodes;
mod outbound;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use mailrobot_testkit::dovecot::Dovecot;
use mailrobot_testkit::generate::{GenOptions, generate_corpus, large_attachment_mail};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Mails in the main run.
    #[arg(long, default_value_t = 10_000)]
    mails: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The mailrobot binary to measure (build it with --release).
    #[arg(long, default_value = "target/release/mailrobot")]
    mailrobot: PathBuf,
    /// Size of the large attachment, in MB (0 skips that run).
    #[arg(long, default_value_t = 25)]
    large_mb: usize,
    /// A mailbox of this many large mails (of --big-mb each) in one pass:
    /// the memory bound whatever the mails are (0 skips that run).
    #[arg(long, default_value_t = 0)]
    big_mails: usize,
    /// Size of each of those mails as sent, in MB.
    #[arg(long, default_value_t = 20)]
    big_mb: usize,
    /// A venv made by bench/django-helpdesk/setup.sh: runs django-helpdesk side by side.
    #[arg(long)]
    django_venv: Option<PathBuf>,
    /// Mails for the django-helpdesk run (the first N of the same corpus); default: --mails.
    #[arg(long)]
    django_mails: Option<usize>,
    /// Also ingest this many mails from a Microsoft Graph mailbox (the emulator); 0 skips.
    #[arg(long, default_value_t = 0)]
    graph_mails: usize,
    /// Also ingest this many Graph mails while about one request in five is
    /// answered 429 (with and without Retry-After), 503 or a dropped connection.
    #[arg(long, default_value_t = 0)]
    graph_fault_mails: usize,
    /// Another mailrobot binary (an earlier build) to compare with: both run
    /// over the same MAILS, alternating, ROUNDS times each, in this one run.
    #[arg(long)]
    baseline: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The API and UI at scale: a database of this many journal rows (with
    /// --api-tickets tickets), and the time each list and search takes (0 skips).
    #[arg(long, default_value_t = 0)]
    api_journal: usize,
    #[arg(long, default_value_t = 300_000)]
    api_tickets: usize,
    /// Ingest of this many mails by `serve`, with and without 20 API readers,
    /// --rounds times each (0 skips).
    #[arg(long, default_value_t = 0)]
    readers_mails: usize,
    /// Only the API runs (--api-journal, --readers-mails), not the ingest ones.
    #[arg(long)]
    api_only: bool,
    /// Acknowledgements of this many new tickets sent through smtp-sink,
    /// and ingest with and without sending, --rounds times each (0 skips).
    #[arg(long, default_value_t = 0)]
    outbound_mails: usize,
    /// Only the outbound runs (--outbound-mails).
    #[arg(long)]
    outbound_only: bool,
    /// Only the arrival → ticket latency, with push (IMAP IDLE) and with
    /// polling: this many mails each.
    #[arg(long, default_value_t = 0)]
    latency_mails: usize,
    /// The poll interval of the polling side of --latency-mails.
    #[arg(long, default_value_t = 10)]
    latency_poll_seconds: u64,
    /// Only many mailboxes on one node: this many IMAP mailboxes, without
    /// and with IDLE (0 skips).
    #[arg(long, default_value_t = 0)]
    many_mailboxes: usize,
    /// Only many Graph mailboxes on one node and one application
    /// connection, with change notifications (0 skips).
    #[arg(long, default_value_t = 0)]
    many_graph_mailboxes: usize,
    /// Only fair scheduling: one IMAP mailbox with this many mails beside
    /// ten that get a mail a second while it drains (0 skips).
    #[arg(long, default_value_t = 0)]
    fair_big_mails: usize,
    /// How long --many-mailboxes and --many-graph-mailboxes watch the idle node.
    #[arg(long, default_value_t = 60)]
    many_watch_seconds: u64,
    /// Only several nodes against one on PostgreSQL (BENCH_POSTGRES_URL):
    /// this many mails over --nodes-mailboxes IMAP mailboxes, --rounds
    /// times each (0 skips).
    #[arg(long, default_value_t = 0)]
    nodes_mails: usize,
    #[arg(long, default_value_t = 30)]
    nodes_mailboxes: usize,
    /// How many nodes share the database in the several-nodes runs.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Only a backlog in many mailboxes at once: this many IMAP mailboxes,
    /// each with --backlog-mails mails of --backlog-kb KB, one `run-once`
    /// (beside --baseline when given), --rounds times (0 skips).
    #[arg(long, default_value_t = 0)]
    backlog_mailboxes: usize,
    #[arg(long, default_value_t = 100)]
    backlog_mails: usize,
    #[arg(long, default_value_t = 100)]
    backlog_kb: usize,
}

const PASSWORD: &str = "bench-password";

/// The median the bench reports everywhere: the middle value (the upper
/// one of an even count), so a ratio of medians compares two real runs.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Wall time and peak RSS of one child process.
struct Measured {
    seconds: f64,
    max_rss_kb: i64,
    stdout: String,
    /// The child's own CPU (user + system), in seconds.
    cpu_seconds: f64,
    /// The machine's share of idle CPU while the child ran: near 0, the run
    /// lacked cores; well above 0, it waited on something else.
    machine_idle_share: f64,
}

fn measure(cmd: &mut Command) -> anyhow::Result<Measured> {
    let cpu_before = machine_cpu_seconds()?;
    let started = Instant::now();
    let child = cmd.stdout(std::process::Stdio::piped()).spawn().context("spawn")?;
    let pid = child.id() as libc::pid_t;
    // Peak RSS from the child's own VmHWM, sampled until it exits: wait4's
    // ru_maxrss would also count this (large) process's pages, which a
    // vfork-spawned child shares until exec.
    let sampler = std::thread::spawn(move || {
        let mut peak_kb = 0i64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if status.contains("State:\tZ") {
                break;
            }
            if let Some(kb) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<i64>().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        peak_kb
    });
    let mut stdout = child.stdout.context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).ok();
        out
    });
    let mut status = 0;
    // SAFETY: plain wait4 on our own child; rusage is written by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = machine_cpu_seconds()?;
    ensure!(waited == pid, "wait4 failed");
    let stdout = reader.join().unwrap_or_default();
    let sampled_peak_kb = sampler.join().unwrap_or(0);
    ensure!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{cmd:?} failed (status {status}): {stdout}");
    let timeval = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let (busy, idle) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    Ok(Measured {
        seconds,
        max_rss_kb: sampled_peak_kb,
        stdout,
        cpu_seconds: timeval(usage.ru_utime) + timeval(usage.ru_stime),
        machine_idle_share: if busy + idle > 0.0 { idle / (busy + idle) } else { 0.0 },
    })
}

/// The machine's busy and idle CPU seconds so far (`/proc/stat`): a run's
/// difference tells whether it lacked CPU or waited.
pub(crate) fn machine_cpu_seconds() -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .context("/proc/stat is empty")?
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0.0))
        .collect();
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    Ok(((ticks.iter().sum::<f64>() - idle) / hz, idle / hz))
}

/// CPU ticks of every process on the machine, by pid: its own and those
/// of its children it has reaped (a Dovecot `imap` or PostgreSQL backend
/// that ended counts in its master's), with its command name.
pub(crate) type ProcessTicks = std::collections::HashMap<u32, (String, u64)>;

pub(crate) fn process_ticks() -> ProcessTicks {
    let mut all = ProcessTicks::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return all };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name is in parentheses and may hold spaces.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let fields: Vec<u64> = stat[close + 2..].split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
        // Kernel threads (children of kthreadd, pid 2) rename themselves as
        // they take work; the kernel's share shows in the machine's CPU.
        if pid == 2 || fields.get(1) == Some(&2) {
            continue;
        }
        // utime, stime, cutime, cstime: fields 14-17 of proc(5), 11-14 here.
        let ticks = fields.get(11..15).map_or(0, |t| t.iter().sum());
        all.insert(pid, (stat[open + 1..close].to_string(), ticks));
    }
    all
}

/// CPU seconds spent between two [`process_ticks`] snapshots, by command
/// name (processes that started in between count whole).
pub(crate) fn cpu_seconds_by_command(before: &ProcessTicks, after: &ProcessTicks) -> BTreeMap<String, f64> {
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut by_command: BTreeMap<String, f64> = BTreeMap::new();
    for (pid, (command, ticks)) in after {
        let earlier = before.get(pid).filter(|(c, _)| c == command).map_or(0, |(_, t)| *t);
        let spent = ticks.saturating_sub(earlier);
        if spent > 0 {
            *by_command.entry(command.clone()).or_default() += spent as f64 / hz;
        }
    }
    by_command
}

fn robot(bin: &Path, data_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("MAILROBOT_LOG", std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .env("BENCH_PW", PASSWORD);
    if let Ok(server) = std::env::var(POSTGRES_ENV) {
        cmd.env("MAILROBOT_DATABASE_URL", database_for(&server, data_dir));
    }
    cmd
}

/// `BENCH_POSTGRES_URL`: run every robot on PostgreSQL instead of SQLite, a
/// fresh database per data directory, made with `psql` through this URL (a
/// role with CREATEDB).
const POSTGRES_ENV: &str = "BENCH_POSTGRES_URL";

/// The database of a data directory's robot, created on first use.
fn database_for(server: &str, data_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    static CREATED: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hasher);
    let name = format!("bench_{:016x}", hasher.finish());
    let mut created = CREATED.lock().unwrap_or_else(|p| p.into_inner());
    if !created.iter().any(|d| d == data_dir) {
        let status = Command::new("psql").arg(server).arg("-qc").arg(format!("CREATE DATABASE {name}")).status();
        assert!(status.is_ok_and(|s| s.success()), "psql could not create database {name}");
        created.push(data_dir.to_path_buf());
    }
    // The server's query (sslmode=…) stays with each database's URL.
    let (path, query) = server.split_once('?').map_or((server, ""), |(path, query)| (path, query));
    let base = path.rsplit_once('/').map_or(path, |(base, _)| base);
    if query.is_empty() { format!("{base}/{name}") } else { format!("{base}/{name}?{query}") }
}

/// `mailbox add bench --kind imap` over the Dovecot user `user`, plus `extra`.
fn add_imap_mailbox(bin: &Path, data: &Path, port: u16, user: &str, extra: &[&str]) -> anyhow::Result<()> {
    add_imap_mailbox_named(bin, data, "bench", port, user, extra, &[])
}

/// `mailbox add NAME --kind imap` over the Dovecot user `user` (no TLS, the
/// bench password), plus `extra`, with the environment variables `env`.
pub(crate) fn add_imap_mailbox_named(
    bin: &Path,
    data: &Path,
    name: &str,
    port: u16,
    user: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<()> {
    let port = port.to_string();
    let mut args = vec![
        "mailbox",
        "add",
        "--name",
        name,
        "--kind",
        "imap",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--tls",
        "none",
        "--username",
        user,
        "--password-env",
        "BENCH_PW",
    ];
    args.extend_from_slice(extra);
    let add = robot(bin, data, &args).envs(env.iter().copied()).output()?;
    ensure!(add.status.success(), "mailbox add {name}: {}", String::from_utf8_lossy(&add.stderr));
    Ok(())
}

/// Adds the IMAP mailbox and runs one `run-once` over it.
fn mailrobot_run(bin: &Path, port: u16, user: &str) -> anyhow::Result<(Measured, Value)> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    add_imap_mailbox(bin, &data, port, user, &[])?;
    let measured = measure(&mut robot(bin, &data, &["run-once", "--json"]))?;
    let report: Value = serde_json::from_str(&measured.stdout).context("run-once --json output")?;
    Ok((measured, report[0]["report"].clone()))
}

/// This hour's speed of the machine, by a fixed piece of work whatever the
/// build: SHA-256 of 64 MB on one core, best of three, in MB/s. The same
/// build spent a third more or less CPU on the same mails from one hour to
/// the next on these VMs (which expose no instruction counters): figures
/// of different runs compare only with this beside them.
fn machine_yardstick() -> f64 {
    use sha2::Digest;
    let data: Vec<u8> = (0..64u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut best = 0f64;
    for _ in 0..3 {
        let started = Instant::now();
        std::hint::black_box(sha2::Sha256::digest(&data));
        best = best.max(data.len() as f64 / 1e6 / started.elapsed().as_secs_f64());
    }
    best
}

/// Prints a run's results (JSON on stdout) with the machine's yardstick
/// from before the run and after it.
fn emit(mut results: Value, before: f64) -> anyhow::Result<()> {
    let after = machine_yardstick();
    eprintln!("== machine yardstick after: SHA-256 on one core {after:.0} MB/s (before: {before:.0})");
    results["machine_sha256_mb_per_s"] = json!({"before": before, "after": after});
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let yardstick_before = machine_yardstick();
    eprintln!("== machine yardstick: SHA-256 on one core {yardstick_before:.0} MB/s");
    ensure!(args.mailrobot.exists(), "{} not found: run `cargo build --release` first", args.mailrobot.display());
    if args.api_only {
        let mut results = json!({"nproc": std::thread::available_parallelism()?.get()});
        if args.api_journal > 0 {
            results["api_scale"] = api::scale_run(&args.mailrobot, args.api_journal, args.api_tickets)?;
        }
        if args.readers_mails > 0 {
            eprintln!("== ingest of {} mails by serve, alone and with 20 API readers", args.readers_mails);
            results["ingest_with_readers"] =
                api::readers_run(&args.mailrobot, args.readers_mails, args.rounds, args.seed)?;
        }
        emit(results, yardstick_before)?;
        return Ok(());
    }
    if args.nodes_mails > 0 {
        let results = json!({
            "nproc": std::thread::available_parallelism()?.get(),
            "nodes": nodes::nodes_run(
                &args.mailrobot,
                args.nodes_mails,
                args.nodes_mailboxes,
                args.nodes,
                args.rounds,
                args.seed
            )?,
        });
        emit(results, yardstick_before)?;
        return Ok(());
    }
    if args.backlog_mailboxes > 0 {
        let results = json!({
            "nproc": std::thread::available_parallelism()?.get(),
            "backlog": backlog::backlog(
                &args.mailrobot,
                args.baseline.as_deref(),
                args.backlog_mailboxes,
                args.backlog_mails,
                args.backlog_kb,
                args.rounds
            )?,
        });
        emit(results, yardstick_before)?;
        return Ok(());
    }
    if args.fair_big_mails > 0 {
        let results = json!({
            "nproc": std::thread::available_parallelism()?.get(),
            "fairness": mailboxes::fairness(&args.mailrobot, args.fair_big_mails)?,
        });
        emit(results, yardstick_before)?;
        return Ok(());
    }
    if args.many_mailboxes > 0 || args.many_graph_mailboxes > 0 {
        let (bin, watch) = (&args.mailrobot, args.many_watch_seconds);
        let mut results = json!({"nproc": std::thread::available_parallelism()?.get()});
        if args.many_mailboxes > 0 {
            results["many_mailboxes"] = mailboxes::mailboxes(bin, args.many_mailboxes, watch)?;
        }
        if args.many_graph_mailboxes > 0 {
            results["many_graph_mailboxes"] = mailboxes::graph_mailboxes(bin, args.many_graph_mailboxes, watch)?;
        }
        emit(results, yardstick_before)?;
        return Ok(());
    }
    if args.latency_mails > 0 {
        let results = json!({
            "nproc": std::thread::available_parallelism()?.get(),
            "latency": latency::latency(&args.mailrobot, args.latency_mails, args.latency_poll_seconds)?,
        });
        emit(results, yardstick_before)?;
        return Ok(());
    }
    if args.outbound_only {
        eprintln!("== acknowledgements of {} new tickets, and ingest with and without sending", args.outbound_mails);
        let results = json!({
            "nproc": std::thread::available_parallelism()?.get(),
            "outbound": outbound::outbound_run(&args.mailrobot, args.outbound_mails, args.rounds, args.seed)?,
        });
        emit(results, yardstick_before)?;
        return Ok(());
    }
    let opts = GenOptions::default();
    let compare_users: Vec<String> = (0..args.rounds * 2).map(|i| format!("compare{i}@example.test")).collect();
    // The robot's side of the django-helpdesk comparison runs --rounds times
    // (its median counts): one run of it lasts well under a second, so one
    // sample carries the machine's noise whole; django-helpdesk's run lasts
    // minutes and averages it out.
    let same_users: Vec<String> = (0..args.rounds.max(1)).map(|i| format!("same{i}@example.test")).collect();
    let mut users = vec![
        ("bench@example.test", PASSWORD),
        ("large@example.test", PASSWORD),
        ("big@example.test", PASSWORD),
        ("django@example.test", PASSWORD),
    ];
    users.extend(compare_users.iter().map(|u| (u.as_str(), PASSWORD)));
    users.extend(same_users.iter().map(|u| (u.as_str(), PASSWORD)));
    let dovecot = Dovecot::start(&users)?;
    let mut results =
        json!({"mails": args.mails, "seed": args.seed, "nproc": std::thread::available_parallelism()?.get()});

    eprintln!("== delivering {} generated mails into Dovecot", args.mails);
    let bytes: usize = generate_corpus(args.mails, args.seed, &opts).map(|m| m.len()).sum();
    dovecot.deliver_many("bench@example.test", "INBOX", generate_corpus(args.mails, args.seed, &opts))?;
    eprintln!("== mailrobot run-once over {} mails ({:.1} MB)", args.mails, bytes as f64 / 1e6);
    let (m, report) = mailrobot_run(&args.mailrobot, dovecot.imap_port(), "bench@example.test")?;
    let fetched = report["fetched"].as_u64().unwrap_or(0) as usize;
    ensure!(fetched == args.mails, "mailrobot fetched {fetched} of {} mails: {report}", args.mails);
    ensure!(dovecot.count("bench@example.test", "INBOX") == 0, "mails left in INBOX");
    let rate = args.mails as f64 / m.seconds;
    eprintln!(
        "   {:.2} s, {:.0} mails/s, peak RSS {:.1} MB; its CPU {:.2} s, machine {:.0} % idle",
        m.seconds,
        rate,
        m.max_rss_kb as f64 / 1024.0,
        m.cpu_seconds,
        m.machine_idle_share * 100.0
    );
    results["mailrobot"] = json!({
        "seconds": m.seconds, "mails_per_second": rate, "peak_rss_mb": m.max_rss_kb as f64 / 1024.0,
        "cpu_seconds": m.cpu_seconds, "machine_idle_share": m.machine_idle_share,
        "mean_mail_bytes": bytes / args.mails.max(1), "report": report,
    });

    if args.large_mb > 0 {
        let mail = large_attachment_mail(args.large_mb << 20);
        let size_mb = mail.len() as f64 / (1 << 20) as f64;
        dovecot.deliver("large@example.test", "INBOX", &mail)?;
        eprintln!("== one mail with a {} MB attachment ({size_mb:.1} MB as sent)", args.large_mb);
        let (m, report) = mailrobot_run(&args.mailrobot, dovecot.imap_port(), "large@example.test")?;
        ensure!(report["processed"] == 1, "the large mail was not processed: {report}");
        let rss_mb = m.max_rss_kb as f64 / 1024.0;
        eprintln!("   {:.2} s, peak RSS {rss_mb:.1} MB = {:.2}x the mail", m.seconds, rss_mb / size_mb);
        results["large_mail"] = json!({
            "attachment_mb": args.large_mb, "mail_mb": size_mb, "seconds": m.seconds,
            "peak_rss_mb": rss_mb, "rss_to_mail_ratio": rss_mb / size_mb,
        });
    }

    if args.big_mails > 0 {
        // The attachment goes as base64: three quarters of the mail's size.
        let mail = large_attachment_mail((args.big_mb << 20) * 3 / 4);
        let size_mb = mail.len() as f64 / (1 << 20) as f64;
        for _ in 0..args.big_mails {
            dovecot.deliver("big@example.test", "INBOX", &mail)?;
        }
        let total_mb = size_mb * args.big_mails as f64;
        eprintln!("== {} mails of {size_mb:.1} MB ({total_mb:.0} MB) in one pass", args.big_mails);
        let (m, report) = mailrobot_run(&args.mailrobot, dovecot.imap_port(), "big@example.test")?;
        let fetched = report["fetched"].as_u64().unwrap_or(0) as usize;
        ensure!(fetched == args.big_mails, "mailrobot fetched {fetched} of {} big mails: {report}", args.big_mails);
        let rss_mb = m.max_rss_kb as f64 / 1024.0;
        eprintln!("   {:.2} s, peak RSS {rss_mb:.1} MB ({:.1}% of the mailbox)", m.seconds, 100.0 * rss_mb / total_mb);
        results["big_mails"] = json!({
            "mails": args.big_mails, "mail_mb": size_mb, "total_mb": total_mb, "seconds": m.seconds,
            "peak_rss_mb": rss_mb,
        });
    }

    if let Some(venv) = &args.django_venv {
        let n = args.django_mails.unwrap_or(args.mails).min(args.mails);
        dovecot.deliver_many("django@example.test", "INBOX", generate_corpus(n, args.seed, &opts))?;
        eprintln!("== django-helpdesk get_email over the first {n} of the same mails");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/django-helpdesk/run.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg(venv)
            .arg("127.0.0.1")
            .arg(dovecot.imap_port().to_string())
            .arg("django@example.test")
            .env("HELPDESK_IMAP_PASSWORD", PASSWORD);
        let m = measure(&mut cmd)?;
        let line = m.stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
        let django: Value = serde_json::from_str(line).with_context(|| format!("run.sh output: {}", m.stdout))?;
        let django_rate = django["mails_per_second"].as_f64().unwrap_or(0.0);
        if django_rate <= 0.0 {
            bail!("django-helpdesk reported no rate: {django}");
        }
        // mailrobot over exactly the mails django-helpdesk read, for a like-for-like ratio.
        let mut seconds = Vec::new();
        for user in &same_users {
            dovecot.deliver_many(user, "INBOX", generate_corpus(n, args.seed, &opts))?;
            let (same, _) = mailrobot_run(&args.mailrobot, dovecot.imap_port(), user)?;
            eprintln!("   mailrobot on the same {n} mails: {:.0} mails/s", n as f64 / same.seconds);
            seconds.push(same.seconds);
        }
        seconds.sort_by(f64::total_cmp);
        let median_seconds = seconds[seconds.len() / 2];
        let same_rate = n as f64 / median_seconds;
        eprintln!(
            "   django-helpdesk {django_rate:.1} mails/s; mailrobot on the same {n} mails {same_rate:.0} mails/s \
             (median of {}): {:.0}x",
            seconds.len(),
            same_rate / django_rate
        );
        results["django_helpdesk"] = django;
        results["mailrobot_same_mails"] = json!({
            "mails": n, "seconds": median_seconds, "mails_per_second": same_rate, "runs_seconds": seconds,
        });
        results["speedup_vs_django_helpdesk"] = json!(same_rate / django_rate);
    }
    if let Some(baseline) = &args.baseline {
        results["baseline_comparison"] = baseline_run(&args, baseline, &dovecot, &compare_users, &opts)?;
    }
    if args.graph_mails > 0 {
        results["graph"] = graph_run(&args, &opts)?;
    }
    if args.graph_fault_mails > 0 {
        results["graph_faults"] = graph_fault_run(&args, &opts)?;
    }
    if args.outbound_mails > 0 {
        results["outbound"] = outbound::outbound_run(&args.mailrobot, args.outbound_mails, args.rounds, args.seed)?;
    }
    emit(results, yardstick_before)?;
    Ok(())
}

/// The same MAILS through `baseline` and the candidate, alternating (the
/// order flips each round so neither always runs on a warmer disk), each on
/// its own freshly delivered Dovecot mailbox. Reports each run and the ratio
/// of the medians: candidate ÷ baseline, above 1 when the candidate is faster.
fn baseline_run(
    args: &Args,
    baseline: &Path,
    dovecot: &Dovecot,
    users: &[String],
    opts: &GenOptions,
) -> anyhow::Result<Value> {
    ensure!(baseline.exists(), "{} not found", baseline.display());
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut rss: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut users = users.iter();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let (label, bin) =
                if which == 0 { ("baseline", baseline) } else { ("candidate", args.mailrobot.as_path()) };
            let user = users.next().context("one mailbox per run")?;
            dovecot.deliver_many(user, "INBOX", generate_corpus(args.mails, args.seed, opts))?;
            let (m, report) = mailrobot_run(bin, dovecot.imap_port(), user)?;
            let fetched = report["fetched"].as_u64().unwrap_or(0) as usize;
            ensure!(fetched == args.mails, "{label} fetched {fetched} of {} mails: {report}", args.mails);
            let rate = args.mails as f64 / m.seconds;
            eprintln!(
                "   round {round} {label}: {rate:.0} mails/s, peak RSS {:.1} MB, its CPU {:.2} s, machine {:.0} % idle",
                m.max_rss_kb as f64 / 1024.0,
                m.cpu_seconds,
                m.machine_idle_share * 100.0
            );
            rates[which].push(rate);
            rss[which].push(m.max_rss_kb as f64 / 1024.0);
        }
    }
    let ratio = median(rates[1].clone()) / median(rates[0].clone());
    eprintln!("== candidate ÷ baseline, median mails/s: {ratio:.3}");
    Ok(json!({
        "baseline": baseline.display().to_string(),
        "baseline_mails_per_second": rates[0], "candidate_mails_per_second": rates[1],
        "baseline_peak_rss_mb": rss[0], "candidate_peak_rss_mb": rss[1],
        "median_ratio": ratio,
    }))
}

/// An emulated tenant with `n` generated mails in a shared mailbox, and a
/// robot data directory with an application Graph connection to it.
pub(crate) fn graph_world(
    bin: &Path,
    corpus: Vec<Vec<u8>>,
    mailbox_options: &[&str],
) -> anyhow::Result<(m365_emulator::Emulator, tempfile::TempDir)> {
    use m365_emulator::{AppSpec, Emulator, EmulatorConfig, MailboxSpec, SecretSpec, Setup, TenantSpec};
    let emu = Emulator::start(EmulatorConfig::http(Setup::default()))?;
    emu.add_tenant(TenantSpec::new("bench.test"))?;
    emu.add_app(AppSpec {
        tenant: "bench.test".into(),
        client_id: Some("b3c4b3c4-0000-4000-8000-00000000be4c".into()),
        secrets: vec![SecretSpec::new(PASSWORD)],
        application_permissions: vec!["https://graph.microsoft.com/Mail.ReadWrite".into()],
        ..Default::default()
    })?;
    emu.create_mailbox(MailboxSpec::new("bench.test", "shared@bench.test"))?;
    eprintln!("== delivering {} generated mails into a Graph mailbox", corpus.len());
    for mail in corpus {
        emu.deliver_mime("shared@bench.test", "inbox", &String::from_utf8_lossy(&mail))?;
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let base = emu.base_url().to_string();
    let setup: [&[&str]; 3] = [
        &[
            "tenant",
            "add",
            "--name",
            "bench",
            "--client-id",
            "b3c4b3c4-0000-4000-8000-00000000be4c",
            "--tenant",
            "bench.test",
            "--client-secret-env",
            "BENCH_PW",
            "--authority-url",
            &base,
            "--graph-url",
            &base,
        ],
        &["connection", "add", "--name", "app", "--tenant", "bench", "--capability", "graph", "--mode", "application"],
        &[
            &[
                "mailbox",
                "add",
                "--name",
                "graph",
                "--kind",
                "graph",
                "--connection",
                "app",
                "--address",
                "shared@bench.test",
            ][..],
            mailbox_options,
        ]
        .concat(),
    ];
    for command in setup {
        let out = robot(bin, &data, command).output()?;
        ensure!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((emu, dir))
}

/// The emulator's Graph endpoints (its stats and fault names).
const GRAPH_ENDPOINTS: [&str; 4] = ["graph", "graph_value", "graph_delta", "graph_batch"];

/// mailrobot over a Graph mailbox of the emulator (application connection):
/// mails/s, HTTP requests per mail, token requests.
fn graph_run(args: &Args, opts: &GenOptions) -> anyhow::Result<Value> {
    let n = args.graph_mails;
    let (emu, dir) = graph_world(&args.mailrobot, generate_corpus(n, args.seed, opts).collect(), &[])?;
    let data = dir.path().join("data");
    emu.reset_stats();
    eprintln!("== mailrobot run-once over the Graph mailbox");
    let m = measure(&mut robot(&args.mailrobot, &data, &["run-once", "--json"]))?;
    let report: Value = serde_json::from_str(&m.stdout)?;
    let fetched = report[0]["report"]["fetched"].as_u64().unwrap_or(0) as usize;
    ensure!(fetched == n, "mailrobot fetched {fetched} of {n} Graph mails: {report}");
    let stats = emu.stats();
    // HTTP requests on the wire (a $batch of 20 moves is one), and the Graph
    // operations inside them (what Graph's throttling counts).
    let graph_requests: u64 = GRAPH_ENDPOINTS.iter().map(|e| stats.http_requests(e)).sum();
    let graph_operations: u64 =
        GRAPH_ENDPOINTS.iter().filter(|e| **e != "graph_batch").map(|e| stats.requests(e)).sum();
    let token_requests = stats.requests("token");
    let rate = n as f64 / m.seconds;
    eprintln!(
        "   {:.2} s, {rate:.0} mails/s, {:.2} Graph HTTP requests per mail ({:.2} operations), {token_requests} token request(s), peak RSS {:.1} MB",
        m.seconds,
        graph_requests as f64 / n as f64,
        graph_operations as f64 / n as f64,
        m.max_rss_kb as f64 / 1024.0
    );
    Ok(json!({
        "mails": n, "seconds": m.seconds, "mails_per_second": rate, "peak_rss_mb": m.max_rss_kb as f64 / 1024.0,
        "graph_requests": graph_requests, "requests_per_mail": graph_requests as f64 / n as f64,
        "graph_operations": graph_operations, "operations_per_mail": graph_operations as f64 / n as f64,
        "token_requests": token_requests,
    }))
}

/// Graph ingest while about a fifth of the requests fail: every mail must
/// end as exactly one ticket, settled in the Processed folder.
fn graph_fault_run(args: &Args, opts: &GenOptions) -> anyhow::Result<Value> {
    use m365_emulator::FaultSpec;
    let n = args.graph_fault_mails;
    let (emu, dir) = graph_world(&args.mailrobot, generate_corpus(n, args.seed, opts).collect(), &[])?;
    let data = dir.path().join("data");
    // Every Graph request (and $batch item) fails with about one chance in
    // five, independently: 429 with and without Retry-After, 503, drops.
    for fault in FaultSpec::graph_failure_rate(0.2) {
        emu.inject_fault(fault)?;
    }
    eprintln!("== mailrobot over the Graph mailbox with ~20% of requests failing");
    let started = Instant::now();
    let mut passes = 0;
    // Passes as `serve` would run them: a mailbox the server throttled for
    // longer than a pass waits is skipped until its stored time, so keep
    // asking, a second apart, until the inbox is empty.
    let deadline = Instant::now() + Duration::from_secs(30 * 60);
    while emu.count("shared@bench.test", "inbox")? > 0 && Instant::now() < deadline {
        if passes > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        passes += 1;
        let out = robot(&args.mailrobot, &data, &["run-once"]).output()?;
        // BENCH_PASS_LOGS=DIR keeps each pass's log (with BENCH_LOG=mailrobot=debug: every retry).
        if let Ok(dir) = std::env::var("BENCH_PASS_LOGS") {
            std::fs::write(format!("{dir}/pass-{passes}.log"), &out.stderr)?;
        }
        // A pass that ends early says why on its last line.
        if !out.status.success() {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            eprintln!("   pass {passes}: {}", stdout.lines().chain(stderr.lines()).last().unwrap_or("(no report)"));
        }
    }
    // One quiet pass settles what the last faulty one could not.
    emu.clear_faults();
    robot(&args.mailrobot, &data, &["run-once"]).output()?;
    let seconds = started.elapsed().as_secs_f64();
    let tickets: Value =
        serde_json::from_slice(&robot(&args.mailrobot, &data, &["tickets", "list", "--json"]).output()?.stdout)?;
    let messages: Value =
        serde_json::from_slice(&robot(&args.mailrobot, &data, &["messages", "list", "--json"]).output()?.stdout)?;
    let processed = emu.count("shared@bench.test", "Processed")?;
    let journaled = messages.as_array().map_or(0, Vec::len);
    // Faults land on requests as Graph sees them: HTTP requests and $batch items.
    let stats = emu.stats();
    let sent: u64 = GRAPH_ENDPOINTS.iter().map(|e| stats.requests(e)).sum();
    let faults: u64 = GRAPH_ENDPOINTS.iter().filter_map(|e| stats.endpoints.get(*e)).map(|e| e.faults).sum();
    eprintln!(
        "   {passes} passes, {seconds:.1} s, {faults} faults in {sent} requests; {journaled} journaled, {processed} in Processed"
    );
    ensure!(journaled == n && processed == n, "not exactly once: {journaled} journaled, {processed} settled of {n}");
    Ok(json!({
        "mails": n, "passes": passes, "seconds": seconds, "faults": faults, "requests": sent,
        "journaled": journaled, "settled": processed, "tickets": tickets.as_array().map_or(0, Vec::len),
    }))
}
