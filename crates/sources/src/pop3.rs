//! POP3 source (RFC 1939, CAPA/PIPELINING 2449, STLS 2595, AUTH 5034) on a
//! small client of its own.
//!
//! Two layers: `wire` reads status lines and dot-terminated multi-line
//! answers from a buffered stream; the session code below speaks the
//! protocol. Remote ids are UIDLs; message numbers are only valid within one
//! session, so each session keeps its own UIDL → number map.
//!
//! POP3 has no folders: a processed mail is deleted (unless the mailbox keeps
//! mail on the server) and a failed one stays where it is. Deletes take
//! effect only at QUIT, i.e. in [`MailSource::close`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use crate::credentials::{self, Credentials, app_only_hint, xoauth2_sasl};
use crate::tls::{self, TlsMode, Transport};
use crate::{BearerTokens, Listing, MailSource, Outcome, RemoteMail, SourceError};

/// How many commands go out at once when the server offers PIPELINING.
/// Commands are a few bytes each, so this never fills the send buffer
/// while the server is still writing answers back.
const PIPELINE_WINDOW: usize = 32;

/// One POP3 mailbox to read from.
#[derive(Debug, Clone)]
pub struct Pop3Config {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub credentials: Credentials,
    /// With XOAUTH2: where tokens come from. Each new session logs in with a
    /// current token, and a refused one is renewed once (it may have expired
    /// since the last session).
    pub tokens: Option<Arc<dyn BearerTokens>>,
    /// Leave processed mails on the server (the journal remembers their
    /// UIDLs) instead of deleting them.
    pub keep_on_server: bool,
    /// PEM file of extra trusted CAs (else `MAILROBOT_CA_FILE`, else webpki roots only).
    pub extra_ca_file: Option<PathBuf>,
    /// Bound on every network step: connect, handshake, each read and write.
    pub timeout: Duration,
    /// A mail is read no further than this many bytes (whatever LIST
    /// announced): past it, it is refused as too large and left on the server.
    pub max_message_bytes: u64,
}

impl Pop3Config {
    fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The protocol's wire format: lines, status answers, multi-line answers.
mod wire {
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use crate::tls::Transport;

    /// Status lines are short (RFC 2449: 512 bytes); allow some slack but
    /// do not let a confused peer grow one line without bound.
    const MAX_STATUS_LINE: usize = 64 * 1024;
    /// CAPA, UIDL and LIST answers: about 80 bytes per mail, so this allows
    /// a few hundred thousand mails and no more.
    const MAX_LISTING: usize = 64 << 20;

    #[derive(Debug)]
    pub enum WireError {
        Timeout(Duration),
        Io(std::io::Error),
        Closed,
        Protocol(String),
        /// A line (or a multi-line answer) ran past the bound it was read with.
        TooLong(usize),
    }

    /// A status answer: `+OK text` or `-ERR text`.
    #[derive(Debug)]
    pub enum Status {
        Ok(String),
        Err(String),
        /// `+ base64` during AUTH.
        Continue(String),
    }

    pub struct Wire {
        stream: BufReader<Transport>,
        timeout: Duration,
        line: Vec<u8>,
    }

    impl Wire {
        pub fn new(transport: Transport, timeout: Duration) -> Self {
            Wire { stream: BufReader::with_capacity(64 * 1024, transport), timeout, line: Vec::new() }
        }

        pub fn into_transport(self) -> Transport {
            self.stream.into_inner()
        }

        /// Writes lines (each without CRLF) in one go and flushes.
        pub async fn send_lines<S: AsRef<str>>(&mut self, lines: &[S]) -> Result<(), WireError> {
            let mut buf = Vec::with_capacity(lines.iter().map(|l| l.as_ref().len() + 2).sum());
            for l in lines {
                buf.extend_from_slice(l.as_ref().as_bytes());
                buf.extend_from_slice(b"\r\n");
            }
            let timeout = self.timeout;
            let write = async {
                let s = self.stream.get_mut();
                s.write_all(&buf).await?;
                s.flush().await
            };
            tokio::time::timeout(timeout, write).await.map_err(|_| WireError::Timeout(timeout))?.map_err(WireError::Io)
        }

