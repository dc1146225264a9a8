//! JSON Web Tokens: the emulator's RS256 signing key (with the self-signed certificate Entra
//! publishes for each key), token signing and checking, and the registered client certificates
//! that client assertions are checked against.

use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{self, RsaKeyPair, RsaPublicKeyComponents};
use serde_json::{Value, json};

use crate::EmulatorError;

pub(crate) fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes base64url, tolerating padding (some clients pad their JWT parts).
pub(crate) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data).as_ref().to_vec()
}

pub(crate) fn sha1(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data).as_ref().to_vec()
}

/// Big-endian integer bytes without leading zeros (what JWK and ring expect).
fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|&x| x != 0).unwrap_or(b.len().saturating_sub(1));
    &b[i..]
}

/// The key the emulator signs tokens with.
pub struct SigningKey {
    pair: RsaKeyPair,
    n: Vec<u8>,
    e: Vec<u8>,
    /// `kid` = `x5t`: base64url SHA-1 thumbprint of the certificate, as Entra does.
    kid: String,
    cert_der: Vec<u8>,
    pkcs8_pem: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh 2048-bit key. Takes a moment (RSA key generation), so the emulator generates one
    /// per process unless given a key: see [`SigningKey::shared`].
    pub fn generate() -> Result<SigningKey, EmulatorError> {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
            .map_err(|e| EmulatorError::Crypto(format!("RSA key generation: {e}")))?;
        let pem = key
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|e| EmulatorError::Crypto(format!("PKCS#8 encoding: {e}")))?;
        SigningKey::from_pkcs8_pem(&pem)
    }

    /// The process-wide key, generated on first use.
    pub fn shared() -> Result<Arc<SigningKey>, EmulatorError> {
        static SHARED: OnceLock<Arc<SigningKey>> = OnceLock::new();
        if let Some(k) = SHARED.get() {
            return Ok(k.clone());
        }
        let k = Arc::new(SigningKey::generate()?);
        Ok(SHARED.get_or_init(|| k).clone())
    }

    /// A key from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, RSA, at least 2048 bits).
    pub fn from_pkcs8_pem(pem: &str) -> Result<SigningKey, EmulatorError> {
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .map_err(|e| EmulatorError::Config(format!("signing key is not an RSA PKCS#8 PEM: {e}")))?;
        let der = rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&key)
            .map_err(|e| EmulatorError::Crypto(format!("PKCS#8 encoding: {e}")))?;
        let pair = RsaKeyPair::from_pkcs8(der.as_bytes())
            .map_err(|e| EmulatorError::Config(format!("signing key rejected: {e}")))?;
        let n = key.n().to_bytes_be();
        let e = key.e().to_bytes_be();
        let cert_der = self_signed_rsa_cert(der.as_bytes())?;
        let kid = b64url(&sha1(&cert_der));
        Ok(SigningKey { pair, n, e, kid, cert_der, pkcs8_pem: pem.to_string() })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as PKCS#8 PEM (to start another emulator with the same key).
    pub fn pkcs8_pem(&self) -> &str {
        &self.pkcs8_pem
    }

    /// The JWK Entra publishes for this key.
    pub(crate) fn jwk(&self, issuer: &str) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": b64url(strip_zeros(&self.n)),
            "e": b64url(strip_zeros(&self.e)),
            "x5c": [STANDARD.encode(&self.cert_der)],
            "cloud_instance_name": "microsoftonline.com",
            "issuer": issuer,
        })
    }

    /// Signs `claims` as an RS256 JWT with `typ`, `alg`, `kid` and `x5t` in the header.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        let header = json!({"typ": "JWT", "alg": "RS256", "x5t": self.kid, "kid": self.kid});
        let input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let mut sig = vec![0u8; self.pair.public().modulus_len()];
        // Signing with a valid key into a buffer of the modulus length cannot fail.
        self.pair
            .sign(&signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut sig)
            .expect("RSA signing");
        format!("{input}.{}", b64url(&sig))
    }

    /// Checks a token this emulator signed; returns its claims (time is checked by the caller).
    pub(crate) fn verify(&self, token: &str) -> Option<Value> {
        let jwt = Jwt::parse(token)?;
        if jwt.header.get("alg")?.as_str()? != "RS256" || jwt.header.get("kid")?.as_str()? != self.kid {
            return None;
        }
        verify_rsa("RS256", &self.n, &self.e, jwt.signing_input.as_bytes(), &jwt.signature).then_some(jwt.claims)
    }
}

