//! SMTP submission client (RFC 5321, STARTTLS 3207, AUTH 4954, SASL XOAUTH2):
//! the robot's way out, for acknowledgements and replies, and the check an
//! admin runs before relying on it.
//!
//! Two layers: `wire` reads (multi-line) replies and writes command lines;
//! [`SmtpSession`] speaks the protocol: greeting → EHLO → STARTTLS → EHLO →
//! AUTH, then MAIL/RCPT/DATA per mail, QUIT at the end. 4xx replies are
//! transient, 5xx permanent, as the RFC means them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::credentials::{app_only_hint, xoauth2_sasl};
use crate::tls::{self, TlsMode, Transport};
use crate::{BearerTokens, SourceError};

/// How the robot logs in to the SMTP server.
#[derive(Clone)]
pub enum SmtpLogin {
    /// No AUTH (a relay that trusts the robot's address).
    Anonymous,
    /// AUTH PLAIN (or LOGIN when PLAIN is not offered).
    Password { username: String, password: String },
    /// AUTH XOAUTH2 with tokens of a service connection; a refused token is
    /// renewed once. `username` is the mailbox that sends (a shared mailbox
    /// address for Microsoft 365's SMTP.SendAsApp); `app_id` is the app's
    /// client id when the tokens are app-only (application mode).
    XOAuth2 { username: String, tokens: Arc<dyn BearerTokens>, app_id: Option<String> },
}

impl SmtpLogin {
    fn username(&self) -> Option<&str> {
        match self {
            SmtpLogin::Anonymous => None,
            SmtpLogin::Password { username, .. } | SmtpLogin::XOAuth2 { username, .. } => Some(username),
        }
    }
}

impl std::fmt::Debug for SmtpLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmtpLogin::Anonymous => f.write_str("Anonymous"),
            SmtpLogin::Password { username, .. } => write!(f, "Password({username}, ***)"),
            SmtpLogin::XOAuth2 { username, .. } => write!(f, "XOAuth2({username})"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub login: SmtpLogin,
    /// The name the robot gives in EHLO.
    pub client_name: String,
    pub timeout: Duration,
    /// Extra trusted CA certificates (PEM); `MAILROBOT_CA_FILE` otherwise.
    pub extra_ca_file: Option<PathBuf>,
}

impl SmtpConfig {
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The usual port for a TLS mode: 465 (implicit TLS), 587 (submission
    /// with STARTTLS), 25 (plain).
    pub fn default_port(tls: TlsMode) -> u16 {
        match tls {
            TlsMode::Tls => 465,
            TlsMode::StartTls => 587,
            TlsMode::None => 25,
        }
    }
}

/// What the server said about itself, for `connection test` and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServerInfo {
    /// The greeting line's text (after `220`).
    pub greeting: String,
    /// Whether the session runs over TLS.
    pub secured: bool,
    /// SASL mechanisms offered (after STARTTLS, if used).
    pub auth_mechanisms: Vec<String>,
    /// The SIZE limit, if announced.
    pub max_size: Option<u64>,
    pub eight_bit_mime: bool,
    /// Who the session is logged in as.
    pub authenticated_as: Option<String>,
}

/// The protocol's wire format: command lines out, replies in.
mod wire {
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    use crate::tls::Transport;

    /// RFC 5321 reply lines are at most 512 bytes; allow slack, not growth.
    const MAX_LINE: usize = 8 * 1024;
    /// A multi-line reply longer than this is a confused peer.
    const MAX_LINES: usize = 200;

    #[derive(Debug)]
    pub enum WireError {
        Timeout(Duration),
        Io(std::io::Error),
        Closed,
        Protocol(String),
    }

