//! Microsoft Graph change notifications through webhooks, for Outlook messages: `/v1.0/subscriptions`
//! (create with the validation handshake, list, get, renew, delete, reauthorize), change
//! notifications when messages are created, updated or deleted in a subscribed folder or mailbox,
//! lifecycle notifications (`reauthorizationRequired`, `subscriptionRemoved`, `missed`), and the
//! test hooks around them (admin API and `Emulator` methods).
//!
//! Written from Microsoft's documentation: change-notifications-delivery-webhooks (validation,
//! 2xx within 3 seconds, retries for up to 4 hours), change-notifications-lifecycle-events,
//! outlook-change-notifications-overview (resources, permissions, payloads), the subscription
//! resource and its methods, change-notifications-overview (lifetimes), outlook-immutable-id.
//! Error codes Microsoft does not document are the ones developers report from the service
//! (`InvalidRequest` for failed validations, `ExtensionError` for Outlook's refusals and the
//! lifetime limit); where neither exists the wording is the emulator's (README).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::EmulatorError;
use crate::graph::{GraphError, GraphRequest};
use crate::mail::{ChangeKind, MailChange};
use crate::mailauth::{Caller, Denied};
use crate::notify::{Attempt, PostError};
use crate::state::Emu;

/// Notifications of one delivery (one POST) at most: Graph batches several in one `value` array.
const MAX_BATCH: usize = 20;
/// Entries kept in the notification log (oldest dropped first).
const MAX_RECORDS: usize = 10_000;
/// Longest `clientState` (subscription resource: "The maximum length is 128 characters").
const MAX_CLIENT_STATE: usize = 128;
/// `latestSupportedTlsVersion` values the subscription resource lists.
const TLS_VERSIONS: [&str; 4] = ["v1_0", "v1_1", "v1_2", "v1_3"];

/// How the emulator runs change notifications; Microsoft's values by default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationPolicy {
    /// Longest subscription lifetime for Outlook messages: 10,080 minutes (under 7 days) in the
    /// current lifetime table; older pages and the service's own error said 4,230.
    pub max_expiration_minutes: i64,
    /// Shorter lifetimes asked for are raised to this ("if the requested
    /// expirationDateTime is less than 45 minutes, it is automatically set
    /// to 45 minutes"); tests lower it to see renewals within seconds.
    pub min_expiration_minutes: i64,
    /// Time the notification URL has to answer the validation request (10 seconds).
    pub validation_timeout_ms: u64,
    /// Time a receiver has to answer a notification with a 2xx (3 seconds).
    pub delivery_timeout_ms: u64,
    /// First wait before retrying a failed delivery; doubled after each failure…
    pub retry_initial_ms: u64,
    /// …up to this.
    pub retry_max_ms: u64,
    /// Failed deliveries are retried this long (emulator clock) after they were first due, then
    /// dropped (Graph: "for up to 4 hours"); a dropped change notification triggers a `missed`
    /// lifecycle notification.
    pub retry_window_seconds: i64,
    /// `reauthorizationRequired` is sent once when a subscription with a lifecycle URL has less
    /// than this left, and at most half of the lifetime it was given at creation or renewal
    /// (Microsoft does not fix the cadence).
    pub reauthorization_notice_minutes: i64,
    /// Accept `http://` notification URLs on loopback hosts (Graph requires HTTPS everywhere).
    pub http_loopback: bool,
}

impl Default for NotificationPolicy {
    fn default() -> Self {
        NotificationPolicy {
            max_expiration_minutes: 10_080,
            min_expiration_minutes: 45,
            validation_timeout_ms: 10_000,
            delivery_timeout_ms: 3_000,
            retry_initial_ms: 1_000,
            retry_max_ms: 300_000,
            retry_window_seconds: 4 * 3600,
            reauthorization_notice_minutes: 60,
            http_loopback: true,
        }
    }
}

/// The lifecycle notifications Graph sends to `lifecycleNotificationUrl`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum LifecycleEvent {
    /// The app must reauthorize (`POST /subscriptions/{id}/reauthorize`) or renew (PATCH).
    ReauthorizationRequired,
    /// The subscription is gone; create a new one and resynchronise.
    SubscriptionRemoved,
    /// Some change notifications were not delivered; resynchronise (delta).
    Missed,
}

impl LifecycleEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleEvent::ReauthorizationRequired => "reauthorizationRequired",
            LifecycleEvent::SubscriptionRemoved => "subscriptionRemoved",
            LifecycleEvent::Missed => "missed",
        }
    }
}

/// A subscription as the admin API and [`crate::Emulator::subscriptions`] show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubscriptionInfo {
    pub id: String,
    pub tenant_id: String,
    /// `resource` as the client wrote it.
    pub resource: String,
    /// The mailbox's address and the folder's id (`None`: the whole mailbox).
    pub mailbox: String,
    pub folder_id: Option<String>,
    pub change_type: String,
    pub notification_url: String,
    pub lifecycle_notification_url: Option<String>,
    pub client_state: Option<String>,
    pub expiration: DateTime<Utc>,
    pub application_id: String,
    pub creator_id: String,
    /// Created with `Prefer: IdType="ImmutableId"`: notifications carry immutable ids.
    pub immutable_ids: bool,
    /// A `reauthorizationRequired` was sent and neither reauthorize nor a renewal followed.
    pub reauthorization_required: bool,
}

/// Makes deliveries (not validation requests) to some URLs fail without contacting them
/// (`POST /_admin/notifications/faults`, [`crate::Emulator::fail_notifications`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationFault {
    /// Deliveries to URLs starting with this fail; empty: every URL.
    pub url: String,
    /// This many attempts fail, then the fault is used up.
    pub count: Option<u32>,
    /// Attempts in the next `ms` milliseconds fail. Neither `count` nor `ms`: until cleared.
    pub ms: Option<u64>,
}

/// One request the emulator made to a receiver: a validation request or a delivery attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NotificationRecord {
    /// `validation`, `change` or `lifecycle`.
    pub kind: String,
    pub url: String,
    pub subscription_ids: Vec<String>,
    /// What was sent: the notification collection, or `{"validationToken": …}`.
    pub body: Value,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `delivered`, `failed` (to be retried), `dropped` (given up), `validated` or `refused`.
    pub outcome: String,
    /// The receiver's HTTP status, when it answered in time.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub elapsed_ms: u64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Subscription {
    id: String,
    tenant_id: String,
    mailbox_id: String,
    mailbox_address: String,
    folder_id: Option<String>,
    resource: String,
    change_types: Vec<ChangeKind>,
    change_type: String,
    notification_url: String,
    lifecycle_url: Option<String>,
    client_state: Option<String>,
    expiration: DateTime<Utc>,
    /// The lifetime given at creation or the last renewal (milliseconds).
    lifetime_ms: i64,
    application_id: String,
    creator_id: String,
    /// The signed-in user it was created for (delegated), or none (app-only).
    user_oid: Option<String>,
    tls_version: String,
    immutable: bool,
    /// Mailbox changes up to this change number happened before the subscription existed.
    start_seq: u64,
    reauth_noticed: bool,
    reauth_required: bool,
}

