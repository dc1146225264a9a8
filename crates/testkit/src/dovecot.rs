//! A real Dovecot (IMAP + POP3, and SMTP submission and LMTP delivery when
//! asked) for tests, started from Debian's `/usr/sbin/dovecot` with a
//! temporary configuration on free loopback ports.
//!
//! Mail is put in place by writing Maildir++ files directly (like an MDA
//! would), and inspected the same way, so tests see exactly what the server
//! stores without going through the protocol under test.

use std::ffi::CString;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::lmtp_relay::LmtpRelay;

/// Where Debian's dovecot-core puts the server binary.
pub const DOVECOT_BIN: &str = "/usr/sbin/dovecot";

/// Debian's dovecot-submissiond puts the SMTP submission service here.
pub const SUBMISSION_BIN: &str = "/usr/lib/dovecot/submission";

/// Debian's dovecot-lmtpd puts the LMTP delivery service here.
pub const LMTP_BIN: &str = "/usr/lib/dovecot/lmtp";

/// Debian's dovecot-sieve (Pigeonhole) puts the Sieve plugin here.
pub const SIEVE_PLUGIN: &str = "/usr/lib/dovecot/modules/lib90_sieve_plugin.so";

const DEBIAN_DH_PEM: &str = "/usr/share/dovecot/dh.pem";

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes maildir file names unique across all instances in this process.
static DELIVERY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Certificate and key (PEM files) for Dovecot's TLS listeners.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a test needs from its Dovecot beyond plain IMAP and POP3.
#[derive(Debug, Clone, Default)]
pub struct Options<'a> {
    /// STARTTLS on the plain ports and implicit-TLS listeners.
    pub tls: Option<&'a TlsFiles>,
    /// SASL XOAUTH2 / OAUTHBEARER checked at this introspection URL. It may
    /// hold `{protocol}` (Dovecot's service name: `imap`, `pop3`,
    /// `submission`) and `{user}` (the SASL user, URL-encoded): Dovecot 2.3
    /// expands no variables in `introspection_url`, so the configuration
    /// gets one `passdb oauth2` per protocol (`protocol X { passdb {...} }`)
    /// and per user (`username_filter`). With `{user}`, only the users given
    /// at start can log in with a token.
    pub oauth2_introspection_url: Option<&'a str>,
    /// SMTP submission (with AUTH) relaying accepted mail to this loopback
    /// port: Dovecot connects to its relay as soon as a client logs in, so a
    /// submission test needs one running (see [`crate::smtp_sink::SmtpSink`]).
    pub submission_relay_port: Option<u16>,
    /// LMTP on loopback ([`Dovecot::lmtp_port`]): mail handed to it lands in
    /// the users' INBOXes, as a mail server delivers.
    pub lmtp: bool,
    /// SMTP submission (with AUTH) relaying into the users' own mailboxes:
    /// an [`LmtpRelay`] run by this python (one with aiosmtpd, see
    /// [`crate::lmtp_relay::python`]) takes what the submission service
    /// accepts and delivers it over LMTP. Mail the robot sends to a user of
    /// this Dovecot can then be read back over IMAP. Implies `lmtp`; not
    /// together with `submission_relay_port`.
    pub lmtp_relay_python: Option<&'a Path>,
    /// Sieve (Pigeonhole) runs on every LMTP delivery, with each user's
    /// script from [`Dovecot::set_sieve_script`]. What Sieve sends (a
    /// vacation answer, a redirect) goes out through the relay of
    /// `lmtp_relay_python`, so it lands in this Dovecot too. Needs LMTP.
    pub sieve: bool,
    /// Leave IDLE (RFC 2177) out of the announced capabilities, as servers
    /// without push do: clients must poll.
    pub without_idle: bool,
}

/// A running Dovecot; stopped (and its temp dir removed) on drop.
pub struct Dovecot {
    child: Option<Child>,
    dir: tempfile::TempDir,
    imap_port: u16,
    pop3_port: u16,
    imaps_port: Option<u16>,
    pop3s_port: Option<u16>,
    submission_port: Option<u16>,
    lmtp_port: Option<u16>,
    relay: Option<LmtpRelay>,
    users: Vec<(String, String)>,
    owner: (libc::uid_t, libc::gid_t),
}

