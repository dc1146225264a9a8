//! The API and UI at scale (docs/benchmarks.md, "The API and UI"):
//!
//! - `--api-journal N --api-tickets M`: a database with N journal rows and M
//!   tickets (written straight into the robot's own schema: ingesting a
//!   million mails would measure ingest, which the other runs do), then
//!   `serve` on it, and the time each ticket list, search and journal page
//!   takes through the REST API and the UI.
//! - `--readers-mails N`: ingest of N mails from Dovecot by `serve`, with and
//!   without 20 API readers hammering tickets and the journal, alternating,
//!   side by side.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use mailrobot_testkit::dovecot::Dovecot;
use mailrobot_testkit::generate::{GenOptions, generate_corpus};
use serde_json::{Value, json};

use crate::{PASSWORD, robot};

const ADMIN: &str = "bench.admin@example.test";
const ADMIN_PASSWORD: &str = "a bench passphrase, long enough";

/// A `serve` on a data directory, stopped when dropped.
pub(crate) struct Serving {
    child: Child,
    address: String,
}

impl Serving {
    pub(crate) fn start(bin: &Path, data: &Path) -> anyhow::Result<Self> {
        Self::start_with_env(bin, data, &[])
    }

    pub(crate) fn start_with_env(bin: &Path, data: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let mut child = robot(bin, data, &["serve", "--listen", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .with_context(|| format!("serve did not say where it listens: {line:?}"))?
            .to_string();
        Ok(Self { child, address })
    }
}

impl Serving {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over a fresh loopback connection: (status, headers, body).
fn http(address: &str, request: &str) -> anyhow::Result<(u16, String, String)> {
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status")?;
    Ok((status, head.to_string(), body.to_string()))
}

fn get(address: &str, path: &str, header: &str) -> anyhow::Result<(u16, String)> {
    let (status, _, body) =
        http(address, &format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{header}Connection: close\r\n\r\n"))?;
    Ok((status, body))
}

fn cookie_value(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .find_map(|c| c.strip_prefix(&format!("{name}=")).map(|v| v.split(';').next().unwrap_or("").to_string()))
}

/// Signs the bench administrator in over plain HTTP; returns the `Cookie` header line.
fn sign_in(address: &str) -> anyhow::Result<String> {
    let (_, head, body) =
        http(address, &format!("GET /sign-in HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"))?;
    let form_cookie = cookie_value(&head, "mailrobot_sign_in").context("no sign-in cookie")?;
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("no csrf field")?
        .to_string();
    let form = format!("csrf={csrf}&email={}&password={}", ADMIN.replace('@', "%40"), ADMIN_PASSWORD.replace(' ', "+"));
    let (status, head, _) = http(
        address,
        &format!(
            "POST /sign-in HTTP/1.1\r\nHost: {address}\r\nCookie: mailrobot_sign_in={form_cookie}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    )?;
    let session = cookie_value(&head, "mailrobot_session").with_context(|| format!("sign-in answered {status}"))?;
    Ok(format!("Cookie: mailrobot_session={session}\r\n"))
}

fn make_admin_and_token(bin: &Path, data: &Path) -> anyhow::Result<String> {
    let mut child = robot(bin, data, &["admin", "create", "--email", ADMIN, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    writeln!(child.stdin.take().context("stdin")?, "{ADMIN_PASSWORD}")?;
    ensure!(child.wait()?.success(), "admin create failed");
    let out = robot(bin, data, &["api-token", "create", "--name", "bench"]).output()?;
    ensure!(out.status.success(), "api-token create: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout)?.lines().last().context("no token")?.trim().to_string();
    Ok(format!("Authorization: Bearer {token}\r\n"))
}

/// Words of generated subjects: common ones land in many tickets, the rare
/// one in about one in 10,000.
const TOPICS: [&str; 12] =
    ["Printer", "VPN", "Laptop", "Password", "Email", "Monitor", "Invoice", "Badge", "Phone", "Wifi", "Desk", "Chair"];

/// Writes `tickets` tickets and `journal` journal rows (each processed row an
/// entry of a ticket; one in 200 failed) into the robot's database.
fn fill(db: &Path, journal: usize, tickets: usize) -> anyhow::Result<()> {
    ensure!(tickets > 0 && journal >= tickets, "need at least one journal row per ticket");
    let mut conn = rusqlite::Connection::open(db)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let tx = conn.transaction()?;
    let mailbox: i64 = tx.query_row("SELECT id FROM mailboxes ORDER BY id LIMIT 1", [], |r| r.get(0))?;
    let statuses = ["open", "open", "open", "pending", "closed"];
    {
        let mut insert = tx.prepare(
            "INSERT INTO tickets (id, subject, requester, requester_name, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        )?;
        for t in 1..=tickets {
            let topic = TOPICS[t % TOPICS.len()];
            let subject = if t % 10_000 == 7 {
                format!("Zeppelin parking for {t}")
            } else {
                format!("{topic} trouble on floor {} (case {t})", t % 40)
            };
            let at = format!("2026-{:02}-{:02}T{:02}:{:02}:00.000Z", 1 + t % 11, 1 + t % 27, t % 24, t % 60);
            insert.execute(rusqlite::params![
                t as i64,
                subject,
                format!("user{}@example.com", t % 5_000),
                format!("User {}", t % 5_000),
                statuses[t % statuses.len()],
                at
            ])?;
        }
    }
    let mut positions = vec![0i64; tickets + 1];
    {
        let mut message = tx.prepare(
            "INSERT INTO messages (id, mailbox_id, remote_id, size, state, kind, message_id, fingerprint, subject,
             from_addr, ticket_id, reason, attempts, settled, fetched_at, processed_at)
             VALUES (?1, ?2, ?3, 4000, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, 1, '2026-11-30T10:00:00.000Z',
                     '2026-11-30T10:00:00.100Z')",
        )?;
        let mut entry = tx.prepare(
            "INSERT INTO ticket_entries (ticket_id, position, journal_id, kind, message_id, from_addr, from_name,
             subject, date, text_body, created_at)
             VALUES (?1, ?2, ?3, 'mail', ?4, ?5, ?6, ?7, 'Mon, 30 Nov 2026 10:00:00 +0000', ?8,
                     '2026-11-30T10:00:00.100Z')",
        )?;
        let body = "Hello, the thing on my desk stopped working this morning. ".repeat(5);
        for id in 1..=journal {
            let failed = id % 200 == 0;
            // The first `tickets` rows open the tickets, the rest answer them.
            let ticket = if id <= tickets { id } else { 1 + (id * 7919) % tickets };
            let message_id = format!("<m{id}@example.com>");
            let from = format!("user{}@example.com", ticket % 5_000);
            let subject = format!("Re: case {ticket}");
            if failed {
                message.execute(rusqlite::params![
                    id as i64,
                    mailbox,
                    format!("r{id}"),
                    "failed",
                    Option::<&str>::None,
                    Option::<&str>::None,
                    Option::<&str>::None,
                    Option::<&str>::None,
                    Option::<&str>::None,
                    Option::<i64>::None,
                    "cannot be read as an e-mail: no header"
                ])?;
                continue;
            }
            message.execute(rusqlite::params![
                id as i64,
                mailbox,
                format!("r{id}"),
                "processed",
                "mail",
                message_id,
                format!("f{id}"),
                subject,
                from,
                ticket as i64,
                Option::<&str>::None
            ])?;
            positions[ticket] += 1;
            entry.execute(rusqlite::params![
                ticket as i64,
                positions[ticket],
                id as i64,
                message_id,
                from,
                format!("User {}", ticket % 5_000),
                subject,
                body
            ])?;
        }
    }
    tx.commit()?;
    conn.execute_batch("ANALYZE")?;
    Ok(())
}

/// One request of a measured case: (status, body).
type Request = dyn FnMut() -> anyhow::Result<(u16, String)>;

/// Milliseconds of `rounds` requests (after warm-ups): median and 95th percentile.
fn timed(rounds: usize, mut request: impl FnMut() -> anyhow::Result<(u16, String)>) -> anyhow::Result<Value> {
    for _ in 0..3 {
        request()?;
    }
    let mut ms = Vec::with_capacity(rounds);
    let mut bytes = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let (status, body) = request()?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(status == 200, "answered {status}: {}", body.chars().take(300).collect::<String>());
        bytes = body.len();
    }
    ms.sort_by(f64::total_cmp);
    Ok(json!({"median_ms": ms[ms.len() / 2], "p95_ms": ms[(ms.len() * 95 / 100).min(ms.len() - 1)], "bytes": bytes}))
}

pub fn scale_run(bin: &Path, journal: usize, tickets: usize) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let drop = dir.path().join("drop");
    let add = robot(bin, &data, &["mailbox", "add", "--name", "desk", "--kind", "drop-folder"])
        .arg("--path")
        .arg(&drop)
        .args(["--poll-seconds", "3600"])
        .output()?;
    ensure!(add.status.success(), "mailbox add: {}", String::from_utf8_lossy(&add.stderr));
    let auth = make_admin_and_token(bin, &data)?;
    eprintln!("== writing {journal} journal rows and {tickets} tickets");
    let started = Instant::now();
    fill(&data.join("mailrobot.db"), journal, tickets)?;
    let db_mb = std::fs::metadata(data.join("mailrobot.db"))?.len() as f64 / 1e6;
    eprintln!("   {:.1} s, database {db_mb:.0} MB", started.elapsed().as_secs_f64());
    let serving = Serving::start(bin, &data)?;
    let address = serving.address.clone();
    let cookie = sign_in(&address)?;
    let api = |path: String| {
        let (address, auth) = (address.clone(), auth.clone());
        move || get(&address, &path, &auth)
    };
    let ui = |path: String| {
        let (address, cookie) = (address.clone(), cookie.clone());
        move || get(&address, &path, &cookie)
    };
    let middle = format!("{}", tickets / 2);
    let cases: Vec<(&str, Box<Request>)> = vec![
        ("api tickets, first page", Box::new(api("/api/v1/tickets".into()))),
        ("api tickets, a page in the middle", Box::new(api(format!("/api/v1/tickets?cursor={middle}")))),
        ("api search, a common word (Printer)", Box::new(api("/api/v1/tickets?q=Printer".into()))),
        ("api search, a rare word (Zeppelin)", Box::new(api("/api/v1/tickets?q=Zeppelin".into()))),
        ("api search, no match (Xylophone)", Box::new(api("/api/v1/tickets?q=Xylophone".into()))),
        ("api search, a requester", Box::new(api("/api/v1/tickets?q=user4321%40example.com".into()))),
        ("api search, a ticket number", Box::new(api(format!("/api/v1/tickets?q=TKT-{:06}", tickets / 3)))),
        ("api tickets, status closed", Box::new(api("/api/v1/tickets?status=closed".into()))),
        ("api a ticket with its entries", Box::new(api(format!("/api/v1/tickets/TKT-{:06}", tickets / 3)))),
        ("api journal, first page", Box::new(api("/api/v1/messages".into()))),
        ("api journal, failed mails", Box::new(api("/api/v1/messages?state=failed".into()))),
        ("ui tickets page", Box::new(ui("/tickets".into()))),
        ("ui search, no match (Xylophone)", Box::new(ui("/tickets?q=Xylophone".into()))),
        ("ui mail journal", Box::new(ui("/journal".into()))),
        ("ui dashboard", Box::new(ui("/dashboard".into()))),
    ];
    let mut results = serde_json::Map::new();
    for (name, mut request) in cases {
        let measured = timed(30, &mut request).with_context(|| name.to_string())?;
        eprintln!(
            "   {name:<40} median {:>7.1} ms  p95 {:>7.1} ms",
            measured["median_ms"].as_f64().unwrap_or(0.0),
            measured["p95_ms"].as_f64().unwrap_or(0.0)
        );
        results.insert(name.to_string(), measured);
    }
    Ok(json!({"journal_rows": journal, "tickets": tickets, "database_mb": db_mb, "requests": results}))
}

/// How the 20 readers read: back to back, or each pausing between requests.
#[derive(Clone, Copy)]
enum Readers {
    None,
    /// Each reader sends its next request as soon as the last is answered.
    BackToBack,
    /// Each reader waits this long between requests (dashboards refreshing).
    Paced(Duration),
}

impl Readers {
    fn name(self) -> &'static str {
        match self {
            Readers::None => "alone",
            Readers::BackToBack => "with 20 readers back to back",
            Readers::Paced(_) => "with 20 readers, 10 requests/s each",
        }
    }
}

/// Ingest of `mails` by `serve` from Dovecot, `rounds` times alone, with 20
/// API readers back to back and with 20 paced readers — the order rotating
/// each round.
pub fn readers_run(bin: &Path, mails: usize, rounds: usize, seed: u64) -> anyhow::Result<Value> {
    let modes = [Readers::None, Readers::BackToBack, Readers::Paced(Duration::from_millis(100))];
    let users: Vec<String> = (0..rounds * modes.len()).map(|i| format!("readers{i}@example.test")).collect();
    let dovecot = Dovecot::start(&users.iter().map(|u| (u.as_str(), PASSWORD)).collect::<Vec<_>>())?;
    let opts = GenOptions::default();
    let mut runs = Vec::new();
    for round in 0..rounds {
        for i in 0..modes.len() {
            let mode = modes[(i + round) % modes.len()];
            let user = &users[round * modes.len() + i];
            dovecot.deliver_many(user, "INBOX", generate_corpus(mails, seed, &opts))?;
            let mut run = serve_ingest(bin, &dovecot, user, mails, mode)?;
            run["readers"] = json!(mode.name());
            eprintln!(
                "   round {round}, {}: {:.0} mails/s{}",
                mode.name(),
                run["mails_per_second"].as_f64().unwrap_or(0.0),
                run.get("reader_requests")
                    .map(|r| format!(" ({r} API requests answered meanwhile)"))
                    .unwrap_or_default()
            );
            runs.push(run);
        }
    }
    let median = |mode: Readers| {
        let mut rates: Vec<f64> = runs
            .iter()
            .filter(|r| r["readers"] == mode.name())
            .filter_map(|r| r["mails_per_second"].as_f64())
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let alone = median(Readers::None);
    let back_to_back = median(Readers::BackToBack);
    let paced = median(Readers::Paced(Duration::ZERO));
    Ok(json!({
        "mails": mails, "runs": runs, "median_alone": alone,
        "median_back_to_back": back_to_back, "back_to_back_over_alone": back_to_back / alone,
        "median_paced": paced, "paced_over_alone": paced / alone,
    }))
}

fn serve_ingest(bin: &Path, dovecot: &Dovecot, user: &str, mails: usize, readers: Readers) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let data: PathBuf = dir.path().join("data");
    // Disabled until the readers run: `serve` picks it up once enabled.
    crate::add_imap_mailbox(bin, &data, dovecot.imap_port(), user, &["--poll-seconds", "3600", "--disabled"])?;
    let auth = make_admin_and_token(bin, &data)?;
    let serving = Serving::start(bin, &data)?;
    let address = serving.address.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let pause = match readers {
        Readers::Paced(pause) => Some(pause),
        _ => None,
    };
    let with_readers = !matches!(readers, Readers::None);
    let readers: Vec<_> = (0..if with_readers { 20 } else { 0 })
        .map(|i| {
            let (address, auth, stop, answered) = (address.clone(), auth.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                // The readers stand for other machines: on this one they
                // yield the cores to the robot, whose share is what is measured.
                // SAFETY: setpriority on this thread's own id.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
                }
                let paths =
                    ["/api/v1/tickets", "/api/v1/tickets?q=invoice", "/api/v1/messages", "/api/v1/tickets/TKT-000001"];
                let mut n = i;
                while !stop.load(Ordering::Relaxed) {
                    if get(&address, paths[n % paths.len()], &auth).is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                    if let Some(pause) = pause {
                        std::thread::sleep(pause);
                    }
                }
            })
        })
        .collect();
    // The readers are under way; the mailbox is enabled now and `serve` picks it up.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let enable = robot(bin, &data, &["mailbox", "enable", "bench"]).output()?;
    ensure!(enable.status.success(), "mailbox enable: {}", String::from_utf8_lossy(&enable.stderr));
    // Done when every mail was processed and moved out of the INBOX.
    while dovecot.count(user, "INBOX") > 0 {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("ingest of {mails} mails did not finish in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        let _ = reader.join();
    }
    drop(serving);
    let tickets = robot(bin, &data, &["tickets", "list", "--json"]).output()?;
    let tickets: Value = serde_json::from_slice(&tickets.stdout).context("tickets list")?;
    ensure!(tickets.as_array().is_some_and(|t| !t.is_empty()), "no tickets were made");
    let mut run = json!({"seconds": seconds, "mails_per_second": mails as f64 / seconds});
    if with_readers {
        run["reader_requests"] = json!(answered.load(Ordering::Relaxed));
    }
    Ok(run)
}
