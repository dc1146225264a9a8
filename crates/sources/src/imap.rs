//! IMAP source (RFC 3501 + MOVE 6851 + UIDPLUS 4315) on async-imap.
//!
//! async-imap handles the wire (framing, literals, parsing); the commands
//! whose tagged status matters (SEARCH, FETCH, STORE, MOVE, COPY, EXPUNGE)
//! run through `run_command` below, because async-imap's streaming
//! helpers stop at the tagged reply without checking whether it was NO.
//!
//! Remote ids are `"{uidvalidity}:{uid}"`. Bodies are fetched with
//! `BODY.PEEK[]` so nothing is marked \Seen before the robot commits.
//!
//! Logging: this module logs each command at debug level, never secrets.
//! async-imap itself logs every raw protocol line, LOGIN and AUTHENTICATE
//! included, through the `log` crate at *trace* level: a binary must keep
//! the `async_imap` target below trace (e.g. `async_imap=info` in its filter).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::imap_proto::{AttributeValue, MailboxDatum, Response, ResponseCode, Status};
use async_imap::types::Capability;
use futures::TryStreamExt;
use tokio::io::BufWriter;

use crate::credentials::{self, Credentials, app_only_hint, xoauth2_raw};
use crate::imap_guard::FrameGuard;
use crate::tls::{self, TlsMode, Transport};
use crate::{BearerTokens, Listing, MailSource, Outcome, Push, RemoteMail, SettleAction, SourceError};

/// Longest sequence set put in one command. Dovecot accepts 64 KiB lines
/// and most servers 8 KiB or more; longer sets are split into several
/// commands rather than risk a BAD.
const MAX_SET_LEN: usize = 4000;
/// UIDs one `UID SEARCH` is expected to find at most. async-imap parses an
/// incomplete line again after each read, so reading one long answer line is
/// quadratic (fuzzing measured 85 s for 8 MiB in a debug build); a folder of
/// more mails than this is searched in UID ranges, each answer ≤ ~140 KB
/// when UIDs are spread evenly.
const SEARCH_UIDS: u32 = 20_000;

/// One IMAP mailbox to read from.
#[derive(Debug, Clone)]
pub struct ImapConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub credentials: Credentials,
    /// With XOAUTH2: where tokens come from. Each new session logs in with a
    /// current token, and a refused one is renewed once (it may have expired
    /// since the last session).
    pub tokens: Option<Arc<dyn BearerTokens>>,
    /// The watched folder, usually "INBOX".
    pub folder: String,
    /// Where processed mails go when `settle` is [`SettleAction::Move`].
    pub processed_folder: String,
    /// Where mails that could not be processed go.
    pub error_folder: String,
    pub settle: SettleAction,
    /// PEM file of extra trusted CAs (else `MAILROBOT_CA_FILE`, else webpki roots only).
    pub extra_ca_file: Option<PathBuf>,
    /// Bound on every network step: connect, handshake, each command, and
    /// each response while a long FETCH streams in.
    pub timeout: Duration,
    /// Mails are downloaded no further than this many bytes plus one
    /// (whatever RFC822.SIZE says); a longer one is refused as too large.
    pub max_message_bytes: u64,
}

impl ImapConfig {
    fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

type Io = BufWriter<FrameGuard<Transport>>;
type Session = async_imap::Session<Io>;

/// Server extensions the settle logic depends on.
#[derive(Debug, Clone, Copy)]
struct Extensions {
    /// RFC 6851: UID MOVE.
    r#move: bool,
    /// RFC 4315: UID EXPUNGE (expunge only our mails).
    uidplus: bool,
    /// RFC 2177: IDLE (the server tells of new mail as it arrives).
    idle: bool,
}

struct Connection {
    session: Session,
    ext: Extensions,
    /// UIDVALIDITY of the watched folder while it is selected.
    selected: Option<u32>,
    /// What the SELECT made on connecting told, until something else is
    /// done on the session: the first listing uses it instead of a second
    /// SELECT (one round trip less per poll; the listing's last UID range
    /// is open, so a mail arriving in between is found all the same).
    opened_with: Option<Selected>,
}

/// An IMAP mailbox as a [`MailSource`]. Reconnects on its own after a
/// network error; the next call starts a fresh session.
pub struct ImapSource {
    cfg: ImapConfig,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    conn: Option<Connection>,
    /// Test hook: pretend the server lacks these extensions.
    without: Option<Extensions>,
}

impl std::fmt::Debug for ImapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapSource").field("cfg", &self.cfg).field("connected", &self.conn.is_some()).finish()
    }
}

impl ImapSource {
    /// Connects, logs in, checks capabilities, makes sure the watched
    /// folder exists and creates the processed/error folders if missing.
    pub async fn connect(cfg: ImapConfig) -> Result<Self, SourceError> {
        let tls_config = tls::config_for(cfg.tls, cfg.extra_ca_file.as_deref())?;
        let mut source = ImapSource { cfg, tls_config, conn: None, without: None };
        source.ensure_connected().await?;
        Ok(source)
    }

