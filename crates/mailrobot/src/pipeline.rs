//! The path of one mail (DESIGN.md): fetch → journal and process → settle →
//! record. Each arrow is a committed step, so a crash between any two loses
//! nothing and duplicates nothing:
//!
//! - crash before the journal commit: the mail is still in the mailbox and
//!   is fetched again;
//! - the journal row, the raw bytes and the ticket decision are one commit
//!   (the row is written once, with its outcome); a crash after it: the next
//!   pass settles the mail (`settled = 0`);
//! - after settling, before recording it: settling again is a no-op.
//!
//! Rows left `fetched` (by `retry`, or by a crash of a version that
//! journaled before processing) are processed first, from the stored raw
//! bytes, before talking to the server. Many mails share each commit (one
//! fsync per batch, not per mail).

use std::collections::HashSet;
use std::sync::Arc;

use mailrobot_core::parse_raw;
use mailrobot_secrets::SecretBox;
use mailrobot_sources::{BearerTokens, Listing, MailSource, Outcome, Refusal, RemoteMail, SourceError};
use mailrobot_store::{
    IncomingMail, JournalState, Mailbox, MailboxKind, MessageKind, Parses, ProcessedMail, ProcessingRules, SettleTo,
    Store, StoreError, blob_codec, raw_sha256,
};
use serde::Serialize;

use crate::crash;
use crate::mailbox_config::{MailboxConfig, OpenContext};

/// A service connection's tokens, as a source asks for them.
pub(crate) struct ConnectionTokens {
    pub(crate) broker: Arc<mailrobot_auth::TokenBroker>,
    pub(crate) connection_id: i64,
}

#[async_trait::async_trait]
impl BearerTokens for ConnectionTokens {
    async fn token(&self, renew: bool) -> Result<String, SourceError> {
        // The kind survives: a connection that needs a person pauses the
        // mailbox, even when it is found out mid-pass.
        let auth = |e: mailrobot_auth::AuthError| {
            let message = e.to_string();
            let kind = if e.needs_person() {
                SourceError::needs_person(message)
            } else if e.is_transient() {
                SourceError::transient(message)
            } else {
                SourceError::permanent(message)
            };
            kind.with_source(e)
        };
        if renew {
            self.broker.forget(self.connection_id).await.map_err(auth)?;
        }
        let token = self.broker.access_token(self.connection_id).await.map_err(auth)?;
        Ok(token.token.expose().to_string())
    }
}

/// How much one batch may hold: bounds memory and the work lost to a crash.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_mails: usize,
    pub max_bytes: u64,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self { max_mails: 1000, max_bytes: 32 << 20 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Auth(#[from] mailrobot_auth::AuthError),
    /// A bug met in this mailbox's poll: caught, so it fails this mailbox
    /// alone and backs off like any failure.
    #[error("internal error while polling this mailbox (a bug; please report it with the log): {0}")]
    Panicked(String),
}

impl PollError {
    /// Worth retrying soon (network trouble) rather than waiting for a person.
    pub fn is_transient(&self) -> bool {
        match self {
            PollError::Source(e) => e.is_transient(),
            PollError::Store(e) => e.is_transient(),
            PollError::Join(_) => true,
            PollError::Auth(e) => e.is_transient(),
            PollError::Panicked(_) => false,
        }
    }

    /// How long the server asked for quiet, if it did (HTTP 429 Retry-After).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            PollError::Source(e) => e.retry_after(),
            _ => None,
        }
    }

    /// This node lost the mailbox's lease mid-poll: another node polls it
    /// now. No failure of the mailbox's, and nothing to record.
    pub fn is_fenced(&self) -> bool {
        matches!(self, PollError::Store(StoreError::Fenced { .. }))
    }

    /// The mailbox waits for a person (its connection needs Setup
    /// Authentication, or a new secret): no network until then.
    pub fn is_paused(&self) -> bool {
        match self {
            PollError::Auth(e) => e.needs_person(),
            PollError::Source(e) => e.kind() == mailrobot_sources::ErrorKind::NeedsPerson,
            _ => false,
        }
    }
}

/// What one poll of one mailbox did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PollReport {
    pub mailbox: String,
    pub listed: usize,
    pub fetched: usize,
    pub rejected: usize,
    pub processed: usize,
    pub failed: usize,
    pub duplicates: usize,
    pub tickets_created: usize,
    pub settled: usize,
    /// Not polled: the server asked for quiet until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled_until: Option<String>,
    /// Not polled by this `run-once`: the node (or pass) that holds the
    /// mailbox's lease polls it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

