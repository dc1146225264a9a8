//! Graph change notifications: each Graph mailbox this node holds keeps a
//! subscription, so Graph POSTs to the robot's public URL when mail arrives
//! and the mailbox is polled — a delta query — at once. The mailbox's poll
//! interval stays as the safety net.
//!
//! - [`NOTIFICATION_PATH`] and [`LIFECYCLE_PATH`] answer Graph's validation
//!   handshake, and take notifications whose `clientState` matches the
//!   subscription's; they answer 202 at once (Graph wants a 2xx within 3 s).
//!   A notification only says "look now": what changed is read by the delta.
//! - The subscription is stored with its `clientState` sealed, reused after
//!   a restart and by a node taking the mailbox over, renewed at half its
//!   lifetime, and made anew when Graph removed it or no longer knows it.
//! - Lifecycle notifications: `reauthorizationRequired` renews at once,
//!   `subscriptionRemoved` subscribes again, `missed` polls; each new
//!   subscription is followed by a poll, for mail that came meanwhile.
//! - Delegated access to a shared mailbox cannot subscribe (Microsoft
//!   Graph): such mailboxes are polled only, and the log says so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use mailrobot_secrets::{Secret, SecretBox};
use mailrobot_sources::{GraphSubscriber, SubscriptionRequest};
use mailrobot_store::{LeaseStore, Mailbox, PushSubscription, Store, StoreError};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc};

use crate::mailbox_config::MailboxConfig;
use crate::pipeline::{Pipeline, PollError};

/// Where Graph posts change notifications, under the public URL.
pub const NOTIFICATION_PATH: &str = "/graph/notifications";
/// Where Graph posts lifecycle notifications, under the public URL.
pub const LIFECYCLE_PATH: &str = "/graph/lifecycle";
/// Subscription lifetime asked of Graph, in seconds.
pub const LIFETIME_ENV: &str = "MAILROBOT_GRAPH_SUBSCRIPTION_SECONDS";
/// `off` keeps every Graph mailbox on polling (no subscriptions).
pub const SWITCH_ENV: &str = "MAILROBOT_GRAPH_PUSH";
/// 4,200 minutes: under the 4,230 Microsoft's older pages give for Outlook
/// messages (the newer lifetime table says 10,080).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(4_200 * 60);
/// Graph's longest lifetime for Outlook message subscriptions (10,080
/// minutes in the current table; older pages said 4,230).
const MAX_LIFETIME_SECONDS: u64 = 10_080 * 60;
/// Longest validation token echoed back (Graph's are a few hundred bytes).
const MAX_VALIDATION_TOKEN: usize = 4096;
/// Items of one notification request looked up in the store, at most.
const MAX_RELAYED: usize = 50;
/// Waits between failed attempts to subscribe: from this…
const FIRST_RETRY: Duration = Duration::from_secs(30);
/// …doubling up to this (Graph validates our URL on each attempt).
const LAST_RETRY: Duration = Duration::from_secs(3600);

/// The sealing context of a mailbox's `clientState`.
pub fn client_state_context(mailbox_id: i64) -> String {
    format!("mailbox:{mailbox_id}:graph_client_state")
}

/// What a lifecycle notification asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Renew or reauthorize, or Graph stops sending.
    ReauthorizationRequired,
    /// Graph ended the subscription: subscribe again and catch up.
    SubscriptionRemoved,
    /// Graph could not deliver some notifications: catch up.
    Missed,
}

impl Lifecycle {
    fn parse(event: &str) -> Option<Self> {
        match event {
            e if e.eq_ignore_ascii_case("reauthorizationRequired") => Some(Lifecycle::ReauthorizationRequired),
            e if e.eq_ignore_ascii_case("subscriptionRemoved") => Some(Lifecycle::SubscriptionRemoved),
            e if e.eq_ignore_ascii_case("missed") => Some(Lifecycle::Missed),
            _ => None,
        }
    }
}

