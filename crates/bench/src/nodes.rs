//! Several nodes on one PostgreSQL against one (issue 11, part 4): the same
//! generated mails spread over many IMAP mailboxes in one Dovecot, ingested
//! by one `serve` node, then by several sharing the database (each its own
//! data directory, all one master key); rounds alternate. Each measured two
//! ways, until every mail is processed and settled in the server:
//! - *cold*: the mails wait in the server; measured from the nodes' start,
//!   so the first node to start takes every lease and hands some over at
//!   its next heartbeat (start-up and rebalancing included);
//! - *running*: the nodes start on empty mailboxes and spread the leases
//!   first; measured from the first mail's delivery (the nodes hear of it
//!   through IMAP IDLE), so what it compares is throughput.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mailrobot_testkit::dovecot::Dovecot;
use mailrobot_testkit::generate::{GenOptions, generate_corpus};
use serde_json::{Value, json};

use crate::api::Serving;
use crate::{POSTGRES_ENV, database_for, median};

/// The key every node opens the secrets with (a bench's own).
const MASTER_KEY: &str = "b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7";

fn user(i: usize) -> String {
    format!("node-box{i:03}")
}

/// Counts settled journal rows over one session, kept open: starting `psql`
/// (a Perl wrapper on Debian) ten times a second took a tenth of a core
/// from the nodes being measured.
struct SettledCounter {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl SettledCounter {
    fn connect(url: &str) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (client, connection) = runtime.block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))?;
        runtime.spawn(connection);
        Ok(Self { runtime, client })
    }

    fn settled(&self) -> anyhow::Result<usize> {
        let row = self.runtime.block_on(self.client.query_one("SELECT count(*) FROM messages WHERE settled", &[]))?;
        Ok(row.try_get::<_, i64>(0)? as usize)
    }
}

/// How the nodes meet the mails (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Start {
    Cold,
    Running,
}

