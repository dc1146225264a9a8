//! Several nodes on one PostgreSQL against one (issue 11, part 4): the same
//! generated mails spread over many IMAP mailboxes in one Dovecot, ingested
//! by one `serve` node, then by several sharing the database (each its own
//! data directory, all one master key). Measured from the nodes' start until
//! every mail is processed and settled in the server; rounds alternate.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mailrobot_testkit::dovecot::Dovecot;
use mailrobot_testkit::generate::{GenOptions, generate_corpus};
use serde_json::{Value, json};

use crate::api::Serving;
use crate::{POSTGRES_ENV, database_for};

/// The key every node opens the secrets with (a bench's own).
const MASTER_KEY: &str = "b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7";

fn user(i: usize) -> String {
    format!("node-box{i:03}")
}

/// `SELECT count(*)` of settled journal rows.
fn settled(url: &str) -> anyhow::Result<usize> {
    let out = Command::new("psql").arg(url).args(["-tAc", "SELECT count(*) FROM messages WHERE settled"]).output()?;
    ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// One run: `nodes` nodes over `mailboxes` mailboxes holding `mails` mails.
fn run(bin: &Path, server: &str, mails: usize, mailboxes: usize, nodes: usize, seed: u64) -> anyhow::Result<Value> {
    let names: Vec<String> = (0..mailboxes).map(user).collect();
    let accounts: Vec<(&str, &str)> = names.iter().map(|u| (u.as_str(), crate::PASSWORD)).collect();
    let dovecot = Dovecot::start(&accounts)?;
    let mut per_box: Vec<Vec<Vec<u8>>> = vec![Vec::new(); mailboxes];
    for (i, mail) in generate_corpus(mails, seed, &GenOptions::default()).enumerate() {
        per_box[i % mailboxes].push(mail);
    }
    for (name, box_mails) in names.iter().zip(per_box) {
        dovecot.deliver_many(name, "INBOX", box_mails)?;
    }

    let dir = tempfile::tempdir()?;
    let data: Vec<_> = (0..nodes).map(|i| dir.path().join(format!("node{i}"))).collect();
    let url = database_for(server, &data[0]);
    let env = [("MAILROBOT_DATABASE_URL", url.as_str()), ("MAILROBOT_MASTER_KEY", MASTER_KEY)];
    for name in &names {
        crate::add_imap_mailbox_named(bin, &data[0], name, dovecot.imap_port(), name, &["--poll-seconds", "5"], &env)?;
    }

    let started = Instant::now();
    let serving: Vec<Serving> =
        data.iter().map(|d| Serving::start_with_env(bin, d, &env)).collect::<anyhow::Result<_>>()?;
    loop {
        if settled(&url)? >= mails {
            break;
        }
        ensure!(started.elapsed() < Duration::from_secs(600), "not every mail settled in 10 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    let seconds = started.elapsed().as_secs_f64();
    let held =
        Command::new(bin).args(["nodes", "list", "--json"]).arg("--data-dir").arg(&data[0]).envs(env).output()?;
    let held: Value = serde_json::from_slice(&held.stdout).context("nodes list --json")?;
    drop(serving);
    let rate = mails as f64 / seconds;
    eprintln!("   {nodes} node(s): {seconds:.2} s, {rate:.0} mails/s");
    Ok(json!({"nodes": nodes, "seconds": seconds, "mails_per_second": rate, "nodes_list": held}))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One node against `nodes` nodes, `rounds` times each, alternating.
pub fn nodes_run(
    bin: &Path,
    mails: usize,
    mailboxes: usize,
    nodes: usize,
    rounds: usize,
    seed: u64,
) -> anyhow::Result<Value> {
    let server = std::env::var(POSTGRES_ENV).with_context(|| format!("--nodes-mails needs {POSTGRES_ENV}"))?;
    let (mut one, mut several) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        eprintln!("== round {}: {mails} mails in {mailboxes} mailboxes, 1 node then {nodes}", round + 1);
        one.push(run(bin, &server, mails, mailboxes, 1, seed)?);
        several.push(run(bin, &server, mails, mailboxes, nodes, seed)?);
    }
    let rates = |runs: &[Value]| runs.iter().map(|r| r["mails_per_second"].as_f64().unwrap_or(0.0)).collect::<Vec<_>>();
    let (one_rate, several_rate) = (median(rates(&one)), median(rates(&several)));
    Ok(json!({
        "mails": mails, "mailboxes": mailboxes, "nodes": nodes,
        "one_node": one, "several_nodes": several,
        "median_mails_per_second_one_node": one_rate,
        "median_mails_per_second_several_nodes": several_rate,
        "median_ratio_several_to_one": several_rate / one_rate,
    }))
}
