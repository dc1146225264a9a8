//! Drives the real `mailrobot` binary in a temporary data directory.
#![allow(dead_code)]

pub mod api;
pub mod contoso;
pub mod oauth;
pub mod outbound;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_mailrobot");

pub struct Robot {
    pub dir: tempfile::TempDir,
    /// Extra environment for every command (passwords, crash points).
    pub env: Vec<(String, String)>,
    /// The robot's PostgreSQL database when the suite runs on PostgreSQL
    /// (`MAILROBOT_TEST_BACKEND=postgres`, as the test command's second pass
    /// does); None: the SQLite file in the data directory.
    pub database: Option<mailrobot_store::testing::TestDatabase>,
    /// Another robot's database this one shares (another node of it).
    pub shared_database_url: Option<String>,
}

/// Whether this run of the suite uses PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("MAILROBOT_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

impl Robot {
    pub fn new() -> Self {
        if on_postgres() { Self::on_postgres() } else { Self::on_sqlite() }
    }

    /// A robot on the SQLite file of its data directory, whatever the run.
    pub fn on_sqlite() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), env: Vec::new(), database: None, shared_database_url: None }
    }

    /// A robot on a PostgreSQL database of its own, whatever the run.
    pub fn on_postgres() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
            database: Some(mailrobot_store::testing::TestDatabase::create()),
            shared_database_url: None,
        }
    }

    /// Another node of this robot: its own data directory, the same
    /// database and environment (give both one MAILROBOT_MASTER_KEY).
    pub fn another_node(&self) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            env: self.env.clone(),
            database: None,
            shared_database_url: Some(self.database_url().expect("nodes share a PostgreSQL database").to_string()),
        }
    }

    /// The PostgreSQL database this robot uses, if any.
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_ref().map(|db| db.url.as_str()).or(self.shared_database_url.as_deref())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Everything the database holds, as bytes to search (secrets must not
    /// be found in it): the SQLite file and its WAL, or every PostgreSQL
    /// table copied out in binary format (bytea columns as their raw bytes).
    pub fn database_bytes(&self) -> Vec<Vec<u8>> {
        match self.database_url() {
            None => ["mailrobot.db", "mailrobot.db-wal"]
                .iter()
                .map(|f| std::fs::read(self.data_dir().join(f)).unwrap_or_default())
                .collect(),
            Some(url) => {
                use mailrobot_store::pg_tools;
                let tables = pg_tools::table_names(url).unwrap();
                assert!(tables.iter().any(|t| t == "mailboxes"), "the robot's tables: {tables:?}");
                tables.iter().map(|t| pg_tools::copy_out_table(url, t).unwrap()).collect()
            }
        }
    }

    /// Whether `needle` is anywhere in the database's bytes.
    pub fn database_contains(&self, needle: &[u8]) -> bool {
        self.database_bytes().iter().any(|hay| hay.windows(needle.len()).any(|w| w == needle))
    }

    /// Runs SQL on the robot's database, behind its back (what the CLI offers
    /// no way to do): `sqlite` on SQLite, `postgres` on PostgreSQL.
    pub fn sql(&self, sqlite: &str, postgres: &str) {
        match self.database_url() {
            None => {
                let db = rusqlite::Connection::open(self.data_dir().join("mailrobot.db")).unwrap();
                db.busy_timeout(Duration::from_secs(10)).unwrap();
                db.execute_batch(sqlite).unwrap();
            }
            Some(url) => mailrobot_store::pg_tools::execute_batch(url, postgres).unwrap(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir").arg(self.data_dir()).args(args);
        cmd.env_remove("MAILROBOT_CRASH_AT").env("MAILROBOT_LOG", "info,mailrobot=debug");
        match self.database_url() {
            Some(url) => cmd.env("MAILROBOT_DATABASE_URL", url),
            None => cmd.env_remove("MAILROBOT_DATABASE_URL"),
        };
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs a command, returning its output whatever the exit code.
    pub fn run_raw(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).output().unwrap()
    }

    /// Runs a command that must succeed; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.run_raw(args, &[]);
        assert!(
            out.status.success(),
            "mailrobot {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("mailrobot {args:?}: not JSON ({e}): {out}"))
    }

    pub fn tickets(&self) -> Vec<Value> {
        self.json(&["tickets", "list", "--json"]).as_array().unwrap().clone()
    }

    pub fn messages(&self) -> Vec<Value> {
        self.json(&["messages", "list", "--json"]).as_array().unwrap().clone()
    }

    pub fn ticket(&self, number: &str) -> Value {
        self.json(&["tickets", "show", number, "--json"])
    }

    pub fn add_imap(&self, name: &str, port: u16, user: &str, password: &str, extra: &[&str]) {
        self.add_with_password("imap", name, port, user, password, extra);
    }

    pub fn add_pop3(&self, name: &str, port: u16, user: &str, password: &str, extra: &[&str]) {
        self.add_with_password("pop3", name, port, user, password, extra);
    }

    /// `mailbox add` for a server mailbox on loopback, the password passed
    /// through an environment variable as users must.
    fn add_with_password(&self, kind: &str, name: &str, port: u16, user: &str, password: &str, extra: &[&str]) {
        let var = format!("PW_{}", name.replace('-', "_").to_uppercase());
        let port = port.to_string();
        let mut args = vec![
            "mailbox",
            "add",
            "--name",
            name,
            "--kind",
            kind,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--tls",
            "none",
            "--username",
            user,
            "--password-env",
            &var,
        ];
        args.extend_from_slice(extra);
        let out = self.run_raw(&args, &[(&var, password)]);
        assert!(out.status.success(), "mailbox add: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn add_drop_folder(&self, name: &str, path: &Path) {
        self.run(&["mailbox", "add", "--name", name, "--kind", "drop-folder", "--path", path.to_str().unwrap()]);
    }

    /// Starts `serve` on a port the kernel picks (no race with other tests
    /// for a "free" port) and returns it with its address, read from what it
    /// prints once listening — by then it has recorded its public URL.
    pub fn spawn_serve(&self, env: &[(&str, &str)]) -> (Child, String) {
        self.spawn_serve_at("127.0.0.1:0", env)
    }

    /// [`Robot::spawn_serve`] listening on `listen` (a restart on the same
    /// address keeps the same public URL).
    pub fn spawn_serve_at(&self, listen: &str, env: &[(&str, &str)]) -> (Child, String) {
        use std::io::BufRead;
        let log = std::fs::File::create(self.dir.path().join(format!("serve-{}.log", free_port()))).unwrap();
        let mut cmd = self.command(&["serve", "--listen", listen]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log).spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("serve did not say where it listens: {line:?}\n{}", self.serve_logs()))
            .to_string();
        (child, address)
    }

    pub fn spawn_serve_anywhere(&self) -> (Child, String) {
        self.spawn_serve(&[])
    }

    /// Everything every `serve` started by this robot wrote to stderr.
    pub fn serve_logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with("serve-") {
                all.push_str(&std::fs::read_to_string(path).unwrap_or_default());
            }
        }
        all
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A minimal HTTP GET over a raw socket (no client crate needed).
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    http_get_full(address, path).map(|r| (r.status, r.body))
}

pub struct HttpAnswer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: std::collections::HashMap<String, String>,
    pub body: String,
}