impl std::fmt::Debug for Dovecot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dovecot")
            .field("dir", &self.dir.path())
            .field("imap_port", &self.imap_port)
            .field("pop3_port", &self.pop3_port)
            .field("imaps_port", &self.imaps_port)
            .field("pop3s_port", &self.pop3s_port)
            .field("submission_port", &self.submission_port)
            .field("lmtp_port", &self.lmtp_port)
            .finish()
    }
}

impl Dovecot {
    /// Whether the Dovecot binary is installed. Tests should not use this to
    /// skip silently; [`Dovecot::start`] already fails with a clear message.
    pub fn available() -> bool {
        Path::new(DOVECOT_BIN).exists()
    }

    /// Starts Dovecot with plain-text IMAP and POP3 on loopback for the
    /// given `(address, password)` users.
    pub fn start(users: &[(&str, &str)]) -> io::Result<Dovecot> {
        Self::start_with(users, &Options::default())
    }

    /// Like [`Dovecot::start`], and SASL XOAUTH2 / OAUTHBEARER logins whose
    /// bearer tokens are checked at `introspection_url` (Dovecot's `passdb
    /// oauth2` in `introspection_mode = auth`: a GET with the token).
    pub fn start_with_oauth2(users: &[(&str, &str)], introspection_url: &str) -> io::Result<Dovecot> {
        Self::start_with(users, &Options { oauth2_introspection_url: Some(introspection_url), ..Options::default() })
    }

    /// Like [`Dovecot::start`], plus STARTTLS on the plain ports and implicit
    /// TLS listeners ([`Dovecot::imaps_port`], [`Dovecot::pop3s_port`]) using
    /// the given certificate and key.
    pub fn start_with_tls(users: &[(&str, &str)], tls: &TlsFiles) -> io::Result<Dovecot> {
        Self::start_with(users, &Options { tls: Some(tls), ..Options::default() })
    }

