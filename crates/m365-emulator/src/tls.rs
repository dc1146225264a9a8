//! HTTPS: rustls with the ring provider (aws-lc-rs does not build here without cmake), from PEM
//! files or from a CA and server certificate generated on the spot.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::EmulatorError;

/// A throwaway CA and a server certificate it signed, all PEM.
#[derive(Debug, Clone)]
pub struct SelfSignedTls {
    /// The CA certificate: what a client trusts (`REQUESTS_CA_BUNDLE`, `add_root_certificate`…).
    pub ca_pem: String,
    /// The server certificate (leaf only).
    pub cert_pem: String,
    /// The server's private key (PKCS#8).
    pub key_pem: String,
}

impl SelfSignedTls {
    /// A CA plus a server certificate for `names` (DNS names or IP addresses), e.g.
    /// `["localhost", "127.0.0.1"]`.
    pub fn generate(names: &[&str]) -> Result<SelfSignedTls, EmulatorError> {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let err = |e: rcgen::Error| EmulatorError::Tls(format!("certificate generation: {e}"));
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params.distinguished_name.push(DnType::CommonName, "m365-emulator test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(err)?).map_err(err)?;
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        // Strict verifiers (Python 3.13's default) want the authority key id and a server EKU.
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &ca).map_err(err)?;
        Ok(SelfSignedTls { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// A rustls server configuration from a PEM certificate chain and a PEM private key.
pub(crate) fn server_config(cert_chain_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, EmulatorError> {
    let certs = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EmulatorError::Tls(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(EmulatorError::Tls("no certificate in the certificate PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| EmulatorError::Tls(format!("private key PEM: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| EmulatorError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| EmulatorError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