/// [`http_get`] with the answer's headers.
pub fn http_get_full(address: &str, path: &str) -> Option<HttpAnswer> {
    http_request(address, &format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"))
}

/// A form POST with a `Cookie` header (empty: none).
pub fn http_post_form(address: &str, path: &str, cookie: &str, form: &str) -> Option<HttpAnswer> {
    let cookie = if cookie.is_empty() { String::new() } else { format!("Cookie: {cookie}\r\n") };
    http_request(
        address,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{cookie}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    )
}

/// Sends `request` as written and reads the whole answer.
fn http_request(address: &str, request: &str) -> Option<HttpAnswer> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut headers = std::collections::HashMap::<String, String>::new();
    for (name, value) in head.lines().skip(1).filter_map(|line| line.split_once(':')) {
        // A header sent twice (Set-Cookie) keeps both values, one per line.
        let entry = headers.entry(name.trim().to_ascii_lowercase()).or_default();
        if !entry.is_empty() {
            entry.push('\n');
        }
        entry.push_str(value.trim());
    }
    Some(HttpAnswer { status, headers, body: body.to_string() })
}

/// The value of a sample in Prometheus text (`name` with its labels, as rendered).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Polls `check` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

pub fn fixture(path: &str) -> Vec<u8> {
    let full = manifest_dir().join("../../tests/fixtures/eml").join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

pub fn simple_mail(message_id: &str, subject: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Customer <customer@example.com>\r\nTo: support@example.com\r\nSubject: {subject}\r\n\
         Message-ID: <{message_id}>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n{headers}\r\n{body}\r\n"
    )
    .into_bytes()
}

/// This package's directory, asked of cargo at run time (a test binary
/// built in another checkout that shares the target directory must read
/// this checkout's files); the build's own when run outside cargo.
fn manifest_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
}