        /// Reads one line including its terminator into `self.line`,
        /// bounded by `limit` bytes. Each wait for data is bounded by the
        /// timeout, so long transfers are fine while stalls are not.
        async fn read_line(&mut self, limit: usize) -> Result<(), WireError> {
            self.line.clear();
            loop {
                let available = tokio::time::timeout(self.timeout, self.stream.fill_buf())
                    .await
                    .map_err(|_| WireError::Timeout(self.timeout))?
                    .map_err(WireError::Io)?;
                if available.is_empty() {
                    return Err(WireError::Closed);
                }
                let (take, done) = match memchr(b'\n', available) {
                    Some(i) => (i + 1, true),
                    None => (available.len(), false),
                };
                self.line.extend_from_slice(&available[..take]);
                self.stream.consume(take);
                if done {
                    return Ok(());
                }
                if self.line.len() > limit {
                    return Err(WireError::TooLong(limit));
                }
            }
        }

        /// Reads a status line.
        pub async fn read_status(&mut self) -> Result<Status, WireError> {
            self.read_line(MAX_STATUS_LINE).await?;
            let text = String::from_utf8_lossy(trim_eol(&self.line)).into_owned();
            if let Some(rest) = text.strip_prefix("+OK") {
                Ok(Status::Ok(rest.trim_start().to_string()))
            } else if let Some(rest) = text.strip_prefix("-ERR") {
                Ok(Status::Err(rest.trim_start().to_string()))
            } else if let Some(rest) = text.strip_prefix('+') {
                Ok(Status::Continue(rest.trim_start().to_string()))
            } else {
                Err(WireError::Protocol(format!("unexpected answer {:?}", truncate(&text, 80))))
            }
        }

        /// Reads the body of a multi-line answer up to the lone "." line,
        /// removing the byte-stuffed leading dots. Line ends are kept as sent.
        /// Stops with [`WireError::TooLong`] once the body passes `max`
        /// bytes: the rest is not read, so the session is out of step and
        /// must be dropped.
        pub async fn read_multiline(&mut self, out: &mut Vec<u8>, max: usize) -> Result<(), WireError> {
            let start = out.len();
            loop {
                // Room for the rest of the body, its line end and a stuffed dot.
                let budget = max.saturating_sub(out.len() - start).saturating_add(3);
                self.read_line(budget).await.map_err(|e| match e {
                    WireError::TooLong(_) => WireError::TooLong(max),
                    e => e,
                })?;
                let line = &self.line[..];
                if trim_eol(line) == b"." {
                    return Ok(());
                }
                match line.first() {
                    Some(b'.') => out.extend_from_slice(&line[1..]),
                    _ => out.extend_from_slice(line),
                }
                if out.len() - start > max {
                    return Err(WireError::TooLong(max));
                }
            }
        }

        /// Reads a multi-line answer as text lines (CAPA, UIDL, LIST).
        pub async fn read_multiline_lines(&mut self) -> Result<Vec<String>, WireError> {
            let mut body = Vec::new();
            self.read_multiline(&mut body, MAX_LISTING).await?;
            Ok(String::from_utf8_lossy(&body)
                .lines()
                .map(|l| l.trim_end_matches('\r').to_string())
                .filter(|l| !l.is_empty())
                .collect())
        }
    }

    fn trim_eol(line: &[u8]) -> &[u8] {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        line.strip_suffix(b"\r").unwrap_or(line)
    }

    fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
        hay.iter().position(|&b| b == needle)
    }

    fn truncate(s: &str, max: usize) -> &str {
        let mut end = s.len().min(max);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        &s[..end]
    }
}

use wire::{Status, Wire, WireError};

/// What the server said it can do (CAPA).
#[derive(Debug, Default, Clone)]
struct Capabilities {
    known: bool,
    pipelining: bool,
    stls: bool,
    user: bool,
    sasl: Vec<String>,
}

impl Capabilities {
    fn parse(lines: &[String]) -> Self {
        let mut caps = Capabilities { known: true, ..Default::default() };
        for line in lines {
            let mut words = line.split_ascii_whitespace();
            match words.next().map(str::to_ascii_uppercase).as_deref() {
                Some("PIPELINING") => caps.pipelining = true,
                Some("STLS") => caps.stls = true,
                Some("USER") => caps.user = true,
                Some("SASL") => caps.sasl = words.map(str::to_ascii_uppercase).collect(),
                _ => {}
            }
        }
        caps
    }

    fn has_sasl(&self, mech: &str) -> bool {
        self.sasl.iter().any(|m| m == mech)
    }
}

struct Connection {
    wire: Wire,
    caps: Capabilities,
    /// UIDL → message number for this session (numbers change between sessions).
    numbers: Option<HashMap<String, u32>>,
}

/// A POP3 mailbox as a [`MailSource`]. After `close` (or a network error)
/// the next call opens a new session, which also sees newly arrived mail.
pub struct Pop3Source {
    cfg: Pop3Config,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    conn: Option<Connection>,
}

impl std::fmt::Debug for Pop3Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pop3Source").field("cfg", &self.cfg).field("connected", &self.conn.is_some()).finish()
    }
}