    impl std::fmt::Display for WireError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                WireError::Timeout(t) => write!(f, "no answer within {t:?}"),
                WireError::Io(e) => write!(f, "{e}"),
                WireError::Closed => f.write_str("the server closed the connection"),
                WireError::Protocol(m) => f.write_str(m),
            }
        }
    }

    /// One reply: its code and the text of each line (code stripped).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Reply {
        pub code: u16,
        pub lines: Vec<String>,
    }

    impl Reply {
        pub fn is_positive(&self) -> bool {
            (200..400).contains(&self.code)
        }

        /// All lines joined, as shown in messages.
        pub fn text(&self) -> String {
            self.lines.join(" ")
        }
    }

    /// Parses one reply line: `250-SIZE 1000` → (250, more follow, "SIZE 1000").
    pub fn parse_line(line: &str) -> Result<(u16, bool, &str), WireError> {
        let bad = || WireError::Protocol(format!("not an SMTP reply: {:?}", line.chars().take(80).collect::<String>()));
        let code = line.get(..3).filter(|c| c.bytes().all(|b| b.is_ascii_digit())).ok_or_else(bad)?;
        let code: u16 = code.parse().map_err(|_| bad())?;
        if !(200..600).contains(&code) {
            return Err(bad());
        }
        match line.as_bytes().get(3) {
            None => Ok((code, false, "")),
            Some(b' ') => Ok((code, false, &line[4..])),
            Some(b'-') => Ok((code, true, &line[4..])),
            Some(_) => Err(bad()),
        }
    }

    pub struct Wire {
        stream: BufReader<Transport>,
        timeout: Duration,
    }

    impl Wire {
        pub fn new(transport: Transport, timeout: Duration) -> Self {
            Wire { stream: BufReader::new(transport), timeout }
        }

        pub fn into_transport(self) -> Transport {
            self.stream.into_inner()
        }

        pub async fn write(&mut self, bytes: &[u8]) -> Result<(), WireError> {
            let timeout = self.timeout;
            let write = async {
                let s = self.stream.get_mut();
                s.write_all(bytes).await?;
                s.flush().await
            };
            tokio::time::timeout(timeout, write).await.map_err(|_| WireError::Timeout(timeout))?.map_err(WireError::Io)
        }

        /// Sends one command line (CRLF added).
        pub async fn command(&mut self, line: &str) -> Result<(), WireError> {
            let mut buf = Vec::with_capacity(line.len() + 2);
            buf.extend_from_slice(line.as_bytes());
            buf.extend_from_slice(b"\r\n");
            self.write(&buf).await
        }

        async fn read_line(&mut self) -> Result<String, WireError> {
            let mut line = Vec::new();
            let mut bounded = (&mut self.stream).take(MAX_LINE as u64);
            let n = tokio::time::timeout(self.timeout, bounded.read_until(b'\n', &mut line))
                .await
                .map_err(|_| WireError::Timeout(self.timeout))?
                .map_err(WireError::Io)?;
            if n == 0 {
                return Err(WireError::Closed);
            }
            if line.last() != Some(&b'\n') {
                return Err(WireError::Protocol(format!("reply line longer than {MAX_LINE} bytes")));
            }
            let text = String::from_utf8_lossy(&line);
            Ok(text.trim_end_matches(['\r', '\n']).to_string())
        }

        pub async fn read_reply(&mut self) -> Result<Reply, WireError> {
            let mut lines = Vec::new();
            loop {
                let line = self.read_line().await?;
                let (code, more, text) = parse_line(&line)?;
                lines.push(text.to_string());
                if !more {
                    return Ok(Reply { code, lines });
                }
                if lines.len() > MAX_LINES {
                    return Err(WireError::Protocol(format!("reply of more than {MAX_LINES} lines")));
                }
            }
        }
    }

    /// DATA as sent: CRLF line ends (bare LF converted), leading dots
    /// doubled, and the terminating `.` line.
    pub fn dot_stuffed(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + data.len() / 50 + 5);
        let mut at_line_start = true;
        let mut previous = 0u8;
        for &b in data {
            if b == b'\n' && previous != b'\r' {
                out.push(b'\r');
            }
            if at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_line_start = b == b'\n';
            previous = b;
        }
        if !at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }
}

use wire::{Reply, Wire, WireError};

