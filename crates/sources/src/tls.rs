//! TLS for the IMAP and POP3 clients: the mode a mailbox asks for, the
//! rustls client configuration (webpki roots plus an optional private CA),
//! and one stream type that is either plain TCP or TLS over TCP so a
//! STARTTLS upgrade can happen in place.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::SourceError;

/// Environment variable naming a PEM file of extra trusted CA certificates,
/// used when a mailbox has no `extra_ca_file` of its own.
pub const CA_FILE_ENV: &str = "MAILROBOT_CA_FILE";

/// How the connection to a mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum TlsMode {
    /// Plain text. Only sensible on loopback or inside a trusted network.
    #[serde(rename = "none")]
    None,
    /// Plain connect, then upgrade with STARTTLS (IMAP) / STLS (POP3)
    /// before logging in; fails if the server does not offer it.
    #[serde(rename = "starttls")]
    StartTls,
    /// TLS from the first byte (IMAPS 993, POP3S 995).
    #[serde(rename = "tls")]
    Tls,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::StartTls => "starttls",
            TlsMode::Tls => "tls",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(TlsMode::None),
            "starttls" => Ok(TlsMode::StartTls),
            "tls" => Ok(TlsMode::Tls),
            other => Err(format!("unknown TLS mode {other:?}: expected \"none\", \"starttls\" or \"tls\"")),
        }
    }
}
/// The TLS configuration a connection in `mode` needs: none for plain
/// connections, else [`client_config`].
pub fn config_for(
    mode: TlsMode,
    extra_ca_file: Option<&Path>,
) -> Result<Option<Arc<rustls::ClientConfig>>, SourceError> {
    match mode {
        TlsMode::None => Ok(None),
        TlsMode::StartTls | TlsMode::Tls => client_config(extra_ca_file).map(Some),
    }
}

/// A rustls client configuration trusting the webpki roots plus every
/// certificate in `extra_ca_file` (or in the file named by
/// `MAILROBOT_CA_FILE` when `extra_ca_file` is `None`).
pub fn client_config(extra_ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, SourceError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());

    let env_file = std::env::var_os(CA_FILE_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = extra_ca_file.map(Path::to_path_buf).or(env_file) {
        let added = add_pem_certs(&mut roots, &path)?;
        tracing::debug!(path = %path.display(), added, "extra CA certificates loaded");
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SourceError::permanent(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn add_pem_certs(roots: &mut rustls::RootCertStore, path: &Path) -> Result<usize, SourceError> {
    let bad_file = |e: &dyn fmt::Display| {
        SourceError::permanent(format!(
            "cannot read CA certificates from {}: {e} — point extra_ca_file (or {CA_FILE_ENV}) \
             at a readable PEM file",
            path.display()
        ))
    };
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad_file(&e))? {
        let cert = cert.map_err(|e| bad_file(&e))?;
        roots.add(cert).map_err(|e| bad_file(&e))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad_file(&"no CERTIFICATE blocks found"));
    }
    Ok(added)
}

/// Plain TCP or TLS over TCP, so a session type does not change when
/// STARTTLS upgrades the connection.
#[derive(Debug)]
pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// A server's answers from memory: the fuzz targets' scripted server.
    Scripted(crate::fuzzing::Scripted),
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Scripted(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Scripted(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Scripted(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Scripted(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Opens a TCP connection within `timeout`. `what` names the protocol in
/// messages ("IMAP", "POP3").
/// Opens the connection a mode starts with: TLS from the first byte for
/// [`TlsMode::Tls`], plain TCP otherwise (STARTTLS upgrades it later).
pub(crate) async fn connect(
    what: &str,
    host: &str,
    port: u16,
    mode: TlsMode,
    config: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Result<Transport, SourceError> {
    let tcp = connect_tcp(what, host, port, timeout).await?;
    match (mode, config) {
        (TlsMode::Tls, Some(config)) => tls_handshake(what, tcp, host, port, config.clone(), timeout).await,
        _ => Ok(Transport::Plain(tcp)),
    }
}

pub(crate) async fn connect_tcp(
    what: &str,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, SourceError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| {
            SourceError::transient(format!(
                "{what} connect to {host}:{port} timed out after {timeout:?} — check the host, \
                 the port and any firewall in between"
            ))
        })?
        .map_err(|e| {
            SourceError::transient(format!(
                "{what} connect to {host}:{port} failed: {e} — check the host and port, and \
                 that the server is running"
            ))
        })?;
    // Commands are small and answered one by one: do not let Nagle delay them.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Runs the TLS handshake over an established TCP connection, checking the
/// certificate against `host`.
pub(crate) async fn tls_handshake(
    what: &str,
    tcp: TcpStream,
    host: &str,
    port: u16,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<Transport, SourceError> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| SourceError::permanent(format!("{what} host {host:?} is not a valid TLS server name: {e}")))?;
    let connector = TlsConnector::from(config);
    let tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| {
            SourceError::transient(format!(
                "{what} TLS handshake with {host}:{port} timed out after {timeout:?} — check \
                 that the port speaks TLS (e.g. 993/995) or use starttls on the plain port"
            ))
        })?
        .map_err(|e| handshake_error(what, host, port, e))?;
    Ok(Transport::Tls(Box::new(tls)))
}

fn handshake_error(what: &str, host: &str, port: u16, e: io::Error) -> SourceError {
    // rustls reports certificate and protocol problems as io errors wrapping
    // a rustls::Error: those need a person, not a retry.
    let Some(tls_err) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return SourceError::transient(format!("{what} TLS handshake with {host}:{port} failed: {e}"));
    };
    let hint = match tls_err {
        rustls::Error::InvalidCertificate(_) => format!(
            "if the server uses a private or self-signed certificate, add its CA with \
             extra_ca_file (or {CA_FILE_ENV}); check that the host name matches the certificate"
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the port does not seem to speak TLS: use tls on the TLS port (993/995) or \
             starttls on the plain one (143/110)"
                .to_string()
        }
        _ => "check the server's TLS setup (protocol versions, cipher suites)".to_string(),
    };
    SourceError::permanent(format!("{what} TLS handshake with {host}:{port} failed: {tls_err} — {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_mode_strings_round_trip() {
        for (mode, s) in [(TlsMode::None, "none"), (TlsMode::StartTls, "starttls"), (TlsMode::Tls, "tls")] {
            assert_eq!(mode.to_string(), s);
            assert_eq!(s.parse::<TlsMode>().unwrap(), mode);
        }
        assert!("start-tls".parse::<TlsMode>().is_err());
    }

    #[test]
    fn tls_mode_serde_names() {
        assert_eq!(serde_json::to_string(&TlsMode::StartTls).unwrap(), "\"starttls\"");
        let modes: Vec<TlsMode> = serde_json::from_str(r#"["none","starttls","tls"]"#).unwrap();
        assert_eq!(modes, [TlsMode::None, TlsMode::StartTls, TlsMode::Tls]);
    }

    #[test]
    fn client_config_without_extra_ca() {
        client_config(None).unwrap();
    }

    #[test]
    fn missing_ca_file_is_permanent() {
        let err = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(err.is_permanent());
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
