//! A real SMTP server that accepts every mail and keeps it: Postfix's
//! `smtp-sink` (Debian's postfix package) on a free loopback port, dumping
//! each transaction into a temp dir. Tests use it as the relay behind
//! Dovecot's submission service, or as a plain SMTP server.

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's postfix package puts the sink.
pub const SMTP_SINK_BIN: &str = "/usr/sbin/smtp-sink";

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One mail transaction as the sink received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SunkMail {
    /// The MAIL FROM arguments, e.g. `<a@example.test> AUTH=a@example.test`.
    pub mail_from: String,
    /// One RCPT TO argument per recipient.
    pub recipients: Vec<String>,
    /// The DATA as stored (the sink adds its own `Received:` on top).
    pub data: Vec<u8>,
}

/// A running `smtp-sink`; stopped on drop.
pub struct SmtpSink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    /// A sink that keeps every transaction (read them with [`SmtpSink::mails`]).
    pub fn start() -> io::Result<SmtpSink> {
        Self::start_with(true)
    }

    /// A sink that answers 250 and keeps nothing: for benchmarks, where
    /// writing a file per mail would cost the machine more than the robot.
    pub fn start_discarding() -> io::Result<SmtpSink> {
        Self::start_with(false)
    }

    fn start_with(keep: bool) -> io::Result<SmtpSink> {
        if !Path::new(SMTP_SINK_BIN).exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{SMTP_SINK_BIN} not found: install Debian's postfix (scripts/test.sh does)"),
            ));
        }
        let dir = tempfile::Builder::new().prefix("mailrobot-smtp-sink-").tempdir()?;
        let dumps = dir.path().join("mail");
        fs::create_dir(&dumps)?;
        // Run as root, the sink drops to the postfix user before writing.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        fs::set_permissions(&dumps, fs::Permissions::from_mode(0o777))?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        let mut command = Command::new(SMTP_SINK_BIN);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // As root the sink insists on dropping to an unprivileged user.
            command.args(["-u", "postfix"]);
        }
        if keep {
            // -d: one file per transaction, named from this template plus a random suffix.
            command.arg("-d").arg(format!("{}/%H%M%S.", dumps.display()));
        }
        let child = command
            .arg(format!("127.0.0.1:{port}"))
            .arg("64")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(dir.path().join("stderr.log"))?))
            .spawn()?;
        let mut sink = SmtpSink { child, port, dir };
        sink.wait_ready()?;
        Ok(sink)
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
                return Err(io::Error::other(format!("smtp-sink exited during start ({status}): {log}")));
            }
            if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut line = String::new();
                if BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("220") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("smtp-sink did not greet on port {}", self.port),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The sink's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every transaction received so far, by file time: transactions close
    /// together may come in any order. A transaction whose DATA has not
    /// arrived yet (the sink writes its envelope first) is left out.
    pub fn mails(&self) -> io::Result<Vec<SunkMail>> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(self.dir.path().join("mail"))?
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort();
        let mut mails = Vec::with_capacity(files.len());
        for (_, path) in files {
            let mail = parse_dump(&fs::read(path)?);
            if !mail.data.is_empty() {
                mails.push(mail);
            }
        }
        Ok(mails)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A dump file is the sink's `X-…-Args` lines, then the DATA as received.
fn parse_dump(raw: &[u8]) -> SunkMail {
    let mut mail = SunkMail { mail_from: String::new(), recipients: Vec::new(), data: Vec::new() };
    let mut rest = raw;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&rest[..end]).trim_end_matches('\r').to_string();
        let Some((name, value)) = line.split_once(": ") else { break };
        match name {
            "X-Mail-Args" => mail.mail_from = value.to_string(),
            "X-Rcpt-Args" => mail.recipients.push(value.to_string()),
            "X-Client-Addr" | "X-Client-Proto" | "X-Helo-Args" => {}
            _ => break,
        }
        rest = &rest[end + 1..];
    }
    mail.data = rest.to_vec();
    mail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_is_split_into_envelope_and_data() {
        let raw = b"X-Client-Addr: 127.0.0.1\nX-Helo-Args: h\nX-Mail-Args: <a@x> SIZE=3\nX-Rcpt-Args: <b@y>\n\
                    X-Rcpt-Args: <c@z>\nReceived: from h\nSubject: s\n\nbody\n";
        let mail = parse_dump(raw);
        assert_eq!(mail.mail_from, "<a@x> SIZE=3");
        assert_eq!(mail.recipients, ["<b@y>", "<c@z>"]);
        assert_eq!(mail.data, b"Received: from h\nSubject: s\n\nbody\n");
    }
}