impl Pop3Source {
    /// Connects and logs in (STLS/TLS as configured).
    pub async fn connect(cfg: Pop3Config) -> Result<Self, SourceError> {
        let tls_config = tls::config_for(cfg.tls, cfg.extra_ca_file.as_deref())?;
        let mut source = Pop3Source { cfg, tls_config, conn: None };
        source.ensure_connected().await?;
        Ok(source)
    }

    async fn ensure_connected(&mut self) -> Result<&mut Connection, SourceError> {
        if self.conn.is_none() {
            credentials::current(&mut self.cfg.credentials, self.cfg.tokens.as_ref(), false).await?;
            let conn = match open_session(&self.cfg, self.tls_config.clone()).await {
                // A token may have expired since the last session: renew it once.
                Err(e) if e.is_login_refused() && self.cfg.tokens.is_some() => {
                    tracing::debug!(server = %self.cfg.endpoint(), error = %e, "POP3 token refused; renewing it once");
                    credentials::current(&mut self.cfg.credentials, self.cfg.tokens.as_ref(), true).await?;
                    open_session(&self.cfg, self.tls_config.clone()).await?
                }
                other => other?,
            };
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Forgets the connection after a network error; the server rolls back
    /// the DELEs of a session that did not end with QUIT, which is safe
    /// because settling is idempotent.
    fn note(&mut self, err: SourceError) -> SourceError {
        if err.is_transient() {
            self.conn = None;
        }
        err
    }

    async fn list_inner(&mut self) -> Result<Vec<Listing>, SourceError> {
        let cfg = self.cfg.clone();
        let conn = self.ensure_connected().await?;
        let (numbers, listings) = uidl_and_list(&cfg, conn).await?;
        conn.numbers = Some(numbers);
        Ok(listings)
    }

    async fn numbers(&mut self) -> Result<(), SourceError> {
        let cfg = self.cfg.clone();
        let conn = self.ensure_connected().await?;
        if conn.numbers.is_none() {
            let (numbers, _) = uidl_and_list(&cfg, conn).await?;
            conn.numbers = Some(numbers);
        }
        Ok(())
    }

    async fn fetch_inner(&mut self, remote_ids: &[String]) -> Result<Vec<RemoteMail>, SourceError> {
        self.numbers().await?;
        let cfg = self.cfg.clone();
        let conn = self.conn.as_mut().expect("connected by numbers()");
        let numbers = conn.numbers.as_ref().expect("filled by numbers()");
        let mut wanted: Vec<(u32, &String)> = remote_ids
            .iter()
            .filter_map(|id| match numbers.get(id) {
                Some(n) => Some((*n, id)),
                None => {
                    tracing::debug!(remote_id = %id, "POP3 fetch: not on the server (any more); skipped");
                    None
                }
            })
            .collect();
        wanted.sort_unstable();
        wanted.dedup();

        let window = if conn.caps.pipelining { PIPELINE_WINDOW } else { 1 };
        let max = usize::try_from(cfg.max_message_bytes).unwrap_or(usize::MAX);
        let mut mails = Vec::with_capacity(wanted.len());
        let mut out_of_step = false;
        'batches: for batch in wanted.chunks(window) {
            let commands: Vec<String> = batch.iter().map(|(n, _)| format!("RETR {n}")).collect();
            tracing::debug!(count = commands.len(), first = %commands[0], "POP3 > RETR");
            conn.wire.send_lines(&commands).await.map_err(|e| wire_error(&cfg, e, "fetching mails"))?;
            for (n, id) in batch {
                match conn.wire.read_status().await.map_err(|e| wire_error(&cfg, e, "fetching mails"))? {
                    Status::Ok(_) => {
                        let mut raw = Vec::new();
                        match conn.wire.read_multiline(&mut raw, max).await {
                            Ok(()) => mails.push(RemoteMail::new((*id).clone(), raw)),
                            // Whatever LIST said, the mail is bigger than
                            // the limit: refused, left on the server. The
                            // rest of it (and of the pipelined answers) is
                            // not read: this session is done.
                            Err(WireError::TooLong(_)) => {
                                tracing::warn!(message = n, remote_id = %id, limit = max, "POP3 mail over the size limit; stopped reading it");
                                mails.push(RemoteMail::oversized((*id).clone(), raw.len() as u64));
                                out_of_step = true;
                                break 'batches;
                            }
                            Err(e) => return Err(wire_error(&cfg, e, "fetching mails")),
                        }
                    }
                    Status::Err(text) if is_server_trouble(&text) => {
                        return Err(server_trouble(&cfg, "fetching mails", &text));
                    }
                    // A message deleted in this session, or gone: left out.
                    Status::Err(text) => {
                        tracing::debug!(message = n, remote_id = %id, %text, "POP3 RETR refused; skipped")
                    }
                    Status::Continue(_) => {
                        return Err(protocol_error(&cfg, "fetching mails", "unexpected continuation"));
                    }
                }
            }
        }
        if out_of_step {
            // Mails left out are fetched by a later batch or pass; deletes
            // sent in this session are lost with it and redone when those
            // mails are listed again.
            self.conn = None;
        }
        Ok(mails)
    }

    async fn settle_inner(&mut self, outcomes: &[(String, Outcome)]) -> Result<(), SourceError> {
        let to_delete: Vec<&String> = if self.cfg.keep_on_server {
            Vec::new()
        } else {
            outcomes.iter().filter(|(_, o)| *o == Outcome::Processed).map(|(id, _)| id).collect()
        };
        // Failed mails stay on the server: POP3 has no error folder, and the
        // journal knows not to take them again.
        tracing::debug!(delete = to_delete.len(), keep = outcomes.len() - to_delete.len(), "POP3 settle");
        if to_delete.is_empty() {
            return Ok(());
        }
        self.numbers().await?;
        let cfg = self.cfg.clone();
        let conn = self.conn.as_mut().expect("connected by numbers()");
        let numbers = conn.numbers.as_mut().expect("filled by numbers()");
        let mut wanted: Vec<u32> = to_delete.iter().filter_map(|id| numbers.remove(id.as_str())).collect();
        wanted.sort_unstable();
        wanted.dedup();

        let window = if conn.caps.pipelining { PIPELINE_WINDOW } else { 1 };
        for batch in wanted.chunks(window) {
            let commands: Vec<String> = batch.iter().map(|n| format!("DELE {n}")).collect();
            tracing::debug!(count = commands.len(), first = %commands[0], "POP3 > DELE");
            conn.wire.send_lines(&commands).await.map_err(|e| wire_error(&cfg, e, "deleting mails"))?;
            for n in batch {
                match conn.wire.read_status().await.map_err(|e| wire_error(&cfg, e, "deleting mails"))? {
                    Status::Ok(_) => {}
                    Status::Err(text) if is_server_trouble(&text) => {
                        return Err(server_trouble(&cfg, "deleting mails", &text));
                    }
                    // Already marked deleted: that is what we wanted.
                    Status::Err(text) => {
                        tracing::debug!(message = n, %text, "POP3 DELE refused; ignored")
                    }
                    Status::Continue(_) => {
                        return Err(protocol_error(&cfg, "deleting mails", "unexpected continuation"));
                    }
                }
            }
        }
        Ok(())
    }

    async fn close_inner(&mut self) -> Result<(), SourceError> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        let cfg = &self.cfg;
        tracing::debug!(server = %cfg.endpoint(), "POP3 > QUIT");
        conn.wire.send_lines(&["QUIT"]).await.map_err(|e| wire_error(cfg, e, "ending the session (QUIT)"))?;
        match conn.wire.read_status().await.map_err(|e| wire_error(cfg, e, "ending the session (QUIT)"))? {
            Status::Ok(_) => Ok(()),
            // RFC 1939: -ERR here means deletes were not committed.
            Status::Err(text) | Status::Continue(text) => Err(SourceError::transient(format!(
                "POP3 server {} did not commit the session at QUIT: {text}; the mails stay on the \
                 server and will be settled again next time",
                cfg.endpoint()
            ))),
        }
    }
}

