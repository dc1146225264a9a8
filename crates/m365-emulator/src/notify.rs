//! The emulator as an HTTP client: Graph's validation requests and change notification deliveries
//! (webhooks), on the server's own tokio runtime.
//!
//! A plain HTTP/1.1 POST over TCP (hyper's client connection, one connection per request,
//! `Connection: close`), or over TLS (rustls, ring) for `https://` URLs when the CA that signed the
//! receiver's certificate was given to [`crate::Emulator::trust_notification_ca`].
//!
//! The notifier task ([`run`]) wakes every [`TICK`] (or when poked through `Emu::notifier`): it
//! removes expired subscriptions, sends `reauthorizationRequired` to subscriptions near their end,
//! turns the mailbox changes since the last tick into change notifications, drops deliveries
//! whose retry window is over, and starts the deliveries that are due — one at a time per URL,
//! in order, so a receiver sees its notifications in the order the changes happened.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, header};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use crate::state::Emu;

/// How often the notifier looks for work when nothing pokes it.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// Most bytes of a receiver's answer read (validation tokens are short; notification answers are
/// ignored).
const MAX_ANSWER: usize = 1 << 20;

/// What a receiver answered.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// Why a POST got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PostError {
    /// No complete answer within the time allowed.
    Timeout,
    /// Not sent or not answered: bad URL, connection refused or reset, TLS failure…
    Failed(String),
}

impl std::fmt::Display for PostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PostError::Timeout => f.write_str("timed out"),
            PostError::Failed(e) => f.write_str(e),
        }
    }
}

/// POSTs `body` to `url` and reads the answer, all within `timeout`.
pub(crate) async fn post(
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<Answer, PostError> {
    let fail = |e: &dyn std::fmt::Display| PostError::Failed(e.to_string());
    let u = url::Url::parse(url).map_err(|e| fail(&e))?;
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(PostError::Failed("the URL has no host".into())),
    };
    let port = u.port_or_known_default().ok_or_else(|| PostError::Failed("the URL has no port".into()))?;
    let authority = match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => host.clone(),
    };
    let mut target = u.path().to_string();
    if let Some(q) = u.query() {
        target.push('?');
        target.push_str(q);
    }
    let req = Request::post(target)
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::CONNECTION, "close")
        .header(header::USER_AGENT, "m365-emulator change notifications")
        .body(Body::from(body))
        .map_err(|e| fail(&e))?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| fail(&e))?;
        let _ = tcp.set_nodelay(true);
        match u.scheme() {
            "http" => send(TokioIo::new(tcp), req).await,
            "https" => {
                let cfg = tls.ok_or_else(|| {
                    PostError::Failed("no CA is trusted for https notification URLs (trust_notification_ca)".into())
                })?;
                let name = ServerName::try_from(host.clone()).map_err(|e| fail(&e))?;
                let stream = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.map_err(|e| fail(&e))?;
                send(TokioIo::new(stream), req).await
            }
            other => Err(PostError::Failed(format!("unsupported scheme {other}"))),
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(PostError::Timeout),
    }
}

async fn send<I>(io: I, req: Request<Body>) -> Result<Answer, PostError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let fail = |e: &dyn std::fmt::Display| PostError::Failed(e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| fail(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("notification connection: {e}");
        }
    });
    let resp = sender.send_request(req).await.map_err(|e| fail(&e))?;
    let status = resp.status().as_u16();
    let content_type = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = axum::body::to_bytes(Body::new(resp.into_body()), MAX_ANSWER).await.map_err(|e| fail(&e))?;
    Ok(Answer { status, content_type, body })
}

/// A TLS client configuration trusting the given CA certificates (PEM).
pub(crate) fn client_config(ca_pems: &[String]) -> Result<Arc<rustls::ClientConfig>, crate::EmulatorError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| crate::EmulatorError::Tls(format!("CA certificate: {e}")))?;
            roots.add(cert).map_err(|e| crate::EmulatorError::Tls(format!("CA certificate: {e}")))?;
        }
    }
    if roots.is_empty() {
        return Err(crate::EmulatorError::Tls("no certificate in the PEM".into()));
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::EmulatorError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// One delivery attempt the notifier starts: where, what, and how long the receiver has.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub delivery: u64,
    pub url: String,
    pub body: Vec<u8>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub timeout: Duration,
    /// An injected fault: fail without contacting the receiver.
    pub faulted: bool,
}

/// The notifier: runs until the server's runtime ends.
pub(crate) async fn run(emu: Arc<Emu>) {
    loop {
        tokio::select! {
            _ = emu.notifier.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        for attempt in tick(&emu) {
            tokio::spawn(deliver(emu.clone(), attempt));
        }
    }
}

/// One round of the notifier's work; returns the deliveries to start.
fn tick(emu: &Arc<Emu>) -> Vec<Attempt> {
    let now = emu.clock.now_ms();
    // Mail lock first and alone: the changes are taken out, then matched under the other lock.
    let changes: Vec<(String, Vec<crate::mail::MailChange>)> = {
        let mut mail = emu.mail();
        mail.mailboxes
            .iter_mut()
            .filter(|m| !m.changes.is_empty())
            .map(|m| (m.id.clone(), std::mem::take(&mut m.changes)))
            .collect()
    };
    let mut subs = emu.subs();
    subs.expire(now);
    subs.reauthorization_notices(now);
    for (mailbox, list) in changes {
        subs.notify_changes(&mailbox, &list, now);
    }
    subs.drop_stale(now);
    subs.due_attempts(Instant::now())
}

async fn deliver(emu: Arc<Emu>, a: Attempt) {
    let started = Instant::now();
    let result = if a.faulted {
        Err(PostError::Failed("injected fault (fail_notifications)".into()))
    } else {
        post(&a.url, "application/json; charset=utf-8", a.body, a.tls, a.timeout).await
    };
    let elapsed = started.elapsed();
    // A late answer counts as a failure, as Graph's publisher gives up after its timeout.
    let result = match result {
        Ok(_) if elapsed > a.timeout => Err(PostError::Timeout),
        r => r,
    };
    let now = emu.clock.now_ms();
    emu.subs().finish(a.delivery, result, elapsed, now, Instant::now());
    emu.notifier.notify_one();
}