/// Where a subscription's notifications go on this node.
struct Route {
    mailbox_id: i64,
    client_state: Secret,
    /// Wakes the mailbox's loop: a poll now.
    arrived: Arc<Notify>,
    /// The watcher, told of lifecycle events (with the subscription they
    /// are for: an event for one it already replaced is stale).
    lifecycle: mpsc::UnboundedSender<(String, Lifecycle)>,
}

/// Graph change notifications on this node: the subscriptions of the
/// mailboxes it holds, and where their notifications go.
pub struct GraphPush {
    public_url: String,
    store: Arc<dyn Store>,
    /// Tells the node holding a mailbox of a notification that came here.
    leases: Arc<dyn LeaseStore>,
    secrets: Arc<SecretBox>,
    lifetime: chrono::Duration,
    routes: Mutex<HashMap<String, Route>>,
}

/// Why Graph cannot post to `public_url`, if it cannot: Microsoft requires
/// https. Plain http is taken on loopback only, for local trials against
/// an emulator (real Graph cannot reach it anyway).
pub fn unreachable_reason(public_url: &str) -> Option<String> {
    let url = url::Url::parse(public_url).ok()?;
    let loopback = url.host_str().is_some_and(mailrobot_sources::plaintext::is_loopback_host);
    match url.scheme() {
        "https" => None,
        "http" if loopback => None,
        _ => Some(format!(
            "Graph posts change notifications only to https URLs, and the public URL is {public_url}: \
             Graph mailboxes are polled (give serve --public-url https://…, or set {SWITCH_ENV}=off to say so)"
        )),
    }
}

/// Whether Graph push is switched on (`MAILROBOT_GRAPH_PUSH`, on by default).
pub fn enabled() -> anyhow::Result<bool> {
    match std::env::var(SWITCH_ENV).as_deref() {
        Err(_) | Ok("on") | Ok("") => Ok(true),
        Ok("off") => Ok(false),
        Ok(other) => anyhow::bail!("{SWITCH_ENV} must be on or off, not {other:?}"),
    }
}

impl GraphPush {
    pub fn new(
        public_url: &str,
        store: Arc<dyn Store>,
        leases: Arc<dyn LeaseStore>,
        secrets: Arc<SecretBox>,
    ) -> anyhow::Result<Self> {
        let lifetime = match std::env::var(LIFETIME_ENV) {
            Ok(v) => {
                Duration::from_secs(v.parse().ok().filter(|s| (60..=MAX_LIFETIME_SECONDS).contains(s)).ok_or_else(
                    || anyhow::anyhow!("{LIFETIME_ENV} must be seconds from 60 to {MAX_LIFETIME_SECONDS} (got {v:?})"),
                )?)
            }
            Err(_) => DEFAULT_LIFETIME,
        };
        Ok(Self {
            public_url: public_url.trim_end_matches('/').to_string(),
            store,
            leases,
            secrets,
            lifetime: chrono::Duration::from_std(lifetime)?,
            routes: Mutex::new(HashMap::new()),
        })
    }

    fn notification_url(&self) -> String {
        format!("{}{NOTIFICATION_PATH}", self.public_url)
    }