#[async_trait::async_trait]
impl MailSource for Pop3Source {
    async fn list(&mut self) -> Result<Vec<Listing>, SourceError> {
        with_retry!(self, self.list_inner())
    }

    async fn fetch(&mut self, remote_ids: &[String]) -> Result<Vec<RemoteMail>, SourceError> {
        with_retry!(self, self.fetch_inner(remote_ids))
    }

    async fn settle(&mut self, outcomes: &[(String, Outcome)]) -> Result<(), SourceError> {
        with_retry!(self, self.settle_inner(outcomes))
    }

    fn resettle_if_listed_again(&self) -> bool {
        // Deletes only take effect at QUIT; kept mails are listed by design.
        !self.cfg.keep_on_server
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        self.close_inner().await
    }
}

/// Fuzzing ([`crate::fuzzing`]): a whole session — login, list, fetch,
/// settle, QUIT — with every answer read from `transport`. Stops at the
/// first error, as the session would, and says how far it got; panics if
/// a mail comes out that was not asked for or is over the limit.
pub(crate) async fn scripted_session(
    transport: Transport,
    credentials: Credentials,
    max_message_bytes: u64,
) -> &'static str {
    let cfg = Pop3Config {
        host: "pop3.fuzz.invalid".into(),
        port: 110,
        tls: TlsMode::None,
        credentials,
        tokens: None,
        keep_on_server: false,
        extra_ca_file: None,
        timeout: Duration::from_secs(5),
        max_message_bytes,
    };
    let Ok(conn) = start_session(&cfg, transport, None).await else { return "nothing" };
    let mut source = Pop3Source { cfg, tls_config: None, conn: Some(conn) };
    let Ok(listed) = source.list_inner().await else { return "login" };
    let ids: Vec<String> = listed.into_iter().map(|l| l.remote_id).collect();
    // Each step below needs the session: none may open a new connection.
    let Ok(mails) = source.fetch_inner(&ids).await else { return "list" };
    let asked: std::collections::HashSet<&String> = ids.iter().collect();
    for mail in &mails {
        assert!(asked.contains(&mail.remote_id), "POP3 fetch returned {:?}, which was not asked for", mail.remote_id);
        assert!(mail.raw.len() as u64 <= max_message_bytes, "POP3 fetch kept a mail over the limit");
    }
    if source.conn.is_none() {
        return "fetch";
    }
    let outcomes: Vec<(String, Outcome)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), if i % 2 == 0 { Outcome::Processed } else { Outcome::Failed }))
        .collect();
    if source.settle_inner(&outcomes).await.is_err() {
        return "fetch";
    }
    match source.close_inner().await {
        Ok(()) => "quit",
        Err(_) => "settle",
    }
}

