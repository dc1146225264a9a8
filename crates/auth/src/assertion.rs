//! Certificate credentials: instead of a client secret, the robot proves it
//! is the app with a JWT signed by the app's certificate key (Microsoft's
//! recommendation). Current form: PS256 with `x5t#S256`; older form RS256
//! with `x5t` (SHA-1 thumbprint), still accepted.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use sha1::Sha1;
use sha2::{Digest, Sha256};

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Ps256,
    Rs256,
}

/// An app certificate with its private key.
pub struct Certificate {
    der: Vec<u8>,
    key: RsaPrivateKey,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Certificate(sha256 {})", self.thumbprint_sha256_hex())
    }
}

fn pem_blocks<'a>(pem: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)?;
    let stop = pem[start..].find(&end)? + start + end.len();
    Some(&pem[start..stop])
}

impl Certificate {
    /// Reads a PEM holding the certificate and its RSA private key (PKCS#8
    /// `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`), as `openssl` writes them.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let cert = pem_blocks(pem, "CERTIFICATE").ok_or("no CERTIFICATE block in the PEM")?;
        let body: String = cert.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body.trim()).map_err(|e| format!("the certificate is not valid base64: {e}"))?;
        let key = if let Some(block) = pem_blocks(pem, "PRIVATE KEY") {
            RsaPrivateKey::from_pkcs8_pem(block).map_err(|e| format!("the private key cannot be read: {e}"))?
        } else if let Some(block) = pem_blocks(pem, "RSA PRIVATE KEY") {
            RsaPrivateKey::from_pkcs1_pem(block).map_err(|e| format!("the private key cannot be read: {e}"))?
        } else {
            return Err(
                "no PRIVATE KEY block in the PEM: give the certificate and its RSA private key in one file".into()
            );
        };
        Ok(Self { der, key })
    }

    /// Hex SHA-256 thumbprint, as the Azure portal shows it.
    pub fn thumbprint_sha256_hex(&self) -> String {
        hex::encode_upper(Sha256::digest(&self.der))
    }

    pub fn thumbprint_sha1_hex(&self) -> String {
        hex::encode_upper(Sha1::digest(&self.der))
    }

    /// A signed client assertion for `token_url`, valid for 10 minutes.
    pub fn client_assertion(&self, client_id: &str, token_url: &str, alg: Algorithm) -> String {
        let header = match alg {
            Algorithm::Ps256 => serde_json::json!({
                "alg": "PS256", "typ": "JWT", "x5t#S256": URL_SAFE_NO_PAD.encode(Sha256::digest(&self.der)),
            }),
            Algorithm::Rs256 => serde_json::json!({
                "alg": "RS256", "typ": "JWT", "x5t": URL_SAFE_NO_PAD.encode(Sha1::digest(&self.der)),
            }),
        };
        let now = chrono::Utc::now().timestamp();
        // A random GUID, as Microsoft's certificate-credentials page shows it.
        let jti = uuid::Uuid::new_v4().hyphenated().to_string();
        let claims = serde_json::json!({
            "aud": token_url, "iss": client_id, "sub": client_id, "jti": jti,
            "nbf": now, "iat": now, "exp": now + 600,
        });
        let signing_input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = match alg {
            Algorithm::Ps256 => rsa::pss::BlindedSigningKey::<Sha256>::new(self.key.clone())
                .sign_with_rng(&mut rand::thread_rng(), signing_input.as_bytes())
                .to_vec(),
            Algorithm::Rs256 => {
                rsa::pkcs1v15::SigningKey::<Sha256>::new(self.key.clone()).sign(signing_input.as_bytes()).to_vec()
            }
        };
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    use rsa::signature::Verifier;

    fn test_cert() -> (Certificate, rsa::RsaPublicKey) {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let public = key.to_public_key();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n{}",
            STANDARD.encode(b"not a real DER certificate, only hashed here"),
            key.to_pkcs8_pem(LineEnding::LF).unwrap().as_str()
        );
        (Certificate::from_pem(&pem).unwrap(), public)
    }

    fn split(jwt: &str) -> (serde_json::Value, serde_json::Value, Vec<u8>, String) {
        let parts: Vec<&str> = jwt.split('.').collect();
        let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        (header, claims, URL_SAFE_NO_PAD.decode(parts[2]).unwrap(), format!("{}.{}", parts[0], parts[1]))
    }

    #[test]
    fn ps256_and_rs256_assertions_verify_and_carry_the_claims() {
        let (cert, public) = test_cert();
        let token_url = "https://login.example/tid/oauth2/v2.0/token";
        let (header, claims, sig, input) = split(&cert.client_assertion("app-id", token_url, Algorithm::Ps256));
        assert_eq!(header["alg"], "PS256");
        assert!(header["x5t#S256"].is_string());
        assert_eq!(claims["aud"], token_url);
        assert_eq!(claims["iss"], "app-id");
        assert_eq!(claims["sub"], "app-id");
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 600);
        let signature = rsa::pss::Signature::try_from(sig.as_slice()).unwrap();
        rsa::pss::VerifyingKey::<Sha256>::new(public.clone()).verify(input.as_bytes(), &signature).unwrap();

        let (header, _, sig, input) = split(&cert.client_assertion("app-id", token_url, Algorithm::Rs256));
        assert_eq!(header["alg"], "RS256");
        assert!(header["x5t"].is_string());
        let signature = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap();
        rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public).verify(input.as_bytes(), &signature).unwrap();
    }

    #[test]
    fn jti_is_a_fresh_guid() {
        let (cert, _) = test_cert();
        let jti = || {
            let (_, claims, _, _) = split(&cert.client_assertion("app-id", "https://t/token", Algorithm::Ps256));
            claims["jti"].as_str().unwrap().to_string()
        };
        let (a, b) = (jti(), jti());
        for j in [&a, &b] {
            // 8-4-4-4-12 hex digits, version 4.
            let groups: Vec<usize> = j.split('-').map(str::len).collect();
            assert_eq!(groups, [8, 4, 4, 4, 12], "{j}");
            assert!(j.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{j}");
            assert_eq!(uuid::Uuid::parse_str(j).unwrap().get_version_num(), 4, "{j}");
        }
        assert_ne!(a, b, "each assertion has its own jti");
    }

    #[test]
    fn pem_without_key_is_a_clear_error() {
        let err = Certificate::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----").unwrap_err();
        assert!(err.contains("PRIVATE KEY"));
    }
}