impl Subscription {
    fn expiration_ms(&self) -> i64 {
        self.expiration.timestamp_millis()
    }

    fn info(&self) -> SubscriptionInfo {
        SubscriptionInfo {
            id: self.id.clone(),
            tenant_id: self.tenant_id.clone(),
            resource: self.resource.clone(),
            mailbox: self.mailbox_address.clone(),
            folder_id: self.folder_id.clone(),
            change_type: self.change_type.clone(),
            notification_url: self.notification_url.clone(),
            lifecycle_notification_url: self.lifecycle_url.clone(),
            client_state: self.client_state.clone(),
            expiration: self.expiration,
            application_id: self.application_id.clone(),
            creator_id: self.creator_id.clone(),
            immutable_ids: self.immutable,
            reauthorization_required: self.reauth_required,
        }
    }

    /// The subscription resource as Graph answers it.
    fn json(&self, base_url: &str, with_client_state: bool) -> Value {
        json!({
            "@odata.context": format!("{base_url}/v1.0/$metadata#subscriptions/$entity"),
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": self.change_type,
            "clientState": if with_client_state { json!(self.client_state) } else { Value::Null },
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": null,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": graph_time(&self.expiration),
            "creatorId": self.creator_id,
            "includeResourceData": false,
            "latestSupportedTlsVersion": self.tls_version,
            "encryptionCertificate": null,
            "encryptionCertificateId": null,
            "notificationUrlAppId": null,
            "notificationContentType": "application/json",
        })
    }

    fn lifecycle_item(&self, event: LifecycleEvent) -> Value {
        json!({
            "subscriptionId": self.id,
            "subscriptionExpirationDateTime": graph_time(&self.expiration),
            "tenantId": self.tenant_id,
            "clientState": self.client_state,
            "lifecycleEvent": event.as_str(),
        })
    }