#[derive(Clone)]
pub struct Pipeline {
    pub store: Arc<dyn Store>,
    pub secrets: Arc<SecretBox>,
    pub rules: ProcessingRules,
    pub limits: BatchLimits,
    /// Where this poll's progress shows (the dashboard).
    pub progress: Arc<mailrobot_views::progress::SyncProgress>,
    /// Tokens for mailboxes behind a service connection.
    pub broker: Option<Arc<mailrobot_auth::TokenBroker>>,
    /// Polls running at once, across every mailbox of this process: a
    /// thousand mailboxes due together open at most this many connections,
    /// in turn (the semaphore is first come, first served). A mailbox with
    /// a huge backlog holds one permit; the others keep theirs.
    pub poll_permits: Arc<tokio::sync::Semaphore>,
    /// Fetched mail not yet filed, across every poll of this process.
    pub mail_in_memory: Arc<crate::mail_in_memory::MailInMemory>,
    /// Graph change notifications, when this process serves the URL Graph
    /// posts them to (`serve`).
    pub graph_push: Option<Arc<crate::graph_push::GraphPush>>,
}

/// A mailbox's settings and what opening it needs besides them, gathered
/// before any connection.
struct Opening {
    config: MailboxConfig,
    sealed: Option<Vec<u8>>,
    tokens: Option<(Arc<dyn BearerTokens>, String)>,
    app_id: Option<String>,
    sync_state: Option<String>,
}

impl Opening {
    fn context<'a>(&'a self, secrets: &'a SecretBox) -> OpenContext<'a> {
        OpenContext {
            sealed_secret: self.sealed.as_deref(),
            secrets,
            tokens: self.tokens.clone(),
            app_id: self.app_id.clone(),
            sync_state: self.sync_state.clone(),
        }
    }
}