/// The EHLO keywords the session acts on.
#[derive(Debug, Default)]
struct Extensions {
    starttls: bool,
    auth: Vec<String>,
    size: Option<u64>,
    eight_bit_mime: bool,
}

impl Extensions {
    /// The EHLO reply's lines after the first (the server's name).
    fn parse(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            match words.next().map(str::to_ascii_uppercase).as_deref() {
                Some("STARTTLS") => ext.starttls = true,
                Some("AUTH") => ext.auth.extend(words.map(str::to_ascii_uppercase)),
                Some("SIZE") => ext.size = words.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0),
                Some("8BITMIME") => ext.eight_bit_mime = true,
                _ => {}
            }
        }
        ext
    }

    fn offers(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m == mechanism)
    }
}

/// A logged-in SMTP session, ready to send.
pub struct SmtpSession {
    cfg: SmtpConfig,
    wire: Wire,
    ext: Extensions,
    info: ServerInfo,
}

/// Connects, logs in and says goodbye: everything short of sending.
pub async fn check(cfg: &SmtpConfig) -> Result<ServerInfo, SourceError> {
    let session = SmtpSession::connect(cfg.clone()).await?;
    let info = session.info().clone();
    session.quit().await;
    Ok(info)
}

impl SmtpSession {
    /// Opens a session and logs in. With XOAUTH2, a refused token is renewed
    /// once on a new connection (the server may hold an expired one).
    pub async fn connect(cfg: SmtpConfig) -> Result<Self, SourceError> {
        let tls_config = tls::config_for(cfg.tls, cfg.extra_ca_file.as_deref())?;
        match Self::open(&cfg, tls_config.clone(), false).await {
            Err(err) if err.is_login_refused() && matches!(cfg.login, SmtpLogin::XOAuth2 { .. }) => {
                tracing::debug!(server = %cfg.endpoint(), error = %err, "SMTP token refused; renewing it once");
                Self::open(&cfg, tls_config, true).await
            }
            other => other,
        }
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    async fn open(
        cfg: &SmtpConfig,
        tls_config: Option<Arc<rustls::ClientConfig>>,
        renew_token: bool,
    ) -> Result<Self, SourceError> {
        let transport = tls::connect("SMTP", &cfg.host, cfg.port, cfg.tls, tls_config.as_ref(), cfg.timeout).await?;
        Self::start(cfg, transport, tls_config, renew_token).await
    }

    /// The session on an open connection: greeting, EHLO, STARTTLS, login.
    async fn start(
        cfg: &SmtpConfig,
        transport: Transport,
        tls_config: Option<Arc<rustls::ClientConfig>>,
        renew_token: bool,
    ) -> Result<Self, SourceError> {
        let server = cfg.endpoint();
        let mut wire = Wire::new(transport, cfg.timeout);
        let greeting = wire.read_reply().await.map_err(|e| wire_error(cfg, e, "reading the greeting"))?;
        if greeting.code != 220 {
            return Err(reply_error(cfg, "greeting", &greeting));
        }
        let mut info =
            ServerInfo { greeting: greeting.text(), secured: cfg.tls == TlsMode::Tls, ..ServerInfo::default() };
        let mut ext = ehlo(cfg, &mut wire).await?;

        if cfg.tls == TlsMode::StartTls {
            if !ext.starttls {
                return Err(SourceError::permanent(format!(
                    "SMTP server {server} does not offer STARTTLS — use tls (port 465) or check the server's TLS setup"
                )));
            }
            let reply = exchange(cfg, &mut wire, "STARTTLS", "starting TLS").await?;
            if reply.code != 220 {
                return Err(reply_error(cfg, "STARTTLS", &reply));
            }
            let Transport::Plain(tcp) = wire.into_transport() else {
                unreachable!("STARTTLS runs on a plain connection");
            };
            let tc = tls_config.expect("built for starttls");
            wire = Wire::new(tls::tls_handshake("SMTP", tcp, &cfg.host, cfg.port, tc, cfg.timeout).await?, cfg.timeout);
            info.secured = true;
            // RFC 3207: forget what was learnt before TLS; ask again.
            ext = ehlo(cfg, &mut wire).await?;
        }
        info.auth_mechanisms = ext.auth.clone();
        info.max_size = ext.size;
        info.eight_bit_mime = ext.eight_bit_mime;

        let mut session = SmtpSession { cfg: cfg.clone(), wire, ext, info };
        session.authenticate(renew_token).await?;
        Ok(session)
    }

    async fn authenticate(&mut self, renew_token: bool) -> Result<(), SourceError> {
        let cfg = &self.cfg;
        let server = cfg.endpoint();
        let Some(user) = cfg.login.username() else {
            return Ok(());
        };
        let reply = match &cfg.login {
            SmtpLogin::Anonymous => return Ok(()),
            SmtpLogin::Password { username, password } => {
                if self.ext.offers("PLAIN") || !self.ext.offers("LOGIN") {
                    tracing::debug!(%server, %user, "SMTP > AUTH PLAIN ***");
                    let secret = STANDARD.encode(format!("\0{username}\0{password}"));
                    exchange(cfg, &mut self.wire, &format!("AUTH PLAIN {secret}"), "logging in").await?
                } else {
                    tracing::debug!(%server, %user, "SMTP > AUTH LOGIN");
                    let mut reply = exchange(cfg, &mut self.wire, "AUTH LOGIN", "logging in").await?;
                    for answer in [username, password] {
                        if reply.code != 334 {
                            break;
                        }
                        reply = exchange(cfg, &mut self.wire, &STANDARD.encode(answer), "logging in").await?;
                    }
                    reply
                }
            }
            SmtpLogin::XOAuth2 { username, tokens, .. } => {
                if !self.ext.offers("XOAUTH2") {
                    return Err(SourceError::permanent(format!(
                        "SMTP server {server} does not offer AUTH XOAUTH2 (it offers: {}) — OAuth needs a \
                         server that supports it, such as smtp.office365.com",
                        self.ext.auth.join(" ")
                    )));
                }
                let token = tokens.token(renew_token).await?;
                // Microsoft documents the token in answer to the 334 prompt,
                // not as an initial response.
                tracing::debug!(%server, %user, "SMTP > AUTH XOAUTH2");
                let prompt = exchange(cfg, &mut self.wire, "AUTH XOAUTH2", "logging in").await?;
                if prompt.code != 334 {
                    return Err(self.login_refused(&prompt, None));
                }
                tracing::debug!(%server, "SMTP > (XOAUTH2 token ***)");
                let reply = exchange(cfg, &mut self.wire, &xoauth2_sasl(username, &token), "logging in").await?;
                if reply.code == 334 {
                    // The failure is explained in a challenge; an empty
                    // answer ends the exchange and brings the final reply.
                    let details = STANDARD
                        .decode(reply.text().trim())
                        .map(|d| String::from_utf8_lossy(&d).into_owned())
                        .unwrap_or_else(|_| reply.text());
                    let last = exchange(cfg, &mut self.wire, "", "logging in").await?;
                    return Err(self.login_refused(&last, Some(&details)));
                }
                reply
            }
        };
        if reply.code != 235 {
            return Err(self.login_refused(&reply, None));
        }
        self.info.authenticated_as = Some(user.to_string());
        Ok(())
    }

    fn login_refused(&self, reply: &Reply, details: Option<&str>) -> SourceError {
        let cfg = &self.cfg;
        let user = cfg.login.username().unwrap_or_default();
        let details = details.map(|d| format!(" ({d})")).unwrap_or_default();
        let what =
            format!("SMTP login to {} as {user} failed: {} {}{details}", cfg.endpoint(), reply.code, reply.text());
        if (400..500).contains(&reply.code) {
            return SourceError::transient(format!("{what}; will retry"));
        }
        let hint = match &cfg.login {
            SmtpLogin::XOAuth2 { app_id: None, .. } => "the access token was refused: check the connection's scope \
                 (SMTP.Send), that SMTP AUTH is enabled for the mailbox, and that the user may send as it"
                .to_string(),
            SmtpLogin::XOAuth2 { app_id: Some(app), .. } => format!(
                "{}; SMTP AUTH must also be enabled for the mailbox",
                app_only_hint("SMTP.SendAsApp", app, user)
            ),
            _ => "check the username and password, and that the server allows SMTP AUTH for this account".to_string(),
        };
        SourceError::login_refused(format!("{what} — {hint}"))
    }

    /// Sends one mail. `data` is the raw message; line ends are normalised
    /// to CRLF and dots stuffed. Any refusal leaves the session usable.
    pub async fn send(&mut self, from: &str, recipients: &[&str], data: &[u8]) -> Result<(), SourceError> {
        let cfg = self.cfg.clone();
        if recipients.is_empty() {
            return Err(SourceError::permanent("a mail needs at least one recipient"));
        }
        if let Some(max) = self.ext.size
            && data.len() as u64 > max
        {
            return Err(SourceError::permanent(format!(
                "the mail is {} bytes; SMTP server {} accepts at most {max}",
                data.len(),
                cfg.endpoint()
            )));
        }
        crate::error::refuse_line_breaks(from, "sender address (MAIL FROM)")?;
        for r in recipients {
            crate::error::refuse_line_breaks(r, "recipient address (RCPT TO)")?;
        }
        let mut mail_from = format!("MAIL FROM:<{from}>");
        if self.ext.eight_bit_mime && data.iter().any(|b| *b >= 0x80) {
            mail_from.push_str(" BODY=8BITMIME");
        }
        if self.ext.size.is_some() {
            mail_from.push_str(&format!(" SIZE={}", data.len()));
        }
        let steps: Vec<(String, &str)> = std::iter::once((mail_from, "MAIL FROM"))
            .chain(recipients.iter().map(|r| (format!("RCPT TO:<{r}>"), "RCPT TO")))
            .chain(std::iter::once(("DATA".to_string(), "DATA")))
            .collect();
        for (command, step) in steps {
            let reply = exchange(&cfg, &mut self.wire, &command, "sending").await?;
            let expected = if step == "DATA" { 354 } else { 250 };
            if reply.code != expected {
                // RSET keeps the session usable for the next mail.
                if !(step == "DATA" && reply.is_positive()) {
                    let _ = exchange(&cfg, &mut self.wire, "RSET", "resetting").await;
                }
                return Err(reply_error(&cfg, step, &reply));
            }
        }
        self.wire.write(&wire::dot_stuffed(data)).await.map_err(|e| wire_error(&cfg, e, "sending the mail"))?;
        let reply = self.wire.read_reply().await.map_err(|e| wire_error(&cfg, e, "sending the mail"))?;
        if reply.code != 250 {
            return Err(reply_error(&cfg, "end of DATA", &reply));
        }
        tracing::debug!(server = %cfg.endpoint(), recipients = recipients.len(), bytes = data.len(), "SMTP mail accepted");
        Ok(())
    }

    /// Whether the session still answers (NOOP): a pooled session the
    /// server closed while it was idle is found out before a mail is sent
    /// on it, not halfway through one.
    pub async fn is_alive(&mut self) -> bool {
        matches!(exchange(&self.cfg, &mut self.wire, "NOOP", "checking the session").await, Ok(r) if r.code == 250)
    }

    /// Says goodbye; a server that already hung up is fine.
    pub async fn quit(mut self) {
        let _ = exchange(&self.cfg, &mut self.wire, "QUIT", "quitting").await;
    }
}

/// Fuzzing ([`crate::fuzzing`]): a whole session — greeting, EHLO, AUTH,
/// one mail, QUIT — with every answer read from `transport`.
pub(crate) async fn scripted_session(transport: Transport, login: SmtpLogin, mail: &[u8]) -> &'static str {
    let cfg = SmtpConfig {
        host: "smtp.fuzz.invalid".into(),
        port: 25,
        tls: TlsMode::None,
        login,
        client_name: "robot.fuzz.invalid".into(),
        timeout: Duration::from_secs(5),
        extra_ca_file: None,
    };
    let Ok(mut session) = SmtpSession::start(&cfg, transport, None, false).await else { return "nothing" };
    let sent = session.send("robot@fuzz.invalid", &["a@fuzz.invalid", "b@fuzz.invalid"], mail).await;
    session.quit().await;
    if sent.is_ok() { "sent" } else { "login" }
}