    /// A change notification without resource data, as outlook-change-notifications-overview shows.
    fn change_item(&self, c: &MailChange) -> Value {
        let id = if self.immutable { &c.immutable_id } else { &c.rest_id };
        let path = format!("Users/{}/Messages/{id}", self.mailbox_id);
        json!({
            "subscriptionId": self.id,
            "subscriptionExpirationDateTime": graph_time(&self.expiration),
            "changeType": c.kind.as_str(),
            "resource": path,
            "resourceData": {
                "@odata.type": "#Microsoft.Graph.Message",
                "@odata.id": path,
                "@odata.etag": format!("W/\"{}\"", c.change_key),
                "id": id,
            },
            "clientState": self.client_state,
            "tenantId": self.tenant_id,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Change,
    Lifecycle,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Change => "change",
            Kind::Lifecycle => "lifecycle",
        }
    }
}

#[derive(Debug, Clone)]
struct Item {
    subscription_id: String,
    value: Value,
}

/// Notifications waiting for one POST to a URL, with its retry state.
#[derive(Debug)]
struct Delivery {
    id: u64,
    kind: Kind,
    items: Vec<Item>,
    attempts: u32,
    /// When it was first due (emulator clock): the retry window counts from here.
    due_ms: i64,
    /// Not before this (after a failure).
    next_at: Option<Instant>,
    in_flight: bool,
}

#[derive(Debug)]
struct ActiveFault {
    url: String,
    remaining: Option<u32>,
    until: Option<Instant>,
}

/// Subscriptions, deliveries in progress per URL, and the log of requests made.
#[derive(Debug, Default)]
pub(crate) struct SubStore {
    subs: Vec<Subscription>,
    queues: BTreeMap<String, VecDeque<Delivery>>,
    records: VecDeque<NotificationRecord>,
    faults: Vec<ActiveFault>,
    policy: NotificationPolicy,
    trusted_cas: Vec<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    next_delivery: u64,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl SubStore {
    pub fn reset(&mut self) {
        *self = SubStore::default();
    }

    fn record(&mut self, r: NotificationRecord) {
        if self.records.len() >= MAX_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(r);
    }

    fn find(&self, id: &str) -> Option<&Subscription> {
        self.subs.iter().find(|s| s.id.eq_ignore_ascii_case(id))
    }

    fn enqueue(&mut self, url: &str, kind: Kind, item: Item, now_ms: i64) {
        let queue = self.queues.entry(url.to_string()).or_default();
        if let Some(last) = queue.back_mut()
            && last.kind == kind
            && last.attempts == 0
            && !last.in_flight
            && last.items.len() < MAX_BATCH
        {
            last.items.push(item);
            return;
        }
        self.next_delivery += 1;
        queue.push_back(Delivery {
            id: self.next_delivery,
            kind,
            items: vec![item],
            attempts: 0,
            due_ms: now_ms,
            next_at: None,
            in_flight: false,
        });
    }

    /// Queues a lifecycle notification; false when the subscription has no lifecycle URL (Graph
    /// sends none then: "Existing subscriptions without a lifecycleNotificationUrl property don't
    /// receive the lifecycle notifications").
    fn lifecycle(&mut self, sub: &Subscription, event: LifecycleEvent, now_ms: i64) -> bool {
        let Some(url) = sub.lifecycle_url.clone() else {
            tracing::info!(subscription = %sub.id, event = event.as_str(), "no lifecycleNotificationUrl: not sent");
            return false;
        };
        let item = Item { subscription_id: sub.id.clone(), value: sub.lifecycle_item(event) };
        self.enqueue(&url, Kind::Lifecycle, item, now_ms);
        true
    }

    /// Removes subscriptions past their expiration: Graph deletes them and stops notifying.
    pub fn expire(&mut self, now_ms: i64) {
        self.subs.retain(|s| {
            let alive = s.expiration_ms() > now_ms;
            if !alive {
                tracing::info!(subscription = %s.id, "subscription expired and removed");
            }
            alive
        });
    }

    /// `reauthorizationRequired` once for subscriptions close to their end.
    pub fn reauthorization_notices(&mut self, now_ms: i64) {
        let notice_ms = self.policy.reauthorization_notice_minutes * 60_000;
        let due: Vec<usize> = (0..self.subs.len())
            .filter(|&i| {
                let s = &self.subs[i];
                let left = s.expiration_ms() - now_ms;
                !s.reauth_noticed && s.lifecycle_url.is_some() && left <= notice_ms && left <= s.lifetime_ms / 2
            })
            .collect();
        for i in due {
            self.subs[i].reauth_noticed = true;
            self.subs[i].reauth_required = true;
            let sub = self.subs[i].clone();
            self.lifecycle(&sub, LifecycleEvent::ReauthorizationRequired, now_ms);
        }
    }

    /// Change notifications for the changes of one mailbox.
    pub fn notify_changes(&mut self, mailbox_id: &str, changes: &[MailChange], now_ms: i64) {
        let mut out: Vec<(String, Item)> = Vec::new();
        for c in changes {
            for s in self.subs.iter().filter(|s| s.mailbox_id == mailbox_id && c.seq > s.start_seq) {
                let folder_ok = s.folder_id.as_ref().is_none_or(|f| *f == c.folder);
                if folder_ok && s.change_types.contains(&c.kind) && s.expiration_ms() > now_ms {
                    out.push((
                        s.notification_url.clone(),
                        Item { subscription_id: s.id.clone(), value: s.change_item(c) },
                    ));
                }
            }
        }
        for (url, item) in out {
            self.enqueue(&url, Kind::Change, item, now_ms);
        }
    }

    /// Drops deliveries whose retry window is over; `missed` for the subscriptions whose change
    /// notifications were lost.
    pub fn drop_stale(&mut self, now_ms: i64) {
        let window_ms = self.policy.retry_window_seconds * 1000;
        let mut dropped: Vec<(String, Delivery)> = Vec::new();
        for (url, queue) in self.queues.iter_mut() {
            let mut keep = VecDeque::with_capacity(queue.len());
            for d in queue.drain(..) {
                if !d.in_flight && d.attempts > 0 && now_ms - d.due_ms > window_ms {
                    dropped.push((url.clone(), d));
                } else {
                    keep.push_back(d);
                }
            }
            *queue = keep;
        }
        self.queues.retain(|_, q| !q.is_empty());
        let mut missed: Vec<String> = Vec::new();
        for (url, d) in dropped {
            tracing::warn!(url, attempts = d.attempts, "notification dropped after its retry window");
            self.record(NotificationRecord {
                kind: d.kind.as_str().into(),
                url,
                subscription_ids: d.items.iter().map(|i| i.subscription_id.clone()).collect(),
                body: json!({"value": d.items.iter().map(|i| i.value.clone()).collect::<Vec<_>>()}),
                attempt: d.attempts,
                outcome: "dropped".into(),
                status: None,
                error: Some("retry window over".into()),
                elapsed_ms: 0,
                at: at(now_ms),
            });
            if d.kind == Kind::Change {
                for i in d.items {
                    if !missed.contains(&i.subscription_id) {
                        missed.push(i.subscription_id);
                    }
                }
            }
        }
        for id in missed {
            if let Some(sub) = self.find(&id).cloned() {
                self.lifecycle(&sub, LifecycleEvent::Missed, now_ms);
            }
        }
    }

    /// Marks the deliveries to start now (the first waiting one per URL) as in flight.
    pub fn due_attempts(&mut self, now: Instant) -> Vec<Attempt> {
        let timeout = Duration::from_millis(self.policy.delivery_timeout_ms);
        let mut out = Vec::new();
        let urls: Vec<String> = self.queues.keys().cloned().collect();
        for url in urls {
            let live: Vec<String> = self.subs.iter().map(|s| s.id.clone()).collect();
            let queue = self.queues.get_mut(&url).expect("listed");
            // Change notifications of subscriptions deleted or expired meanwhile are not sent.
            while let Some(head) = queue.front_mut() {
                if head.kind == Kind::Change && !head.in_flight {
                    head.items.retain(|i| live.contains(&i.subscription_id));
                    if head.items.is_empty() {
                        queue.pop_front();
                        continue;
                    }
                }
                break;
            }
            let Some(head) = queue.front_mut() else { continue };
            if head.in_flight || head.next_at.is_some_and(|t| t > now) {
                continue;
            }
            head.in_flight = true;
            let body = json!({"value": head.items.iter().map(|i| i.value.clone()).collect::<Vec<_>>()});
            let delivery = head.id;
            let faulted = self.take_fault(&url, now);
            out.push(Attempt {
                delivery,
                url: url.clone(),
                body: serde_json::to_vec(&body).expect("serializable"),
                tls: self.tls.clone(),
                timeout,
                faulted,
            });
        }
        self.queues.retain(|_, q| !q.is_empty());
        out
    }

    fn take_fault(&mut self, url: &str, now: Instant) -> bool {
        self.faults.retain(|f| f.remaining != Some(0) && f.until.is_none_or(|u| u > now));
        match self.faults.iter_mut().find(|f| url.starts_with(&f.url)) {
            Some(f) => {
                if let Some(n) = f.remaining.as_mut() {
                    *n -= 1;
                }
                true
            }
            None => false,
        }
    }

    /// The outcome of an attempt: delivered (2xx in time) or to be retried after a backoff.
    pub fn finish(
        &mut self,
        delivery: u64,
        result: Result<crate::notify::Answer, PostError>,
        elapsed: Duration,
        now_ms: i64,
        now: Instant,
    ) {
        let Some((url, pos)) =
            self.queues.iter().find_map(|(u, q)| q.iter().position(|d| d.id == delivery).map(|p| (u.clone(), p)))
        else {
            return;
        };
        let (initial, max) = (self.policy.retry_initial_ms, self.policy.retry_max_ms);
        let queue = self.queues.get_mut(&url).expect("found");
        let d = &mut queue[pos];
        d.in_flight = false;
        d.attempts += 1;
        let ok = matches!(&result, Ok(a) if (200..300).contains(&a.status));
        let record = NotificationRecord {
            kind: d.kind.as_str().into(),
            url: url.clone(),
            subscription_ids: d.items.iter().map(|i| i.subscription_id.clone()).collect(),
            body: json!({"value": d.items.iter().map(|i| i.value.clone()).collect::<Vec<_>>()}),
            attempt: d.attempts,
            outcome: if ok { "delivered" } else { "failed" }.into(),
            status: result.as_ref().ok().map(|a| a.status),
            error: match &result {
                Ok(a) if !ok => Some(format!("HTTP {}", a.status)),
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            },
            elapsed_ms: elapsed.as_millis() as u64,
            at: at(now_ms),
        };
        if ok {
            queue.remove(pos);
        } else {
            let shift = (d.attempts - 1).min(20);
            let wait = initial.saturating_mul(1u64 << shift).min(max.max(initial));
            d.next_at = Some(now + Duration::from_millis(wait));
            tracing::info!(url, attempt = d.attempts, retry_in_ms = wait, error = ?record.error, "notification delivery failed");
        }
        if queue.is_empty() {
            self.queues.remove(&url);
        }
        self.record(record);
    }
}

/// Graph's date-time with 7 fractional digits: `2016-11-20T18:23:45.9356913Z`.
fn graph_time(t: &DateTime<Utc>) -> String {
    format!("{}.{:07}Z", t.format("%Y-%m-%dT%H:%M:%S"), t.timestamp_subsec_nanos() / 100)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| chrono::NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S%.f").ok().map(|n| n.and_utc()))
}

/// Percent-encoding of everything but RFC 3986's unreserved characters (spaces as `%20`).
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn invalid(message: impl Into<String>) -> GraphError {
    GraphError::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
}

/// Outlook's refusals as Graph relays them: `ExtensionError`, "Operation: Create; Exception:
/// [Status Code: Forbidden; Reason: …]".
fn extension(status: StatusCode, op: &str, reason: &str) -> GraphError {
    let name = match status {
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::BAD_REQUEST => "BadRequest",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    GraphError::new(
        status,
        "ExtensionError",
        format!("Operation: {op}; Exception: [Status Code: {name}; Reason: {reason}]"),
    )
}

fn denied(d: Denied, op: &str) -> GraphError {
    match d {
        Denied::NoMailbox(u) => extension(StatusCode::NOT_FOUND, op, &format!("The requested user '{u}' is invalid.")),
        Denied::RestDisabled => extension(StatusCode::NOT_FOUND, op, "REST API is not yet supported for this mailbox."),
        Denied::Forbidden => extension(StatusCode::FORBIDDEN, op, "Access is denied. Check credentials and try again."),
        Denied::Policy => extension(
            StatusCode::FORBIDDEN,
            op,
            "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.",
        ),
        other => GraphError::from(other),
    }
}

fn not_found() -> GraphError {
    GraphError::new(StatusCode::NOT_FOUND, "ResourceNotFound", "The subscription was not found.")
}

/// Where a `resource` points: a user (or `me`) and a folder (or the whole mailbox).
#[derive(Debug, PartialEq)]
struct ResourceRef {
    user: Option<String>,
    folder: Option<String>,
}

/// Reads the message resources: `me/messages`, `users/{id|upn}/messages`,
/// `{me|users/{id}}/mailFolders/{id|name}/messages` (also `mailFolders('inbox')`, nested
/// `childFolders/{id}`), segment names in any case, with or without a leading `/`.
fn parse_resource(resource: &str) -> Result<ResourceRef, GraphError> {
    let unsupported = || {
        invalid(format!(
            "Unsupported resource '{resource}': the emulator serves subscriptions to messages \
             (me/messages, users/{{id}}/messages, users/{{id}}/mailFolders/{{id}}/messages)."
        ))
    };
    if resource.contains('?') {
        return Err(invalid(format!(
            "Resource '{resource}': query options ($filter, $select) in subscriptions are not emulated."
        )));
    }
    let segs = crate::graph::segments(resource);
    let is = |s: &String, name: &str| s.eq_ignore_ascii_case(name);
    let (user, rest) = match segs.as_slice() {
        [me, rest @ ..] if is(me, "me") => (None, rest),
        [users, u, rest @ ..] if is(users, "users") => (Some(u.clone()), rest),
        _ => return Err(unsupported()),
    };
    let folder = match rest {
        [m] if is(m, "messages") => None,
        [mf, f, tail @ ..] if is(mf, "mailFolders") => {
            let mut folder = f.clone();
            let mut tail = tail;
            while let [cf, c, more @ ..] = tail {
                if !is(cf, "childFolders") {
                    break;
                }
                folder = c.clone();
                tail = more;
            }
            match tail {
                [m] if is(m, "messages") => Some(folder),
                _ => return Err(unsupported()),
            }
        }
        _ => return Err(unsupported()),
    };
    Ok(ResourceRef { user, folder })
}

/// A resolved and authorised resource.
struct Target {
    tenant_id: String,
    mailbox_id: String,
    address: String,
    folder_id: Option<String>,
}

/// Whether the caller may subscribe to (and manage subscriptions on) the mailbox: a read
/// permission on messages, and for delegated callers only their own mailbox ("Delegated permission
/// supports subscribing to items in folders in only the signed-in user's mailbox"; the `.Shared`
/// permissions "do not support subscribing to change notifications on items in shared or
/// delegated folders"). App-only callers: any mailbox of the tenant, within the app's application
/// access policy.
fn may_subscribe(c: &Caller, mail: &crate::mail::MailStore, mb: &crate::mail::Mailbox) -> Result<(), Denied> {
    match &c.user {
        Some((oid, _)) => {
            if mb.owner_oid.as_deref() != Some(oid.as_str()) {
                return Err(Denied::Forbidden);
            }
            let read = [
                "Mail.ReadBasic",
                "Mail.Read",
                "Mail.ReadWrite",
                "Mail.ReadBasic.Shared",
                "Mail.Read.Shared",
                "Mail.ReadWrite.Shared",
            ];
            if !c.has(&read) {
                return Err(Denied::Forbidden);
            }
        }
        None => {
            if !c.has(&["Mail.ReadBasic", "Mail.ReadBasic.All", "Mail.Read", "Mail.ReadWrite"]) {
                return Err(Denied::Forbidden);
            }
            if mail.blocked_by_policy(mb, &c.client_id) {
                return Err(Denied::Policy);
            }
        }
    }
    Ok(())
}

fn resolve(emu: &Emu, c: &Caller, r: &ResourceRef, op: &str) -> Result<Target, GraphError> {
    let user = match &r.user {
        Some(u) => u.clone(),
        None => c.user.as_ref().map(|u| u.1.clone()).ok_or_else(|| GraphError::from(Denied::NeedsUser))?,
    };
    let mail = emu.mail();
    let mb = mail
        .find(&user)
        .map(|i| &mail.mailboxes[i])
        .filter(|mb| mb.tenant_id == c.tenant_id)
        .ok_or_else(|| denied(Denied::NoMailbox(user.clone()), op))?;
    if mb.rest_disabled {
        return Err(denied(Denied::RestDisabled, op));
    }
    may_subscribe(c, &mail, mb).map_err(|d| denied(d, op))?;
    let folder_id = match &r.folder {
        None => None,
        Some(key) => Some(
            mb.folder(key)
                .ok_or_else(|| {
                    extension(StatusCode::NOT_FOUND, op, "The specified object was not found in the store.")
                })?
                .id
                .clone(),
        ),
    };
    Ok(Target { tenant_id: mb.tenant_id.clone(), mailbox_id: mb.id.clone(), address: mb.address.clone(), folder_id })
}

/// Checks a notification URL's form: absolute, `https` (or `http` on loopback when allowed).
fn check_url(url: &str, policy: &NotificationPolicy, what: &str) -> Result<(), GraphError> {
    let u = url::Url::parse(url).map_err(|_| invalid(format!("Invalid {what} '{url}'.")))?;
    match u.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match u.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                None => false,
            };
            if loopback && policy.http_loopback {
                Ok(())
            } else {
                // As the service words it (reported in microsoft-graph-docs#2751).
                Err(invalid(format!("{}Url scheme='http' is not supported.", capitalized(what))))
            }
        }
        other => Err(invalid(format!("{}Url scheme='{other}' is not supported.", capitalized(what)))),
    }
}

