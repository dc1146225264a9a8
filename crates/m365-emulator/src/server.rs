//! The HTTP(S) server and the in-process handle tests use.
//!
//! Connections are served by hyper directly (not `axum::serve`) so that an injected fault can
//! close a connection without answering, and so that plain and TLS listeners share one path.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::routing::{any, get, post};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::config::{
    AccessPolicySpec, AppSpec, ConsentSpec, DeliverSpec, EwsAuthSpec, EwsBlockSpec, FaultSpec, FolderInfo,
    IdTokenFault, IssueSpec, MailboxAppGrant, MailboxGrant, MailboxSpec, MessageInfo, ReadReceipt, SecretSpec,
    ServicePrincipalSpec, Setup, TenantSpec, UserSpec, UserUpdate,
};
use crate::error::Trace;
use crate::faults::{Stats, classify, fault_error};
use crate::jwt::SigningKey;
use crate::mailadmin::SlotHold;
use crate::state::Emu;
use crate::subscriptions::{
    LifecycleEvent, NotificationFault, NotificationPolicy, NotificationRecord, SubscriptionInfo,
};
use crate::tls::SelfSignedTls;
use crate::{EmulatorError, admin, authorize, discovery, graph, mailadmin, token};

/// How the emulator serves HTTPS.
#[derive(Debug, Clone)]
pub enum TlsSetup {
    /// A certificate chain and its private key, PEM text.
    Pem { cert_chain_pem: String, key_pem: String },
    /// A CA and a certificate for `localhost` / `127.0.0.1` generated at start;
    /// [`Emulator::ca_pem`] gives the CA to trust.
    SelfSigned,
}

/// How to start an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where to listen; port 0 picks a free one. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The base URL clients use (issuer, endpoints). Default: derived from the listen address.
    pub public_url: Option<String>,
    pub tls: Option<TlsSetup>,
    /// Tenants, apps, users and consents to start with.
    pub setup: Setup,
    /// RS256 signing key, PKCS#8 PEM. Default: one key generated per process.
    pub signing_key_pem: Option<String>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            public_url: None,
            tls: None,
            setup: Setup::default(),
            signing_key_pem: None,
        }
    }
}

impl EmulatorConfig {
    /// Plain HTTP on a free loopback port.
    pub fn http(setup: Setup) -> Self {
        EmulatorConfig { setup, ..Default::default() }
    }

    /// HTTPS with a generated CA on a free loopback port.
    pub fn https(setup: Setup) -> Self {
        EmulatorConfig { setup, tls: Some(TlsSetup::SelfSigned), ..Default::default() }
    }
}

pub(crate) fn router(emu: Arc<Emu>) -> Router {
    Router::new()
        .route("/", get(discovery::index))
        .route("/error", get(discovery::error_lookup))
        .route("/introspect", get(discovery::introspect_get).post(discovery::introspect_post))
        .route(
            "/introspect/{protocol}",
            get(discovery::introspect_protocol_get).post(discovery::introspect_protocol_post),
        )
        .route("/oidc/userinfo", get(discovery::userinfo))
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize::authorize).post(authorize::authorize))
        .route("/{tenant}/oauth2/v2.0/token", post(token::token_post).get(token::token_get))
        .route("/{tenant}/oauth2/v2.0/logout", get(authorize::logout))
        .route("/{tenant}/login", post(authorize::login_post))
        .route("/{tenant}/mfa", post(authorize::mfa_post))
        .route("/{tenant}/consent", post(authorize::consent_post))
        .route("/{tenant}/v2.0/.well-known/openid-configuration", get(discovery::openid_configuration))
        .route("/{tenant}/discovery/v2.0/keys", get(discovery::keys))
        .route("/{tenant}/discovery/keys", get(discovery::keys))
        .route("/{tenant}/discovery/instance", get(discovery::instance_discovery))
        .route("/v1.0/{*rest}", any(graph::entry))
        .route("/EWS/Exchange.asmx", post(crate::ews::entry))
        .route("/ews/exchange.asmx", post(crate::ews::entry))
        .merge(admin::routes())
        .merge(mailadmin::routes())
        .merge(crate::subscriptions::routes())
        .with_state(emu)
}

