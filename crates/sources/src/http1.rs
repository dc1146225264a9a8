//! One HTTP/1.1 connection that its user holds and sends on, one request at
//! a time: for NTLM, which authenticates a connection rather than a request,
//! so its AUTHENTICATE message must go on the very connection whose 401
//! carried the CHALLENGE. A pooling client (reqwest) cannot promise that: it
//! hands a finished connection back to its pool from a background task, so a
//! request sent right after may leave on a fresh connection instead.
//!
//! Direct connections only (no HTTP proxy); TLS with the robot's roots.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::SourceError;

/// An answer read to its end.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the server said it closes the connection after this answer.
    pub fn closes(&self) -> bool {
        self.headers
            .get_all(hyper::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|option| option.trim().eq_ignore_ascii_case("close"))
    }
}

pub(crate) struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// `Host` header value and request target (origin form).
    host: String,
    target: String,
    timeout: Duration,
}

impl Connection {
    /// Connects (and, for https, starts TLS) to the server of `url`.
    pub async fn open(url: &url::Url, tls: Arc<rustls::ClientConfig>, timeout: Duration) -> Result<Self, SourceError> {
        let bad_url = || SourceError::permanent(format!("{url} is not an http or https URL with a host"));
        let host = url.host_str().ok_or_else(bad_url)?.to_string();
        let port = url.port_or_known_default().ok_or_else(bad_url)?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(bad_url()),
        };
        let failed = |e: &dyn std::fmt::Display| SourceError::transient(format!("connecting to {host}:{port}: {e}"));
        let connect = async {
            // An IPv6 literal comes bracketed in URLs, bare in connect().
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let tcp = TcpStream::connect((bare, port)).await.map_err(|e| failed(&e))?;
            let _ = tcp.set_nodelay(true);
            if https {
                let name = ServerName::try_from(bare.to_string()).map_err(|e| failed(&e))?;
                let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| failed(&e))?;
                handshake(stream).await.map_err(|e| failed(&e))
            } else {
                handshake(tcp).await.map_err(|e| failed(&e))
            }
        };
        let sender = tokio::time::timeout(timeout, connect).await.map_err(|_| failed(&"timed out"))??;
        let host_header = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        Ok(Self { sender, host: host_header, target, timeout })
    }

    /// Whether the connection is gone (the server closed it, or it failed).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// POSTs `body` and reads the whole answer, so the connection is ready
    /// for the next request. An answer over `cap` bytes is refused (the
    /// connection is then unusable and should be dropped).
    pub async fn post(
        &mut self,
        headers: &[(HeaderName, String)],
        body: &str,
        cap: u64,
    ) -> Result<Answer, SourceError> {
        let mut request = hyper::Request::post(self.target.as_str())
            .header(hyper::header::HOST, self.host.as_str())
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| SourceError::permanent(format!("HTTP request: {e}")))?;
        for (name, value) in headers {
            let value = HeaderValue::from_str(value)
                .map_err(|_| SourceError::permanent(format!("HTTP header {name} has characters HTTP forbids")))?;
            request.headers_mut().insert(name.clone(), value);
        }
        let failed = |e: &dyn std::fmt::Display| SourceError::transient(format!("{}: {e}", self.host));
        let exchange = async {
            self.sender.ready().await.map_err(|e| failed(&e))?;
            let response = self.sender.send_request(request).await.map_err(|e| failed(&e))?;
            let (parts, body) = response.into_parts();
            let limited = http_body_util::Limited::new(body, usize::try_from(cap).unwrap_or(usize::MAX));
            let body = match limited.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                    return Err(SourceError::too_large(
                        format!("{}: the answer is longer than the {cap} bytes the robot reads", self.host),
                        cap.saturating_add(1),
                    ));
                }
                Err(e) => return Err(failed(&e)),
            };
            Ok::<_, SourceError>(Answer { status: parts.status.as_u16(), headers: parts.headers, body })
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| failed(&"timed out"))?
    }
}

async fn handshake<T>(io: T) -> hyper::Result<SendRequest<Full<Bytes>>>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    // Drives the connection; ends when the sender is dropped or the server closes.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "EWS connection ended");
        }
    });
    Ok(sender)
}