fn capitalized(what: &str) -> String {
    let base = what.trim_end_matches("Url");
    let mut c = base.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

/// The validation handshake: POST `{url}?validationToken={token}` (`text/plain`), which must be
/// answered 200, `text/plain`, with the decoded token as the whole body, within the policy's
/// timeout (10 s). Any failure refuses the subscription with 400 `InvalidRequest`.
async fn validate(emu: &Arc<Emu>, url: &str) -> Result<(), GraphError> {
    // Observed form of Graph's tokens (microsoft-graph-docs#21160): treat as opaque; its spaces
    // and colon check that the receiver decodes the query.
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        uuid::Uuid::new_v4()
    );
    let sep = if url.contains('?') { '&' } else { '?' };
    let target = format!("{url}{sep}validationToken={}", encode_component(&token));
    let (tls, timeout) = {
        let s = emu.subs();
        (s.tls.clone(), Duration::from_millis(s.policy.validation_timeout_ms))
    };
    let started = Instant::now();
    let result = crate::notify::post(&target, "text/plain; charset=utf-8", Vec::new(), tls, timeout).await;
    let elapsed = started.elapsed();
    let failed = "Subscription validation request failed.";
    let verdict = match &result {
        Err(PostError::Timeout) => Err("Subscription validation request timed out.".to_string()),
        Err(PostError::Failed(e)) => Err(format!("{failed} {e}")),
        Ok(a) if a.status != 200 => {
            Err(format!("{failed} Notification endpoint must respond with 200 OK to validation request."))
        }
        Ok(a)
            if !a.content_type.as_deref().is_some_and(|c| c.trim().to_ascii_lowercase().starts_with("text/plain")) =>
        {
            Err(format!("{failed} Response must have Content-Type text/plain."))
        }
        Ok(a) if a.body.as_ref() != token.as_bytes() => {
            Err(format!("{failed} Response must exactly match validationToken query parameter."))
        }
        Ok(_) => Ok(()),
    };
    let now = emu.clock.now_ms();
    emu.subs().record(NotificationRecord {
        kind: "validation".into(),
        url: url.to_string(),
        subscription_ids: Vec::new(),
        body: json!({"validationToken": token}),
        attempt: 1,
        outcome: if verdict.is_ok() { "validated" } else { "refused" }.into(),
        status: result.as_ref().ok().map(|a| a.status),
        error: verdict.as_ref().err().cloned(),
        elapsed_ms: elapsed.as_millis() as u64,
        at: at(now),
    });
    verdict.map_err(|m| {
        tracing::info!(url, error = %m, "notification URL validation failed");
        invalid(m)
    })
}