impl Pipeline {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, PollError> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(store.as_ref())).await??)
    }

    /// One pass over one mailbox. A panic inside it (a bug, perhaps met on
    /// data a server controls) becomes this mailbox's error.
    pub async fn poll(&self, mailbox: &Mailbox) -> Result<PollReport, PollError> {
        use futures::FutureExt;
        match std::panic::AssertUnwindSafe(self.poll_inner(mailbox)).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_string());
                tracing::error!(mailbox = %mailbox.name, panic = %what, "poll panicked; recorded as this mailbox's error");
                self.progress.finish(mailbox.id);
                Err(PollError::Panicked(what))
            }
        }
    }

    async fn poll_inner(&self, mailbox: &Mailbox) -> Result<PollReport, PollError> {
        crash::panic_point("poll");
        let mut report = PollReport { mailbox: mailbox.name.clone(), ..Default::default() };
        // Mails journaled by a pass that died are processed first, without
        // the server: they are already safe here.
        self.process_leftovers(mailbox.id, &mut report).await?;

        let mut source = self.open_source(mailbox).await?;
        let result = self.poll_source(mailbox, source.as_mut(), &mut report).await;
        self.progress.finish(mailbox.id);
        // LOGOUT / QUIT even after an error: POP3 commits deletions on QUIT.
        let closed = source.close().await;
        tracing::debug!(mailbox = %mailbox.name, hwm_kb = peak_rss_kb(), "poll finished");
        result?;
        closed?;
        Ok(report)
    }

    /// Keeps a push channel open to the mailbox (IMAP IDLE) and tells
    /// `arrived` whenever the server announces new mail; reconnects with a
    /// backoff after errors. Returns when the mailbox has no push (the
    /// caller polls it on its schedule as before).
    pub async fn watch(&self, mailbox: &Mailbox, arrived: &tokio::sync::Notify) {
        /// Re-IDLE well before the 29 minutes of RFC 2177.
        const MAX_IDLE: std::time::Duration = std::time::Duration::from_secs(25 * 60);
        let mut backoff = std::time::Duration::from_secs(1);
        loop {
            // Connecting takes a place among the polls running at once (a
            // node starting with thousands of mailboxes does not open them
            // all together); the wait for mail that follows does not.
            let opened = {
                let _permit = self.poll_permits.acquire().await;
                self.open_source(mailbox).await
            };
            let mut source = match opened {
                Ok(source) => source,
                Err(err) => {
                    tracing::debug!(mailbox = %mailbox.name, error = %err, ?backoff, "push: cannot connect; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(300));
                    continue;
                }
            };
            loop {
                match source.wait_for_mail(MAX_IDLE).await {
                    Ok(mailrobot_sources::Push::NewMail) => {
                        backoff = std::time::Duration::from_secs(1);
                        arrived.notify_one();
                    }
                    Ok(mailrobot_sources::Push::Quiet) => backoff = std::time::Duration::from_secs(1),
                    Ok(mailrobot_sources::Push::NotOffered) => {
                        tracing::info!(mailbox = %mailbox.name, "the server offers no push (IDLE): polling only");
                        let _ = source.close().await;
                        return;
                    }
                    Err(err) => {
                        tracing::debug!(mailbox = %mailbox.name, error = %err, ?backoff, "push: connection lost; reconnecting");
                        break;
                    }
                }
            }
            let _ = source.close().await;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(300));
        }
    }

    /// Opens the mailbox's source: its settings, its connection's tokens
    /// (a connection that needs a person pauses the mailbox here, without a
    /// network call), its stored password and sync state.
    async fn open_source(&self, mailbox: &Mailbox) -> Result<Box<dyn MailSource>, PollError> {
        let opening = self.opening(mailbox).await?;
        let context = opening.context(&self.secrets);
        Ok(opening.config.open(mailbox, context).await?)
    }

    /// An EWS mailbox's client, with the credentials a poll of it uses,
    /// asking the server nothing: what `--reply-via ews` sends through.
    pub async fn ews_client(&self, mailbox: &Mailbox) -> Result<mailrobot_sources::EwsSource, PollError> {
        let opening = self.opening(mailbox).await?;
        let context = opening.context(&self.secrets);
        Ok(opening.config.ews_client(mailbox, context)?)
    }

    /// A Graph mailbox's change-notification subscriber, with the tokens a
    /// poll of it uses, asking the server nothing.
    pub async fn graph_subscriber(&self, mailbox: &Mailbox) -> Result<mailrobot_sources::GraphSubscriber, PollError> {
        let opening = self.opening(mailbox).await?;
        let context = opening.context(&self.secrets);
        Ok(opening.config.graph_subscriber(mailbox, context)?)
    }

    /// What opening a mailbox needs (see [`Self::open_source`]).
    async fn opening(&self, mailbox: &Mailbox) -> Result<Opening, PollError> {
        let config = MailboxConfig::from_mailbox(mailbox)?;
        config.check_plaintext()?;
        let (mut tokens, mut app_id) = (None, None);
        if let Some(connection_id) = mailbox.connection_id {
            // Every poll proves the connection still yields a token; a
            // connection that needs a person pauses the mailbox here,
            // without a network call.
            let broker = self.broker.clone().ok_or_else(|| {
                SourceError::permanent("this process has no token broker for service connections".to_string())
            })?;
            let token = broker.access_token(connection_id).await?;
            tracing::debug!(mailbox = %mailbox.name, expires_at = %token.expires_at, "access token ready");
            let urls = broker.service_urls(connection_id).await?;
            let base = if mailbox.kind == MailboxKind::Graph { urls.graph } else { urls.ews };
            // Every connect checks again: the tenant's URLs may have changed.
            mailrobot_sources::plaintext::check_url(&base, "the connection's access token", urls.allow_plaintext)?;
            app_id = broker.app_only_client_id(connection_id).await?;
            tokens = Some((Arc::new(ConnectionTokens { broker, connection_id }) as Arc<dyn BearerTokens>, base));
        }
        let id = mailbox.id;
        let (sealed, sync_state) =
            self.blocking(move |s| Ok((s.mailbox_secret(id)?, s.mailbox_sync_state(id)?))).await?;
        Ok(Opening { config, sealed, tokens, app_id, sync_state })
    }

    /// Connects and looks around without changing anything (`mailbox test`).
    pub async fn probe(&self, mailbox: &Mailbox) -> Result<mailrobot_sources::Probe, PollError> {
        let mut source = self.open_source(mailbox).await?;
        let result = source.probe().await;
        let _ = source.close().await;
        Ok(result?)
    }

    async fn poll_source(
        &self,
        mailbox: &Mailbox,
        source: &mut dyn MailSource,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        // Settle what an earlier pass processed but could not settle.
        self.settle(mailbox.id, source, report).await?;

        tracing::debug!(hwm_kb = peak_rss_kb(), "settled leftovers");
        let listing = source.list().await?;
        tracing::debug!(mails = listing.len(), hwm_kb = peak_rss_kb(), "listed");
        report.listed = listing.len();
        let ids: Vec<String> = listing.iter().map(|l| l.remote_id.clone()).collect();
        let id = mailbox.id;
        let known = self.blocking(move |s| s.known_remote_ids(id, &ids)).await?;
        let settled_again: Vec<(String, Outcome)> = known
            .iter()
            .filter(|k| k.settled && k.state != JournalState::Fetched)
            .map(|k| {
                let outcome = if k.state == JournalState::Failed { Outcome::Failed } else { Outcome::Processed };
                (k.remote_id.clone(), outcome)
            })
            .collect();
        if !settled_again.is_empty() {
            if source.resettle_if_listed_again() {
                tracing::warn!(mailbox = %mailbox.name, mails = settled_again.len(), "settled mails are back in the mailbox; settling them again");
                source.settle(&settled_again).await?;
            } else if mailbox.kind == MailboxKind::DropFolder {
                tracing::warn!(
                    mailbox = %mailbox.name, files = settled_again.len(),
                    "files named like ones already processed are in the drop folder's inbox; they are left alone: \
                     give every new file a unique name (write to tmp/, then rename into inbox/)"
                );
            }
        }
        let known: HashSet<String> = known.into_iter().map(|k| k.remote_id).collect();

        let max = mailbox.max_message_bytes.max(0) as u64;
        let (too_large, new): (Vec<Listing>, Vec<Listing>) = listing
            .into_iter()
            .filter(|l| !known.contains(&l.remote_id))
            .partition(|l| l.size.is_some_and(|size| size > max));

        if !too_large.is_empty() {
            report.rejected += too_large.len();
            let rejected: Vec<(String, u64)> =
                too_large.iter().map(|l| (l.remote_id.clone(), l.size.unwrap_or(0))).collect();
            self.blocking(move |s| {
                let incoming: Vec<IncomingMail<'_>> = rejected
                    .iter()
                    .map(|(rid, size)| {
                        IncomingMail::rejected(
                            rid.clone(),
                            *size,
                            format!(
                                "message is {size} bytes, over this mailbox's limit of {max} bytes; \
                                 raise --max-message-mb or handle it by hand"
                            ),
                        )
                    })
                    .collect();
                s.journal(id, &incoming)
            })
            .await?;
        }

        // Two lanes run side by side and hand batches over: the server lane
        // fetches a batch, starts parsing it on a thread of its own, and
        // settles whatever the database lane has filed; the database lane
        // journals and files each batch (one commit) once it is parsed.
        // Neither waits for the other's step unless it needs its result: a
        // batch is settled only once filed, and the record that it was
        // settled is written while the next batch is fetched. At most two batches are in
        // memory: the one being filed and the next; across polls, the
        // node's budget (`mail_in_memory`) bounds them all.
        let limits = match source.max_batch() {
            Some(max) => BatchLimits { max_mails: max.clamp(1, self.limits.max_mails), ..self.limits },
            None => self.limits,
        };
        // Batches are taken from a queue as they go: mails a source defers
        // (its fetch spent its byte budget) go back to the front of it.
        if !new.is_empty() {
            self.progress.start(id, new.len());
        }
        let queue: std::collections::VecDeque<Listing> = new.into();
        let (to_database, from_server) = tokio::sync::mpsc::channel::<FetchedBatch>(1);
        let (filed, filed_events) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut filing = PollReport { mailbox: report.mailbox.clone(), ..Default::default() };
        let (server, database) = tokio::join!(
            self.server_lane(mailbox.id, max, source, report, queue, limits, to_database, filed_events),
            self.database_lane(mailbox.id, max, &mut filing, from_server, filed),
        );
        report.processed += filing.processed;
        report.failed += filing.failed;
        report.duplicates += filing.duplicates;
        report.tickets_created += filing.tickets_created;
        // The database lane's error first: it is why the server lane stopped.
        database?;
        server?;
        // Rejected mails (no batch of their own) still need settling.
        self.settle(mailbox.id, source, report).await?;
        // Only now is every mail the new sync state covers in the journal.
        if let Some(state) = source.sync_state() {
            self.blocking(move |s| s.set_mailbox_sync_state(id, Some(&state))).await?;
        }
        Ok(())
    }

    /// The server lane of a poll: fetches batch after batch, each as soon
    /// as the database lane has taken the one before, and settles what the
    /// database lane reports filed. Stops fetching at its first error or
    /// when the database lane has stopped; settles what was filed either way.
    #[allow(clippy::too_many_arguments)]
    async fn server_lane(
        &self,
        mailbox_id: i64,
        max: u64,
        source: &mut dyn MailSource,
        report: &mut PollReport,
        queue: std::collections::VecDeque<Listing>,
        limits: BatchLimits,
        to_database: tokio::sync::mpsc::Sender<FetchedBatch>,
        filed_events: tokio::sync::mpsc::UnboundedReceiver<()>,
    ) -> Result<(), PollError> {
        // Each batch's settle record is written while the next batch is
        // fetched (it waits for the database lane's commit); every record is
        // written before the lane ends, whatever ended it.
        let mut recording = Recording::default();
        let result = self
            .server_lane_inner(
                mailbox_id,
                max,
                source,
                report,
                queue,
                limits,
                to_database,
                filed_events,
                &mut recording,
            )
            .await;
        let recorded = recording.finish().await;
        result.and(recorded)
    }

    /// [`Pipeline::server_lane`]'s work; settle records are left to `recording`.
    #[allow(clippy::too_many_arguments)]
    async fn server_lane_inner(
        &self,
        mailbox_id: i64,
        max: u64,
        source: &mut dyn MailSource,
        report: &mut PollReport,
        mut queue: std::collections::VecDeque<Listing>,
        limits: BatchLimits,
        to_database: tokio::sync::mpsc::Sender<FetchedBatch>,
        mut filed_events: tokio::sync::mpsc::UnboundedReceiver<()>,
        recording: &mut Recording,
    ) -> Result<(), PollError> {
        loop {
            // A free slot means the database lane took the batch before.
            let slot = tokio::select! {
                biased;
                slot = to_database.reserve() => slot,
                event = filed_events.recv() => match event {
                    Some(()) => {
                        self.settle_recorded(mailbox_id, source, report, recording).await?;
                        continue;
                    }
                    None => break,
                },
            };
            // No slot: the database lane stopped (its error ends the poll).
            let (Ok(slot), Some((ids, expected_bytes))) = (slot, next_batch(&mut queue, limits)) else { break };
            let mut in_memory = self.mail_in_memory.hold(expected_bytes).await;
            let batch = source.fetch(&ids).await?;
            let batch = Arc::new(requeue_deferred(batch, &mut queue)?);
            in_memory.resize(batch.iter().map(|m| m.raw.len() as u64).sum());
            // Hashed (and compressed, for a store that keeps mail so) here,
            // not under the store's write lock: the database lane's time is
            // the pass's.
            let pack = self.store.keeps_packed_mail();
            let hashed = tokio::task::spawn_blocking({
                let batch = batch.clone();
                move || {
                    let hash = |m: &RemoteMail| (raw_sha256(&m.raw), pack.then(|| blob_codec::pack(&m.raw)).flatten());
                    batch.iter().map(|m| m.refused.is_none().then(|| hash(m))).collect()
                }
            })
            .await?;
            crash::point("after-fetch");
            report.fetched += batch.len();
            self.progress.fetched(mailbox_id, batch.len());
            let parsing = tokio::task::spawn_blocking({
                let batch = batch.clone();
                move || parse_batch(&batch, max)
            });
            slot.send(FetchedBatch { mails: batch, hashed, parsing, _in_memory: in_memory });
        }
        drop(to_database);
        // The database lane files what it was given, then stops.
        while filed_events.recv().await.is_some() {
            self.settle_recorded(mailbox_id, source, report, recording).await?;
        }
        Ok(())
    }

    /// The database lane of a poll: journals and files each batch the
    /// server lane hands over (one commit), and says so.
    async fn database_lane(
        &self,
        mailbox_id: i64,
        max: u64,
        report: &mut PollReport,
        mut from_server: tokio::sync::mpsc::Receiver<FetchedBatch>,
        filed: tokio::sync::mpsc::UnboundedSender<()>,
    ) -> Result<(), PollError> {
        while let Some(batch) = from_server.recv().await {
            let started = std::time::Instant::now();
            self.journal_and_file(mailbox_id, max, batch, report).await?;
            crash::point("after-process");
            tracing::debug!(
                seconds = started.elapsed().as_secs_f64(),
                hwm_kb = peak_rss_kb(),
                "journaled and filed a batch"
            );
            // The server lane stopped after an error: the next pass settles.
            let _ = filed.send(());
        }
        Ok(())
    }

    /// Stores a fetched batch in the journal and files it once parsed: each
    /// new mail's journal row is written once, with its outcome, in the
    /// commit that files it.
    async fn journal_and_file(
        &self,
        mailbox_id: i64,
        max: u64,
        batch: FetchedBatch,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        // The batch's share of the node's memory goes back once it is filed.
        let FetchedBatch { mails, hashed, parsing, _in_memory } = batch;
        let rules = self.rules.clone();
        let runtime = tokio::runtime::Handle::current();
        let started = std::time::Instant::now();
        let done = self
            .blocking(move |s| {
                let incoming: Vec<IncomingMail<'_>> = mails
                    .iter()
                    .zip(hashed)
                    .map(|(m, hashed)| match (incoming_mail(m, max), hashed) {
                        (mail, Some((sha, packed))) if mail.rejected.is_none() => mail.hashed(sha).packed(packed),
                        (mail, _) => mail,
                    })
                    .collect();
                // The store may store the bytes while the parsing ends. A
                // parse that never came makes each mail fail with why.
                let parses = Box::new(move || {
                    runtime.block_on(parsing).unwrap_or_else(|e| {
                        tracing::error!(error = %e, "the parsing of a batch stopped");
                        Parses::new()
                    })
                });
                s.journal_and_file(mailbox_id, &incoming, parses, &rules)
            })
            .await?;
        count_filed(report, mailbox_id, started, &done);
        Ok(())
    }

    /// Processes everything journaled but not yet processed for the mailbox
    /// (what a crash or a retry left), a batch (by count and by bytes) per
    /// transaction, each read within the node's memory budget: after a
    /// crash, every poll starts with its leftovers at once.
    async fn process_leftovers(&self, mailbox_id: i64, report: &mut PollReport) -> Result<(), PollError> {
        loop {
            let rules = self.rules.clone();
            let (limit, max_bytes) = (self.limits.max_mails, self.limits.max_bytes);
            let waiting = self.blocking(move |s| s.pending_batch_bytes(Some(mailbox_id), limit, max_bytes)).await?;
            let Some(bytes) = waiting else { return Ok(()) };
            let _in_memory = self.mail_in_memory.hold(bytes).await;
            let started = std::time::Instant::now();
            let done = self.blocking(move |s| s.process_pending(Some(mailbox_id), limit, max_bytes, &rules)).await?;
            // A batch cut short by bytes is not the last one; an empty one is.
            if done.is_empty() {
                return Ok(());
            }
            count_filed(report, mailbox_id, started, &done);
        }
    }

    /// Applies processed/failed outcomes in the remote mailbox, then records
    /// that it happened.
    async fn settle(
        &self,
        mailbox_id: i64,
        source: &mut dyn MailSource,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let mut recording = Recording::default();
        self.settle_recorded(mailbox_id, source, report, &mut recording).await?;
        recording.finish().await
    }

    /// [`Pipeline::settle`], leaving the record to be written in the
    /// background by `recording` (the server lane fetches meanwhile). The
    /// record before is waited for first: the mails to settle are read
    /// from the journal, and a mail must not be settled twice.
    async fn settle_recorded(
        &self,
        mailbox_id: i64,
        source: &mut dyn MailSource,
        report: &mut PollReport,
        recording: &mut Recording,
    ) -> Result<(), PollError> {
        recording.finish().await?;
        let pending = self.blocking(move |s| s.unsettled(mailbox_id)).await?;
        if pending.is_empty() {
            return Ok(());
        }
        let outcomes: Vec<(String, Outcome)> = pending
            .iter()
            .map(|u| {
                let outcome = match u.settle_to {
                    SettleTo::Processed => Outcome::Processed,
                    SettleTo::Failed => Outcome::Failed,
                };
                (u.remote_id.clone(), outcome)
            })
            .collect();
        source.settle(&outcomes).await?;
        crash::point("after-settle");
        let ids: Vec<i64> = pending.iter().map(|u| u.journal_id).collect();
        report.settled += ids.len();
        let store = self.store.clone();
        recording.0 = Some(tokio::task::spawn_blocking(move || {
            store.mark_settled(&ids)?;
            crash::point("after-mark-settled");
            Ok(())
        }));
        Ok(())
    }
}

