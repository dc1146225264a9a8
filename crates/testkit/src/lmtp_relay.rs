//! The mail transfer agent of the test world: an SMTP server on loopback
//! that delivers every mail it accepts into Dovecot's LMTP service, so mail a
//! test sends by SMTP really lands in a Dovecot mailbox (and can be read back
//! over IMAP).
//!
//! Why this and not something else:
//! - Dovecot 2.3's submission service relays only over SMTP (no setting makes
//!   `submission_relay_*` speak LMTP) and its LMTP refuses `EHLO` ("500 5.5.1
//!   Unknown command"), so the two cannot be wired straight together.
//! - A private Postfix instance would work but needs root, a queue
//!   directory with Postfix's ownerships, and its daemons' timing.
//! - aiosmtpd (PyPI) is a complete SMTP server and Python's `smtplib.LMTP` a
//!   complete LMTP client: a dozen lines between them. It answers `DATA` only
//!   once LMTP has answered, so when the sender has its `250` the mail is in
//!   the mailbox (no queue to wait for), and LMTP's refusal (an unknown user)
//!   comes back as the SMTP answer.
//!
//! Started by [`crate::dovecot::Dovecot`] for [`crate::dovecot::Options::lmtp_relay_python`].

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The aiosmtpd release the relay runs on.
pub const AIOSMTPD_VERSION: &str = "1.4.6";

const START_TIMEOUT: Duration = Duration::from_secs(20);

const RELAY_PY: &str = r#"
import asyncio, smtplib, socket, sys
from aiosmtpd.smtp import SMTP

fd, lmtp_port = int(sys.argv[1]), int(sys.argv[2])

def log(line):
    print(line, flush=True)

def deliver(mail_from, rcpt, content):
    try:
        with smtplib.LMTP("127.0.0.1", lmtp_port) as lmtp:
            lmtp.sendmail(mail_from, [rcpt], content)
        answer = (250, "2.0.0 delivered")
    except smtplib.SMTPRecipientsRefused as e:
        code, text = next(iter(e.recipients.values()))
        answer = (code, text.decode(errors="replace"))
    except smtplib.SMTPResponseException as e:
        answer = (e.smtp_code, e.smtp_error.decode(errors="replace"))
    except OSError as e:
        answer = (451, f"4.4.1 LMTP not reachable: {e}")
    log(f"{mail_from} -> {rcpt}: {answer[0]} {answer[1]}")
    return answer

class IntoLmtp:
    # One LMTP transaction per recipient: LMTP answers DATA once per
    # recipient, and smtplib reads only one answer. Delivery runs in a
    # thread: while Dovecot delivers, Sieve (vacation) may send through
    # this relay, which must go on serving.
    async def handle_DATA(self, server, session, envelope):
        loop = asyncio.get_running_loop()
        answers = [
            await loop.run_in_executor(None, deliver, envelope.mail_from, rcpt, envelope.original_content)
            for rcpt in envelope.rcpt_tos
        ]
        # The first failure is the answer (an MTA would bounce a partial one).
        code, text = next((a for a in answers if a[0] >= 400), (250, "2.0.0 delivered over LMTP"))
        return f"{code} {text}"

async def main():
    sock = socket.socket(fileno=fd)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(IntoLmtp(), hostname="relay.example.test"), sock=sock)
    log("ready")
    await server.serve_forever()

asyncio.run(main())
"#;

/// The python of a venv (under `dir`, e.g. Cargo's `CARGO_TARGET_TMPDIR`)
/// that has aiosmtpd; made on first use.
pub fn python(dir: &Path) -> PathBuf {
    crate::python::venv_python(dir, "aiosmtpd", AIOSMTPD_VERSION)
}

/// A running relay; stopped on drop.
pub struct LmtpRelay {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl LmtpRelay {
    /// Serves SMTP on `listener` (already bound, so whoever was told its port
    /// may connect before the relay runs: the kernel queues the connection)
    /// and delivers into LMTP on `127.0.0.1:lmtp_port`. Logs into `dir`.
    pub fn spawn(python: &Path, listener: TcpListener, lmtp_port: u16, dir: &Path) -> io::Result<LmtpRelay> {
        let port = listener.local_addr()?.port();
        let script = dir.join("lmtp_relay.py");
        fs::write(&script, RELAY_PY)?;
        let log = dir.join("lmtp_relay.log");
        let fd = listener.as_raw_fd();
        let mut command = Command::new(python);
        command
            .arg(&script)
            .arg(fd.to_string())
            .arg(lmtp_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(fs::File::create(&log)?))
            .stderr(Stdio::from(fs::File::create(dir.join("lmtp_relay.stderr.log"))?));
        // SAFETY: fcntl is async-signal-safe; it only clears close-on-exec on
        // the listening socket so the child inherits it under the same number.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(listener); // the child holds the socket now
        let mut relay = LmtpRelay { child, port, log };
        relay.wait_ready()?;
        Ok(relay)
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "the LMTP relay exited during start ({status}):\n{}",
                    self.log()
                )));
            }
            // Connecting succeeds at once (the socket listens); the greeting
            // comes only once the relay serves.
            if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                stream.set_read_timeout(Some(Duration::from_millis(500)))?;
                let mut line = String::new();
                if BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("220") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the LMTP relay did not greet on port {} within {START_TIMEOUT:?}:\n{}",
                        self.port,
                        self.log()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its SMTP port on 127.0.0.1 (no AUTH, no TLS).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// One line per delivery (`FROM -> RCPT: CODE TEXT`), then its stderr.
    pub fn log(&self) -> String {
        let mut out = fs::read_to_string(&self.log).unwrap_or_default();
        let stderr = fs::read_to_string(self.log.with_file_name("lmtp_relay.stderr.log")).unwrap_or_default();
        if !stderr.is_empty() {
            out.push_str("\n[stderr]\n");
            out.push_str(&stderr);
        }
        out
    }
}

impl Drop for LmtpRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