/// The body of `POST /subscriptions` and `PATCH /subscriptions/{id}` (unknown properties ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Body {
    change_type: Option<String>,
    notification_url: Option<String>,
    lifecycle_notification_url: Option<String>,
    resource: Option<String>,
    expiration_date_time: Option<String>,
    client_state: Option<String>,
    latest_supported_tls_version: Option<String>,
    include_resource_data: Option<bool>,
    encryption_certificate: Option<String>,
}

fn body(req: &GraphRequest) -> Result<Body, GraphError> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Body::default());
    }
    serde_json::from_slice(&req.body).map_err(|e| {
        GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", format!("Invalid JSON in the request body: {e}"))
    })
}

/// The expiration, checked against the lifetime limit.
fn expiration(raw: &str, emu: &Emu) -> Result<DateTime<Utc>, GraphError> {
    let t = parse_time(raw)
        .ok_or_else(|| invalid(format!("Invalid value '{raw}' for expirationDateTime: not an ISO 8601 date-time.")))?;
    let now = emu.clock.now_ms();
    let max = emu.subs().policy.max_expiration_minutes;
    if t.timestamp_millis() <= now {
        return Err(invalid("Subscription expiration must be in the future."));
    }
    let min = emu.subs().policy.min_expiration_minutes;
    if t.timestamp_millis() - now < min * 60_000 {
        return Ok(at(now + min * 60_000));
    }
    if t.timestamp_millis() - now > max * 60_000 {
        // The service's wording (reported with 4230 in microsoft-graph-docs#2988).
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "ExtensionError",
            format!("Subscription expiration can only be {max} minutes in the future."),
        ));
    }
    Ok(t)
}

fn creator_id(emu: &Emu, c: &Caller) -> String {
    match &c.user {
        Some((oid, _)) => oid.clone(),
        // App-only: the app's service principal (the `oid` of its tokens).
        None => emu.lock().app(&c.client_id).map(|a| a.object_id.clone()).unwrap_or_default(),
    }
}

/// Whether the caller sees the subscription: same tenant and app, and for delegated callers the
/// same user (List subscriptions' basic scenarios).
fn visible(s: &Subscription, c: &Caller) -> bool {
    s.tenant_id == c.tenant_id
        && s.application_id.eq_ignore_ascii_case(&c.client_id)
        && match &c.user {
            Some((oid, _)) => s.user_oid.as_deref() == Some(oid.as_str()),
            None => true,
        }
}