/// A settle record being written in the background, if any.
#[derive(Default)]
struct Recording(Option<tokio::task::JoinHandle<Result<(), StoreError>>>);

impl Recording {
    /// Waits for the record being written, if any, and says how it went.
    async fn finish(&mut self) -> Result<(), PollError> {
        match self.0.take() {
            Some(writing) => Ok(writing.await??),
            None => Ok(()),
        }
    }
}

/// Counts a filed batch in the poll's report and the metrics.
fn count_filed(report: &mut PollReport, mailbox_id: i64, started: std::time::Instant, done: &[ProcessedMail]) {
    if done.is_empty() {
        return;
    }
    let label = crate::metrics::mailbox_label(mailbox_id, &report.mailbox);
    crate::metrics::record_batch(&label, started.elapsed().as_secs_f64(), done.len());
    for mail in done {
        match (mail.state, mail.kind) {
            (JournalState::Failed, _) => report.failed += 1,
            (_, Some(MessageKind::Duplicate)) => report.duplicates += 1,
            _ => report.processed += 1,
        }
        report.tickets_created += usize::from(mail.created_ticket);
    }
    crate::metrics::record_processed(&label, done);
}

/// A batch on its way from the server lane to the database lane, its
/// parsing already under way.
struct FetchedBatch {
    mails: Arc<Vec<RemoteMail>>,
    /// Each mail's SHA-256 and, for a store that keeps mail compressed, its
    /// compressed bytes when they are smaller (`None` for a refused mail).
    hashed: Vec<Option<(String, Option<Vec<u8>>)>>,
    parsing: tokio::task::JoinHandle<Parses>,
    _in_memory: crate::mail_in_memory::Held,
}