/// A self-signed certificate around the signing key, so the JWKS can carry `x5c` and `x5t`.
fn self_signed_rsa_cert(pkcs8_der: &[u8]) -> Result<Vec<u8>, EmulatorError> {
    let key_der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8_der.to_vec());
    let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| EmulatorError::Crypto(format!("signing certificate key: {e}")))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| EmulatorError::Crypto(format!("signing certificate: {e}")))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "accounts.accesscontrol.windows.net");
    let cert = params.self_signed(&kp).map_err(|e| EmulatorError::Crypto(format!("signing certificate: {e}")))?;
    Ok(cert.der().to_vec())
}

/// Checks an RS256 (PKCS#1 v1.5) or PS256 (PSS, salt = hash length) signature.
pub(crate) fn verify_rsa(alg: &str, n: &[u8], e: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let params: &signature::RsaParameters = match alg {
        "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
        _ => return false,
    };
    RsaPublicKeyComponents { n: strip_zeros(n), e: strip_zeros(e) }.verify(params, msg, sig).is_ok()
}

/// A JWT split into its parts (not verified).
#[derive(Debug)]
pub(crate) struct Jwt {
    pub header: Value,
    pub claims: Value,
    pub signing_input: String,
    pub signature: Vec<u8>,
}

impl Jwt {
    pub fn parse(token: &str) -> Option<Jwt> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&b64url_decode(h)?).ok()?;
        let claims: Value = serde_json::from_slice(&b64url_decode(c)?).ok()?;
        if !header.is_object() || !claims.is_object() {
            return None;
        }
        Some(Jwt { header, claims, signing_input: format!("{h}.{c}"), signature: b64url_decode(s)? })
    }
}

/// A certificate registered on an app, with what client assertions are matched by.
#[derive(Debug, Clone)]
pub(crate) struct RegisteredCert {
    pub n: Vec<u8>,
    pub e: Vec<u8>,
    /// base64url SHA-1 of the DER (`x5t`).
    pub x5t: String,
    /// base64url SHA-256 of the DER (`x5t#S256`).
    pub x5t_s256: String,
    /// Upper-case hex SHA-1, as the portal shows thumbprints.
    pub thumbprint_hex: String,
    pub not_after: i64,
}

impl RegisteredCert {
    /// Every certificate in a PEM text (a chain is accepted; each becomes a credential).
    pub fn from_pem(pem: &str) -> Result<Vec<RegisteredCert>, EmulatorError> {
        let mut out = Vec::new();
        for item in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
            let item = item.map_err(|e| EmulatorError::Invalid(format!("certificate PEM: {e}")))?;
            if item.label != "CERTIFICATE" {
                continue;
            }
            out.push(RegisteredCert::from_der(&item.contents)?);
        }
        if out.is_empty() {
            return Err(EmulatorError::Invalid("no CERTIFICATE block in the certificate PEM".into()));
        }
        Ok(out)
    }

    fn from_der(der: &[u8]) -> Result<RegisteredCert, EmulatorError> {
        use x509_parser::public_key::PublicKey;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| EmulatorError::Invalid(format!("certificate DER: {e}")))?;
        let (n, e) = match cert.public_key().parsed() {
            Ok(PublicKey::RSA(k)) => (k.modulus.to_vec(), k.exponent.to_vec()),
            _ => return Err(EmulatorError::Invalid("only RSA certificates can be app credentials".into())),
        };
        let sha1 = sha1(der);
        Ok(RegisteredCert {
            n,
            e,
            x5t: b64url(&sha1),
            x5t_s256: b64url(&sha256(der)),
            thumbprint_hex: sha1.iter().map(|b| format!("{b:02X}")).collect(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip() {
        let key = SigningKey::shared().unwrap();
        let token = key.sign(&json!({"a": 1}));
        assert_eq!(key.verify(&token).unwrap()["a"], 1);
        let mut tampered = token.clone();
        tampered.insert(tampered.find('.').unwrap() + 2, 'x');
        assert!(key.verify(&tampered).is_none());
        let jwk = key.jwk("iss");
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(jwk["kid"], key.kid());
    }
}