fn ok_json(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

/// `/v1.0/subscriptions[/…]` (`rest`: the segments after `subscriptions`).
pub(crate) async fn handle(
    emu: &Arc<Emu>,
    req: &GraphRequest,
    caller: &Caller,
    rest: &[String],
) -> Result<Response, GraphError> {
    let m = &req.method;
    match rest {
        [] if m == Method::POST => create(emu, req, caller).await,
        [] if m == Method::GET => Ok(list(emu, caller)),
        [id] if m == Method::GET => get_one(emu, caller, id),
        [id] if m == Method::PATCH => update(emu, req, caller, id).await,
        [id] if m == Method::DELETE => delete(emu, caller, id),
        [id, action]
            if m == Method::POST && matches!(action.as_str(), "reauthorize" | "microsoft.graph.reauthorize") =>
        {
            reauthorize(emu, caller, id)
        }
        [] | [_] | [_, _] => Err(GraphError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "The HTTP method is not allowed.",
        )),
        _ => Err(GraphError::new(StatusCode::BAD_REQUEST, "BadRequest", "Resource not found for the segment.")),
    }
}

async fn create(emu: &Arc<Emu>, req: &GraphRequest, caller: &Caller) -> Result<Response, GraphError> {
    let b = body(req)?;
    let required = |v: &Option<String>, name: &str| {
        v.clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| invalid(format!("{name} is a required property for subscription creation.")))
    };
    let change_type = required(&b.change_type, "changeType")?;
    let notification_url = required(&b.notification_url, "notificationUrl")?;
    let resource = required(&b.resource, "resource")?;
    let expiration_raw = required(&b.expiration_date_time, "expirationDateTime")?;
    let mut change_types = Vec::new();
    for t in change_type.split(',').map(str::trim) {
        let kind = match t.to_ascii_lowercase().as_str() {
            "created" => ChangeKind::Created,
            "updated" => ChangeKind::Updated,
            "deleted" => ChangeKind::Deleted,
            _ => return Err(invalid(format!("Invalid changeType '{t}': use created, updated and/or deleted."))),
        };
        if !change_types.contains(&kind) {
            change_types.push(kind);
        }
    }
    if let Some(cs) = &b.client_state
        && cs.chars().count() > MAX_CLIENT_STATE
    {
        return Err(invalid(format!("clientState is longer than the maximum of {MAX_CLIENT_STATE} characters.")));
    }
    let tls_version = b.latest_supported_tls_version.clone().unwrap_or_else(|| "v1_2".into());
    if !TLS_VERSIONS.contains(&tls_version.as_str()) {
        // The service's wording (reported in microsoft/nodejs-webhooks-sample#599).
        return Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            "Invalid property value for LatestSupportedTlsVersion",
        ));
    }
    if b.include_resource_data == Some(true) || b.encryption_certificate.is_some() {
        return Err(invalid(
            "Change notifications with resource data (includeResourceData, encryptionCertificate) are not emulated.",
        ));
    }
    let lifecycle_url = b.lifecycle_notification_url.clone().filter(|s| !s.trim().is_empty());
    {
        let policy = emu.subs().policy.clone();
        check_url(&notification_url, &policy, "notificationUrl")?;
        if let Some(l) = &lifecycle_url {
            check_url(l, &policy, "lifecycleNotificationUrl")?;
        }
    }
    let expiration = expiration(&expiration_raw, emu)?;
    let target = resolve(emu, caller, &parse_resource(&resource)?, "Create")?;
    // The request is valid: now the endpoints must prove they want the notifications.
    validate(emu, &notification_url).await?;
    if let Some(l) = &lifecycle_url {
        validate(emu, l).await?;
    }
    let creator = creator_id(emu, caller);
    let immutable = prefer_immutable(&req.headers);
    let sub = {
        let mut subs = emu.subs();
        // The mailbox's change number now: later changes notify (lock order: subs, then mail).
        let start_seq = emu.mail().get(&target.mailbox_id).map(|m| m.seq).unwrap_or(0);
        let sub = Subscription {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: target.tenant_id,
            mailbox_id: target.mailbox_id,
            mailbox_address: target.address,
            folder_id: target.folder_id,
            resource,
            change_types,
            change_type: change_type.split(',').map(str::trim).collect::<Vec<_>>().join(","),
            notification_url,
            lifecycle_url,
            client_state: b.client_state,
            expiration,
            lifetime_ms: expiration.timestamp_millis() - emu.clock.now_ms(),
            application_id: caller.client_id.clone(),
            creator_id: creator,
            user_oid: caller.user.as_ref().map(|u| u.0.clone()),
            tls_version,
            immutable,
            start_seq,
            reauth_noticed: false,
            reauth_required: false,
        };
        subs.subs.push(sub.clone());
        sub
    };
    tracing::info!(subscription = %sub.id, resource = %sub.resource, url = %sub.notification_url, "subscription created");
    emu.notifier.notify_one();
    Ok(ok_json(StatusCode::CREATED, sub.json(&emu.base_url, true)))
}

fn prefer_immutable(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.split_once('=').is_some_and(|(k, v)| k.trim() == "IdType" && v.trim() == "\"ImmutableId\""))
}

fn list(emu: &Arc<Emu>, caller: &Caller) -> Response {
    let now = emu.clock.now_ms();
    let subs = emu.subs();
    // "the clientState property value is not returned for security purposes."
    let value: Vec<Value> = subs
        .subs
        .iter()
        .filter(|s| visible(s, caller) && s.expiration_ms() > now)
        .map(|s| s.json(&emu.base_url, false))
        .collect();
    let value: Vec<Value> = value
        .into_iter()
        .map(|mut v| {
            v.as_object_mut().map(|o| o.remove("@odata.context"));
            v
        })
        .collect();
    ok_json(
        StatusCode::OK,
        json!({"@odata.context": format!("{}/v1.0/$metadata#subscriptions", emu.base_url), "value": value}),
    )
}

/// A subscription the caller sees, still readable by it (managing needs the read permission too).
fn owned(emu: &Arc<Emu>, caller: &Caller, id: &str, op: &str) -> Result<Subscription, GraphError> {
    let now = emu.clock.now_ms();
    let sub =
        emu.subs().find(id).filter(|s| visible(s, caller) && s.expiration_ms() > now).cloned().ok_or_else(not_found)?;
    let r = ResourceRef { user: Some(sub.mailbox_id.clone()), folder: None };
    resolve(emu, caller, &r, op)?;
    Ok(sub)
}

fn get_one(emu: &Arc<Emu>, caller: &Caller, id: &str) -> Result<Response, GraphError> {
    let sub = owned(emu, caller, id, "Get")?;
    Ok(ok_json(StatusCode::OK, sub.json(&emu.base_url, true)))
}