// ---------------------------------------------------------------------------
// Session set-up

async fn open_session(
    cfg: &Pop3Config,
    tls_config: Option<Arc<rustls::ClientConfig>>,
) -> Result<Connection, SourceError> {
    let transport = tls::connect("POP3", &cfg.host, cfg.port, cfg.tls, tls_config.as_ref(), cfg.timeout).await?;
    start_session(cfg, transport, tls_config).await
}

/// The session on an open connection: greeting, capabilities, STLS, login.
async fn start_session(
    cfg: &Pop3Config,
    transport: Transport,
    tls_config: Option<Arc<rustls::ClientConfig>>,
) -> Result<Connection, SourceError> {
    let server = cfg.endpoint();
    let mut wire = Wire::new(transport, cfg.timeout);
    match wire.read_status().await.map_err(|e| wire_error(cfg, e, "reading the greeting"))? {
        Status::Ok(_) => {}
        Status::Err(text) | Status::Continue(text) => {
            return Err(SourceError::transient(format!("POP3 server {server} refused the connection: {text}")));
        }
    }
    let mut caps = capabilities(cfg, &mut wire).await?;

    if cfg.tls == TlsMode::StartTls {
        let tc = tls_config.expect("built for starttls");
        tracing::debug!(%server, "POP3 > STLS");
        wire.send_lines(&["STLS"]).await.map_err(|e| wire_error(cfg, e, "starting TLS"))?;
        match wire.read_status().await.map_err(|e| wire_error(cfg, e, "starting TLS"))? {
            Status::Ok(_) => {}
            Status::Err(text) | Status::Continue(text) => {
                return Err(SourceError::permanent(format!(
                    "POP3 server {server} refused STLS: {text} — use tls (port 995) or check the \
                     server's TLS setup"
                )));
            }
        }
        let Transport::Plain(tcp) = wire.into_transport() else {
            unreachable!("STLS runs on a plain connection");
        };
        let upgraded = tls::tls_handshake("POP3", tcp, &cfg.host, cfg.port, tc, cfg.timeout).await?;
        wire = Wire::new(upgraded, cfg.timeout);
        // RFC 2595: capabilities may differ once TLS is on.
        caps = capabilities(cfg, &mut wire).await?;
    }

    authenticate(cfg, &mut wire, &caps).await?;
    Ok(Connection { wire, caps, numbers: None })
}

async fn capabilities(cfg: &Pop3Config, wire: &mut Wire) -> Result<Capabilities, SourceError> {
    tracing::debug!(server = %cfg.endpoint(), "POP3 > CAPA");
    wire.send_lines(&["CAPA"]).await.map_err(|e| wire_error(cfg, e, "reading capabilities"))?;
    match wire.read_status().await.map_err(|e| wire_error(cfg, e, "reading capabilities"))? {
        Status::Ok(_) => {
            let lines = wire.read_multiline_lines().await.map_err(|e| wire_error(cfg, e, "reading capabilities"))?;
            let caps = Capabilities::parse(&lines);
            tracing::debug!(server = %cfg.endpoint(), ?caps, "POP3 capabilities");
            Ok(caps)
        }
        // Pre-2449 servers have no CAPA: assume the RFC 1939 basics.
        _ => Ok(Capabilities::default()),
    }
}

