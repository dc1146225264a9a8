//! Many mailboxes with a backlog at once, as after an outage: one `run-once`
//! over N IMAP mailboxes in one Dovecot, each holding M mails of about K KB.
//! Every mailbox is polled at once (up to `MAILROBOT_POLL_CONCURRENCY`), so
//! this is where the node-wide bound on fetched mail not yet filed
//! (`MAILROBOT_MAIL_IN_MEMORY_MB`) shows: the robot's peak RSS and wall
//! time, the candidate beside `--baseline`, alternating, `--rounds` each.

use std::path::Path;

use anyhow::{Context, ensure};
use mailrobot_testkit::dovecot::{Dovecot, Options};
use mailrobot_testkit::generate::{GenOptions, generate_corpus};
use serde_json::{Value, json};

use crate::{PASSWORD, measure, robot};

fn user(i: usize) -> String {
    format!("backlog{i:03}")
}

pub(crate) fn backlog(
    candidate: &Path,
    baseline: Option<&Path>,
    mailboxes: usize,
    mails_each: usize,
    kb: usize,
    rounds: usize,
) -> anyhow::Result<Value> {
    eprintln!("== {mailboxes} mailboxes with {mails_each} mails of ~{kb} KB each, one run-once");
    let users: Vec<String> = (0..mailboxes).map(user).collect();
    let accounts: Vec<(&str, &str)> = users.iter().map(|u| (u.as_str(), PASSWORD)).collect();
    let dc = Dovecot::start_with(&accounts, &Options { without_idle: true, ..Default::default() })?;
    let opts = GenOptions { target_size: kb * 1024, ..Default::default() };
    let corpora: Vec<Vec<Vec<u8>>> =
        (0..mailboxes).map(|i| generate_corpus(mails_each, 100 + i as u64, &opts).collect()).collect();
    let total_mb = corpora.iter().flatten().map(Vec::len).sum::<usize>() as f64 / (1 << 20) as f64;
    let binaries: Vec<(&str, &Path)> =
        baseline.map(|b| ("baseline", b)).into_iter().chain([("candidate", candidate)]).collect();
    let mut runs: Vec<Value> = Vec::new();
    for round in 0..rounds {
        for (label, bin) in &binaries {
            // The run before moved every mail out of the inboxes.
            for (i, corpus) in corpora.iter().enumerate() {
                dc.deliver_many(&users[i], "INBOX", corpus.iter())?;
            }
            let dir = tempfile::tempdir()?;
            let data = dir.path().join("data");
            crate::mailboxes::add_all(mailboxes, |i| {
                crate::add_imap_mailbox_named(bin, &data, &users[i], dc.imap_port(), &users[i], &[], &[])
            })?;
            let m = measure(&mut robot(bin, &data, &["run-once", "--json"]))?;
            let report: Value = serde_json::from_str(&m.stdout).context("run-once --json output")?;
            let created: u64 = report
                .as_array()
                .context("run-once --json is a list")?
                .iter()
                .map(|r| r["report"]["processed"].as_u64().unwrap_or(0))
                .sum();
            ensure!(created as usize == mailboxes * mails_each, "{label}: {created} mails processed");
            let rate = created as f64 / m.seconds;
            let rss_mb = m.max_rss_kb as f64 / 1024.0;
            eprintln!("   round {round} {label}: {:.2} s ({rate:.0} mails/s), peak RSS {rss_mb:.0} MB", m.seconds);
            runs.push(json!({"round": round, "binary": label, "seconds": m.seconds, "mails_per_second": rate,
                             "peak_rss_mb": rss_mb, "cpu_seconds": m.cpu_seconds}));
        }
    }
    let median_of = |label: &str, field: &str| {
        crate::median(runs.iter().filter(|r| r["binary"] == label).filter_map(|r| r[field].as_f64()).collect())
    };
    let mut summary = json!({"mailboxes": mailboxes, "mails_each": mails_each, "mail_mb": total_mb, "runs": runs});
    for (label, _) in &binaries {
        let (rss, rate) = (median_of(label, "peak_rss_mb"), median_of(label, "mails_per_second"));
        eprintln!("   {label}: median peak RSS {rss:.0} MB, median {rate:.0} mails/s ({total_mb:.0} MB of mail)");
        summary[format!("{label}_median_peak_rss_mb")] = json!(rss);
        summary[format!("{label}_median_mails_per_second")] = json!(rate);
    }
    Ok(summary)
}