async fn update(emu: &Arc<Emu>, req: &GraphRequest, caller: &Caller, id: &str) -> Result<Response, GraphError> {
    let b = body(req)?;
    let sub = owned(emu, caller, id, "Update")?;
    if b.expiration_date_time.is_none() && b.notification_url.is_none() {
        // The service's wording (msgraph-sdk-java#2323).
        return Err(invalid(
            "Subscription must contain either the 'expirationDateTime' or 'notificationUrl' property and its value.",
        ));
    }
    if b.lifecycle_notification_url.as_ref().is_some_and(|l| Some(l) != sub.lifecycle_url.as_ref()) {
        return Err(invalid(
            "lifecycleNotificationUrl cannot be changed by an update: delete the subscription and create it again.",
        ));
    }
    let expiration = b.expiration_date_time.as_deref().map(|raw| expiration(raw, emu)).transpose()?;
    if let Some(url) = b.notification_url.as_deref().filter(|u| *u != sub.notification_url) {
        let policy = emu.subs().policy.clone();
        check_url(url, &policy, "notificationUrl")?;
        validate(emu, url).await?;
    }
    let updated = {
        let mut subs = emu.subs();
        let s = subs.subs.iter_mut().find(|s| s.id == sub.id).ok_or_else(not_found)?;
        if let Some(t) = expiration {
            s.expiration = t;
            s.lifetime_ms = t.timestamp_millis() - emu.clock.now_ms();
        }
        if let Some(u) = b.notification_url {
            s.notification_url = u;
        }
        // A renewal also reauthorizes; a new notice is due when the new end comes near.
        s.reauth_noticed = false;
        s.reauth_required = false;
        s.clone()
    };
    tracing::info!(subscription = %updated.id, expiration = %updated.expiration, "subscription renewed");
    Ok(ok_json(StatusCode::OK, updated.json(&emu.base_url, true)))
}