    fn lifecycle_url(&self) -> String {
        format!("{}{LIFECYCLE_PATH}", self.public_url)
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Route>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one item of a notification collection: wakes its mailbox or
    /// tells its watcher, when the `clientState` proves it is Graph's.
    fn accept(&self, item: &NotificationItem) -> Accepted {
        let routes = self.routes();
        let Some(route) = routes.get(&item.subscription_id) else {
            return Accepted::Unknown;
        };
        let presented = item.client_state.as_deref().unwrap_or_default();
        if !same_secret(presented.as_bytes(), route.client_state.expose().as_bytes()) {
            return Accepted::Forged;
        }
        match item.lifecycle_event.as_deref() {
            None => route.arrived.notify_one(),
            Some(event) => match Lifecycle::parse(event) {
                Some(event) => {
                    let _ = route.lifecycle.send((item.subscription_id.clone(), event));
                }
                // A lifecycle event this robot does not know: look anyway.
                None => route.arrived.notify_one(),
            },
        }
        Accepted::Taken
    }

    /// A notification for a subscription no mailbox of this node has: made
    /// by another node (several nodes behind one public URL), or by this
    /// one before it took the mailbox's watch up. When its `clientState`
    /// is the stored one, the node holding the mailbox hears of it at its
    /// next heartbeat and polls.
    fn relay(&self, item: &NotificationItem) -> Result<Accepted, StoreError> {
        let Some(stored) = self.store.push_subscription_by_id(&item.subscription_id)? else {
            return Ok(Accepted::Unknown);
        };
        let context = client_state_context(stored.mailbox_id);
        let Ok(client_state) = self.secrets.open_str(&stored.sealed_client_state, &context) else {
            return Ok(Accepted::Unknown);
        };
        let presented = item.client_state.as_deref().unwrap_or_default();
        if !same_secret(presented.as_bytes(), client_state.expose().as_bytes()) {
            return Ok(Accepted::Forged);
        }
        // A lifecycle event goes with it, for the holder's watcher.
        let event = item.lifecycle_event.as_deref();
        Ok(if self.leases.announce_mail(stored.mailbox_id, event)? { Accepted::Relayed } else { Accepted::Unknown })
    }

    /// A lifecycle event that reached another node, for the watcher of a
    /// mailbox this node holds (its current subscription).
    pub fn lifecycle_for(&self, mailbox_id: i64, event: &str) {
        let Some(event) = Lifecycle::parse(event) else { return };
        let routes = self.routes();
        if let Some((id, route)) = routes.iter().find(|(_, r)| r.mailbox_id == mailbox_id) {
            let _ = route.lifecycle.send((id.clone(), event));
        }
    }

    /// Keeps the mailbox's subscription alive while this node holds the
    /// mailbox, waking `arrived` on each notification. Returns at once for
    /// mailboxes that cannot subscribe (they are polled).
    pub async fn watch(self: Arc<Self>, pipeline: Pipeline, mailbox: Mailbox, arrived: Arc<Notify>) {
        if let Err(reason) = self.may_subscribe(&pipeline, &mailbox).await {
            tracing::info!(mailbox = %mailbox.name, poll_seconds = mailbox.poll_seconds, "{reason}; polling only");
            return;
        }
        let (tx, mut events) = mpsc::unbounded_channel();
        let mut watch =
            Watch { push: &self, pipeline: &pipeline, mailbox: &mailbox, arrived: &arrived, tx, active: None };
        let mut retry = FIRST_RETRY;
        loop {
            if watch.active.is_none() {
                match watch.establish().await {
                    Ok(()) => retry = FIRST_RETRY,
                    Err(PollError::Store(StoreError::Fenced { .. })) => return,
                    Err(err) => {
                        tracing::warn!(mailbox = %mailbox.name, error = %err, retry_in_s = retry.as_secs(), "cannot subscribe to Graph change notifications; polling meanwhile");
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(LAST_RETRY);
                        continue;
                    }
                }
            }
            let renew_at = watch.active.as_ref().map(|a| a.renew_at).unwrap_or_else(Utc::now);
            let wait = (renew_at - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = tokio::time::sleep(wait) => watch.renew().await,
                event = events.recv() => match event {
                    Some((id, _)) if watch.active.as_ref().is_none_or(|a| a.id != id) => {
                        tracing::debug!(mailbox = %mailbox.name, subscription = %id, "a lifecycle event for a replaced subscription");
                    }
                    Some((_, Lifecycle::Missed)) => {
                        tracing::info!(mailbox = %mailbox.name, "Graph missed some notifications; catching up");
                        arrived.notify_one();
                    }
                    Some((_, Lifecycle::ReauthorizationRequired)) => {
                        tracing::info!(mailbox = %mailbox.name, "Graph asks to reauthorize the subscription; renewing it");
                        watch.renew().await;
                    }
                    Some((_, Lifecycle::SubscriptionRemoved)) => {
                        tracing::info!(mailbox = %mailbox.name, "Graph removed the subscription; subscribing again");
                        watch.forget_active().await;
                    }
                    None => return,
                },
            }
        }
    }

    /// Ends the mailbox's subscription, at Graph and in the store (the
    /// mailbox was disabled or removed). A failure is logged: Graph ends
    /// the subscription at its expiry anyway.
    pub async fn unsubscribe(&self, pipeline: &Pipeline, mailbox: &Mailbox) {
        let id = mailbox.id;
        let store = self.store.clone();
        let stored = match tokio::task::spawn_blocking(move || store.push_subscription(id)).await {
            Ok(Ok(Some(stored))) => stored,
            _ => return,
        };
        let deleted = match pipeline.graph_subscriber(mailbox).await {
            Ok(subscriber) => subscriber.delete(&stored.subscription_id).await.map_err(PollError::from),
            Err(err) => Err(err),
        };
        match deleted {
            Ok(()) => {
                tracing::info!(mailbox = %mailbox.name, subscription = %stored.subscription_id, "Graph change notifications: unsubscribed")
            }
            Err(err) => {
                tracing::warn!(mailbox = %mailbox.name, error = %err, "could not end the Graph subscription; it expires by itself")
            }
        }
        let store = self.store.clone();
        let forgotten = tokio::task::spawn_blocking(move || store.forget_push_subscription(id)).await;
        if !matches!(forgotten, Ok(Ok(()))) {
            tracing::warn!(mailbox = %mailbox.name, "could not forget the ended subscription");
        }
    }

    /// Whether the mailbox can have a subscription; the reason if not.
    async fn may_subscribe(&self, pipeline: &Pipeline, mailbox: &Mailbox) -> Result<(), String> {
        let Ok(MailboxConfig::Graph(settings)) = MailboxConfig::from_mailbox(mailbox) else {
            return Err("not a Graph mailbox".into());
        };
        let (Some(connection_id), Some(broker)) = (mailbox.connection_id, pipeline.broker.as_ref()) else {
            return Err("no service connection".into());
        };
        match broker.signed_in_user(connection_id).await {
            Ok(None) => Ok(()),
            Ok(Some(user)) if user.eq_ignore_ascii_case(&settings.address) => Ok(()),
            Ok(Some(user)) if user.is_empty() => {
                Err("the delegated connection has no signed-in user yet (run Setup Authentication)".into())
            }
            Ok(Some(_)) => Err(format!(
                "delegated access to a shared mailbox ({}) cannot subscribe to Graph change notifications \
                 (Microsoft supports them with application permissions): use an application connection for push",
                settings.address
            )),
            Err(err) => Err(format!("cannot read the mailbox's connection ({err})")),
        }
    }
}

/// How a notification item was taken.
#[derive(Debug, PartialEq, Eq)]
enum Accepted {
    Taken,
    /// Its `clientState` is not the subscription's: not from Graph.
    Forged,
    /// A subscription no mailbox of this node has: told to the node that
    /// holds the mailbox.
    Relayed,
    /// A subscription no mailbox has (any more).
    Unknown,
}

/// A subscription in force.
struct Active {
    id: String,
    expires_at: DateTime<Utc>,
    renew_at: DateTime<Utc>,
}

/// One mailbox's subscription, while its watcher runs; its route goes
/// with it (a watcher ends when the mailbox's lease does).
struct Watch<'a> {
    push: &'a GraphPush,
    pipeline: &'a Pipeline,
    mailbox: &'a Mailbox,
    arrived: &'a Arc<Notify>,
    tx: mpsc::UnboundedSender<(String, Lifecycle)>,
    active: Option<Active>,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.drop_active();
    }
}