async fn ehlo(cfg: &SmtpConfig, wire: &mut Wire) -> Result<Extensions, SourceError> {
    let reply = exchange(cfg, wire, &format!("EHLO {}", cfg.client_name), "saying EHLO").await?;
    if reply.code != 250 {
        return Err(reply_error(cfg, "EHLO", &reply));
    }
    Ok(Extensions::parse(&reply))
}

async fn exchange(cfg: &SmtpConfig, wire: &mut Wire, command: &str, doing: &str) -> Result<Reply, SourceError> {
    wire.command(command).await.map_err(|e| wire_error(cfg, e, doing))?;
    wire.read_reply().await.map_err(|e| wire_error(cfg, e, doing))
}

fn wire_error(cfg: &SmtpConfig, e: WireError, doing: &str) -> SourceError {
    let message = format!("SMTP server {} ({doing}): {e}", cfg.endpoint());
    match e {
        WireError::Protocol(_) => SourceError::permanent(message),
        _ => SourceError::transient(message),
    }
}

/// A negative reply to `step`: 4xx is worth retrying, 5xx is not.
fn reply_error(cfg: &SmtpConfig, step: &str, reply: &Reply) -> SourceError {
    let message = format!("SMTP server {} refused {step}: {} {}", cfg.endpoint(), reply.code, reply.text());
    if (400..500).contains(&reply.code) {
        SourceError::transient(message)
    } else if reply.code == 530 && cfg.tls == TlsMode::None {
        SourceError::permanent(format!("{message} — the server wants TLS first: use starttls or tls"))
    } else {
        SourceError::permanent(message)
    }
}