fn delete(emu: &Arc<Emu>, caller: &Caller, id: &str) -> Result<Response, GraphError> {
    let sub = owned(emu, caller, id, "Delete")?;
    emu.subs().subs.retain(|s| s.id != sub.id);
    tracing::info!(subscription = %sub.id, "subscription deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn reauthorize(emu: &Arc<Emu>, caller: &Caller, id: &str) -> Result<Response, GraphError> {
    let sub = owned(emu, caller, id, "Reauthorize")?;
    if let Some(s) = emu.subs().subs.iter_mut().find(|s| s.id == sub.id) {
        s.reauth_required = false;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

impl Emu {
    pub(crate) fn subscription_list(&self) -> Vec<SubscriptionInfo> {
        self.subs().subs.iter().map(Subscription::info).collect()
    }

    /// Sends a lifecycle notification for a subscription now (`subscriptionRemoved` also removes
    /// it; `reauthorizationRequired` marks it). Returns whether one was queued: not without a
    /// lifecycle URL, as Graph.
    pub(crate) fn trigger_lifecycle(&self, id: &str, event: LifecycleEvent) -> Result<bool, EmulatorError> {
        let now = self.clock.now_ms();
        let queued = {
            let mut subs = self.subs();
            let sub = subs.find(id).cloned().ok_or_else(|| EmulatorError::NotFound(format!("subscription {id}")))?;
            match event {
                LifecycleEvent::SubscriptionRemoved => subs.subs.retain(|s| s.id != sub.id),
                LifecycleEvent::ReauthorizationRequired => {
                    if let Some(s) = subs.subs.iter_mut().find(|s| s.id == sub.id) {
                        s.reauth_required = true;
                    }
                }
                LifecycleEvent::Missed => {}
            }
            subs.lifecycle(&sub, event, now)
        };
        self.notifier.notify_one();
        Ok(queued)
    }

    pub(crate) fn fail_notifications(&self, f: NotificationFault) -> Result<(), EmulatorError> {
        if f.count == Some(0) {
            return Err(EmulatorError::Invalid("count must be at least 1".into()));
        }
        let until = f.ms.map(|ms| Instant::now() + Duration::from_millis(ms));
        self.subs().faults.push(ActiveFault { url: f.url, remaining: f.count, until });
        Ok(())
    }

    pub(crate) fn clear_notification_faults(&self) {
        self.subs().faults.clear();
        self.notifier.notify_one();
    }

    pub(crate) fn notification_records(&self) -> Vec<NotificationRecord> {
        self.subs().records.iter().cloned().collect()
    }

    pub(crate) fn clear_notification_records(&self) {
        self.subs().records.clear();
    }

    pub(crate) fn set_notification_policy(&self, p: NotificationPolicy) -> Result<NotificationPolicy, EmulatorError> {
        if p.max_expiration_minutes < 1
            || p.validation_timeout_ms == 0
            || p.delivery_timeout_ms == 0
            || p.retry_initial_ms == 0
            || p.retry_window_seconds < 0
        {
            return Err(EmulatorError::Invalid("notification policy values must be positive".into()));
        }
        self.subs().policy = p.clone();
        Ok(p)
    }

    pub(crate) fn notification_policy(&self) -> NotificationPolicy {
        self.subs().policy.clone()
    }

    pub(crate) fn trust_notification_ca(&self, pem: &str) -> Result<(), EmulatorError> {
        let mut subs = self.subs();
        let mut cas = subs.trusted_cas.clone();
        cas.push(pem.to_string());
        let cfg = crate::notify::client_config(&cas)?;
        subs.trusted_cas = cas;
        subs.tls = Some(cfg);
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LifecycleHook {
    subscription_id: String,
    event: LifecycleEvent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Trust {
    ca_pem: String,
}

#[derive(Deserialize)]
struct RecordQuery {
    subscription_id: Option<String>,
    kind: Option<String>,
}

fn admin_body<T: serde::de::DeserializeOwned>(b: &Bytes) -> Result<T, EmulatorError> {
    Ok(serde_json::from_slice(b)?)
}

pub(crate) fn routes() -> Router<Arc<Emu>> {
    Router::new()
        .route("/_admin/subscriptions", get(admin_list))
        .route("/_admin/subscriptions/lifecycle", post(admin_lifecycle))
        .route("/_admin/notifications", get(admin_records).delete(admin_clear_records))
        .route("/_admin/notifications/faults", post(admin_fault).delete(admin_clear_faults))
        .route("/_admin/notifications/policy", get(admin_policy).post(admin_set_policy))
        .route("/_admin/notifications/trust", post(admin_trust))
}

async fn admin_list(State(emu): State<Arc<Emu>>) -> Response {
    axum::Json(emu.subscription_list()).into_response()
}

async fn admin_lifecycle(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response, EmulatorError> {
    let h: LifecycleHook = admin_body(&b)?;
    let queued = emu.trigger_lifecycle(&h.subscription_id, h.event)?;
    Ok(axum::Json(json!({"queued": queued})).into_response())
}

async fn admin_records(State(emu): State<Arc<Emu>>, Query(q): Query<RecordQuery>) -> Response {
    let list: Vec<NotificationRecord> = emu
        .notification_records()
        .into_iter()
        .filter(|r| q.subscription_id.as_ref().is_none_or(|id| r.subscription_ids.contains(id)))
        .filter(|r| q.kind.as_ref().is_none_or(|k| &r.kind == k))
        .collect();
    axum::Json(list).into_response()
}

async fn admin_clear_records(State(emu): State<Arc<Emu>>) -> Response {
    emu.clear_notification_records();
    axum::Json(json!({"ok": true})).into_response()
}

async fn admin_fault(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response, EmulatorError> {
    emu.fail_notifications(admin_body(&b)?)?;
    Ok((StatusCode::CREATED, axum::Json(json!({"ok": true}))).into_response())
}

async fn admin_clear_faults(State(emu): State<Arc<Emu>>) -> Response {
    emu.clear_notification_faults();
    axum::Json(json!({"ok": true})).into_response()
}

async fn admin_policy(State(emu): State<Arc<Emu>>) -> Response {
    axum::Json(emu.notification_policy()).into_response()
}

async fn admin_set_policy(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response, EmulatorError> {
    Ok(axum::Json(emu.set_notification_policy(admin_body(&b)?)?).into_response())
}

async fn admin_trust(State(emu): State<Arc<Emu>>, b: Bytes) -> Result<Response, EmulatorError> {
    let t: Trust = admin_body(&b)?;
    emu.trust_notification_ca(&t.ca_pem)?;
    Ok(axum::Json(json!({"ok": true})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_resources_are_read_in_every_documented_form() {
        let r = |s: &str| parse_resource(s).map_err(|e| e.message);
        let folder = |u: Option<&str>, f: Option<&str>| {
            Ok(ResourceRef { user: u.map(str::to_string), folder: f.map(str::to_string) })
        };
        assert_eq!(r("me/mailFolders('inbox')/messages"), folder(None, Some("inbox")));
        assert_eq!(r("/me/mailfolders('Inbox')/messages"), folder(None, Some("Inbox")));
        assert_eq!(r("users/a@b.test/mailFolders('x')/messages"), folder(Some("a@b.test"), Some("x")));
        assert_eq!(r("users/u1/mailFolders/AAMkAx/messages"), folder(Some("u1"), Some("AAMkAx")));
        assert_eq!(r("Users/u1/Messages"), folder(Some("u1"), None));
        assert_eq!(r("/me/messages"), folder(None, None));
        assert_eq!(r("users('u1')/mailFolders/inbox/childFolders/c2/messages"), folder(Some("u1"), Some("c2")));
        assert!(r("me/events").is_err());
        assert!(r("users/u1/mailFolders/inbox").is_err());
        assert!(r("me/messages?$filter=isRead eq false").is_err());
    }

    #[test]
    fn times_and_tokens_are_written_as_graph_writes_them() {
        let t = parse_time("2016-11-20T18:23:45.9356913Z").unwrap();
        assert_eq!(graph_time(&t), "2016-11-20T18:23:45.9356913Z");
        assert_eq!(graph_time(&parse_time("2026-01-02T03:04:05+01:00").unwrap()), "2026-01-02T02:04:05.0000000Z");
        assert!(parse_time("2026-01-02T03:04:05.5").is_some());
        assert_eq!(encode_component("Validation: a b/c"), "Validation%3A%20a%20b%2Fc");
    }

    #[test]
    fn failed_deliveries_back_off_and_are_dropped_with_a_missed_notice() {
        let mut st = SubStore::default();
        st.policy.retry_initial_ms = 100;
        st.policy.retry_max_ms = 250;
        st.policy.retry_window_seconds = 60;
        let sub = Subscription {
            id: "s1".into(),
            tenant_id: "t".into(),
            mailbox_id: "m".into(),
            mailbox_address: "a@b.test".into(),
            folder_id: Some("f".into()),
            resource: "me/messages".into(),
            change_types: vec![ChangeKind::Created],
            change_type: "created".into(),
            notification_url: "http://127.0.0.1:1/n".into(),
            lifecycle_url: Some("http://127.0.0.1:1/l".into()),
            client_state: Some("cs".into()),
            expiration: at(10_000_000),
            lifetime_ms: 10_000_000,
            application_id: "app".into(),
            creator_id: "c".into(),
            user_oid: None,
            tls_version: "v1_2".into(),
            immutable: false,
            start_seq: 0,
            reauth_noticed: false,
            reauth_required: false,
        };
        st.subs.push(sub);
        let change = |folder: &str, seq| MailChange {
            kind: ChangeKind::Created,
            folder: folder.into(),
            rest_id: format!("r{seq}"),
            immutable_id: format!("i{seq}"),
            change_key: "ck".into(),
            seq,
        };
        st.notify_changes("m", &[change("f", 1), change("other", 2), change("f", 3)], 1000);
        let t0 = Instant::now();
        let a = st.due_attempts(t0);
        assert_eq!(a.len(), 1, "one POST for the two changes in the folder");
        let sent: Value = serde_json::from_slice(&a[0].body).unwrap();
        assert_eq!(sent["value"].as_array().unwrap().len(), 2);
        assert_eq!(sent["value"][0]["resource"], "Users/m/Messages/r1");
        assert_eq!(sent["value"][0]["clientState"], "cs");
        // Nothing more for that URL while it is in flight; it fails and backs off 100, 200, 250 ms.
        assert!(st.due_attempts(t0).is_empty());
        let mut waits = Vec::new();
        let mut delivery = a[0].delivery;
        for n in 0..3 {
            let now = t0 + Duration::from_secs(n);
            st.finish(delivery, Err(PostError::Timeout), Duration::ZERO, 1000, now);
            let d = &st.queues["http://127.0.0.1:1/n"][0];
            waits.push(d.next_at.unwrap() - now);
            assert!(st.due_attempts(now).is_empty(), "not before the wait is over");
            let next = st.due_attempts(now + Duration::from_millis(300));
            assert_eq!(next.len(), 1);
            delivery = next[0].delivery;
        }
        st.finish(delivery, Err(PostError::Timeout), Duration::ZERO, 1000, t0);
        assert_eq!(waits, [Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(250)]);
        // Past the window: dropped, and the lifecycle URL gets `missed`.
        st.drop_stale(1000 + 61_000);
        assert!(!st.queues.contains_key("http://127.0.0.1:1/n"));
        let lifecycle = &st.queues["http://127.0.0.1:1/l"][0];
        assert_eq!(lifecycle.items[0].value["lifecycleEvent"], "missed");
        assert!(st.records.iter().any(|r| r.outcome == "dropped"));
    }
}