impl Watch<'_> {
    async fn subscriber(&self) -> Result<GraphSubscriber, PollError> {
        self.pipeline.graph_subscriber(self.mailbox).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, PollError> {
        let store = self.push.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(store.as_ref())).await??)
    }

    fn drop_active(&mut self) {
        if let Some(active) = self.active.take() {
            self.push.routes().remove(&active.id);
        }
    }

    /// Drops the subscription here and in the store: Graph ended it.
    async fn forget_active(&mut self) {
        let Some(active) = self.active.as_ref() else { return };
        let (mailbox_id, id) = (self.mailbox.id, active.id.clone());
        let forgotten = self
            .blocking(move |s| match s.push_subscription(mailbox_id)? {
                Some(stored) if stored.subscription_id == id => s.forget_push_subscription(mailbox_id),
                _ => Ok(()),
            })
            .await;
        if let Err(err) = forgotten {
            tracing::warn!(mailbox = %self.mailbox.name, error = %err, "could not forget the ended subscription");
        }
        self.drop_active();
    }

    fn activate(&mut self, id: String, client_state: Secret, expires_at: DateTime<Utc>) {
        let renew_at = Utc::now() + (expires_at - Utc::now()) / 2;
        let route = Route {
            mailbox_id: self.mailbox.id,
            client_state,
            arrived: self.arrived.clone(),
            lifecycle: self.tx.clone(),
        };
        self.push.routes().insert(id.clone(), route);
        self.active = Some(Active { id, expires_at, renew_at });
    }

    /// Takes up the stored subscription if it is still good, else makes a
    /// new one; then polls, for mail that came while none listened.
    async fn establish(&mut self) -> Result<(), PollError> {
        let id = self.mailbox.id;
        let notification_url = self.push.notification_url();
        let watching = watching(self.mailbox);
        let stored = self.blocking(move |s| s.push_subscription(id)).await?;
        if let Some(stored) = stored {
            let context = client_state_context(id);
            let good = stored.notification_url == notification_url
                && stored.watching == watching
                && parse_time(&stored.expires_at).is_some_and(|t| t > Utc::now() + chrono::Duration::seconds(5));
            match self.push.secrets.open_str(&stored.sealed_client_state, &context) {
                Ok(client_state) if good => {
                    let expires_at = parse_time(&stored.expires_at).unwrap_or_else(Utc::now);
                    tracing::info!(mailbox = %self.mailbox.name, subscription = %stored.subscription_id, %expires_at, "Graph change notifications: taking up the stored subscription");
                    self.activate(stored.subscription_id, client_state, expires_at);
                    self.arrived.notify_one();
                    return Ok(());
                }
                _ => {
                    // Expired, for another URL, or sealed with a key gone:
                    // end it (Graph may still have it) and start afresh.
                    if let Err(err) = self.subscriber().await?.delete(&stored.subscription_id).await {
                        tracing::debug!(mailbox = %self.mailbox.name, error = %err, "could not delete an old subscription; it expires by itself");
                    }
                }
            }
        }
        let client_state = new_client_state();
        let asked = Utc::now() + self.push.lifetime;
        let request = SubscriptionRequest {
            notification_url: &notification_url,
            lifecycle_url: &self.push.lifecycle_url(),
            client_state: client_state.expose(),
            expires_at: asked,
        };
        let subscription = self.subscriber().await?.subscribe(&request).await?;
        let now = now_text();
        let record = PushSubscription {
            mailbox_id: id,
            subscription_id: subscription.id.clone(),
            sealed_client_state: self.push.secrets.seal_str(&client_state, &client_state_context(id)),
            notification_url,
            watching,
            expires_at: time_text(subscription.expires_at),
            created_at: now,
            renewed_at: None,
        };
        if let Err(err) = self.blocking(move |s| s.save_push_subscription(&record)).await {
            // Not stored, it would be found by no one: end it at Graph.
            if let Ok(subscriber) = self.subscriber().await {
                let _ = subscriber.delete(&subscription.id).await;
            }
            return Err(err);
        }
        // Said once stored: a process started after this line takes it up.
        tracing::info!(mailbox = %self.mailbox.name, subscription = %subscription.id, expires_at = %subscription.expires_at, "Graph change notifications: subscribed");
        self.activate(subscription.id, client_state, subscription.expires_at);
        self.arrived.notify_one();
        Ok(())
    }

    /// Moves the subscription's end on; when Graph no longer knows it, the
    /// next turn subscribes again. A failed renewal is tried again in a
    /// while, until the subscription runs out.
    async fn renew(&mut self) {
        let Some(active) = self.active.as_ref() else { return };
        let (id, expires_at) = (active.id.clone(), active.expires_at);
        let asked = Utc::now() + self.push.lifetime;
        let renewed = match self.subscriber().await {
            Ok(subscriber) => subscriber.renew(&id, asked).await.map_err(PollError::from),
            Err(err) => Err(err),
        };
        match renewed {
            Ok(Some(subscription)) => {
                let mailbox_id = self.mailbox.id;
                let (until, renewed_at) = (time_text(subscription.expires_at), now_text());
                let renewed_id = id.clone();
                let saved = self
                    .blocking(move |s| {
                        let Some(mut record) = s.push_subscription(mailbox_id)? else { return Ok(()) };
                        if record.subscription_id != renewed_id {
                            return Ok(());
                        }
                        record.expires_at = until;
                        record.renewed_at = Some(renewed_at);
                        s.save_push_subscription(&record)
                    })
                    .await;
                if let Err(err) = saved {
                    tracing::warn!(mailbox = %self.mailbox.name, error = %err, "could not record the renewed subscription");
                }
                tracing::info!(mailbox = %self.mailbox.name, subscription = %id, expires_at = %subscription.expires_at, "Graph change notifications: subscription renewed");
                if let Some(active) = self.active.as_mut() {
                    active.expires_at = subscription.expires_at;
                    active.renew_at = Utc::now() + (subscription.expires_at - Utc::now()) / 2;
                }
            }
            Ok(None) => {
                tracing::info!(mailbox = %self.mailbox.name, subscription = %id, "Graph no longer knows the subscription; subscribing again");
                self.forget_active().await;
            }
            Err(err) if expires_at <= Utc::now() + chrono::Duration::seconds(60) => {
                tracing::warn!(mailbox = %self.mailbox.name, error = %err, "the subscription ran out before it could be renewed; subscribing again");
                self.forget_active().await;
            }
            Err(err) => {
                let retry = ((expires_at - Utc::now()) / 4).max(chrono::Duration::seconds(30));
                tracing::warn!(mailbox = %self.mailbox.name, error = %err, retry_in_s = retry.num_seconds(), "could not renew the Graph subscription; trying again");
                if let Some(active) = self.active.as_mut() {
                    active.renew_at = Utc::now() + retry.min(chrono::Duration::seconds(3600));
                }
            }
        }
    }
}