async fn authenticate(cfg: &Pop3Config, wire: &mut Wire, caps: &Capabilities) -> Result<(), SourceError> {
    let server = cfg.endpoint();
    let user = cfg.credentials.username();
    let refused = |text: String| login_refused(cfg, &text);
    let failed = |e: WireError| wire_error(cfg, e, &format!("logging in as {user}"));
    match &cfg.credentials {
        Credentials::Password { username, password } => {
            // USER/PASS unless the server says it only takes SASL PLAIN.
            if caps.known && !caps.user && caps.has_sasl("PLAIN") {
                tracing::debug!(%server, %user, "POP3 > AUTH PLAIN ***");
                let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{username}\0{password}"));
                wire.send_lines(&[format!("AUTH PLAIN {token}")]).await.map_err(failed)?;
                return match wire.read_status().await.map_err(failed)? {
                    Status::Ok(_) => Ok(()),
                    Status::Err(text) | Status::Continue(text) => Err(refused(text)),
                };
            }
            tracing::debug!(%server, %user, "POP3 > USER");
            crate::error::refuse_line_breaks(username, "POP3 user name")?;
            crate::error::refuse_line_breaks(password, "POP3 password")?;
            wire.send_lines(&[format!("USER {username}")]).await.map_err(failed)?;
            if let Status::Err(text) | Status::Continue(text) = wire.read_status().await.map_err(failed)? {
                return Err(refused(text));
            }
            tracing::debug!(%server, "POP3 > PASS ***");
            wire.send_lines(&[format!("PASS {password}")]).await.map_err(failed)?;
            match wire.read_status().await.map_err(failed)? {
                Status::Ok(_) => Ok(()),
                Status::Err(text) | Status::Continue(text) => Err(refused(text)),
            }
        }
        Credentials::XOAuth2 { username, access_token, .. } => {
            tracing::debug!(%server, %user, "POP3 > AUTH XOAUTH2");
            wire.send_lines(&["AUTH XOAUTH2"]).await.map_err(failed)?;
            match wire.read_status().await.map_err(failed)? {
                Status::Continue(_) => {}
                Status::Ok(_) => return Ok(()),
                Status::Err(text) => return Err(refused(text)),
            }
            tracing::debug!(%server, "POP3 > (XOAUTH2 token ***)");
            wire.send_lines(&[xoauth2_sasl(username, access_token)]).await.map_err(failed)?;
            match wire.read_status().await.map_err(failed)? {
                Status::Ok(_) => Ok(()),
                Status::Err(text) => Err(refused(text)),
                // The server explains the failure in a challenge and waits
                // for an empty answer before it sends -ERR.
                Status::Continue(details) => {
                    wire.send_lines(&[""]).await.map_err(failed)?;
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(details.as_bytes())
                        .map(|d| String::from_utf8_lossy(&d).into_owned())
                        .unwrap_or(details);
                    let text = match wire.read_status().await.map_err(failed)? {
                        Status::Err(t) | Status::Ok(t) | Status::Continue(t) => t,
                    };
                    Err(refused(format!("{text} ({decoded})")))
                }
            }
        }
    }
}

fn login_refused(cfg: &Pop3Config, text: &str) -> SourceError {
    let server = cfg.endpoint();
    let user = cfg.credentials.username();
    let upper = text.to_ascii_uppercase();
    // RFC 2449/3206 response codes say whether trying again can help.
    if upper.contains("[SYS/TEMP]") || upper.contains("[IN-USE]") || upper.contains("TEMPORARY") {
        return SourceError::transient(format!("POP3 login to {server} as {user} failed for now: {text}; will retry"));
    }
    if upper.contains("PLAINTEXT") {
        return SourceError::permanent(format!(
            "POP3 login to {server} as {user} failed: {text} — the server refuses passwords over \
             an unencrypted connection: use tls or starttls"
        ));
    }
    let hint = match &cfg.credentials {
        Credentials::Password { .. } => "check the username and password".to_string(),
        Credentials::XOAuth2 { app_id: None, .. } => "the access token was refused: check the connection's scopes \
             (POP.AccessAsUser.All) or run Setup Authentication again"
            .to_string(),
        Credentials::XOAuth2 { app_id: Some(app), .. } => app_only_hint("POP.AccessAsApp", app, user),
    };
    SourceError::login_refused(format!("POP3 login to {server} as {user} failed: {text} — {hint}"))
}