/// `nodes list --json` as seen from `data`.
fn nodes_list(bin: &Path, data: &Path, env: &[(&str, &str)]) -> anyhow::Result<Value> {
    let out = Command::new(bin)
        .args(["nodes", "list", "--json"])
        .arg("--data-dir")
        .arg(data)
        .envs(env.iter().copied())
        .output()?;
    ensure!(out.status.success(), "nodes list: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).context("nodes list --json")
}

/// Waits until `nodes` live nodes hold every one of `mailboxes` leases,
/// spread as evenly as the nodes' share allows.
fn wait_for_balanced_leases(
    bin: &Path,
    data: &Path,
    env: &[(&str, &str)],
    nodes: usize,
    mailboxes: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = nodes_list(bin, data, env)?;
        let held: Vec<usize> = list
            .as_array()
            .map(|a| {
                a.iter().filter(|n| n["alive"] == true).map(|n| n["mailboxes"].as_array().map_or(0, Vec::len)).collect()
            })
            .unwrap_or_default();
        let share = mailboxes.div_ceil(nodes);
        if held.len() == nodes && held.iter().sum::<usize>() == mailboxes && held.iter().all(|h| *h <= share) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "leases not spread over {nodes} nodes in 2 minutes: {held:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One run: `nodes` nodes over `mailboxes` mailboxes holding `mails` mails.
fn run(
    bin: &Path,
    server: &str,
    mails: usize,
    mailboxes: usize,
    nodes: usize,
    start: Start,
    seed: u64,
) -> anyhow::Result<Value> {
    let names: Vec<String> = (0..mailboxes).map(user).collect();
    let accounts: Vec<(&str, &str)> = names.iter().map(|u| (u.as_str(), crate::PASSWORD)).collect();
    let dovecot = Dovecot::start(&accounts)?;
    let mut per_box: Vec<Vec<Vec<u8>>> = vec![Vec::new(); mailboxes];
    for (i, mail) in generate_corpus(mails, seed, &GenOptions::default()).enumerate() {
        per_box[i % mailboxes].push(mail);
    }
    let deliver = |per_box: Vec<Vec<Vec<u8>>>| -> anyhow::Result<()> {
        for (name, box_mails) in names.iter().zip(per_box) {
            dovecot.deliver_many(name, "INBOX", box_mails)?;
        }
        Ok(())
    };
    if start == Start::Cold {
        deliver(std::mem::take(&mut per_box))?;
    } else {
        // The folders exist before the nodes look at them.
        for name in &names {
            dovecot.deliver_many(name, "INBOX", std::iter::empty::<&[u8]>())?;
        }
    }

    let dir = tempfile::tempdir()?;
    let data: Vec<_> = (0..nodes).map(|i| dir.path().join(format!("node{i}"))).collect();
    let url = database_for(server, &data[0]);
    let env = [("MAILROBOT_DATABASE_URL", url.as_str()), ("MAILROBOT_MASTER_KEY", MASTER_KEY)];
    for name in &names {
        crate::add_imap_mailbox_named(bin, &data[0], name, dovecot.imap_port(), name, &["--poll-seconds", "5"], &env)?;
    }

    let counter = SettledCounter::connect(&url)?;
    let mut started = Instant::now();
    let mut cpu_before = crate::machine_cpu_seconds()?;
    let mut ticks_before = crate::process_ticks();
    let serving: Vec<Serving> =
        data.iter().map(|d| Serving::start_with_env(bin, d, &env)).collect::<anyhow::Result<_>>()?;
    if start == Start::Running {
        wait_for_balanced_leases(bin, &data[0], &env, nodes, mailboxes)?;
        started = Instant::now();
        cpu_before = crate::machine_cpu_seconds()?;
        ticks_before = crate::process_ticks();
        deliver(per_box)?;
    }
    loop {
        if counter.settled()? >= mails {
            break;
        }
        ensure!(started.elapsed() < Duration::from_secs(600), "not every mail settled in 10 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = crate::machine_cpu_seconds()?;
    let by_command = crate::cpu_seconds_by_command(&ticks_before, &crate::process_ticks());
    let (busy, idle) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let held = nodes_list(bin, &data[0], &env)?;
    drop(serving);
    let rate = mails as f64 / seconds;
    let busy_ms_per_mail = busy * 1000.0 / mails as f64;
    let idle_share = idle / (busy + idle);
    eprintln!(
        "   {nodes} node(s), {start:?}: {seconds:.2} s, {rate:.0} mails/s; \
         machine CPU {busy_ms_per_mail:.3} ms a mail, {:.0} % idle",
        idle_share * 100.0
    );
    // Where the machine's CPU went: the robot's nodes, the database, the
    // IMAP server, and this driver (which delivers the mails while nodes run).
    let mut heaviest: Vec<(&String, &f64)> = by_command.iter().collect();
    heaviest.sort_by(|a, b| b.1.total_cmp(a.1));
    let heaviest: Vec<String> = heaviest.iter().take(5).map(|(c, s)| format!("{c} {s:.2} s")).collect();
    eprintln!("     CPU by process: {}", heaviest.join(", "));
    Ok(json!({"nodes": nodes, "start": format!("{start:?}").to_lowercase(), "seconds": seconds,
              "mails_per_second": rate, "machine_cpu_ms_per_mail": busy_ms_per_mail,
              "machine_idle_share": idle_share, "cpu_seconds_by_command": by_command, "nodes_list": held}))
}

/// One node against `nodes` nodes, `rounds` times each, alternating, from a
/// cold start and with the nodes running.
pub fn nodes_run(
    bin: &Path,
    mails: usize,
    mailboxes: usize,
    nodes: usize,
    rounds: usize,
    seed: u64,
) -> anyhow::Result<Value> {
    let server = std::env::var(POSTGRES_ENV).with_context(|| format!("--nodes-mails needs {POSTGRES_ENV}"))?;
    let mut results = serde_json::Map::new();
    for start in [Start::Running, Start::Cold] {
        let (mut one, mut several) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            eprintln!("== {start:?}, round {}: {mails} mails in {mailboxes} mailboxes, 1 node then {nodes}", round + 1);
            one.push(run(bin, &server, mails, mailboxes, 1, start, seed)?);
            several.push(run(bin, &server, mails, mailboxes, nodes, start, seed)?);
        }
        let rates =
            |runs: &[Value]| runs.iter().map(|r| r["mails_per_second"].as_f64().unwrap_or(0.0)).collect::<Vec<_>>();
        let (one_rate, several_rate) = (median(rates(&one)), median(rates(&several)));
        results.insert(
            format!("{start:?}").to_lowercase(),
            json!({
                "one_node": one, "several_nodes": several,
                "median_mails_per_second_one_node": one_rate,
                "median_mails_per_second_several_nodes": several_rate,
                "median_ratio_several_to_one": several_rate / one_rate,
            }),
        );
    }
    Ok(json!({"mails": mails, "mailboxes": mailboxes, "nodes": nodes, "runs": results}))
}