/// The TCP connection a request came on, in its extensions: NTLM binds a handshake to it. The id
/// is unique for the server's life (a peer address can come back on a new connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Connection {
    pub id: u64,
    pub peer: SocketAddr,
}

/// The service error that makes hyper close a connection without an answer.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by an injected fault")]
struct Dropped;

/// One request: counters, faults, then the router.
async fn handle(
    mut req: Request<Incoming>,
    conn: Connection,
    router: Router,
    emu: Arc<Emu>,
) -> Result<Response<Body>, Dropped> {
    req.extensions_mut().insert(conn);
    let endpoint = classify(req.uri().path());
    let fault = endpoint.and_then(|ep| emu.faults().on_request(ep));
    let record = |status: &str| {
        if let Some(ep) = endpoint {
            emu.faults().on_response(ep, status);
        }
    };
    if let Some(f) = fault {
        tracing::info!(endpoint = endpoint.unwrap_or_default(), ?f, "injecting fault");
        if f.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.latency_ms)).await;
        }
        if f.drop_connection {
            record("dropped");
            return Err(Dropped);
        }
        if let Some(status) = f.status.and_then(|s| StatusCode::from_u16(s).ok()) {
            let now = emu.clock.now_ms();
            // Each API answers a fault in its own error shape.
            let resp = match endpoint {
                Some(ep) if ep.starts_with("graph") => {
                    graph::fault_error(status, f.retry_after).response(req.headers(), now)
                }
                Some("ews") => crate::ews::fault_response(status, f.retry_after),
                _ => Trace::new(req.headers(), now).error_response(&fault_error(status, f.retry_after), &emu.base_url),
            };
            record(status.as_str());
            return Ok(resp);
        }
    }
    let resp = match router.oneshot(req.map(Body::new)).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    record(resp.status().as_str());
    Ok(resp)
}

async fn serve_connection<I>(io: I, conn: Connection, router: Router, emu: Arc<Emu>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc_emu = emu.clone();
    let svc = hyper::service::service_fn(move |req| handle(req, conn, router.clone(), svc_emu.clone()));
    if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await {
        tracing::debug!("connection ended: {e}");
    }
    emu.ews_auth().forget(conn.id);
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    emu: Arc<Emu>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot use the listener: {e}");
            return;
        }
    };
    let router = router(emu.clone());
    // Change notifications: validation happens in the request, deliveries in this task.
    tokio::spawn(crate::notify::run(emu.clone()));
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                next_id += 1;
                let conn = Connection { id: next_id, peer };
                let (router, emu, tls) = (router.clone(), emu.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(s) => serve_connection(TokioIo::new(s), conn, router, emu).await,
                            Err(e) => tracing::debug!("TLS handshake: {e}"),
                        },
                        None => serve_connection(TokioIo::new(stream), conn, router, emu).await,
                    }
                });
            }
        }
    }
}