/// Parses the mails of a batch the journal will keep, keyed by remote id
/// (a remote id twice in one fetch: the journal keeps the first).
fn parse_batch(batch: &[RemoteMail], max: u64) -> Parses {
    let started = std::time::Instant::now();
    let mut parsed = Parses::new();
    for m in batch.iter().filter(|m| m.refused.is_none() && m.raw.len() as u64 <= max) {
        if !parsed.contains_key(&m.remote_id) {
            parsed.insert(m.remote_id.clone(), parse_raw(&m.raw));
        }
    }
    tracing::debug!(mails = parsed.len(), ms = started.elapsed().as_millis() as u64, "parsed a batch");
    parsed
}

/// What the journal stores of a fetched mail: its bytes, or why it was
/// not read (sources that list no sizes are checked against `max` here).
fn incoming_mail(m: &RemoteMail, max: u64) -> IncomingMail<'_> {
    match &m.refused {
        Some(Refusal::TooLarge { at_least }) => IncomingMail::rejected(
            m.remote_id.clone(),
            *at_least,
            format!(
                "message is at least {at_least} bytes, over this mailbox's limit of {max} bytes; \
                 raise --max-message-mb or handle it by hand"
            ),
        ),
        Some(Refusal::NotAMail { reason }) => {
            IncomingMail::rejected(m.remote_id.clone(), 0, format!("not read: {reason}"))
        }
        // Taken off by requeue_deferred before journaling.
        Some(Refusal::Deferred) => unreachable!("deferred mails are never journaled"),
        None if m.raw.len() as u64 > max => IncomingMail::rejected(
            m.remote_id.clone(),
            m.raw.len() as u64,
            format!("message is {} bytes, over this mailbox's limit of {max} bytes", m.raw.len()),
        ),
        None => IncomingMail::fetched(m.remote_id.clone(), &m.raw),
    }
}