    /// Starts Dovecot for the given users with everything `options` asks for.
    pub fn start_with(users: &[(&str, &str)], options: &Options<'_>) -> io::Result<Dovecot> {
        if !Self::available() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{DOVECOT_BIN} not found: install Debian's dovecot-imapd and dovecot-pop3d \
                     (scripts/test.sh does) to run the IMAP/POP3 tests"
                ),
            ));
        }
        if options.submission_relay_port.is_some() && !Path::new(SUBMISSION_BIN).exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{SUBMISSION_BIN} not found: install Debian's dovecot-submissiond (scripts/test.sh does)"),
            ));
        }
        let wants_lmtp = options.lmtp || options.lmtp_relay_python.is_some();
        if wants_lmtp && !Path::new(LMTP_BIN).exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{LMTP_BIN} not found: install Debian's dovecot-lmtpd (scripts/test.sh does)"),
            ));
        }
        if options.sieve && !wants_lmtp {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "Sieve runs on LMTP delivery: ask for lmtp too"));
        }
        if options.sieve && !Path::new(SIEVE_PLUGIN).exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{SIEVE_PLUGIN} not found: install Debian's dovecot-sieve (scripts/test.sh does)"),
            ));
        }
        if options.lmtp_relay_python.is_some() {
            if options.submission_relay_port.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "submission relays either to submission_relay_port or through lmtp_relay_python, not both",
                ));
            }
            if !Path::new(SUBMISSION_BIN).exists() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{SUBMISSION_BIN} not found: install Debian's dovecot-submissiond (scripts/test.sh does)"),
                ));
            }
        }
        let owner = dovecot_owner()?;
        // Free ports are picked by binding and releasing, so another process
        // can grab one in between: retry a few times on a failed start.
        let mut last_err = None;
        for _ in 0..3 {
            match Self::try_start(users, options, owner) {
                Ok(d) => return Ok(d),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn try_start(
        users: &[(&str, &str)],
        options: &Options<'_>,
        owner: (libc::uid_t, libc::gid_t),
    ) -> io::Result<Dovecot> {
        let (tls, oauth2) = (options.tls, options.oauth2_introspection_url);
        let dir = tempfile::Builder::new().prefix("mailrobot-dovecot-").tempdir()?;
        // mkdtemp makes 0700, which hides the users file from the auth process.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let base = dir.path();
        for sub in ["run", "state"] {
            fs::create_dir(base.join(sub))?;
        }
        let mail = base.join("mail");
        fs::create_dir(&mail)?;
        chown(&mail, owner)?;

        let users: Vec<(String, String)> = users.iter().map(|(u, p)| (u.to_string(), p.to_string())).collect();
        write_users_file(&base.join("users"), &users)?;

        let ports = free_ports(6)?;
        let (imap_port, pop3_port) = (ports[0], ports[1]);
        let (imaps_port, pop3s_port) = if tls.is_some() { (Some(ports[2]), Some(ports[3])) } else { (None, None) };
        // The relay's port is bound now and held until the relay serves on
        // it: the submission service must be told it before Dovecot starts,
        // and the relay can only start once Dovecot's LMTP listens.
        let relay_listener = match options.lmtp_relay_python {
            Some(_) => Some(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?),
            None => None,
        };
        let relay_port = match &relay_listener {
            Some(l) => Some(l.local_addr()?.port()),
            None => options.submission_relay_port,
        };
        let submission_port = relay_port.map(|_| ports[4]);
        let lmtp_port = (options.lmtp || relay_listener.is_some()).then_some(ports[5]);
        let conf = base.join("dovecot.conf");
        let mut text = config_text(base, imap_port, pop3_port, imaps_port, pop3s_port, tls);
        let protocols: Vec<&str> = ["imap", "pop3"]
            .into_iter()
            .chain(lmtp_port.map(|_| "lmtp"))
            .chain(submission_port.map(|_| "submission"))
            .collect();
        text = text.replace("protocols = imap pop3\n", &format!("protocols = {}\n", protocols.join(" ")));
        if let Some(port) = lmtp_port {
            text.push_str(&format!(
                "service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n"
            ));
        }
        if options.without_idle {
            text.push_str(
                "imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE LITERAL+ MOVE UIDPLUS NAMESPACE \
                 UIDPLUS CHILDREN SPECIAL-USE\n",
            );
        }
        if options.sieve {
            text.push_str(
                "protocol lmtp {\n  mail_plugins = $mail_plugins sieve\n}\n\
                 plugin {\n  sieve = file:~/sieve;active=~/.dovecot.sieve\n}\n",
            );
            if let Some(relay) = relay_port {
                // Vacation answers and redirects are sent by SMTP, here.
                text.push_str(&format!("submission_host = 127.0.0.1:{relay}\n"));
            }
        }
        if let (Some(port), Some(relay)) = (submission_port, relay_port) {
            text.push_str(&format!(
                "hostname = mail.example.test\nsubmission_relay_host = 127.0.0.1\nsubmission_relay_port = {relay}\n\
                 service submission-login {{\n  inet_listener submission {{\n    address = 127.0.0.1\n    \
                 port = {port}\n  }}\n}}\n"
            ));
        }
        if let Some(url) = oauth2 {
            text = text.replace("auth_mechanisms = plain login", "auth_mechanisms = plain login xoauth2 oauthbearer");
            let mut protocols = vec!["imap", "pop3"];
            if submission_port.is_some() {
                protocols.push("submission");
            }
            text.push_str(&oauth2_passdbs(base, url, &protocols, &users)?);
        }
        fs::write(&conf, text)?;

        let child = Command::new(DOVECOT_BIN)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(fs::File::create(base.join("stderr.log"))?))
            // Its own process group, so Drop can stop master and children at once.
            .process_group(0)
            .spawn()?;
        let mut dovecot = Dovecot {
            child: Some(child),
            dir,
            imap_port,
            pop3_port,
            imaps_port,
            pop3s_port,
            submission_port,
            lmtp_port,
            relay: None,
            users,
            owner,
        };
        dovecot.wait_ready()?;
        if let (Some(python), Some(listener), Some(lmtp)) = (options.lmtp_relay_python, relay_listener, lmtp_port) {
            let dir = dovecot.dir().to_path_buf();
            dovecot.relay = Some(LmtpRelay::spawn(python, listener, lmtp, &dir)?);
        }
        Ok(dovecot)
    }

    /// Waits until IMAP greets, or fails with Dovecot's own log attached.
    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.imap_port));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                return Err(io::Error::other(format!("dovecot exited during start ({status}); log:\n{}", self.log())));
            }
            if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut line = String::new();
                if BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("* OK") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "dovecot did not greet on 127.0.0.1:{} within {:?}; log:\n{}",
                        self.imap_port,
                        START_TIMEOUT,
                        self.log()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    pub fn pop3_port(&self) -> u16 {
        self.pop3_port
    }

    /// Implicit-TLS IMAP port, when started with [`Dovecot::start_with_tls`].
    pub fn imaps_port(&self) -> Option<u16> {
        self.imaps_port
    }

    /// Implicit-TLS POP3 port, when started with [`Dovecot::start_with_tls`].
    pub fn pop3s_port(&self) -> Option<u16> {
        self.pop3s_port
    }

    /// SMTP submission port (STARTTLS when started with TLS), when asked for
    /// in [`Options::submission_relay_port`].
    pub fn submission_port(&self) -> Option<u16> {
        self.submission_port
    }

    /// LMTP port, when asked for in [`Options::lmtp`] or
    /// [`Options::lmtp_relay_python`].
    pub fn lmtp_port(&self) -> Option<u16> {
        self.lmtp_port
    }

    /// The plain SMTP port (no AUTH) of the relay into LMTP, when started
    /// with [`Options::lmtp_relay_python`].
    pub fn relay_port(&self) -> Option<u16> {
        self.relay.as_ref().map(LmtpRelay::port)
    }

    /// The temp dir holding config, logs and mail.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Dovecot's log so far (and anything the master wrote to stderr).
    pub fn log(&self) -> String {
        let mut out = fs::read_to_string(self.dir().join("dovecot.log")).unwrap_or_default();
        if let Ok(stderr) = fs::read_to_string(self.dir().join("stderr.log"))
            && !stderr.is_empty()
        {
            let _ = write!(out, "\n[stderr]\n{stderr}");
        }
        if let Some(relay) = &self.relay {
            let _ = write!(out, "\n[LMTP relay]\n{}", relay.log());
        }
        out
    }

    /// Disconnects every IMAP/POP3 session of `user` (`doveadm kick`), as a
    /// server restart or an idle timeout would.
    pub fn kick(&self, user: &str) -> io::Result<()> {
        let out =
            Command::new("doveadm").arg("-c").arg(self.dir().join("dovecot.conf")).args(["kick", user]).output()?;
        // doveadm exits 68 ("no such user") when nobody was connected.
        if !out.status.success() && out.status.code() != Some(68) {
            return Err(io::Error::other(format!(
                "doveadm kick {user} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// Makes `script` the active Sieve script of `user` (run on LMTP
    /// delivery when started with [`Options::sieve`]).
    pub fn set_sieve_script(&self, user: &str, script: &str) -> io::Result<()> {
        self.ensure_folder(user, "INBOX")?;
        let path = self.dir().join("mail").join(user).join(".dovecot.sieve");
        fs::write(&path, script)?;
        chown(&path, self.owner)
    }

    /// Adds a user; Dovecot rereads the passwd-file when it changes.
    pub fn add_user(&mut self, user: &str, password: &str) -> io::Result<()> {
        self.users.push((user.to_string(), password.to_string()));
        write_users_file(&self.dir().join("users"), &self.users)
    }

    /// The Maildir++ directory of `folder` ("INBOX" or any other name).
    pub fn folder_dir(&self, user: &str, folder: &str) -> PathBuf {
        let root = self.dir().join("mail").join(user);
        if folder.eq_ignore_ascii_case("INBOX") { root } else { root.join(format!(".{folder}")) }
    }

    /// Delivers one mail into `folder` of `user` (created if missing).
    pub fn deliver(&self, user: &str, folder: &str, raw: &[u8]) -> io::Result<()> {
        self.deliver_many(user, folder, std::iter::once(raw))?;
        Ok(())
    }

    /// Delivers many mails at once (directories are made once; each mail is
    /// written to tmp/ and renamed into new/, as Maildir requires).
    /// Returns how many were delivered.
    pub fn deliver_many<I, B>(&self, user: &str, folder: &str, mails: I) -> io::Result<usize>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        let folder_dir = self.ensure_folder(user, folder)?;
        let (tmp, new) = (folder_dir.join("tmp"), folder_dir.join("new"));
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let pid = std::process::id();
        let mut n = 0;
        for raw in mails {
            let raw = raw.as_ref();
            let seq = DELIVERY_COUNTER.fetch_add(1, Ordering::Relaxed);
            // Zero-padded counter keeps delivery order when names are sorted.
            // S= and W= (the size with CRLF line ends, what RFC822.SIZE
            // tells) as Dovecot's own delivery names files: without W=,
            // Dovecot reads every file again when asked for sizes.
            let name = format!("{secs}.M{seq:010}P{pid}.mailrobot-test,S={},W={}", raw.len(), virtual_size(raw));
            let tmp_path = tmp.join(&name);
            fs::write(&tmp_path, raw)?;
            chown(&tmp_path, self.owner)?;
            fs::rename(&tmp_path, new.join(&name))?;
            n += 1;
        }
        Ok(n)
    }

    /// Creates a folder (Maildir++ layout) for `user`, owned by dovecot.
    pub fn ensure_folder(&self, user: &str, folder: &str) -> io::Result<PathBuf> {
        let user_dir = self.dir().join("mail").join(user);
        let folder_dir = self.folder_dir(user, folder);
        for d in [&user_dir, &folder_dir] {
            if !d.exists() {
                fs::create_dir_all(d)?;
                chown(d, self.owner)?;
            }
        }
        for sub in ["tmp", "new", "cur"] {
            let d = folder_dir.join(sub);
            if !d.exists() {
                fs::create_dir(&d)?;
                chown(&d, self.owner)?;
            }
        }
        Ok(folder_dir)
    }

    /// Whether `folder` exists on disk for `user`.
    pub fn folder_exists(&self, user: &str, folder: &str) -> bool {
        self.folder_dir(user, folder).join("cur").is_dir()
    }

    /// Number of mails in the folder (files in new/ and cur/), including
    /// ones flagged \Deleted but not yet expunged.
    pub fn count(&self, user: &str, folder: &str) -> usize {
        self.mail_files(user, folder).len()
    }

    /// Raw contents of every mail in the folder, in file-name order.
    pub fn messages(&self, user: &str, folder: &str) -> Vec<Vec<u8>> {
        self.mail_files(user, folder).iter().filter_map(|p| fs::read(p).ok()).collect()
    }

    /// Maildir flag letters of every mail in the folder, in file-name order
    /// (`"S"` = \Seen, `"T"` = \Deleted, `""` = none; see [`is_seen`]).
    pub fn flags(&self, user: &str, folder: &str) -> Vec<String> {
        self.mail_files(user, folder)
            .iter()
            .map(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                match name.rsplit_once(":2,") {
                    Some((_, flags)) => flags.to_string(),
                    None => String::new(),
                }
            })
            .collect()
    }

    /// `(raw, flags)` of every mail in the folder, in file-name order.
    pub fn messages_with_flags(&self, user: &str, folder: &str) -> Vec<(Vec<u8>, String)> {
        self.messages(user, folder).into_iter().zip(self.flags(user, folder)).collect()
    }

    fn mail_files(&self, user: &str, folder: &str) -> Vec<PathBuf> {
        let dir = self.folder_dir(user, folder);
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = fs::read_dir(dir.join(sub)) {
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                        files.push(e.path());
                    }
                }
            }
        }
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        files
    }
}

