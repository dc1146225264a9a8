//! Graph change notifications through webhooks: the validation handshake, the subscription
//! resource and its methods (create, list, get, renew, delete, reauthorize), change notifications
//! for messages created, updated, moved and deleted, lifecycle notifications, retries and drops,
//! authorization, HTTPS receivers, and Microsoft's msgraph-sdk for Python creating and deleting a
//! subscription. The receiver is a small HTTP/1.1 server in the test.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mail::*;
use common::python::{Script, venv_python};
use common::*;
use m365_emulator::{
    AccessPolicySpec, AppSpec, DeliverSpec, Emulator, EmulatorConfig, LifecycleEvent, MailboxGrant, NotificationFault,
    NotificationPolicy, SecretSpec, SelfSignedTls,
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const GRAPH: &str = "https://graph.microsoft.com";
const STATE: &str = "secret-client-state";
const MSGRAPH_VERSION: &str = "1.65.0";

/// How the receiver answers validation requests (`?validationToken=`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Validation {
    /// 200, `text/plain`, the decoded token: what Graph wants.
    Echo,
    /// 200, `text/plain`, something else.
    WrongToken,
    /// This status with the right token.
    Status(u16),
    /// The right answer, after this many milliseconds.
    Slow(u64),
    /// The right token as `application/json`.
    Json,
}

/// A request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    query: HashMap<String, String>,
    content_type: Option<String>,
    body: String,
}

impl Received {
    fn is_validation(&self) -> bool {
        self.query.contains_key("validationToken")
    }
}

struct RxState {
    requests: Vec<Received>,
    validation: Validation,
    /// Status and delay of answers to notifications.
    status: u16,
    delay_ms: u64,
}

/// A notification endpoint: answers validation requests and records everything.
struct Receiver {
    base: String,
    state: Arc<Mutex<RxState>>,
}

impl Receiver {
    async fn start() -> Receiver {
        Receiver::listen(None).await
    }

    /// Over TLS with a certificate of `tls` (for `127.0.0.1`).
    async fn start_tls(tls: &SelfSignedTls) -> Receiver {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Receiver::listen(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn listen(tls: Option<tokio_rustls::TlsAcceptor>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base = format!("{scheme}://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(RxState {
            requests: Vec::new(),
            validation: Validation::Echo,
            status: 202,
            delay_ms: 0,
        }));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (st, tls) = (st.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                serve(s, st).await;
                            }
                        }
                        None => serve(stream, st).await,
                    }
                });
            }
        });
        Receiver { base, state }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn set(&self, f: impl FnOnce(&mut RxState)) {
        f(&mut self.state.lock().unwrap());
    }

    fn requests(&self) -> Vec<Received> {
        self.state.lock().unwrap().requests.clone()
    }

    fn validations(&self) -> Vec<Received> {
        self.requests().into_iter().filter(Received::is_validation).collect()
    }

    /// The notification posts to `path`, each as its `value` array.
    fn posts(&self, path: &str) -> Vec<Vec<Value>> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path && !r.is_validation())
            .map(|r| {
                let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body));
                v["value"].as_array().cloned().unwrap_or_else(|| panic!("no value array: {v}"))
            })
            .collect()
    }

    /// Every notification posted to `path`, in order.
    fn items(&self, path: &str) -> Vec<Value> {
        self.posts(path).into_iter().flatten().collect()
    }

    /// Waits (up to 10 s) until `path` got at least `n` notifications.
    async fn wait_items(&self, path: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let items = self.items(path);
            if items.len() >= n {
                return items;
            }
            assert!(Instant::now() < deadline, "waited for {n} notifications on {path}, got {items:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts that `path` still has exactly `n` notifications after a while.
    async fn quiet(&self, path: &str, n: usize) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(self.items(path).len(), n, "{:#?}", self.items(path));
    }
}

/// One HTTP/1.1 exchange per connection (the emulator sends `Connection: close`).
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, state: Arc<Mutex<RxState>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let target = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("/").to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let received = Received {
        path: path.to_string(),
        query: query.clone(),
        content_type: headers.get("content-type").cloned(),
        body: String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned(),
    };
    let (validation, status, delay_ms) = {
        let mut st = state.lock().unwrap();
        st.requests.push(received);
        (st.validation, st.status, st.delay_ms)
    };
    let (status, content_type, body, delay) = match query.get("validationToken") {
        Some(token) => match validation {
            Validation::Echo => (200, "text/plain", token.clone(), 0),
            Validation::WrongToken => (200, "text/plain", format!("{token}x"), 0),
            Validation::Status(s) => (s, "text/plain", token.clone(), 0),
            Validation::Slow(ms) => (200, "text/plain", token.clone(), ms),
            Validation::Json => (200, "application/json", token.clone(), 0),
        },
        None => (status, "text/plain", String::new(), delay_ms),
    };
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let answer = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(answer.as_bytes()).await;
    let _ = s.shutdown().await;
}

fn subscriptions_url(emu: &Emulator) -> String {
    format!("{}/subscriptions", emu.graph_url())
}

