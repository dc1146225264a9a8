//! TLS to PostgreSQL, as libpq's `sslmode` means it: `disable` (plain),
//! `prefer` (the default: TLS when the server offers it), `require` (TLS or
//! no session), neither checking the server's certificate — what libpq does
//! with no root certificate; `verify-ca` (a certificate from a trusted CA)
//! and `verify-full` (and issued for the host connected to). Trusted CAs:
//! the public web roots, plus the PEM file named by `sslrootcert=` in the URL
//! or by `MAILROBOT_CA_FILE`.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::Socket;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// Names a PEM file of extra trusted CA certificates (as for mail servers).
const CA_FILE_ENV: &str = "MAILROBOT_CA_FILE";

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A database URL split into what tokio-postgres reads and how TLS goes.
pub(crate) struct DatabaseUrl {
    pub config: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    root_cert: Option<PathBuf>,
}

impl DatabaseUrl {
    /// Parses `url` (`postgres://user:password@host:port/db?sslmode=…`). The
    /// error never holds the password.
    pub fn parse(url: &str) -> Result<Self, String> {
        let mut ssl_mode = SslMode::Prefer;
        let mut root_cert = None;
        // tokio-postgres knows disable, prefer and require only: the verify
        // modes and sslrootcert are read here and taken out.
        let mut rest = url.to_string();
        if let Ok(mut parsed) = url::Url::parse(url) {
            let mut kept = Vec::new();
            for (key, value) in parsed.query_pairs() {
                match key.as_ref() {
                    "sslmode" => {
                        ssl_mode = match value.as_ref() {
                            "disable" => SslMode::Disable,
                            "allow" | "prefer" => SslMode::Prefer,
                            "require" => SslMode::Require,
                            "verify-ca" => SslMode::VerifyCa,
                            "verify-full" => SslMode::VerifyFull,
                            other => {
                                return Err(format!(
                                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                                ));
                            }
                        }
                    }
                    "sslrootcert" => root_cert = Some(PathBuf::from(value.as_ref())),
                    _ => kept.push((key.into_owned(), value.into_owned())),
                }
            }
            if kept.is_empty() {
                parsed.set_query(None);
            } else {
                parsed.query_pairs_mut().clear().extend_pairs(kept);
            }
            rest = parsed.to_string();
        }
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e: tokio_postgres::Error| e.to_string())?;
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
        Ok(Self { config, ssl_mode, root_cert })
    }

    /// The TLS connector for this URL's sessions.
    pub fn tls(&self) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = match self.ssl_mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => None,
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(trusted_roots(self.root_cert.as_deref())?);
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| format!("TLS setup failed: {e}"))?;
                Some(webpki)
            }
        };
        let verifier = Arc::new(CertificateCheck {
            chain,
            name: self.ssl_mode == SslMode::VerifyFull,
            provider: provider.clone(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect(Arc::new(config)))
    }
}

/// The public web roots and the PEM file of extra CAs, if any.
fn trusted_roots(root_cert: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let env_file = std::env::var_os(CA_FILE_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = root_cert.map(Path::to_path_buf).or(env_file) {
        let bad = |e: &dyn std::fmt::Display| {
            format!(
                "cannot read CA certificates from {}: {e} — point sslrootcert= (or {CA_FILE_ENV}) at a readable PEM file",
                path.display()
            )
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
            .map_err(|e| bad(&e))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"no CERTIFICATE blocks found"));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(&e))?;
        }
    }
    Ok(roots)
}

/// Checks the server's certificate as the sslmode asks: not at all for
/// `prefer` and `require` (libpq without a root certificate), the chain for
/// `verify-ca`, chain and name for `verify-full`. The handshake's signatures
/// are always checked, so the session is with the holder of the key sent.
#[derive(Debug)]
struct CertificateCheck {
    /// None: the certificate is not checked.
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    /// `verify-full`: the certificate must name the host.
    name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CertificateCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Makes the TLS connector of each session (tokio-postgres's interface).
#[derive(Clone)]
pub struct MakeRustlsConnect(Arc<rustls::ClientConfig>);

impl MakeTlsConnect<Socket> for MakeRustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        Ok(RustlsConnect { config: self.0.clone(), name })
    }
}

pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let stream = tokio_rustls::TlsConnector::from(self.config).connect(self.name, socket).await?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

/// A session's TLS stream.
pub struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl tokio_postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding, as with libpq's default
        // channel_binding=prefer against a server that does not insist.
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_as_libpq_reads_it_and_the_rest_goes_to_the_driver() {
        let url = DatabaseUrl::parse(
            "postgres://u:p@db.example:5433/robot?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(url.ssl_mode, SslMode::VerifyFull);
        assert_eq!(url.root_cert.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(url.config.get_application_name(), Some("x"));
        assert_eq!(url.config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(DatabaseUrl::parse("postgres://u@h/db").unwrap().ssl_mode, SslMode::Prefer);
        assert_eq!(DatabaseUrl::parse("postgres://u@h/db?sslmode=disable").unwrap().ssl_mode, SslMode::Disable);
        let err = DatabaseUrl::parse("postgres://u:secret@h/db?sslmode=maybe").err().unwrap();
        assert!(err.contains("verify-full") && !err.contains("secret"), "{err}");
    }

    /// Against the test server (scripts/throwaway-postgres.sh: TLS with a
    /// certificate for 127.0.0.1 from a CA of its own).
    #[test]
    fn sessions_are_encrypted_and_the_verify_modes_check_the_certificate() {
        let db = crate::testing::TestDatabase::create();
        let ca = std::env::var("MAILROBOT_TEST_PG_CA").unwrap_or_else(|_| {
            panic!("MAILROBOT_TEST_PG_CA is not set: run scripts/test.sh, or eval \"$(scripts/throwaway-postgres.sh)\"")
        });
        let with = |url: &str, query: &str| format!("{url}{}{query}", if url.contains('?') { '&' } else { '?' });
        let encrypted = |url: &str| -> Result<bool, String> {
            let (config, tls) = super::super::parse_url(url).map_err(|e| e.to_string())?;
            let client = super::super::connect(&config, &tls).map_err(|e| e.to_string())?;
            let row =
                super::super::wait(client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]))
                    .map_err(|e| e.to_string())?;
            Ok(row.get(0))
        };
        assert!(encrypted(&db.url).unwrap(), "no sslmode: TLS when the server offers it");
        assert!(encrypted(&with(&db.url, "sslmode=require")).unwrap());
        assert!(!encrypted(&with(&db.url, "sslmode=disable")).unwrap());
        let verified = with(&db.url, &format!("sslmode=verify-full&sslrootcert={ca}"));
        assert!(encrypted(&verified).unwrap());
        // The store itself, on a verified session.
        crate::PgStore::connect(&verified).unwrap();

        // Not trusted without the CA; the error says why.
        let err = encrypted(&with(&db.url, "sslmode=verify-full")).unwrap_err();
        assert!(err.contains("certificate"), "{err}");
        // Another name for the host: verify-ca accepts it, verify-full does not.
        let localhost = db.url.replace("127.0.0.1", "localhost");
        assert!(encrypted(&with(&localhost, &format!("sslmode=verify-ca&sslrootcert={ca}"))).unwrap());
        let err = encrypted(&with(&localhost, &format!("sslmode=verify-full&sslrootcert={ca}"))).unwrap_err();
        assert!(err.contains("certificate"), "{err}");
    }

    #[test]
    fn a_missing_root_certificate_file_is_told_with_what_to_do() {
        let url = DatabaseUrl::parse("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem").unwrap();
        let err = url.tls().err().unwrap();
        assert!(err.contains("/nonexistent/ca.pem") && err.contains("sslrootcert="), "{err}");
    }
}