/// Whether maildir flag letters (from [`Dovecot::flags`]) include \Seen.
pub fn is_seen(flags: &str) -> bool {
    flags.contains('S')
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A graceful SIGTERM costs about a second per instance; the test
            // is over and its temp dir goes away, so kill the whole process
            // group (master, login, auth, imap, pop3) at once instead.
            let pgid = child.id() as libc::pid_t;
            // SAFETY: kill(2) on the process group we created has no memory effects.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

/// Makes a self-signed certificate for `localhost` and 127.0.0.1 with the
/// `openssl` command (which Debian's dovecot-core pulls in through ssl-cert).
/// The certificate doubles as its own CA for clients.
pub fn self_signed_cert(dir: &Path) -> io::Result<TlsFiles> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj"])
        .arg("/CN=localhost")
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!("openssl req failed: {}", String::from_utf8_lossy(&out.stderr))));
    }
    // Dovecot reads the key as root at start, but keep it readable anyway.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644))?;
    Ok(TlsFiles { cert, key })
}

fn config_text(
    base: &Path,
    imap_port: u16,
    pop3_port: u16,
    imaps_port: Option<u16>,
    pop3s_port: Option<u16>,
    tls: Option<&TlsFiles>,
) -> String {
    let b = base.display();
    let ssl = match tls {
        Some(t) => {
            let mut s = format!("ssl = yes\nssl_cert = <{}\nssl_key = <{}\n", t.cert.display(), t.key.display());
            // Debian ships DH parameters; Dovecot warns at start without them.
            if Path::new(DEBIAN_DH_PEM).exists() {
                let _ = writeln!(s, "ssl_dh = <{DEBIAN_DH_PEM}");
            }
            s
        }
        None => "ssl = no\n".to_string(),
    };
    let imaps = imaps_port.unwrap_or(0);
    let pop3s = pop3s_port.unwrap_or(0);
    format!(
        r#"# Written by mailrobot-testkit for one test run.
base_dir = {b}/run
state_dir = {b}/state
log_path = {b}/dovecot.log
info_log_path = {b}/dovecot.log
instance_name = mailrobot-test-{imap_port}
listen = 127.0.0.1
protocols = imap pop3
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
first_valid_uid = 1
mail_location = maildir:{b}/mail/%u
mail_max_userip_connections = 100
# Several robot nodes each keep an IDLE connection per mailbox beside their
# polls, and a node may watch thousands of mailboxes: room for thousands of
# sessions (one imap process each; Dovecot's own default for the imap
# service is 1,024 processes).
default_client_limit = 4000
default_process_limit = 1000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {b}/users
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={b}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s}
  }}
}}
service imap {{
  process_limit = 5000
}}
# No auth penalty: every refused login from 127.0.0.1 would delay the next
# one by 2, 4, 8, up to 15 seconds, and tests refuse logins on purpose.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"#
    )
}