/// UIDL and LIST, joined on the message number.
async fn uidl_and_list(
    cfg: &Pop3Config,
    conn: &mut Connection,
) -> Result<(HashMap<String, u32>, Vec<Listing>), SourceError> {
    let server = cfg.endpoint();
    let doing = "listing mails";
    let commands: &[&str] = if conn.caps.pipelining { &["UIDL", "LIST"] } else { &["UIDL"] };
    tracing::debug!(%server, ?commands, "POP3 >");
    conn.wire.send_lines(commands).await.map_err(|e| wire_error(cfg, e, doing))?;
    let uidl = read_listing(cfg, &mut conn.wire, "UIDL").await?;
    if !conn.caps.pipelining {
        conn.wire.send_lines(&["LIST"]).await.map_err(|e| wire_error(cfg, e, doing))?;
    }
    let list = read_listing(cfg, &mut conn.wire, "LIST").await?;

    let sizes: HashMap<u32, u64> = list.iter().filter_map(|(n, rest)| Some((*n, rest.parse::<u64>().ok()?))).collect();
    let mut numbers = HashMap::with_capacity(uidl.len());
    let mut listings = Vec::with_capacity(uidl.len());
    for (n, uid) in uidl {
        listings.push(Listing { remote_id: uid.clone(), size: sizes.get(&n).copied() });
        numbers.insert(uid, n);
    }
    tracing::debug!(%server, count = listings.len(), "POP3 listed");
    Ok((numbers, listings))
}

/// Reads a `+OK` + multi-line answer of `number rest` lines, in order.
async fn read_listing(cfg: &Pop3Config, wire: &mut Wire, command: &str) -> Result<Vec<(u32, String)>, SourceError> {
    let doing = "listing mails";
    match wire.read_status().await.map_err(|e| wire_error(cfg, e, doing))? {
        Status::Ok(_) => {}
        Status::Err(text) if is_server_trouble(&text) => {
            return Err(server_trouble(cfg, doing, &text));
        }
        Status::Err(text) | Status::Continue(text) => {
            return Err(SourceError::permanent(format!(
                "POP3 server {} refused {command}: {text} — the robot needs {command} to tell \
                 mails apart",
                cfg.endpoint()
            )));
        }
    }
    let lines = wire.read_multiline_lines().await.map_err(|e| wire_error(cfg, e, doing))?;
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        let mut parts = line.splitn(2, ' ');
        match (parts.next().and_then(|n| n.parse().ok()), parts.next()) {
            (Some(n), Some(rest)) => out.push((n, rest.trim().to_string())),
            _ => {
                return Err(protocol_error(cfg, doing, &format!("bad {command} line {line:?}")));
            }
        }
    }
    Ok(out)
}

/// Whether an -ERR is about the server or session (RFC 2449/3206 codes
/// such as `[SYS/TEMP] Server shutting down.`, which Dovecot sends before
/// it drops a session) rather than about the one message asked for.
fn is_server_trouble(text: &str) -> bool {
    let upper = text.to_ascii_uppercase();
    ["[SYS/", "[IN-USE]", "[AUTH]", "[LOGIN-DELAY]"].iter().any(|code| upper.contains(code))
}

fn server_trouble(cfg: &Pop3Config, doing: &str, text: &str) -> SourceError {
    // The session is unusable after such an answer: transient, so the
    // source starts a new one (and the caller may retry).
    SourceError::transient(format!("POP3 server {} failed while {doing}: {text}; will retry", cfg.endpoint()))
}

fn wire_error(cfg: &Pop3Config, e: WireError, doing: &str) -> SourceError {
    let server = cfg.endpoint();
    match e {
        WireError::Timeout(t) => SourceError::transient(format!(
            "POP3 server {server} did not answer within {t:?} while {doing}; will retry"
        )),
        WireError::Io(e) => {
            SourceError::transient(format!("POP3 connection to {server} failed while {doing}: {e}; will retry"))
        }
        WireError::Closed => {
            SourceError::transient(format!("POP3 server {server} closed the connection while {doing}; will retry"))
        }
        WireError::Protocol(text) => protocol_error(cfg, doing, &text),
        WireError::TooLong(limit) => protocol_error(cfg, doing, &format!("an answer longer than {limit} bytes")),
    }
}