/// Takes the next batch off the queue: at most `max_mails` mails and
/// `max_bytes` of announced size (a larger mail goes alone). Also returns
/// the bytes the batch is expected to bring: the announced sizes, a guess
/// for mails listed without one, at most what one fetch may hold.
fn next_batch(queue: &mut std::collections::VecDeque<Listing>, limits: BatchLimits) -> Option<(Vec<String>, u64)> {
    use crate::mail_in_memory::UNLISTED_MAIL_BYTES;
    let mut ids = Vec::new();
    let (mut bytes, mut unlisted) = (0u64, 0u64);
    while let Some(mail) = queue.front() {
        let size = mail.size.unwrap_or(0);
        if !ids.is_empty() && (ids.len() >= limits.max_mails || bytes + size > limits.max_bytes) {
            break;
        }
        bytes += size;
        unlisted += u64::from(mail.size.is_none());
        ids.push(queue.pop_front().expect("front exists").remote_id);
    }
    let expected = bytes.max((bytes + unlisted * UNLISTED_MAIL_BYTES).min(limits.max_bytes));
    (!ids.is_empty()).then_some((ids, expected))
}

/// Puts mails a fetch deferred back at the front of the queue (in their
/// order) and returns the ones it brought. A fetch that brought nothing but
/// deferred everything would loop forever: that is the source's bug.
fn requeue_deferred(
    batch: Vec<RemoteMail>,
    queue: &mut std::collections::VecDeque<Listing>,
) -> Result<Vec<RemoteMail>, PollError> {
    let (deferred, brought): (Vec<RemoteMail>, Vec<RemoteMail>) = batch.into_iter().partition(RemoteMail::is_deferred);
    if !deferred.is_empty() && brought.is_empty() {
        return Err(PollError::Source(SourceError::transient(
            "the source deferred every mail of a fetch; will retry next pass",
        )));
    }
    for mail in deferred.into_iter().rev() {
        queue.push_front(Listing { remote_id: mail.remote_id, size: None });
    }
    Ok(brought)
}