/// One item of a notification collection: a change notification, or a
/// lifecycle notification (with `lifecycleEvent`). The rest is not read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationItem {
    subscription_id: String,
    #[serde(default)]
    client_state: Option<String>,
    #[serde(default)]
    lifecycle_event: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NotificationCollection {
    value: Vec<NotificationItem>,
}

#[derive(Debug, Deserialize)]
struct ValidationQuery {
    #[serde(rename = "validationToken")]
    validation_token: Option<String>,
}

/// The two endpoints Graph posts to.
pub fn router(push: Arc<GraphPush>) -> Router {
    Router::new().route(NOTIFICATION_PATH, post(receive)).route(LIFECYCLE_PATH, post(receive)).with_state(push)
}

/// A validation request (echo the token as plain text) or a notification
/// collection (202 at once; each item checked by its `clientState`).
async fn receive(State(push): State<Arc<GraphPush>>, Query(query): Query<ValidationQuery>, body: Bytes) -> Response {
    if let Some(token) = query.validation_token {
        if token.len() > MAX_VALIDATION_TOKEN {
            return (StatusCode::BAD_REQUEST, "validation token too long").into_response();
        }
        tracing::info!("Graph validated the notification URL");
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], token).into_response();
    }
    let collection: NotificationCollection = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(_) => return (StatusCode::BAD_REQUEST, "not a Graph notification collection").into_response(),
    };
    let mut elsewhere = Vec::new();
    for item in collection.value {
        match push.accept(&item) {
            Accepted::Unknown => elsewhere.push(item),
            taken => log_notification(&item, taken),
        }
    }
    // Graph batches a few notifications per request; a stranger's body full
    // of made-up ids costs at most this many store reads.
    elsewhere.sort_by(|a, b| a.subscription_id.cmp(&b.subscription_id));
    elsewhere.dedup_by(|a, b| a.subscription_id == b.subscription_id && a.lifecycle_event == b.lifecycle_event);
    elsewhere.truncate(MAX_RELAYED);
    if !elsewhere.is_empty() {
        // Graph wants its answer within 3 s: the store is asked after it.
        tokio::task::spawn_blocking(move || {
            for item in elsewhere {
                match push.relay(&item) {
                    Ok(outcome) => log_notification(&item, outcome),
                    Err(err) => {
                        tracing::warn!(subscription = %item.subscription_id, error = %err, "could not pass a Graph notification on")
                    }
                }
            }
        });
    }
    StatusCode::ACCEPTED.into_response()
}