#[cfg(test)]
mod tests {
    use super::wire::{dot_stuffed, parse_line};
    use super::*;

    #[test]
    fn reply_lines() {
        assert_eq!(parse_line("250-SIZE 1000").unwrap(), (250, true, "SIZE 1000"));
        assert_eq!(
            parse_line("235 2.7.0 Authentication successful").unwrap(),
            (235, false, "2.7.0 Authentication successful")
        );
        assert_eq!(parse_line("250").unwrap(), (250, false, ""));
        for bad in ["", "25", "abc ok", "250_x", "999 no", "+OK"] {
            assert!(parse_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ehlo_extensions() {
        let reply = Reply {
            code: 250,
            lines: ["mail.example.test", "8BITMIME", "AUTH PLAIN login xoauth2", "SIZE 35882577", "STARTTLS"]
                .map(String::from)
                .to_vec(),
        };
        let ext = Extensions::parse(&reply);
        assert!(ext.starttls && ext.eight_bit_mime && ext.offers("LOGIN") && ext.offers("XOAUTH2"));
        assert_eq!(ext.size, Some(35_882_577));
        // The server's name line is not an extension.
        let named_auth = Reply { code: 250, lines: vec!["AUTH".into()] };
        assert!(Extensions::parse(&named_auth).auth.is_empty());
    }

    #[test]
    fn data_is_dot_stuffed_with_crlf() {
        assert_eq!(dot_stuffed(b"a\n.b\r\n..c\nd"), b"a\r\n..b\r\n...c\r\nd\r\n.\r\n");
        assert_eq!(dot_stuffed(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(dot_stuffed(b""), b".\r\n");
    }

    #[test]
    fn login_debug_hides_secrets() {
        let login = SmtpLogin::Password { username: "u@x".into(), password: "hunter2".into() };
        assert!(!format!("{login:?}").contains("hunter2"));
    }
}