/// Peak resident memory so far (VmHWM), for the debug log of each batch.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(sizes: &[u64]) -> Vec<Listing> {
        sizes.iter().enumerate().map(|(i, s)| Listing { remote_id: i.to_string(), size: Some(*s) }).collect()
    }

    #[test]
    fn batches_respect_count_and_bytes_and_keep_big_mails_alone() {
        let limits = BatchLimits { max_mails: 3, max_bytes: 100 };
        let mut queue: std::collections::VecDeque<Listing> = listing(&[10, 10, 10, 10, 90, 20, 500, 1]).into();
        let (mut sizes, mut expected_bytes): (Vec<Vec<u64>>, Vec<u64>) = (Vec::new(), Vec::new());
        while let Some((ids, expected)) = next_batch(&mut queue, limits) {
            sizes.push(ids.iter().map(|id| [10, 10, 10, 10, 90, 20, 500, 1][id.parse::<usize>().unwrap()]).collect());
            expected_bytes.push(expected);
        }
        let expected: Vec<Vec<u64>> = vec![vec![10, 10, 10], vec![10, 90], vec![20], vec![500], vec![1]];
        assert_eq!(sizes, expected);
        assert_eq!(expected_bytes, [30, 100, 20, 500, 1], "a batch is expected to bring what was listed");
        assert!(next_batch(&mut std::collections::VecDeque::new(), limits).is_none());
    }

    #[test]
    fn mails_listed_without_a_size_are_guessed_up_to_what_a_fetch_holds() {
        use crate::mail_in_memory::UNLISTED_MAIL_BYTES;
        let unlisted = |n: usize| (0..n).map(|i| Listing { remote_id: i.to_string(), size: None });
        let limits = BatchLimits { max_mails: 1000, max_bytes: 32 << 20 };
        let mut queue: std::collections::VecDeque<Listing> = unlisted(2).collect();
        queue.push_back(Listing { remote_id: "sized".into(), size: Some(1000) });
        assert_eq!(next_batch(&mut queue, limits).unwrap().1, 2 * UNLISTED_MAIL_BYTES + 1000);
        let mut queue: std::collections::VecDeque<Listing> = unlisted(1000).collect();
        let (ids, expected) = next_batch(&mut queue, limits).unwrap();
        assert_eq!((ids.len(), expected), (1000, 32 << 20), "no more than one fetch may hold");
    }

    #[test]
    fn deferred_mails_go_back_to_the_front_in_order() {
        let mut queue: std::collections::VecDeque<Listing> = listing(&[1, 1]).into();
        let batch = vec![
            RemoteMail::new("a".into(), b"x".to_vec()),
            RemoteMail::deferred("b".into()),
            RemoteMail::deferred("c".into()),
        ];
        let brought = requeue_deferred(batch, &mut queue).unwrap();
        assert_eq!(brought.len(), 1);
        let order: Vec<&str> = queue.iter().map(|l| l.remote_id.as_str()).collect();
        assert_eq!(order, ["b", "c", "0", "1"]);
        assert!(requeue_deferred(vec![RemoteMail::deferred("d".into())], &mut queue).is_err(), "no progress");
    }
}