fn log_notification(item: &NotificationItem, outcome: Accepted) {
    let subscription = &item.subscription_id;
    match outcome {
        Accepted::Taken => tracing::debug!(%subscription, lifecycle = ?item.lifecycle_event, "Graph notification"),
        Accepted::Relayed => {
            tracing::debug!(%subscription, "Graph notification for a mailbox another node holds; passed on")
        }
        Accepted::Forged => {
            metrics::counter!("mailrobot_graph_notifications_refused_total").increment(1);
            tracing::warn!(%subscription, "a Graph notification with a wrong clientState was ignored (not sent by Graph?)");
        }
        Accepted::Unknown => tracing::debug!(%subscription, "a Graph notification for a subscription no mailbox has"),
    }
}

/// What a mailbox's subscription watches, as stored: a subscription made
/// for another connection, address or folder is not taken up.
fn watching(mailbox: &Mailbox) -> String {
    match MailboxConfig::from_mailbox(mailbox) {
        Ok(MailboxConfig::Graph(s)) => {
            format!("connection {}: {} {}", mailbox.connection_id.unwrap_or(0), s.address.to_lowercase(), s.folder)
        }
        _ => String::new(),
    }
}

/// A new random `clientState` (256 bits in hex: 64 characters).
fn new_client_state() -> Secret {
    use rand::RngCore as _;
    use std::fmt::Write as _;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let state = Secret::new(bytes.iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    }));
    debug_assert!(state.expose().len() <= mailrobot_sources::graph_subscriptions::MAX_CLIENT_STATE);
    state
}

/// Compares secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&Utc))
}

fn time_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn now_text() -> String {
    time_text(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_posts_to_https_or_to_loopback_for_trials() {
        assert_eq!(unreachable_reason("https://robot.example.com"), None);
        assert_eq!(unreachable_reason("http://127.0.0.1:8025"), None);
        assert_eq!(unreachable_reason("http://localhost:8025"), None);
        assert!(unreachable_reason("http://robot.example.com").is_some_and(|r| r.contains("https")));
        assert!(unreachable_reason("http://10.0.0.5:8025").is_some());
    }

    #[test]
    fn lifecycle_events_are_read_in_any_case() {
        assert_eq!(Lifecycle::parse("reauthorizationRequired"), Some(Lifecycle::ReauthorizationRequired));
        assert_eq!(Lifecycle::parse("SubscriptionRemoved"), Some(Lifecycle::SubscriptionRemoved));
        assert_eq!(Lifecycle::parse("missed"), Some(Lifecycle::Missed));
        assert_eq!(Lifecycle::parse("somethingNew"), None);
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }

    #[test]
    fn client_states_are_random_and_fit_graph() {
        let (a, b) = (new_client_state(), new_client_state());
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 64);
    }
}