fn protocol_error(cfg: &Pop3Config, doing: &str, text: &str) -> SourceError {
    // A garbled answer leaves the session out of step: start over later.
    SourceError::transient(format!(
        "POP3 server {} answered strangely while {doing}: {text} — check that the port speaks \
         POP3 and that the TLS mode ({}) matches it",
        cfg.endpoint(),
        cfg.tls
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_parse() {
        let caps = Capabilities::parse(&[
            "TOP".into(),
            "UIDL".into(),
            "pipelining".into(),
            "SASL PLAIN xoauth2".into(),
            "USER".into(),
        ]);
        assert!(caps.known && caps.pipelining && caps.user && !caps.stls);
        assert!(caps.has_sasl("XOAUTH2") && caps.has_sasl("PLAIN"));
    }

    /// The wire layer against a scripted server on loopback.
    #[tokio::test]
    async fn multiline_unstuffs_dots_and_keeps_line_ends() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(
                b"+OK 42 octets\r\nSubject: x\r\n\r\n..leading dot\r\n..\r\nlone-dot-above\r\n\
                  bare lf\n.\r\n-ERR no such message\r\n+ e30=\r\n",
            )
            .await
            .unwrap();
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut wire = Wire::new(Transport::Plain(tcp), Duration::from_secs(5));
        assert!(matches!(wire.read_status().await.unwrap(), Status::Ok(t) if t == "42 octets"));
        let mut body = Vec::new();
        wire.read_multiline(&mut body, 1000).await.unwrap();
        assert_eq!(body, b"Subject: x\r\n\r\n.leading dot\r\n.\r\nlone-dot-above\r\nbare lf\n".to_vec());
        assert!(matches!(wire.read_status().await.unwrap(), Status::Err(t) if t == "no such message"));
        assert!(matches!(wire.read_status().await.unwrap(), Status::Continue(t) if t == "e30="));
        assert!(matches!(wire.read_status().await, Err(WireError::Closed)));
        server.await.unwrap();
    }

    /// XOAUTH2 against a scripted server: the token goes out base64-encoded
    /// after the "+" prompt; a refusal (error challenge, empty answer, -ERR)
    /// becomes a permanent error that does not contain the token.
    #[tokio::test]
    async fn xoauth2_exchange() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let expected = xoauth2_sasl("u@example.test", "good-token");
        let server = tokio::spawn(async move {
            for _ in 0..4 {
                let (s, _) = listener.accept().await.unwrap();
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"+OK ready\r\n").await.unwrap();
                assert_eq!(lines.next_line().await.unwrap().unwrap(), "CAPA");
                w.write_all(b"+OK\r\nSASL XOAUTH2\r\nUIDL\r\n.\r\n").await.unwrap();
                assert_eq!(lines.next_line().await.unwrap().unwrap(), "AUTH XOAUTH2");
                w.write_all(b"+ \r\n").await.unwrap();
                let token = lines.next_line().await.unwrap().unwrap();
                if token == expected {
                    w.write_all(b"+OK logged in\r\n").await.unwrap();
                } else {
                    w.write_all(b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n").await.unwrap();
                    assert_eq!(lines.next_line().await.unwrap().unwrap(), "");
                    w.write_all(b"-ERR [AUTH] Authentication failed.\r\n").await.unwrap();
                }
            }
        });
        let cfg = |token: &str| Pop3Config {
            host: "127.0.0.1".into(),
            port,
            tls: TlsMode::None,
            credentials: Credentials::XOAuth2 {
                username: "u@example.test".into(),
                access_token: token.into(),
                app_id: None,
            },
            tokens: None,
            keep_on_server: false,
            extra_ca_file: None,
            timeout: Duration::from_secs(5),
            max_message_bytes: 1 << 20,
        };
        Pop3Source::connect(cfg("good-token")).await.unwrap();
        let err = Pop3Source::connect(cfg("bad-token")).await.unwrap_err();
        let msg = err.to_string();
        assert!(err.is_permanent(), "{msg}");
        assert!(msg.contains("[AUTH]") && msg.contains("401"), "{msg}");
        assert!(!msg.contains("bad-token"), "{msg}");

        // With a token source, a refused (expired) token is renewed once, on a new connection.
        struct Renewing(std::sync::Mutex<Vec<bool>>);
        #[async_trait::async_trait]
        impl BearerTokens for Renewing {
            async fn token(&self, renew: bool) -> Result<String, SourceError> {
                self.0.lock().unwrap().push(renew);
                Ok(if renew { "good-token" } else { "expired-token" }.to_string())
            }
        }
        let tokens = Arc::new(Renewing(std::sync::Mutex::new(Vec::new())));
        let with_tokens = Pop3Config { tokens: Some(tokens.clone()), ..cfg("expired-token") };
        Pop3Source::connect(with_tokens).await.unwrap();
        assert_eq!(*tokens.0.lock().unwrap(), [false, true]);
        server.await.unwrap();
    }
}