    /// Whether the server offers UID MOVE (else COPY + STORE + EXPUNGE).
    pub fn has_move(&self) -> Option<bool> {
        self.conn.as_ref().map(|c| c.ext.r#move)
    }

    /// Test hook: behave as if the server lacked MOVE and/or UIDPLUS, to
    /// exercise the fallbacks against a server that has them.
    #[doc(hidden)]
    pub fn disable_extensions(&mut self, no_move: bool, no_uidplus: bool) {
        let off = Extensions { r#move: no_move, uidplus: no_uidplus, idle: false };
        self.without = Some(off);
        if let Some(conn) = self.conn.as_mut() {
            conn.ext.r#move &= !no_move;
            conn.ext.uidplus &= !no_uidplus;
        }
    }

    /// IDLE on the watched folder until the server announces new mail (an
    /// untagged EXISTS or RECENT) or `max` passes — callers keep `max`
    /// under the 29 minutes after which RFC 2177 lets a server drop an idle
    /// client. A NOOP first keeps the session alive and takes any update
    /// that arrived since the last command.
    async fn idle_for_mail(&mut self, max: Duration) -> Result<Push, SourceError> {
        let cfg = self.cfg.clone();
        let conn = self.ensure_connected().await?;
        if !conn.ext.idle {
            return Ok(Push::NotOffered);
        }
        if conn.selected.is_none() {
            select(&cfg, conn).await?;
        }
        timed(&cfg, "NOOP", conn.session.noop())
            .await?
            .map_err(|e| ImapError::from(e).into_source(&cfg, "keeping the session alive (NOOP)"))?;
        // New mail told while no IDLE ran (in answer to NOOP, or while the
        // last IDLE ended) is not lost: it waits in the session's channel.
        if new_mail_told(&conn.session) {
            return Ok(Push::NewMail);
        }
        let Connection { session, ext, selected, .. } = self.conn.take().expect("connected above");
        let mut idle = session.idle();
        timed(&cfg, "IDLE", idle.init()).await?.map_err(|e| ImapError::from(e).into_source(&cfg, "starting IDLE"))?;
        tracing::debug!(server = %cfg.endpoint(), folder = %cfg.folder, "IMAP IDLE");
        let (wait, _interrupt) = idle.wait_with_timeout(max);
        let mut outcome = match wait.await {
            Ok(IdleResponse::NewData(data)) => match data.parsed() {
                Response::MailboxData(MailboxDatum::Exists(_) | MailboxDatum::Recent(_)) => Push::NewMail,
                _ => Push::Quiet,
            },
            Ok(IdleResponse::Timeout | IdleResponse::ManualInterrupt) => Push::Quiet,
            Err(e) => return Err(ImapError::from(e).into_source(&cfg, "waiting in IDLE")),
        };
        let session =
            timed(&cfg, "DONE", idle.done()).await?.map_err(|e| ImapError::from(e).into_source(&cfg, "ending IDLE"))?;
        if new_mail_told(&session) {
            outcome = Push::NewMail;
        }
        tracing::debug!(server = %cfg.endpoint(), ?outcome, "IMAP IDLE ended");
        self.conn = Some(Connection { session, ext, selected, opened_with: None });
        Ok(outcome)
    }

    async fn ensure_connected(&mut self) -> Result<&mut Connection, SourceError> {
        if self.conn.is_none() {
            let mut conn = self.open_session().await?;
            if let Some(off) = self.without {
                conn.ext.r#move &= !off.r#move;
                conn.ext.uidplus &= !off.uidplus;
            }
            prepare_folders(&self.cfg, &mut conn).await?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Logs in on a new session; with a token source, a refused token is
    /// renewed once.
    async fn open_session(&mut self) -> Result<Connection, SourceError> {
        credentials::current(&mut self.cfg.credentials, self.cfg.tokens.as_ref(), false).await?;
        match open_session(&self.cfg, self.tls_config.clone()).await {
            Err(e) if e.is_login_refused() && self.cfg.tokens.is_some() => {
                tracing::debug!(server = %self.cfg.endpoint(), error = %e, "IMAP token refused; renewing it once");
                credentials::current(&mut self.cfg.credentials, self.cfg.tokens.as_ref(), true).await?;
                open_session(&self.cfg, self.tls_config.clone()).await
            }
            other => other,
        }
    }

    /// Forgets the connection after a network error so the next call
    /// reconnects instead of talking into a broken stream.
    fn note(&mut self, err: SourceError) -> SourceError {
        if err.is_transient() {
            self.conn = None;
        }
        err
    }

    async fn list_inner(&mut self) -> Result<Vec<Listing>, SourceError> {
        let cfg = self.cfg.clone();
        let conn = self.ensure_connected().await?;
        let selected = match conn.opened_with.take() {
            Some(selected) => selected,
            None => select(&cfg, conn).await?,
        };
        let validity = selected.validity;

        // MarkRead leaves processed mails in the folder: only unseen ones wait.
        let criteria = match cfg.settle {
            SettleAction::MarkRead => "UNSEEN UNDELETED",
            SettleAction::Move | SettleAction::Delete => "UNDELETED",
        };
        let mut uids = BTreeSet::new();
        for range in search_ranges(selected.exists, selected.uid_next) {
            let command = match &range {
                Some(range) => format!("UID SEARCH UID {range} {criteria}"),
                None => format!("UID SEARCH {criteria}"),
            };
            run_command(&mut conn.session, &command, cfg.timeout, |resp| {
                if let Response::MailboxData(MailboxDatum::Search(found)) = resp {
                    uids.extend(found.iter().copied());
                }
            })
            .await
            .map_err(|e| e.into_source(&cfg, &format!("searching folder {:?}", cfg.folder)))?;
        }
        if uids.is_empty() {
            return Ok(Vec::new());
        }

        let mut sizes: HashMap<u32, u64> = HashMap::with_capacity(uids.len());
        let wanted: Vec<u32> = uids.iter().copied().collect();
        for set in uid_sets(&wanted, MAX_SET_LEN) {
            run_command(&mut conn.session, &format!("UID FETCH {set} (UID RFC822.SIZE)"), cfg.timeout, |resp| {
                if let Response::Fetch(_, attrs) = resp {
                    let (mut uid, mut size) = (None, None);
                    for a in attrs {
                        match a {
                            AttributeValue::Uid(u) => uid = Some(*u),
                            AttributeValue::Rfc822Size(s) => size = Some(u64::from(*s)),
                            _ => {}
                        }
                    }
                    if let (Some(u), Some(s)) = (uid, size) {
                        sizes.insert(u, s);
                    }
                }
            })
            .await
            .map_err(|e| e.into_source(&cfg, "reading mail sizes"))?;
        }

        Ok(uids
            .into_iter()
            .map(|uid| Listing { remote_id: format!("{validity}:{uid}"), size: sizes.get(&uid).copied() })
            .collect())
    }

    async fn fetch_inner(&mut self, remote_ids: &[String]) -> Result<Vec<RemoteMail>, SourceError> {
        let cfg = self.cfg.clone();
        let conn = self.ensure_connected().await?;
        conn.opened_with = None;
        let validity = match conn.selected {
            Some(v) => v,
            None => select(&cfg, conn).await?.validity,
        };
        let uids = current_uids(remote_ids, validity, "fetch");
        if uids.is_empty() {
            return Ok(Vec::new());
        }

        let mut mails = Vec::with_capacity(uids.len());
        // A server may answer a FETCH twice for one UID (e.g. with a flag
        // update in between); hand each mail out once.
        let mut seen = HashSet::with_capacity(uids.len());
        // Ask for no more than the limit and one byte: an honest server
        // then never sends more, and one byte over tells "too large".
        let max = cfg.max_message_bytes;
        let body_item = match u32::try_from(max.saturating_add(1)) {
            Ok(n) => format!("BODY.PEEK[]<0.{n}>"),
            Err(_) => "BODY.PEEK[]".to_string(),
        };
        for set in uid_sets(&uids, MAX_SET_LEN) {
            run_command(
                &mut conn.session,
                &format!("UID FETCH {set} (UID RFC822.SIZE {body_item})"),
                cfg.timeout,
                |resp| {
                    if let Response::Fetch(_, attrs) = resp {
                        let (mut uid, mut body, mut size) = (None, None, None);
                        for a in attrs {
                            match a {
                                AttributeValue::Uid(u) => uid = Some(*u),
                                AttributeValue::Rfc822Size(s) => size = Some(u64::from(*s)),
                                AttributeValue::BodySection { section: None, data, .. } => body = data.as_deref(),
                                _ => {}
                            }
                        }
                        // Unsolicited FETCHes (flag changes by others) carry no body.
                        if let (Some(uid), Some(body)) = (uid, body)
                            && uids.binary_search(&uid).is_ok()
                            && seen.insert(uid)
                        {
                            let id = format!("{validity}:{uid}");
                            let at_least = (body.len() as u64).max(size.unwrap_or(0));
                            if at_least > max {
                                mails.push(RemoteMail::oversized(id, at_least));
                            } else {
                                mails.push(RemoteMail::new(id, body.to_vec()));
                            }
                        }
                    }
                },
            )
            .await
            .map_err(|e| e.into_source(&cfg, "fetching mails"))?;
        }
        Ok(mails)
    }

    async fn settle_inner(&mut self, outcomes: &[(String, Outcome)]) -> Result<(), SourceError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let cfg = self.cfg.clone();
        let conn = self.ensure_connected().await?;
        conn.opened_with = None;
        let validity = match conn.selected {
            Some(v) => v,
            None => select(&cfg, conn).await?.validity,
        };
        let ids_for = |wanted: Outcome| -> Vec<String> {
            outcomes.iter().filter(|(_, o)| *o == wanted).map(|(id, _)| id.clone()).collect()
        };
        // Ids from an older UIDVALIDITY name nothing in today's folder:
        // there is nothing left to settle for them.
        let processed = current_uids(&ids_for(Outcome::Processed), validity, "settle");
        let failed = current_uids(&ids_for(Outcome::Failed), validity, "settle");

        if !processed.is_empty() {
            match cfg.settle {
                SettleAction::Move => move_uids(&cfg, conn, &processed, &cfg.processed_folder).await?,
                SettleAction::MarkRead => {
                    for set in uid_sets(&processed, MAX_SET_LEN) {
                        run_command(
                            &mut conn.session,
                            &format!("UID STORE {set} +FLAGS.SILENT (\\Seen)"),
                            cfg.timeout,
                            |_| {},
                        )
                        .await
                        .map_err(|e| e.into_source(&cfg, "marking mails read"))?;
                    }
                }
                SettleAction::Delete => delete_uids(&cfg, conn, &processed).await?,
            }
        }
        if !failed.is_empty() {
            move_uids(&cfg, conn, &failed, &cfg.error_folder).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl MailSource for ImapSource {
    async fn list(&mut self) -> Result<Vec<Listing>, SourceError> {
        with_retry!(self, self.list_inner())
    }

    async fn wait_for_mail(&mut self, max: Duration) -> Result<Push, SourceError> {
        self.idle_for_mail(max).await
    }

    async fn fetch(&mut self, remote_ids: &[String]) -> Result<Vec<RemoteMail>, SourceError> {
        with_retry!(self, self.fetch_inner(remote_ids))
    }

    async fn settle(&mut self, outcomes: &[(String, Outcome)]) -> Result<(), SourceError> {
        with_retry!(self, self.settle_inner(outcomes))
    }

    async fn probe(&mut self) -> Result<crate::Probe, SourceError> {
        let waiting = self.list().await?.len();
        let cfg = self.cfg.clone();
        let conn = self.ensure_connected().await?;
        let mut names = Vec::new();
        run_command(&mut conn.session, "LIST \"\" \"*\"", cfg.timeout, |resp| {
            if let Response::MailboxData(MailboxDatum::List { name, .. }) = resp {
                names.push(name.to_string());
            }
        })
        .await
        .map_err(|e| e.into_source(&cfg, "listing folders"))?;
        let mut folders = Vec::with_capacity(names.len());
        for name in names {
            let (mut total, mut unread) = (None, None);
            let command = format!("STATUS {} (MESSAGES UNSEEN)", quote(&name)?);
            // A folder that refuses STATUS (\Noselect) is listed without counts.
            let _ = run_command(&mut conn.session, &command, cfg.timeout, |resp| {
                if let Response::MailboxData(MailboxDatum::Status { status, .. }) = resp {
                    for attribute in status {
                        match attribute {
                            async_imap::imap_proto::StatusAttribute::Messages(n) => total = Some(u64::from(*n)),
                            async_imap::imap_proto::StatusAttribute::Unseen(n) => unread = Some(u64::from(*n)),
                            _ => {}
                        }
                    }
                }
            })
            .await;
            folders.push(crate::FolderProbe { name, total, unread });
        }
        let unread = folders.iter().find(|f| f.name.eq_ignore_ascii_case(&cfg.folder)).and_then(|f| f.unread);
        Ok(crate::Probe { folders, waiting, unread })
    }

    fn resettle_if_listed_again(&self) -> bool {
        true
    }

    async fn close(&mut self) -> Result<(), SourceError> {
        if let Some(mut conn) = self.conn.take() {
            // Nothing depends on LOGOUT succeeding: IMAP changes are already
            // committed, so a failure here is only worth a log line.
            match tokio::time::timeout(self.cfg.timeout, conn.session.logout()).await {
                Ok(Ok(())) => tracing::debug!(server = %self.cfg.endpoint(), "IMAP LOGOUT"),
                Ok(Err(e)) => {
                    tracing::debug!(server = %self.cfg.endpoint(), error = %e, "IMAP LOGOUT failed")
                }
                Err(_) => tracing::debug!(server = %self.cfg.endpoint(), "IMAP LOGOUT timed out"),
            }
        }
        Ok(())
    }
}

/// Fuzzing ([`crate::fuzzing`]): a whole session — greeting, login,
/// capabilities, folders, SELECT, SEARCH, FETCH, settle, LOGOUT — with
/// every answer read from `transport` through the frame guard. Stops at the
/// first error, as the session would, and says how far it got; panics if
/// a mail comes out that was not asked for or is over the limit.
pub(crate) async fn scripted_session(
    transport: Transport,
    credentials: Credentials,
    settle: SettleAction,
    max_message_bytes: u64,
) -> &'static str {
    let cfg = ImapConfig {
        host: "imap.fuzz.invalid".into(),
        port: 143,
        tls: TlsMode::None,
        credentials,
        tokens: None,
        folder: "INBOX".into(),
        processed_folder: "Processed".into(),
        error_folder: "Failed".into(),
        settle,
        extra_ca_file: None,
        timeout: Duration::from_secs(5),
        max_message_bytes,
    };
    let Ok(mut conn) = start_session(&cfg, transport, None).await else { return "nothing" };
    if prepare_folders(&cfg, &mut conn).await.is_err() {
        return "login";
    }
    let mut source = ImapSource { cfg, tls_config: None, conn: Some(conn), without: None };
    // Each step below needs the session: none may open a new connection.
    let Ok(listed) = source.list_inner().await else { return "folders" };
    let ids: Vec<String> = listed.into_iter().map(|l| l.remote_id).collect();
    let Ok(mails) = source.fetch_inner(&ids).await else { return "list" };
    let asked: HashSet<&String> = ids.iter().collect();
    for mail in &mails {
        assert!(asked.contains(&mail.remote_id), "IMAP fetch returned {:?}, which was not asked for", mail.remote_id);
        assert!(mail.raw.len() as u64 <= max_message_bytes, "IMAP fetch kept a mail over the limit");
    }
    let outcomes: Vec<(String, Outcome)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), if i % 2 == 0 { Outcome::Processed } else { Outcome::Failed }))
        .collect();
    if source.settle_inner(&outcomes).await.is_err() {
        return "fetch";
    }
    let _ = source.close().await;
    "settle"
}

// ---------------------------------------------------------------------------
// Session set-up

async fn open_session(
    cfg: &ImapConfig,
    tls_config: Option<Arc<rustls::ClientConfig>>,
) -> Result<Connection, SourceError> {
    let transport = tls::connect("IMAP", &cfg.host, cfg.port, cfg.tls, tls_config.as_ref(), cfg.timeout).await?;
    start_session(cfg, transport, tls_config).await
}

/// The session on an open connection: greeting, STARTTLS, login, capabilities.
async fn start_session(
    cfg: &ImapConfig,
    transport: Transport,
    tls_config: Option<Arc<rustls::ClientConfig>>,
) -> Result<Connection, SourceError> {
    let server = cfg.endpoint();
    let guard = |t| FrameGuard::new(t, cfg.max_message_bytes.saturating_add(1));
    let mut client = async_imap::Client::new(BufWriter::new(guard(transport)));
    read_greeting(cfg, &mut client).await?;

    if let (TlsMode::StartTls, Some(tc)) = (cfg.tls, &tls_config) {
        tracing::debug!(%server, "IMAP STARTTLS");
        timed(cfg, "STARTTLS", client.run_command_and_check_ok("STARTTLS", None)).await?.map_err(|e| {
            SourceError::permanent(format!(
                "IMAP server {server} refused STARTTLS: {} — use tls (port 993) or check \
                     the server's TLS setup",
                async_error_text(&e)
            ))
        })?;
        let Transport::Plain(tcp) = client.into_inner().into_inner().into_inner() else {
            unreachable!("STARTTLS runs on a plain connection");
        };
        let upgraded = tls::tls_handshake("IMAP", tcp, &cfg.host, cfg.port, tc.clone(), cfg.timeout).await?;
        client = async_imap::Client::new(BufWriter::new(guard(upgraded)));
    }

    let mut session = login(cfg, client).await?;

    let caps = timed(cfg, "CAPABILITY", session.capabilities())
        .await?
        .map_err(|e| ImapError::from(e).into_source(cfg, "reading capabilities"))?;
    let has = |name: &str| caps.iter().any(|c| matches!(c, Capability::Atom(a) if a.eq_ignore_ascii_case(name)));
    let ext = Extensions { r#move: has("MOVE"), uidplus: has("UIDPLUS"), idle: has("IDLE") };
    tracing::debug!(%server, r#move = ext.r#move, uidplus = ext.uidplus, "IMAP logged in");
    if !ext.r#move {
        tracing::info!(%server, "IMAP server lacks MOVE: settling uses COPY + STORE + EXPUNGE");
    }
    Ok(Connection { session, ext, selected: None, opened_with: None })
}

async fn read_greeting(cfg: &ImapConfig, client: &mut async_imap::Client<Io>) -> Result<(), SourceError> {
    let server = cfg.endpoint();
    let greeting = timed(cfg, "greeting", client.read_response())
        .await?
        .map_err(|e| SourceError::transient(format!("IMAP server {server}: reading greeting failed: {e}")))?
        .ok_or_else(|| {
            SourceError::transient(format!(
                "IMAP server {server} closed the connection before greeting — is this an IMAP port?"
            ))
        })?;
    match greeting.parsed() {
        Response::Data { status: Status::Ok | Status::PreAuth, .. } => Ok(()),
        Response::Data { status: Status::Bye, information, .. } => Err(SourceError::transient(format!(
            "IMAP server {server} refused the connection: {}",
            information.as_deref().unwrap_or("BYE")
        ))),
        other => Err(SourceError::permanent(format!(
            "IMAP server {server} sent an unexpected greeting ({other:?}) — check that the port \
             speaks IMAP and that the TLS mode ({}) matches it",
            cfg.tls
        ))),
    }
}

/// Answers the server's XOAUTH2 challenge once; an empty line afterwards
/// acknowledges the error details a server sends before its NO.
struct XOAuth2 {
    initial: Option<String>,
}

impl async_imap::Authenticator for XOAuth2 {
    type Response = String;

    fn process(&mut self, _challenge: &[u8]) -> String {
        self.initial.take().unwrap_or_default()
    }
}

async fn login(cfg: &ImapConfig, client: async_imap::Client<Io>) -> Result<Session, SourceError> {
    let server = cfg.endpoint();
    let user = cfg.credentials.username();
    tracing::debug!(%server, %user, mechanism = cfg.credentials.mechanism(), "IMAP login");
    let result = match &cfg.credentials {
        Credentials::Password { username, password } => {
            crate::error::refuse_line_breaks(username, "IMAP user name")?;
            crate::error::refuse_line_breaks(password, "IMAP password")?;
            timed(cfg, "LOGIN", client.login(username, password)).await?
        }
        Credentials::XOAuth2 { username, access_token, .. } => {
            let auth = XOAuth2 { initial: Some(xoauth2_raw(username, access_token)) };
            timed(cfg, "AUTHENTICATE XOAUTH2", client.authenticate("XOAUTH2", auth)).await?
        }
    };
    result.map_err(|(e, _client)| login_error(cfg, e))
}

fn login_error(cfg: &ImapConfig, e: async_imap::error::Error) -> SourceError {
    let server = cfg.endpoint();
    let user = cfg.credentials.username();
    let what = match cfg.credentials {
        Credentials::Password { .. } => "login",
        Credentials::XOAuth2 { .. } => "XOAUTH2 login",
    };
    match e {
        async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_) => {
            let text = async_error_text(&e);
            let upper = text.to_ascii_uppercase();
            if upper.contains("[UNAVAILABLE]") || upper.contains("TEMPORARY") {
                SourceError::transient(format!(
                    "IMAP {what} to {server} as {user} failed: {text} — the server's \
                     authentication is temporarily unavailable; will retry"
                ))
            } else if upper.contains("PLAINTEXT") || upper.contains("PRIVACYREQUIRED") {
                SourceError::permanent(format!(
                    "IMAP {what} to {server} as {user} failed: {text} — the server refuses \
                     passwords over an unencrypted connection: use tls or starttls"
                ))
            } else {
                let hint = match &cfg.credentials {
                    Credentials::Password { .. } => "check the username and password".to_string(),
                    Credentials::XOAuth2 { app_id: None, .. } => "the access token was refused: check the \
                         connection's scopes (IMAP.AccessAsUser.All) or run Setup Authentication again"
                        .to_string(),
                    Credentials::XOAuth2 { app_id: Some(app), .. } => app_only_hint("IMAP.AccessAsApp", app, user),
                };
                SourceError::login_refused(format!("IMAP {what} to {server} as {user} failed: {text} — {hint}"))
            }
        }
        other => ImapError::from(other).into_source(cfg, &format!("logging in as {user}")),
    }
}

/// Makes sure the watched folder exists and creates the processed and
/// error folders when missing.
async fn prepare_folders(cfg: &ImapConfig, conn: &mut Connection) -> Result<(), SourceError> {
    let mut wanted: Vec<&str> = vec![&cfg.error_folder];
    // The processed folder is only ever used by the Move action.
    if cfg.settle == SettleAction::Move {
        wanted.push(&cfg.processed_folder);
    }
    wanted.sort_unstable();
    wanted.dedup();
    for folder in wanted {
        if folder.eq_ignore_ascii_case("INBOX") || folder_exists(cfg, &mut conn.session, folder).await? {
            continue;
        }
        create_folder(cfg, &mut conn.session, folder).await?;
    }
    // Fails early, with a clear message, if the watched folder is missing.
    conn.opened_with = Some(select(cfg, conn).await?);
    Ok(())
}

async fn folder_exists(cfg: &ImapConfig, session: &mut Session, folder: &str) -> Result<bool, SourceError> {
    tracing::debug!(server = %cfg.endpoint(), %folder, "IMAP LIST");
    let listing = async {
        let names = session.list(Some(""), Some(folder)).await?;
        names.try_collect::<Vec<_>>().await
    };
    let names = timed(cfg, "LIST", listing)
        .await?
        .map_err(|e| ImapError::from(e).into_source(cfg, &format!("looking up folder {folder:?}")))?;
    Ok(names.iter().any(|n| n.name() == folder))
}

async fn create_folder(cfg: &ImapConfig, session: &mut Session, folder: &str) -> Result<(), SourceError> {
    let server = cfg.endpoint();
    tracing::debug!(%server, %folder, "IMAP CREATE");
    match timed(cfg, "CREATE", session.create(folder)).await? {
        Ok(()) => {
            tracing::info!(%server, %folder, "created IMAP folder");
            Ok(())
        }
        // Someone else (another robot node) may have created it meanwhile.
        Err(e) if async_error_text(&e).to_ascii_uppercase().contains("ALREADYEXISTS") => Ok(()),
        Err(async_imap::error::Error::No(s)) => Err(SourceError::permanent(format!(
            "IMAP folder {folder:?} is missing on {server} and could not be created: {} — create \
             it by hand or change the folder name in the mailbox settings",
            server_text(&s)
        ))),
        Err(e) => Err(ImapError::from(e).into_source(cfg, &format!("creating folder {folder:?}"))),
    }
}

/// SELECTs the watched folder and returns its UIDVALIDITY.
/// What SELECT told of the watched folder.
#[derive(Debug, Clone, Copy)]
struct Selected {
    validity: u32,
    exists: u32,
    uid_next: Option<u32>,
}

/// The UID ranges to search a folder of `exists` mails in (None: the whole
/// folder at once). Ranges split the UIDs below UIDNEXT so each holds about
/// [`SEARCH_UIDS`] mails if spread evenly; the last is open (`n:*`) so a
/// mail arriving meanwhile is found too.
fn search_ranges(exists: u32, uid_next: Option<u32>) -> Vec<Option<String>> {
    let Some(uid_next) = uid_next.filter(|_| exists > SEARCH_UIDS) else { return vec![None] };
    let highest = u64::from(uid_next.saturating_sub(1).max(1));
    let span = (highest * u64::from(SEARCH_UIDS)).div_ceil(u64::from(exists)).max(u64::from(SEARCH_UIDS));
    let mut ranges = Vec::new();
    let mut start = 1u64;
    while start + span <= highest {
        ranges.push(Some(format!("{start}:{}", start + span - 1)));
        start += span;
    }
    ranges.push(Some(format!("{start}:*")));
    ranges
}

/// Whether the server told of new mail (EXISTS, RECENT) in responses the
/// client library set aside (those that came with other commands' answers);
/// takes everything set aside so far.
fn new_mail_told(session: &Session) -> bool {
    let mut told = false;
    while let Ok(response) = session.unsolicited_responses.try_recv() {
        told |= matches!(
            response,
            async_imap::types::UnsolicitedResponse::Exists(_) | async_imap::types::UnsolicitedResponse::Recent(_)
        );
    }
    told
}

async fn select(cfg: &ImapConfig, conn: &mut Connection) -> Result<Selected, SourceError> {
    let server = cfg.endpoint();
    tracing::debug!(%server, folder = %cfg.folder, "IMAP SELECT");
    conn.selected = None;
    let mailbox = timed(cfg, "SELECT", conn.session.select(&cfg.folder)).await?.map_err(|e| match e {
        async_imap::error::Error::No(s) => SourceError::permanent(format!(
            "IMAP folder {:?} cannot be opened on {server}: {} — check the folder name in the \
             mailbox settings",
            cfg.folder,
            server_text(&s)
        )),
        other => ImapError::from(other).into_source(cfg, &format!("opening folder {:?}", cfg.folder)),
    })?;
    let validity = mailbox.uid_validity.ok_or_else(|| {
        SourceError::permanent(format!(
            "IMAP server {server} sent no UIDVALIDITY for {:?}: it cannot be used as a source",
            cfg.folder
        ))
    })?;
    conn.selected = Some(validity);
    Ok(Selected { validity, exists: mailbox.exists, uid_next: mailbox.uid_next })
}

// ---------------------------------------------------------------------------
// Settling

async fn move_uids(cfg: &ImapConfig, conn: &mut Connection, uids: &[u32], target: &str) -> Result<(), SourceError> {
    let context = format!("moving mails to {target:?}");
    for set in uid_sets(uids, MAX_SET_LEN) {
        let result = match move_or_copy(cfg, conn, &set, target).await {
            // The target vanished since connect (someone deleted it): make
            // it again and retry once, as RFC 3501 suggests for TRYCREATE.
            Err(ImapError::No(text)) if text.to_ascii_uppercase().contains("[TRYCREATE]") => {
                tracing::info!(server = %cfg.endpoint(), folder = %target, "IMAP folder gone; creating it again");
                create_folder(cfg, &mut conn.session, target).await?;
                move_or_copy(cfg, conn, &set, target).await
            }
            other => other,
        };
        result.map_err(|e| e.into_source(cfg, &context))?;
        if !conn.ext.r#move {
            expunge_uids(cfg, conn, &set).await?;
        }
    }
    Ok(())
}

/// UID MOVE, or only the UID COPY half of the fallback (the caller expunges).
async fn move_or_copy(cfg: &ImapConfig, conn: &mut Connection, set: &str, target: &str) -> Result<(), ImapError> {
    let verb = if conn.ext.r#move { "MOVE" } else { "COPY" };
    // The caller's ImapError has no room for it: a folder name with a line
    // break is refused as the server would refuse a bad command.
    let quoted = quote(target).map_err(|e| ImapError::Bad(e.to_string()))?;
    let command = format!("UID {verb} {set} {quoted}");
    run_command(&mut conn.session, &command, cfg.timeout, |_| {}).await
}

async fn delete_uids(cfg: &ImapConfig, conn: &mut Connection, uids: &[u32]) -> Result<(), SourceError> {
    for set in uid_sets(uids, MAX_SET_LEN) {
        expunge_uids(cfg, conn, &set).await?;
    }
    Ok(())
}

/// Flags the set \Deleted and expunges it: only these UIDs with UIDPLUS,
/// the whole folder's \Deleted mails without.
async fn expunge_uids(cfg: &ImapConfig, conn: &mut Connection, set: &str) -> Result<(), SourceError> {
    run_command(&mut conn.session, &format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"), cfg.timeout, |_| {})
        .await
        .map_err(|e| e.into_source(cfg, "flagging mails \\Deleted"))?;
    let cmd = if conn.ext.uidplus { format!("UID EXPUNGE {set}") } else { "EXPUNGE".to_string() };
    run_command(&mut conn.session, &cmd, cfg.timeout, |_| {}).await.map_err(|e| e.into_source(cfg, "expunging mails"))
}

// ---------------------------------------------------------------------------
// Commands and errors

/// What went wrong with one command, before it gets context.
#[derive(Debug)]
enum ImapError {
    Timeout(Duration),
    Io(std::io::Error),
    /// The server closed the connection (after a BYE, if it sent one).
    Closed(Option<String>),
    No(String),
    Bad(String),
    Other(String),
}

impl From<async_imap::error::Error> for ImapError {
    fn from(e: async_imap::error::Error) -> Self {
        use async_imap::error::Error as E;
        match e {
            E::Io(io) => ImapError::Io(io),
            E::ConnectionLost => ImapError::Closed(None),
            E::No(s) => ImapError::No(server_text(&s)),
            E::Bad(s) => ImapError::Bad(server_text(&s)),
            other => ImapError::Other(other.to_string()),
        }
    }
}

impl ImapError {
    /// Maps to transient (network, timeouts, BYE, server-side trouble
    /// codes) or permanent (refused commands) with what was being done.
    fn into_source(self, cfg: &ImapConfig, doing: &str) -> SourceError {
        let server = cfg.endpoint();
        match self {
            ImapError::Timeout(t) => SourceError::transient(format!(
                "IMAP server {server} did not answer within {t:?} while {doing}; will retry"
            )),
            // Sending more than asked is how this server behaves, not a
            // network accident: retrying gets the same.
            ImapError::Io(e) if crate::imap_guard::TooMuch::find(&e).is_some() => SourceError::permanent(format!(
                "{e} while {doing} ({server}); the robot stopped reading. Check the server, or raise the \
                 mailbox's --max-message-mb if its mails are that large"
            )),
            ImapError::Io(e) => {
                SourceError::transient(format!("IMAP connection to {server} failed while {doing}: {e}; will retry"))
            }
            ImapError::Closed(bye) => SourceError::transient(format!(
                "IMAP server {server} closed the connection while {doing}{}; will retry",
                bye.map(|b| format!(" (BYE {b})")).unwrap_or_default()
            )),
            ImapError::No(text) => {
                let upper = text.to_ascii_uppercase();
                let temporary = ["[UNAVAILABLE]", "[INUSE]", "[SERVERBUG]", "[LIMIT]", "[OVERQUOTA]"]
                    .iter()
                    .any(|c| upper.contains(c));
                if temporary {
                    SourceError::transient(format!("IMAP server {server} refused {doing} for now: {text}; will retry"))
                } else {
                    SourceError::permanent(format!(
                        "IMAP server {server} refused {doing}: {text} — check the folder names and the \
                         account's rights"
                    ))
                }
            }
            ImapError::Bad(text) => SourceError::permanent(format!(
                "IMAP server {server} rejected the command for {doing} as invalid: {text} — this \
                 server may not support what the robot needs; please report it"
            )),
            ImapError::Other(text) => SourceError::transient(format!("IMAP error from {server} while {doing}: {text}")),
        }
    }
}

/// Sends one tagged command and reads every response up to its tagged
/// completion, passing untagged data to `on_data`. Each read is bounded by
/// `timeout`, so a long FETCH that keeps streaming is not cut off but a
/// stalled server is.
async fn run_command(
    session: &mut Session,
    command: &str,
    timeout: Duration,
    mut on_data: impl FnMut(&Response<'_>),
) -> Result<(), ImapError> {
    tracing::debug!(command = %truncate(command, 120), "IMAP >");
    let tag = tokio::time::timeout(timeout, session.run_command(command))
        .await
        .map_err(|_| ImapError::Timeout(timeout))?
        .map_err(ImapError::from)?;
    let mut bye = None;
    loop {
        let resp = tokio::time::timeout(timeout, session.read_response())
            .await
            .map_err(|_| ImapError::Timeout(timeout))?
            .map_err(ImapError::Io)?;
        let Some(resp) = resp else {
            return Err(ImapError::Closed(bye));
        };
        match resp.parsed() {
            Response::Done { tag: t, status, code, information } if *t == tag => {
                let info = information.as_deref().unwrap_or("");
                // imap-proto takes the codes it knows out of the text; put
                // them back so messages and checks (TRYCREATE) see them.
                let text = match code.as_ref().and_then(code_name) {
                    Some(name) => format!("[{name}] {info}"),
                    None => info.to_string(),
                };
                tracing::debug!(status = ?status, text = %text, "IMAP <");
                return match status {
                    Status::Ok => Ok(()),
                    Status::No => Err(ImapError::No(text)),
                    Status::Bad => Err(ImapError::Bad(text)),
                    other => Err(ImapError::Other(format!("{other:?} {text}"))),
                };
            }
            Response::Data { status: Status::Bye, information, .. } => {
                bye = Some(information.as_deref().unwrap_or("").to_string());
            }
            other => on_data(other),
        }
    }
}

/// The wire name of a response code that can come with NO/BAD.
fn code_name(code: &ResponseCode<'_>) -> Option<&'static str> {
    Some(match code {
        ResponseCode::Alert => "ALERT",
        ResponseCode::Parse => "PARSE",
        ResponseCode::ReadOnly => "READ-ONLY",
        ResponseCode::ReadWrite => "READ-WRITE",
        ResponseCode::TryCreate => "TRYCREATE",
        ResponseCode::BadCharset(_) => "BADCHARSET",
        ResponseCode::UidNotSticky => "UIDNOTSTICKY",
        _ => return None,
    })
}

/// Runs an async-imap call within the configured timeout.
async fn timed<F: std::future::Future>(cfg: &ImapConfig, what: &str, fut: F) -> Result<F::Output, SourceError> {
    tokio::time::timeout(cfg.timeout, fut).await.map_err(|_| {
        SourceError::transient(format!(
            "IMAP server {} did not answer {what} within {:?}; will retry",
            cfg.endpoint(),
            cfg.timeout
        ))
    })
}

/// The server's own words from async-imap's `"code: .., info: Some(..)"`.
fn server_text(s: &str) -> String {
    if let Some(start) = s.find("info: Some(\"") {
        let rest = &s[start + "info: Some(\"".len()..];
        if let Some(end) = rest.rfind("\")") {
            return rest[..end].replace("\\\"", "\"");
        }
    }
    s.to_string()
}

fn async_error_text(e: &async_imap::error::Error) -> String {
    match e {
        async_imap::error::Error::No(s) | async_imap::error::Error::Bad(s) => server_text(s),
        other => other.to_string(),
    }
}

fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len()).into()
}

/// An IMAP quoted string (folder names from configuration).
/// An IMAP quoted string; CR, LF and NUL cannot be quoted and are refused.
fn quote(s: &str) -> Result<String, SourceError> {
    crate::error::refuse_line_breaks(s, "IMAP folder name")?;
    Ok(format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
}

/// Parses `"{uidvalidity}:{uid}"`.
pub fn parse_remote_id(id: &str) -> Option<(u32, u32)> {
    let (v, u) = id.split_once(':')?;
    Some((v.parse().ok()?, u.parse().ok()?))
}

/// Sorted, deduplicated UIDs of the ids that belong to `validity`; others
/// are logged and left out.
fn current_uids(remote_ids: &[String], validity: u32, doing: &str) -> Vec<u32> {
    let mut uids = Vec::with_capacity(remote_ids.len());
    for id in remote_ids {
        match parse_remote_id(id) {
            Some((v, uid)) if v == validity => uids.push(uid),
            Some(_) => tracing::warn!(
                remote_id = %id, uidvalidity = validity,
                "IMAP {doing}: id is from an older UIDVALIDITY of the folder; skipped"
            ),
            None => tracing::warn!(remote_id = %id, "IMAP {doing}: not an IMAP remote id; skipped"),
        }
    }
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// Compresses sorted UIDs into sequence sets like `"1:5,7,9:12"`, split so
/// that no set is longer than `max_len` bytes.
pub fn uid_sets(uids: &[u32], max_len: usize) -> Vec<String> {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut sets = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        i += 1;
        let item = if start == end { start.to_string() } else { format!("{start}:{end}") };
        if !current.is_empty() && current.len() + 1 + item.len() > max_len {
            sets.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&item);
    }
    if !current.is_empty() {
        sets.push(current);
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_folders_are_searched_in_uid_ranges() {
        // Up to SEARCH_UIDS mails, or no UIDNEXT: one search of everything.
        assert_eq!(search_ranges(20_000, Some(1_000_000)), vec![None]);
        assert_eq!(search_ranges(50_000, None), vec![None]);
        // 50,000 mails evenly over UIDs 1..=100,000: ranges of 40,000 UIDs.
        let ranges = search_ranges(50_000, Some(100_001));
        assert_eq!(
            ranges,
            vec![Some("1:40000".to_string()), Some("40001:80000".to_string()), Some("80001:*".to_string())]
        );
        // Dense UIDs: spans never shrink below SEARCH_UIDS.
        assert_eq!(search_ranges(60_000, Some(60_001)).len(), 3);
        // The ranges cover every UID, the last one open.
        let ranges = search_ranges(1_000_000, Some(u32::MAX));
        let bounds: Vec<(u64, Option<u64>)> = ranges
            .iter()
            .map(|r| {
                let (a, b) = r.as_deref().unwrap().split_once(':').unwrap();
                (a.parse().unwrap(), b.parse().ok())
            })
            .collect();
        assert_eq!(bounds[0].0, 1);
        assert_eq!(bounds.last().unwrap().1, None);
        for pair in bounds.windows(2) {
            assert_eq!(pair[0].1.unwrap() + 1, pair[1].0);
        }
    }

    #[test]
    fn sets_are_compressed() {
        assert_eq!(uid_sets(&[1, 2, 3, 4, 5, 7, 9, 10, 11, 12], 100), vec!["1:5,7,9:12"]);
        assert_eq!(uid_sets(&[12, 9, 10, 11, 7, 1, 1], 100), vec!["1,7,9:12"]);
        assert_eq!(uid_sets(&[], 100), Vec::<String>::new());
        assert_eq!(uid_sets(&[4_000_000_000], 100), vec!["4000000000"]);
    }

    #[test]
    fn long_sets_are_split() {
        let uids: Vec<u32> = (0..1000).map(|i| i * 2).collect();
        let sets = uid_sets(&uids, 50);
        assert!(sets.len() > 1);
        assert!(sets.iter().all(|s| s.len() <= 50));
        let back: Vec<u32> = sets.iter().flat_map(|s| s.split(',')).map(|n| n.parse().unwrap()).collect();
        assert_eq!(back, uids);
    }

    #[test]
    fn remote_ids() {
        assert_eq!(parse_remote_id("17:42"), Some((17, 42)));
        assert_eq!(parse_remote_id("17"), None);
        assert_eq!(parse_remote_id("a:1"), None);
        assert_eq!(current_uids(&["5:3".into(), "5:1".into(), "6:2".into(), "x".into()], 5, "t"), vec![1, 3]);
    }

    #[test]
    fn server_text_is_extracted() {
        assert_eq!(
            server_text("code: None, info: Some(\"[AUTHENTICATIONFAILED] Authentication failed.\")"),
            "[AUTHENTICATIONFAILED] Authentication failed."
        );
        assert_eq!(server_text("plain"), "plain");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"a"b\c"#).unwrap(), r#""a\"b\\c""#);
        assert!(quote("Done\r\nA1 DELETE INBOX").is_err());
    }
}