/// `minutes` from now on the emulator clock, as a client would write it.
fn in_minutes(emu: &Emulator, minutes: i64) -> String {
    chrono::DateTime::from_timestamp(emu.now() + minutes * 60, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn subscription(emu: &Emulator, resource: &str, change_type: &str, url: &str) -> Value {
    json!({
        "changeType": change_type,
        "notificationUrl": url,
        "resource": resource,
        "expirationDateTime": in_minutes(emu, 60),
        "clientState": STATE,
    })
}

fn inbox_of(mailbox: &str) -> String {
    format!("users/{mailbox}/mailFolders('inbox')/messages")
}

async fn create(emu: &Emulator, token: &str, body: Value) -> (u16, Value) {
    let (s, _, b) = call(Method::POST, &subscriptions_url(emu), token, &[], Some(body)).await;
    (s, b)
}

async fn created(emu: &Emulator, token: &str, body: Value) -> Value {
    let (s, b) = create(emu, token, body).await;
    assert_eq!(s, 201, "{b}");
    b
}

async fn patch(emu: &Emulator, token: &str, id: &str, body: Value) -> (u16, Value) {
    let (s, _, b) = call(Method::PATCH, &format!("{}/{id}", subscriptions_url(emu)), token, &[], Some(body)).await;
    (s, b)
}

/// Shorter retry timing than Microsoft's, so failing deliveries are retried within a test.
fn quick_retries(emu: &Emulator) {
    emu.set_notification_policy(NotificationPolicy { retry_initial_ms: 100, retry_max_ms: 200, ..Default::default() })
        .unwrap();
}

fn message_of(emu: &Emulator, mailbox: &str, folder: &str, subject: &str) -> m365_emulator::MessageInfo {
    emu.messages(mailbox, folder).unwrap().into_iter().find(|m| m.subject == subject).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_handshake_then_the_subscription_resource() {
    let emu = start_mail();
    let rx = Receiver::start().await;
    let t = app_token(&emu, GRAPH).await;
    let resource = inbox_of(SHARED);
    let mut body = subscription(&emu, &resource, "created,updated", &rx.url("/notify?tenant=contoso"));
    body["latestSupportedTlsVersion"] = json!("v1_2");
    let b = created(&emu, &t, body.clone()).await;

    // The handshake: a POST with the token in the query (the URL's own query kept), text/plain.
    let v = rx.validations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].path, "/notify");
    assert_eq!(v[0].query["tenant"], "contoso", "query parameters of notificationUrl are kept");
    let token = &v[0].query["validationToken"];
    assert!(token.starts_with("Validation: ") && token.contains(' '), "decoded token {token}");
    assert!(v[0].content_type.as_deref().unwrap().starts_with("text/plain"), "{:?}", v[0].content_type);

    // The subscription resource.
    let id = b["id"].as_str().unwrap();
    assert_eq!(id.len(), 36, "a GUID: {id}");
    assert!(b["@odata.context"].as_str().unwrap().ends_with("/v1.0/$metadata#subscriptions/$entity"));
    assert_eq!(b["resource"], resource.as_str());
    assert_eq!(b["changeType"], "created,updated");
    assert_eq!(b["clientState"], STATE);
    assert_eq!(b["notificationUrl"], rx.url("/notify?tenant=contoso"));
    assert_eq!(b["lifecycleNotificationUrl"], Value::Null);
    assert_eq!(b["applicationId"], DAEMON_APP);
    let creator = b["creatorId"].as_str().unwrap();
    assert!(creator.len() == 36 && creator != DAEMON_APP, "the app's service principal: {creator}");
    assert_eq!(b["latestSupportedTlsVersion"], "v1_2");
    assert_eq!(b["includeResourceData"], false);
    let exp = b["expirationDateTime"].as_str().unwrap();
    assert!(exp.ends_with('Z') && exp.len() == "2016-11-20T18:23:45.9356913Z".len(), "{exp}");
    let asked = chrono::DateTime::parse_from_rfc3339(body["expirationDateTime"].as_str().unwrap()).unwrap();
    assert_eq!(chrono::DateTime::parse_from_rfc3339(exp).unwrap(), asked);

    // Get and list (the list leaves clientState out).
    let (s, one) = gget(&format!("{}/{id}", subscriptions_url(&emu)), &t).await;
    assert_eq!(s, 200, "{one}");
    assert_eq!((one["id"].as_str(), one["clientState"].as_str()), (Some(id), Some(STATE)));
    let (s, list) = gget(&subscriptions_url(&emu), &t).await;
    assert_eq!(s, 200, "{list}");
    assert!(list["@odata.context"].as_str().unwrap().ends_with("$metadata#subscriptions"));
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
    assert_eq!(list["value"][0]["id"], id);
    assert_eq!(list["value"][0]["clientState"], Value::Null);

    // The emulator's view and log.
    let subs = emu.subscriptions();
    assert_eq!(subs.len(), 1);
    assert_eq!((subs[0].mailbox.as_str(), subs[0].client_state.as_deref()), (SHARED, Some(STATE)));
    let log = emu.notifications();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].kind.as_str(), log[0].outcome.as_str()), ("validation", "validated"));
    assert_eq!(&log[0].body["validationToken"], token.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_validations_refuse_the_subscription() {
    let emu = start_mail();
    let rx = Receiver::start().await;
    let t = app_token(&emu, GRAPH).await;
    let resource = inbox_of(SHARED);
    let refused = |b: &Value| b["error"]["message"].as_str().unwrap_or_default().to_string();

    let cases = [
        (
            Validation::WrongToken,
            "Subscription validation request failed. Response must exactly match validationToken query parameter.",
        ),
        (
            Validation::Status(500),
            "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
        ),
        (
            Validation::Status(202),
            "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
        ),
        (Validation::Json, "Subscription validation request failed. Response must have Content-Type text/plain."),
    ];
    for (behaviour, message) in cases {
        rx.set(|s| s.validation = behaviour);
        let (s, b) = create(&emu, &t, subscription(&emu, &resource, "created", &rx.url("/n"))).await;
        assert_graph_error(s, &b, 400, "InvalidRequest");
        assert_eq!(refused(&b), message, "{behaviour:?}");
    }

    // Slower than the time allowed (10 s by Microsoft; shortened here).
    emu.set_notification_policy(NotificationPolicy { validation_timeout_ms: 300, ..Default::default() }).unwrap();
    rx.set(|s| s.validation = Validation::Slow(1000));
    let started = Instant::now();
    let (s, b) = create(&emu, &t, subscription(&emu, &resource, "created", &rx.url("/n"))).await;
    assert_graph_error(s, &b, 400, "InvalidRequest");
    assert_eq!(refused(&b), "Subscription validation request timed out.");
    assert!(started.elapsed() < Duration::from_millis(900), "gave up after the timeout");
    emu.set_notification_policy(NotificationPolicy::default()).unwrap();

    // Nobody listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (s, b) =
        create(&emu, &t, subscription(&emu, &resource, "created", &format!("http://127.0.0.1:{port}/n"))).await;
    assert_graph_error(s, &b, 400, "InvalidRequest");
    assert!(refused(&b).starts_with("Subscription validation request failed."), "{b}");

    // The lifecycle URL is validated too.
    rx.set(|s| s.validation = Validation::Echo);
    let lifecycle = Receiver::start().await;
    lifecycle.set(|s| s.validation = Validation::WrongToken);
    let mut body = subscription(&emu, &resource, "created", &rx.url("/n"));
    body["lifecycleNotificationUrl"] = json!(lifecycle.url("/lifecycle"));
    let (s, b) = create(&emu, &t, body).await;
    assert_graph_error(s, &b, 400, "InvalidRequest");
    assert_eq!(lifecycle.validations().len(), 1);

    // Graph wants HTTPS; plain HTTP is only accepted on loopback (an emulator allowance).
    let (s, b) = create(&emu, &t, subscription(&emu, &resource, "created", "http://example.test/n")).await;
    assert_graph_error(s, &b, 400, "InvalidRequest");
    assert_eq!(refused(&b), "NotificationUrl scheme='http' is not supported.");

    assert!(emu.subscriptions().is_empty());
    let (_, list) = gget(&subscriptions_url(&emu), &t).await;
    assert_eq!(list["value"], json!([]));
    let outcomes: Vec<String> = emu.notifications().iter().map(|r| r.outcome.clone()).collect();
    assert!(outcomes.iter().all(|o| o == "refused" || o == "validated"), "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_arriving_in_the_folder_is_notified_with_the_client_state() {
    let emu = start_mail();
    let rx = Receiver::start().await;
    let t = app_token(&emu, GRAPH).await;
    let sub = created(&emu, &t, subscription(&emu, &inbox_of(SHARED), "created", &rx.url("/notify"))).await;
    let id = sub["id"].as_str().unwrap();

    let m = emu.deliver_mime(SHARED, "inbox", &mime(1)).unwrap();
    let items = rx.wait_items("/notify", 1).await;
    let n = &items[0];
    assert_eq!(n["subscriptionId"], id);
    assert_eq!(n["subscriptionExpirationDateTime"], sub["expirationDateTime"]);
    assert_eq!(n["changeType"], "created");
    assert_eq!(n["clientState"], STATE);
    assert_eq!(n["tenantId"], TENANT_ID);
    let resource = n["resource"].as_str().unwrap();
    assert!(resource.starts_with("Users/") && resource.ends_with(&format!("/Messages/{}", m.id)), "{resource}");
    let data = &n["resourceData"];
    assert_eq!(data["@odata.type"], "#Microsoft.Graph.Message");
    assert_eq!(data["@odata.id"], resource);
    assert_eq!(data["id"], m.id.as_str());
    assert!(data["@odata.etag"].as_str().unwrap().starts_with("W/\""), "{data}");
    let post = rx.requests().into_iter().find(|r| !r.is_validation()).unwrap();
    assert!(post.content_type.unwrap().starts_with("application/json"));

    // The resource path reads the message, as the docs tell clients to do.
    let (s, msg) = gget(&format!("{}/{resource}", emu.graph_url()), &t).await;
    assert_eq!(s, 200, "{msg}");
    assert_eq!(msg["subject"], "Request 1");
    assert_eq!(msg["@odata.etag"], data["@odata.etag"]);

    // Other folders and mailboxes: nothing.
    emu.deliver_mime(SHARED, "archive", &mime(2)).unwrap();
    emu.deliver_mime(ALICE, "inbox", &mime(3)).unwrap();
    rx.quiet("/notify", 1).await;

    // Mail sent through Graph to the mailbox arrives by transport: notified as well.
    let send =
        json!({"message": {"subject": "Sent to support", "toRecipients": [{"emailAddress": {"address": SHARED}}]}});
    let (s, _, _) =
        call(Method::POST, &format!("{}/users/{USER}/sendMail", emu.graph_url()), &t, &[], Some(send)).await;
    assert_eq!(s, 202);
    let items = rx.wait_items("/notify", 2).await;
    assert_eq!(items[1]["resourceData"]["id"], message_of(&emu, SHARED, "inbox", "Sent to support").id.as_str());

    // A subscription made with Prefer: IdType="ImmutableId" gets immutable ids.
    let (s, _, b) = call(
        Method::POST,
        &subscriptions_url(&emu),
        &t,
        &[("Prefer", "IdType=\"ImmutableId\"")],
        Some(subscription(&emu, &format!("/users/{SHARED}/mailFolders/inbox/messages"), "created", &rx.url("/imm"))),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let m4 = emu.deliver_mime(SHARED, "inbox", &mime(4)).unwrap();
    assert_eq!(rx.wait_items("/imm", 1).await[0]["resourceData"]["id"], m4.immutable_id.as_str());
    assert_eq!(rx.wait_items("/notify", 3).await[2]["resourceData"]["id"], m4.id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_moves_and_deletes_are_notified_when_subscribed() {
    let emu = start_mail();
    let rx = Receiver::start().await;
    let t = app_token(&emu, GRAPH).await;
    created(&emu, &t, subscription(&emu, &inbox_of(SHARED), "created,updated,deleted", &rx.url("/inbox"))).await;
    let whole = format!("users/{SHARED}/messages");
    created(&emu, &t, subscription(&emu, &whole, "deleted", &rx.url("/mailbox"))).await;
    created(&emu, &t, subscription(&emu, &inbox_of(SHARED), "created", &rx.url("/created-only"))).await;
    let msg = |id: &str| format!("{}/users/{SHARED}/messages/{id}", emu.graph_url());

    let m = emu.deliver_mime(SHARED, "inbox", &mime(1)).unwrap();
    rx.wait_items("/inbox", 1).await;
    let (s, _, _) = call(Method::PATCH, &msg(&m.id), &t, &[], Some(json!({"isRead": true}))).await;
    assert_eq!(s, 200);
    rx.wait_items("/inbox", 2).await;
    let (s, _, moved) =
        call(Method::POST, &format!("{}/move", msg(&m.id)), &t, &[], Some(json!({"destinationId": "archive"}))).await;
    assert_eq!(s, 201);
    rx.wait_items("/inbox", 3).await;
    let (s, _, back) = call(
        Method::POST,
        &format!("{}/move", msg(moved["id"].as_str().unwrap())),
        &t,
        &[],
        Some(json!({"destinationId": "inbox"})),
    )
    .await;
    assert_eq!(s, 201);
    rx.wait_items("/inbox", 4).await;
    let back_id = back["id"].as_str().unwrap();
    let (s, _, _) = call(Method::DELETE, &msg(back_id), &t, &[], None).await;
    assert_eq!(s, 204);

    let items = rx.wait_items("/inbox", 5).await;
    let seen: Vec<(&str, &str)> =
        items.iter().map(|n| (n["changeType"].as_str().unwrap(), n["resourceData"]["id"].as_str().unwrap())).collect();
    assert_eq!(
        seen,
        [
            ("created", m.id.as_str()),
            ("updated", m.id.as_str()),
            ("deleted", m.id.as_str()),
            ("created", back_id),
            ("deleted", back_id),
        ],
        "a move out is a deletion of the id the client knew, a move in a creation under the new id"
    );
    // The whole mailbox, deletions only: the message left the inbox, then the archive, then went.
    let deleted: Vec<Value> = rx.wait_items("/mailbox", 3).await.iter().map(|n| n["changeType"].clone()).collect();
    assert_eq!(deleted, ["deleted", "deleted", "deleted"]);
    rx.quiet("/mailbox", 3).await;
    assert_eq!(rx.items("/created-only").len(), 2, "only the two arrivals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_and_the_lifetime_limit() {
    let emu = start_mail();
    let rx = Receiver::start().await;
    let t = app_token(&emu, GRAPH).await;
    let resource = inbox_of(SHARED);
    let with_minutes = |minutes: i64| {
        let mut b = subscription(&emu, &resource, "created", &rx.url("/n"));
        b["expirationDateTime"] = json!(in_minutes(&emu, minutes));
        b
    };
    // Outlook messages: at most 10,080 minutes (the current lifetime table).
    let (s, b) = create(&emu, &t, with_minutes(10_081)).await;
    assert_graph_error(s, &b, 400, "ExtensionError");
    assert_eq!(b["error"]["message"], "Subscription expiration can only be 10080 minutes in the future.");
    let (s, b) = create(&emu, &t, with_minutes(-5)).await;
    assert_graph_error(s, &b, 400, "InvalidRequest");
    let mut missing = with_minutes(60);
    missing.as_object_mut().unwrap().remove("expirationDateTime");
    let (s, b) = create(&emu, &t, missing).await;
    assert_graph_error(s, &b, 400, "InvalidRequest");
    assert_eq!(b["error"]["message"], "expirationDateTime is a required property for subscription creation.");
    let mut long_state = with_minutes(60);
    long_state["clientState"] = json!("x".repeat(129));
    assert_eq!(create(&emu, &t, long_state).await.0, 400);
    let sub = created(&emu, &t, with_minutes(10_079)).await;
    let id = sub["id"].as_str().unwrap();

    // Renew: a new expirationDateTime, same limit.
    let two_days = in_minutes(&emu, 2 * 24 * 60);
    let (s, b) = patch(&emu, &t, id, json!({"expirationDateTime": two_days})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(b["expirationDateTime"].as_str().unwrap()).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&two_days).unwrap()
    );
    assert_eq!(b["clientState"], STATE);
    let (_, got) = gget(&format!("{}/{id}", subscriptions_url(&emu)), &t).await;
    assert_eq!(got["expirationDateTime"], b["expirationDateTime"]);
    let (s, b) = patch(&emu, &t, id, json!({"expirationDateTime": in_minutes(&emu, 8 * 24 * 60)})).await;
    assert_graph_error(s, &b, 400, "ExtensionError");
    let (s, b) = patch(&emu, &t, id, json!({})).await;
    assert_graph_error(s, &b, 400, "InvalidRequest");
    assert_eq!(
        b["error"]["message"],
        "Subscription must contain either the 'expirationDateTime' or 'notificationUrl' property and its value."
    );
    // The limit is configurable (older documentation and the service said 4,230 minutes).
    emu.set_notification_policy(NotificationPolicy { max_expiration_minutes: 4230, ..Default::default() }).unwrap();
    let (s, b) = patch(&emu, &t, id, json!({"expirationDateTime": in_minutes(&emu, 4231)})).await;
    assert_graph_error(s, &b, 400, "ExtensionError");
    assert_eq!(b["error"]["message"], "Subscription expiration can only be 4230 minutes in the future.");

    // A new notificationUrl is validated before it is taken.
    let other = Receiver::start().await;
    let (s, b) = patch(&emu, &t, id, json!({"notificationUrl": other.url("/moved")})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(other.validations().len(), 1);
    emu.deliver_mime(SHARED, "inbox", &mime(1)).unwrap();
    other.wait_items("/moved", 1).await;
    assert!(rx.items("/n").is_empty());

    let (s, b) = patch(&emu, &t, "7f105c7d-2dc5-4530-97cd-4e7ae6534c07", json!({"expirationDateTime": two_days})).await;
    assert_graph_error(s, &b, 404, "ResourceNotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_expired_subscriptions_stop_notifying() {
    let emu = start_mail();
    let rx = Receiver::start().await;
    let t = app_token(&emu, GRAPH).await;
    let sub = created(&emu, &t, subscription(&emu, &inbox_of(SHARED), "created", &rx.url("/deleted"))).await;
    let url = format!("{}/{}", subscriptions_url(&emu), sub["id"].as_str().unwrap());
    emu.deliver_mime(SHARED, "inbox", &mime(1)).unwrap();
    rx.wait_items("/deleted", 1).await;
    let (s, _, _) = call(Method::DELETE, &url, &t, &[], None).await;
    assert_eq!(s, 204);
    let (s, b) = gget(&url, &t).await;
    assert_graph_error(s, &b, 404, "ResourceNotFound");
    emu.deliver_mime(SHARED, "inbox", &mime(2)).unwrap();
    rx.quiet("/deleted", 1).await;

    // Expiry: Graph deletes the subscription; nothing is sent afterwards.
    // Thirty minutes asked are raised to Graph's 45-minute floor.
    let mut body = subscription(&emu, &inbox_of(SHARED), "created", &rx.url("/expiring"));
    body["expirationDateTime"] = json!(in_minutes(&emu, 30));
    let sub = created(&emu, &t, body).await;
    let floor = chrono::DateTime::parse_from_rfc3339(&in_minutes(&emu, 45)).unwrap();
    let given = chrono::DateTime::parse_from_rfc3339(sub["expirationDateTime"].as_str().unwrap()).unwrap();
    assert!((given - floor).num_seconds().abs() <= 2, "{given} for a floor of {floor}");
    emu.deliver_mime(SHARED, "inbox", &mime(3)).unwrap();
    rx.wait_items("/expiring", 1).await;
    emu.advance_clock(31 * 60);
    assert_eq!(emu.subscriptions().len(), 1, "not expired after 31 of its 45 minutes");
    emu.advance_clock(15 * 60);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !emu.subscriptions().is_empty() {
        assert!(Instant::now() < deadline, "the expired subscription is removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emu.deliver_mime(SHARED, "inbox", &mime(4)).unwrap();
    rx.quiet("/expiring", 1).await;
    let (_, list) = gget(&subscriptions_url(&emu), &t).await;
    assert_eq!(list["value"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_notifications_go_to_the_lifecycle_url() {
    let emu = start_mail();
    let rx = Receiver::start().await;
    let t = app_token(&emu, GRAPH).await;
    let mut body = subscription(&emu, &inbox_of(SHARED), "created", &rx.url("/notify"));
    body["lifecycleNotificationUrl"] = json!(rx.url("/lifecycle"));
    body["expirationDateTime"] = json!(in_minutes(&emu, 90));
    let sub = created(&emu, &t, body).await;
    let id = sub["id"].as_str().unwrap().to_string();
    assert_eq!(sub["lifecycleNotificationUrl"], rx.url("/lifecycle"));
    let paths: Vec<String> = rx.validations().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/notify", "/lifecycle"], "both endpoints validated");

    assert!(emu.trigger_lifecycle(&id, LifecycleEvent::ReauthorizationRequired).unwrap());
    let n = rx.wait_items("/lifecycle", 1).await.remove(0);
    assert_eq!(
        n,
        json!({
            "subscriptionId": id,
            "subscriptionExpirationDateTime": sub["expirationDateTime"],
            "tenantId": TENANT_ID,
            "clientState": STATE,
            "lifecycleEvent": "reauthorizationRequired",
        })
    );
    assert!(emu.subscriptions()[0].reauthorization_required);
    let (s, _, _) = call(Method::POST, &format!("{}/{id}/reauthorize", subscriptions_url(&emu)), &t, &[], None).await;
    assert_eq!(s, 204);
    assert!(!emu.subscriptions()[0].reauthorization_required);

    // Through the admin API.
    let r: Value = client()
        .post(format!("{}/_admin/subscriptions/lifecycle", emu.base_url()))
        .json(&json!({"subscription_id": id, "event": "missed"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"queued": true}));
    assert_eq!(rx.wait_items("/lifecycle", 2).await[1]["lifecycleEvent"], "missed");

    // Near its end (under an hour and under half its 90 minutes left) the subscription asks to be
    // reauthorized by itself, once.
    emu.advance_clock(30 * 60);
    rx.quiet("/lifecycle", 2).await;
    emu.advance_clock(16 * 60);
    assert_eq!(rx.wait_items("/lifecycle", 3).await[2]["lifecycleEvent"], "reauthorizationRequired");
    rx.quiet("/lifecycle", 3).await;
    let (s, _) = patch(&emu, &t, &id, json!({"expirationDateTime": in_minutes(&emu, 600)})).await;
    assert_eq!(s, 200);
    assert!(!emu.subscriptions()[0].reauthorization_required);

    // Removed: told, gone, silent.
    assert!(emu.trigger_lifecycle(&id, LifecycleEvent::SubscriptionRemoved).unwrap());
    assert_eq!(rx.wait_items("/lifecycle", 4).await[3]["lifecycleEvent"], "subscriptionRemoved");
    let (s, _) = gget(&format!("{}/{id}", subscriptions_url(&emu)), &t).await;
    assert_eq!(s, 404);
    emu.deliver_mime(SHARED, "inbox", &mime(1)).unwrap();
    rx.quiet("/notify", 0).await;
    assert!(rx.items("/notify").is_empty(), "lifecycle notifications never go to notificationUrl");

    // Without a lifecycleNotificationUrl Graph sends no lifecycle notifications.
    let plain = created(&emu, &t, subscription(&emu, &inbox_of(SHARED), "created", &rx.url("/plain"))).await;
    assert!(!emu.trigger_lifecycle(plain["id"].as_str().unwrap(), LifecycleEvent::Missed).unwrap());
    rx.quiet("/plain", 0).await;

    let log: Vec<Value> = client()
        .get(format!("{}/_admin/notifications?kind=lifecycle", emu.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|r| r["outcome"] == "delivered" && r["status"] == 202), "{log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_then_dropped_with_a_missed_notification() {
    let emu = start_mail();
    quick_retries(&emu);
    let rx = Receiver::start().await;
    let t = app_token(&emu, GRAPH).await;
    let mut body = subscription(&emu, &inbox_of(SHARED), "created", &rx.url("/notify"));
    body["lifecycleNotificationUrl"] = json!(rx.url("/lifecycle"));
    let sub = created(&emu, &t, body).await;
    let id = sub["id"].as_str().unwrap().to_string();
    let attempts = |emu: &Emulator| -> Vec<(u32, String)> {
        emu.notifications().into_iter().filter(|r| r.kind == "change").map(|r| (r.attempt, r.outcome)).collect()
    };

    // An injected fault: two attempts fail without reaching the receiver, the third delivers.
    emu.fail_notifications(NotificationFault { url: rx.url("/notify"), count: Some(2), ms: None }).unwrap();
    let m1 = emu.deliver_mime(SHARED, "inbox", &mime(1)).unwrap();
    assert_eq!(rx.wait_items("/notify", 1).await[0]["resourceData"]["id"], m1.id.as_str());
    // The emulator records an attempt once the receiver's answer is in, which may be just after
    // the receiver has seen the post.
    let deadline = Instant::now() + Duration::from_secs(10);
    while attempts(&emu).len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(attempts(&emu), [(1, "failed".into()), (2, "failed".into()), (3, "delivered".into())]);
    let first = emu.notifications().into_iter().find(|r| r.kind == "change").unwrap();
    assert!(first.error.as_deref().unwrap().contains("injected"), "{first:?}");

    // The receiver answers 500, then recovers: the same notification comes again.
    emu.clear_notifications();
    rx.set(|s| s.status = 500);
    let m2 = emu.deliver_mime(SHARED, "inbox", &mime(2)).unwrap();
    rx.wait_items("/notify", 3).await;
    rx.set(|s| s.status = 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !attempts(&emu).iter().any(|(_, o)| o == "delivered") {
        assert!(Instant::now() < deadline, "{:?}", attempts(&emu));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = emu.notifications();
    assert_eq!((log[0].status, log[0].error.as_deref()), (Some(500), Some("HTTP 500")));
    let posts = rx.posts("/notify");
    assert!(posts[1..].iter().all(|p| p[0]["resourceData"]["id"] == m2.id.as_str()), "{posts:#?}");

    // Slower than the delivery timeout (3 s by Microsoft; shortened here) is a failure too.
    emu.clear_notifications();
    emu.set_notification_policy(NotificationPolicy {
        retry_initial_ms: 100,
        retry_max_ms: 200,
        delivery_timeout_ms: 300,
        ..Default::default()
    })
    .unwrap();
    rx.set(|s| s.delay_ms = 800);
    let before = rx.items("/notify").len();
    emu.deliver_mime(SHARED, "inbox", &mime(3)).unwrap();
    rx.wait_items("/notify", before + 1).await;
    rx.set(|s| s.delay_ms = 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !attempts(&emu).iter().any(|(_, o)| o == "delivered") {
        assert!(Instant::now() < deadline, "{:?}", attempts(&emu));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(emu.notifications()[0].error.as_deref(), Some("timed out"));

    // Failing for longer than the retry window (4 hours by Microsoft; a minute here, on the
    // emulator clock): dropped, and the lifecycle URL hears `missed`.
    emu.set_notification_policy(NotificationPolicy {
        retry_initial_ms: 100,
        retry_max_ms: 200,
        retry_window_seconds: 60,
        ..Default::default()
    })
    .unwrap();
    emu.clear_notifications();
    emu.fail_notifications(NotificationFault { url: rx.url("/notify"), count: None, ms: None }).unwrap();
    let before = rx.items("/notify").len();
    emu.deliver_mime(SHARED, "inbox", &mime(4)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while attempts(&emu).len() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    emu.advance_clock(61);
    let missed = rx.wait_items("/lifecycle", 1).await.remove(0);
    assert_eq!(missed["lifecycleEvent"], "missed");
    assert_eq!(missed["subscriptionId"], id.as_str());
    assert!(emu.notifications().iter().any(|r| r.kind == "change" && r.outcome == "dropped"));
    emu.clear_notification_faults();
    rx.quiet("/notify", before).await;
    // Later changes are delivered again.
    emu.deliver_mime(SHARED, "inbox", &mime(5)).unwrap();
    rx.wait_items("/notify", before + 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_read_access_are_refused() {
    let emu = start_mail();
    let rx = Receiver::start().await;
    let resource = inbox_of(SHARED);
    let body = subscription(&emu, &resource, "created", &rx.url("/n"));

    // No token, a token for Exchange instead of Graph.
    let r = client().post(subscriptions_url(&emu)).json(&body).send().await.unwrap();
    let (s, b) = (r.status().as_u16(), r.json().await.unwrap());
    assert_graph_error(s, &b, 401, "InvalidAuthenticationToken");
    let ews = app_token(&emu, "https://outlook.office365.com").await;
    let (s, b) = create(&emu, &ews, body.clone()).await;
    assert_graph_error(s, &b, 401, "InvalidAuthenticationToken");

    // An app that may only send mail.
    let sender = "5a6b7c8d-1111-4222-8333-944455556666";
    emu.add_app(AppSpec {
        tenant: DOMAIN.into(),
        client_id: Some(sender.into()),
        secrets: vec![SecretSpec::new("sender~secret")],
        application_permissions: vec!["https://graph.microsoft.com/Mail.Send".into()],
        ..Default::default()
    })
    .unwrap();
    let (_, tok) = post_token(
        &emu,
        DOMAIN,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", sender),
            ("client_secret", "sender~secret"),
            ("scope", "https://graph.microsoft.com/.default"),
        ],
    )
    .await;
    let (s, b) = create(&emu, tok["access_token"].as_str().unwrap(), body.clone()).await;
    assert_graph_error(s, &b, 403, "ExtensionError");
    assert_eq!(
        b["error"]["message"],
        "Operation: Create; Exception: [Status Code: Forbidden; Reason: Access is denied. Check credentials and try again.]"
    );

    // Delegated: only the signed-in user's own mailbox, even with a grant and Mail.Read.Shared.
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: ALICE.into() })
        .unwrap();
    let alice = user_token(&emu, ALICE, &["https://graph.microsoft.com/Mail.Read.Shared"]);
    assert_eq!(gget(&format!("{}/users/{SHARED}/messages", emu.graph_url()), &alice).await.0, 200, "she reads it");
    let (s, b) = create(&emu, &alice, body.clone()).await;
    assert_graph_error(s, &b, 403, "ExtensionError");
    let mine =
        created(&emu, &alice, subscription(&emu, "me/mailFolders('inbox')/messages", "created", &rx.url("/alice")))
            .await;
    assert_eq!(mine["applicationId"], WEB_APP);
    let alice_oid = emu.state().users.iter().find(|u| u.username == ALICE).unwrap().oid.clone().unwrap();
    assert_eq!(mine["creatorId"], alice_oid.as_str());
    emu.deliver_mime(ALICE, "inbox", &mime(1)).unwrap();
    rx.wait_items("/alice", 1).await;

    // Another app sees none of it.
    let daemon = app_token(&emu, GRAPH).await;
    let (s, _) = gget(&format!("{}/{}", subscriptions_url(&emu), mine["id"].as_str().unwrap()), &daemon).await;
    assert_eq!(s, 404);
    let (_, list) = gget(&subscriptions_url(&emu), &daemon).await;
    assert_eq!(list["value"], json!([]));
    let (s, _, _) = call(
        Method::DELETE,
        &format!("{}/{}", subscriptions_url(&emu), mine["id"].as_str().unwrap()),
        &daemon,
        &[],
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (_, list) = gget(&subscriptions_url(&emu), &alice).await;
    assert_eq!(list["value"].as_array().unwrap().len(), 1);

    // App-only: no `me`; an application access policy; an unknown mailbox.
    let (s, b) = create(&emu, &daemon, subscription(&emu, "me/messages", "created", &rx.url("/n"))).await;
    assert_graph_error(s, &b, 400, "BadRequest");
    let (s, b) =
        create(&emu, &daemon, subscription(&emu, &inbox_of("nobody@contoso.test"), "created", &rx.url("/n"))).await;
    assert_graph_error(s, &b, 404, "ExtensionError");
    emu.set_access_policy(AccessPolicySpec {
        tenant: DOMAIN.into(),
        client_id: DAEMON_APP.into(),
        mailboxes: vec![USER.into()],
    })
    .unwrap();
    let (s, b) = create(&emu, &daemon, body.clone()).await;
    assert_graph_error(s, &b, 403, "ExtensionError");
    assert!(b["error"]["message"].as_str().unwrap().contains("[RAOP]"), "{b}");
    created(&emu, &daemon, subscription(&emu, &inbox_of(USER), "created", &rx.url("/robot"))).await;

    // Refused requests never reached the receiver.
    let validated: Vec<String> = rx.validations().into_iter().map(|r| r.path).collect();
    assert_eq!(validated, ["/alice", "/robot"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receivers_need_a_trusted_ca() {
    let emu = start_mail();
    let tls = SelfSignedTls::generate(&["localhost", "127.0.0.1"]).unwrap();
    let rx = Receiver::start_tls(&tls).await;
    let t = app_token(&emu, GRAPH).await;
    let body = subscription(&emu, &inbox_of(SHARED), "created", &rx.url("/secure"));
    let (s, b) = create(&emu, &t, body.clone()).await;
    assert_graph_error(s, &b, 400, "InvalidRequest");
    emu.trust_notification_ca(&tls.ca_pem).unwrap();
    created(&emu, &t, body).await;
    let m = emu.deliver_mime(SHARED, "inbox", &mime(1)).unwrap();
    assert_eq!(rx.wait_items("/secure", 1).await[0]["resourceData"]["id"], m.id.as_str());
}

#[test]
fn msgraph_sdk_creates_renews_and_deletes_a_subscription() {
    let python = venv_python("msgraph-sdk", MSGRAPH_VERSION);
    let emu = Emulator::start(EmulatorConfig::https(mail_setup())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, emu.ca_pem().unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let rx = rt.block_on(Receiver::start());
    let token = rt.block_on(async {
        let c = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(emu.ca_pem().unwrap().as_bytes()).unwrap())
            .build()
            .unwrap();
        let r: Value = c
            .post(emu.token_url(DOMAIN))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", DAEMON_APP),
                ("client_secret", DAEMON_SECRET),
                ("scope", "https://graph.microsoft.com/.default"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["access_token"].as_str().expect("a token").to_string()
    });
    let mut script = Script::start(
        &python,
        "msgraph_subscription.py",
        &ca,
        &json!({
            "graph_url": emu.graph_url(), "token": token, "ca": ca, "mailbox": SHARED,
            "notification_url": rx.url("/sdk"), "lifecycle_url": rx.url("/sdk-lifecycle"), "client_state": STATE,
        }),
    );
    let r = script.recv();
    assert_eq!(r["msgraph_sdk_version"], MSGRAPH_VERSION);
    let id = r["id"].as_str().expect("a subscription id").to_string();
    assert_eq!(r["resource"], inbox_of(SHARED));
    assert_eq!((r["change_type"].as_str(), r["client_state"].as_str()), (Some("created"), Some(STATE)));
    assert_eq!(r["application_id"], DAEMON_APP);
    assert_eq!(r["expires_in_minutes"], 60);
    assert_eq!(r["got_notification_url"], rx.url("/sdk"));
    assert_eq!(r["listed"], json!([id]));
    assert_eq!(r["renewed_minutes"], 120);
    assert_eq!(r["too_long"]["status"], 400);
    assert_eq!(r["too_long"]["code"], "ExtensionError");
    assert_eq!(rx.validations().len(), 2, "notificationUrl and lifecycleNotificationUrl validated");

    let m = emu.deliver_mime(SHARED, "inbox", &mime(1)).unwrap();
    let n = rt.block_on(rx.wait_items("/sdk", 1)).remove(0);
    assert_eq!((n["subscriptionId"].as_str(), n["clientState"].as_str()), (Some(id.as_str()), Some(STATE)));
    assert_eq!(n["resourceData"]["id"], m.id.as_str());

    script.send(&json!({}));
    let after = script.recv();
    assert_eq!(after["get_after_delete"]["status"], 404, "{after}");
    assert!(emu.subscriptions().is_empty());
    emu.deliver(DeliverSpec { mailbox: SHARED.into(), folder: None, mime: mime(2), ..Default::default() }).unwrap();
    rt.block_on(rx.quiet("/sdk", 1));
}