/// A running emulator. Dropping it stops the server.
#[derive(Debug)]
pub struct Emulator {
    emu: Arc<Emu>,
    addr: SocketAddr,
    ca_pem: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Starts the server on its own thread and tokio runtime (usable from sync and async tests
    /// alike) and returns once it listens.
    pub fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        let key = match &config.signing_key_pem {
            Some(pem) => Arc::new(SigningKey::from_pkcs8_pem(pem)?),
            None => SigningKey::shared()?,
        };
        let listener = std::net::TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let mut addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let (acceptor, ca_pem) = match &config.tls {
            None => (None, None),
            Some(TlsSetup::Pem { cert_chain_pem, key_pem }) => {
                (Some(TlsAcceptor::from(crate::tls::server_config(cert_chain_pem, key_pem)?)), None)
            }
            Some(TlsSetup::SelfSigned) => {
                let ip = addr.ip().to_string();
                let tls = SelfSignedTls::generate(&["localhost", ip.as_str()])?;
                let cfg = crate::tls::server_config(&tls.cert_pem, &tls.key_pem)?;
                (Some(TlsAcceptor::from(cfg)), Some(tls.ca_pem))
            }
        };
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let base_url = config
            .public_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        let emu = Arc::new(Emu::new(base_url, key, config.setup.clone())?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("m365-emulator")
            .enable_all()
            .build()?;
        let (tx, rx) = oneshot::channel();
        let server_emu = emu.clone();
        let thread = std::thread::Builder::new().name("m365-emulator".into()).spawn(move || {
            runtime.block_on(serve(listener, acceptor, server_emu, rx));
            // Dropping the runtime here ends the connection tasks still running.
            runtime.shutdown_timeout(Duration::from_millis(100));
        })?;
        tracing::info!(url = %emu.base_url, "m365-emulator listening");
        Ok(Emulator { emu, addr, ca_pem, shutdown: Some(tx), thread: Some(thread) })
    }

    /// `http(s)://127.0.0.1:PORT` (or the configured public URL), without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.emu.base_url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The generated CA certificate (PEM) with [`TlsSetup::SelfSigned`].
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// `{base}/{tenant}`: an MSAL authority.
    pub fn authority(&self, tenant: &str) -> String {
        format!("{}/{tenant}", self.base_url())
    }

    pub fn authorize_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/authorize", self.base_url())
    }

    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base_url())
    }

    pub fn jwks_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/discovery/v2.0/keys", self.base_url())
    }

    pub fn openid_configuration_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/v2.0/.well-known/openid-configuration", self.base_url())
    }

    /// The `iss` of tokens for a tenant id.
    pub fn issuer(&self, tenant_id: &str) -> String {
        self.emu.issuer(tenant_id)
    }

    /// `{base}/introspect`: any valid token of the emulator is active there (a generic OAuth2
    /// server's introspection; see the README for Dovecot).
    pub fn introspection_url(&self) -> String {
        format!("{}/introspect", self.base_url())
    }

    /// `{base}/introspect/{protocol}[?mailbox=…]`: introspection that checks a token as Exchange
    /// Online checks an IMAP, POP or SMTP AUTH login (audience, scope or role, access to the
    /// mailbox). `protocol`: `imap`, `pop3`/`pop` or `submission`/`smtp`.
    pub fn mail_introspection_url(&self, protocol: &str, mailbox: Option<&str>) -> String {
        let mut url = format!("{}/introspect/{protocol}", self.base_url());
        if let Some(m) = mailbox {
            url.push_str("?mailbox=");
            url.extend(url::form_urlencoded::byte_serialize(m.as_bytes()));
        }
        url
    }

    /// [`Emulator::mail_introspection_url`] as a template with `{protocol}` and `{user}` for
    /// mailrobot-testkit's Dovecot, which writes one `passdb oauth2` per protocol and mailbox
    /// (Dovecot 2.3 expands no variables in `introspection_url` itself).
    pub fn mail_introspection_url_template(&self) -> String {
        format!("{}/introspect/{{protocol}}?mailbox={{user}}", self.base_url())
    }

    /// The signing key (its PEM starts another emulator whose tokens verify the same way).
    pub fn signing_key(&self) -> &SigningKey {
        &self.emu.key
    }

    pub fn add_tenant(&self, spec: TenantSpec) -> Result<TenantSpec, EmulatorError> {
        self.emu.add_tenant(spec)
    }

    pub fn add_app(&self, spec: AppSpec) -> Result<AppSpec, EmulatorError> {
        self.emu.add_app(spec)
    }

    pub fn add_user(&self, spec: UserSpec) -> Result<UserSpec, EmulatorError> {
        self.emu.add_user(spec)
    }

    /// Adds tenants, apps, users and consents (as `POST /_admin/setup`).
    pub fn load(&self, setup: &Setup) -> Result<(), EmulatorError> {
        self.emu.load(setup)
    }

    /// The directory now, generated ids filled in (as `GET /_admin/state`).
    pub fn state(&self) -> Setup {
        self.emu.dump()
    }

    pub fn grant_consent(&self, spec: ConsentSpec) -> Result<(), EmulatorError> {
        self.emu.grant_consent(spec)
    }

    pub fn revoke_consent(&self, spec: ConsentSpec) -> Result<(), EmulatorError> {
        self.emu.revoke_consent(spec)
    }

    /// Revokes the user's refresh tokens and sessions (refresh then fails with AADSTS70008).
    pub fn revoke_user_tokens(&self, tenant: &str, username: &str) -> Result<(), EmulatorError> {
        self.emu.revoke_user_tokens(tenant, username)
    }

    /// The refresh tokens issued to a user that the emulator still holds: lets a test check a
    /// client never stores or logs them in clear.
    pub fn refresh_tokens_of(&self, tenant: &str, username: &str) -> Result<Vec<String>, EmulatorError> {
        self.emu.refresh_tokens_of(tenant, username)
    }

    /// Changes the password (earlier refresh tokens then fail with AADSTS50173).
    pub fn change_password(&self, tenant: &str, username: &str, password: &str) -> Result<(), EmulatorError> {
        self.emu.change_password(tenant, username, password)
    }

    pub fn update_user(&self, update: UserUpdate) -> Result<UserSpec, EmulatorError> {
        self.emu.update_user(update)
    }

    pub fn add_secret(&self, tenant: &str, client_id: &str, secret: SecretSpec) -> Result<(), EmulatorError> {
        self.emu.add_secret(tenant, client_id, secret)
    }

    /// Expires one secret (or all with `None`) as of now; returns how many.
    pub fn expire_secret(&self, tenant: &str, client_id: &str, value: Option<&str>) -> Result<usize, EmulatorError> {
        self.emu.expire_secret(tenant, client_id, value)
    }

    /// A token response (JSON) as a finished authorization code flow would give, without the
    /// browser (as `POST /_admin/tokens`).
    pub fn issue_tokens(&self, spec: &IssueSpec) -> Result<serde_json::Value, EmulatorError> {
        token::issue_for_admin(&self.emu, spec)
    }

    pub fn inject_fault(&self, fault: FaultSpec) -> Result<(), EmulatorError> {
        self.emu.faults().add(fault)
    }

    /// Changes claims of the next id_tokens issued (cleared with the other faults).
    pub fn tamper_id_tokens(&self, fault: IdTokenFault) -> Result<(), EmulatorError> {
        self.emu.faults().add_id_token(fault)
    }

    pub fn clear_faults(&self) {
        self.emu.faults().clear()
    }

    pub fn stats(&self) -> Stats {
        self.emu.faults().stats.clone()
    }

    pub fn reset_stats(&self) {
        self.emu.faults().stats = Stats::default();
    }

    /// Back to the start setup; grants, sessions, faults, counters and clock offset dropped.
    pub fn reset(&self) -> Result<(), EmulatorError> {
        self.emu.reset(false)
    }

    /// Like [`Emulator::reset`], but the directory is left empty.
    pub fn clear(&self) -> Result<(), EmulatorError> {
        self.emu.reset(true)
    }

    /// Moves the emulator clock forward (tokens, codes and secrets expire accordingly).
    pub fn advance_clock(&self, seconds: i64) {
        self.emu.clock.advance(seconds);
    }

    /// The emulator clock, Unix seconds.
    pub fn now(&self) -> i64 {
        self.emu.clock.now_s()
    }

    /// `{base}/v1.0`: the Graph base URL to give clients.
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url())
    }

    /// `{base}/EWS/Exchange.asmx`
    pub fn ews_url(&self) -> String {
        format!("{}/EWS/Exchange.asmx", self.base_url())
    }

    /// Creates a mailbox (a user's UPN as address makes it the user's); returns its id.
    pub fn create_mailbox(&self, spec: MailboxSpec) -> Result<String, EmulatorError> {
        self.emu.create_mailbox(spec)
    }

    /// Gives a user full access to a mailbox.
    pub fn grant_mailbox_access(&self, grant: MailboxGrant) -> Result<(), EmulatorError> {
        self.emu.grant_mailbox_access(grant)
    }

    /// Lets a user send as a mailbox not their own (`Add-RecipientPermission -AccessRights SendAs`).
    pub fn grant_send_as(&self, grant: MailboxGrant) -> Result<(), EmulatorError> {
        self.emu.grant_send_as(grant)
    }

    /// Registers an app's service principal in Exchange Online (`New-ServicePrincipal`), as
    /// app-only IMAP, POP and SMTP AUTH need.
    pub fn register_service_principal(&self, spec: ServicePrincipalSpec) -> Result<(), EmulatorError> {
        self.emu.register_service_principal(spec)
    }

    /// Gives an app's Exchange service principal full access to a mailbox (`Add-MailboxPermission`).
    pub fn grant_mailbox_access_to_app(&self, grant: MailboxAppGrant) -> Result<(), EmulatorError> {
        self.emu.grant_mailbox_access_to_app(grant)
    }

    /// Restricts an app's app-only mail access to some mailboxes.
    pub fn set_access_policy(&self, policy: AccessPolicySpec) -> Result<(), EmulatorError> {
        self.emu.set_access_policy(policy)
    }

    /// Delivers raw MIME into a folder; returns the message (with its ids).
    pub fn deliver(&self, spec: DeliverSpec) -> Result<MessageInfo, EmulatorError> {
        self.emu.deliver(spec)
    }

    /// Shorthand for [`Emulator::deliver`] into a folder, received now, unread.
    pub fn deliver_mime(&self, mailbox: &str, folder: &str, mime: &str) -> Result<MessageInfo, EmulatorError> {
        self.emu.deliver(DeliverSpec {
            mailbox: mailbox.into(),
            folder: Some(folder.into()),
            mime: mime.into(),
            ..Default::default()
        })
    }

    /// The messages of a folder (id, well-known name or display name), in delivery order.
    pub fn messages(&self, mailbox: &str, folder: &str) -> Result<Vec<MessageInfo>, EmulatorError> {
        self.emu.mail_messages(mailbox, folder)
    }

    /// Every folder of a mailbox with its counts.
    pub fn folders(&self, mailbox: &str) -> Result<Vec<FolderInfo>, EmulatorError> {
        self.emu.mail_folders(mailbox)
    }

    /// How many messages a folder holds.
    pub fn count(&self, mailbox: &str, folder: &str) -> Result<usize, EmulatorError> {
        Ok(self.emu.mail_messages(mailbox, folder)?.len())
    }

    /// The stored MIME of a message (either id).
    pub fn mime(&self, mailbox: &str, id: &str) -> Result<Vec<u8>, EmulatorError> {
        self.emu.mail_mime(mailbox, id)
    }

    /// Expires every delta token / sync state of the mailbox (410 SyncStateNotFound next time).
    pub fn expire_delta_tokens(&self, mailbox: &str) -> Result<(), EmulatorError> {
        self.emu.expire_delta_tokens(mailbox)
    }

    /// Turns Graph access to a mailbox off (404 MailboxNotEnabledForRESTAPI) or back on.
    pub fn set_rest_enabled(&self, mailbox: &str, enabled: bool) -> Result<(), EmulatorError> {
        self.emu.set_rest_enabled(mailbox, enabled)
    }

    /// Concurrent requests per (app, mailbox) before 429 (default 4, as Outlook).
    pub fn set_mail_concurrency_limit(&self, limit: usize) {
        self.emu.set_mail_concurrency_limit(limit)
    }

    /// Holds up to `slots` of app `client_id`'s concurrency slots on a mailbox (address or id)
    /// until the returned hold is dropped, as running requests of another client of the same app
    /// would (as `POST /_admin/mailboxes/hold`): Graph requests, `$batch` items and EWS calls of
    /// the app then find that many fewer free. Fewer are held when fewer are free.
    pub fn hold_mail_slots(&self, mailbox: &str, client_id: &str, slots: usize) -> Result<SlotHold, EmulatorError> {
        self.emu.hold_mail_slots(mailbox, client_id, slots)
    }

    /// Chooses the schemes EWS accepts (as `POST /_admin/ews/auth`): `Bearer` (Exchange Online, the
    /// default), `Basic` and/or `NTLM` (Exchange Server on-premises, a user's name and password).
    pub fn set_ews_auth(&self, spec: EwsAuthSpec) -> Result<EwsAuthSpec, EmulatorError> {
        self.emu.set_ews_auth(spec)
    }

    /// The schemes EWS accepts now.
    pub fn ews_auth(&self) -> EwsAuthSpec {
        self.emu.ews_auth_spec()
    }

    /// Closes EWS to callers whose app id is not allowed, answering HTTP 403 (as Exchange Online
    /// from 2026-10-01 without `EWSEnabled` and `EWSAllowedAppIDs`), or opens it again
    /// (as `POST /_admin/ews/block`).
    pub fn set_ews_block(&self, spec: EwsBlockSpec) -> EwsBlockSpec {
        self.emu.set_ews_block(spec)
    }

    /// The read receipts Exchange sent for a mailbox's messages (every mailbox's with `None`):
    /// marked read or deleted unread without `SuppressReadReceipts`, or marked read through Graph.
    pub fn read_receipts(&self, mailbox: Option<&str>) -> Result<Vec<ReadReceipt>, EmulatorError> {
        self.emu.read_receipts(mailbox)
    }

    /// The Graph change notification subscriptions that exist (every app's), with their
    /// `clientState` (as `GET /_admin/subscriptions`).
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        self.emu.subscription_list()
    }

    /// Sends a lifecycle notification for a subscription (as `POST /_admin/subscriptions/lifecycle`):
    /// `SubscriptionRemoved` also removes the subscription, `ReauthorizationRequired` marks it
    /// until it is reauthorized or renewed. Returns whether a notification was queued: Graph sends
    /// none to subscriptions created without `lifecycleNotificationUrl`.
    pub fn trigger_lifecycle(&self, subscription_id: &str, event: LifecycleEvent) -> Result<bool, EmulatorError> {
        self.emu.trigger_lifecycle(subscription_id, event)
    }

    /// Makes change and lifecycle notification deliveries to URLs starting with `fault.url` fail
    /// (without contacting the receiver) for `count` attempts and/or `ms` milliseconds, or until
    /// [`Emulator::clear_notification_faults`]; they are retried as Graph retries.
    pub fn fail_notifications(&self, fault: NotificationFault) -> Result<(), EmulatorError> {
        self.emu.fail_notifications(fault)
    }

    pub fn clear_notification_faults(&self) {
        self.emu.clear_notification_faults()
    }

    /// Every validation request and delivery attempt made to receivers, oldest first (the last
    /// 10,000), with what was sent and how it ended (as `GET /_admin/notifications`).
    pub fn notifications(&self) -> Vec<NotificationRecord> {
        self.emu.notification_records()
    }

    pub fn clear_notifications(&self) {
        self.emu.clear_notification_records()
    }

    /// Lifetimes, timeouts and retry timing of change notifications (Microsoft's by default).
    pub fn set_notification_policy(&self, policy: NotificationPolicy) -> Result<NotificationPolicy, EmulatorError> {
        self.emu.set_notification_policy(policy)
    }

    pub fn notification_policy(&self) -> NotificationPolicy {
        self.emu.notification_policy()
    }

    /// Trusts a CA (PEM) for `https://` notification URLs (none is trusted by default).
    pub fn trust_notification_ca(&self, ca_pem: &str) -> Result<(), EmulatorError> {
        self.emu.trust_notification_ca(ca_pem)
    }

    /// Stops the server and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}