/// The `passdb oauth2` sections for an introspection URL (template): one
/// global passdb for a plain URL, else one per protocol and/or per user,
/// each with its own `dovecot-oauth2-*.conf.ext`.
fn oauth2_passdbs(base: &Path, url: &str, protocols: &[&str], users: &[(String, String)]) -> io::Result<String> {
    let per_protocol = url.contains("{protocol}");
    let per_user = url.contains("{user}");
    let protocols: Vec<Option<&str>> =
        if per_protocol { protocols.iter().map(|p| Some(*p)).collect() } else { vec![None] };
    let users: Vec<Option<&str>> =
        if per_user { users.iter().map(|(u, _)| Some(u.as_str())).collect() } else { vec![None] };
    let mut text = String::new();
    for protocol in &protocols {
        let indent = if protocol.is_some() { "  " } else { "" };
        if let Some(p) = protocol {
            let _ = writeln!(text, "protocol {p} {{");
        }
        for (i, user) in users.iter().enumerate() {
            let mut expanded = url.to_string();
            if let Some(p) = protocol {
                expanded = expanded.replace("{protocol}", p);
            }
            if let Some(u) = user {
                expanded = expanded.replace("{user}", &url_encode(u));
            }
            let conf = base.join(format!("dovecot-oauth2-{}-{i}.conf.ext", protocol.unwrap_or("all")));
            fs::write(
                &conf,
                format!(
                    "introspection_mode = auth\nintrospection_url = {expanded}\nusername_attribute = email\n\
                     active_attribute = active\nactive_value = true\n"
                ),
            )?;
            let _ = writeln!(
                text,
                "{indent}passdb {{\n{indent}  driver = oauth2\n{indent}  mechanisms = xoauth2 oauthbearer"
            );
            if let Some(u) = user {
                let _ = writeln!(text, "{indent}  username_filter = {u}");
            }
            let _ = writeln!(text, "{indent}  args = {}\n{indent}}}", conf.display());
        }
        if protocol.is_some() {
            text.push_str("}\n");
        }
    }
    Ok(text)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn write_users_file(path: &Path, users: &[(String, String)]) -> io::Result<()> {
    let mut text = String::new();
    for (user, password) in users {
        let _ = writeln!(text, "{user}:{{PLAIN}}{password}::::::");
    }
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
    fs::rename(tmp, path)
}

fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    // Hold all listeners until every port is picked so they differ.
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0))).collect::<io::Result<_>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

fn dovecot_owner() -> io::Result<(libc::uid_t, libc::gid_t)> {
    let name = CString::new("dovecot").expect("no NUL");
    // getpwnam_r, not getpwnam: tests start instances from several threads.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the use of pwd.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "user 'dovecot' not found: install Debian's dovecot-core"));
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

fn chown(path: &Path, (uid, gid): (libc::uid_t, libc::gid_t)) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: c is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::chown(c.as_ptr(), uid, gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A mail's size with every line ending a CRLF (IMAP's RFC822.SIZE).
fn virtual_size(raw: &[u8]) -> usize {
    let bare_lf = raw.iter().enumerate().filter(|(i, b)| **b == b'\n' && (*i == 0 || raw[i - 1] != b'\r')).count();
    raw.len() + bare_lf
}
