//! Standard Webhooks signatures (https://www.standardwebhooks.com): the
//! signed content is `{webhook-id}.{webhook-timestamp}.{body}`, the MAC is
//! HMAC-SHA256 under the secret's bytes, sent as `v1,<base64>`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix the specification gives secrets.
pub const SECRET_PREFIX: &str = "whsec_";
/// The specification's bounds on a secret's length, in bytes.
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("a webhook secret starts with `whsec_` (make one with: echo whsec_$(openssl rand -base64 32))")]
    Prefix,
    #[error("the part after `whsec_` is not base64 ({0})")]
    Base64(String),
    #[error("a webhook secret holds 24 to 64 random bytes, this one {0} (make one with: openssl rand -base64 32)")]
    Length(usize),
}

/// A webhook's signing key. Its text form (`whsec_...`) is what the
/// administrator gives the robot and the receiver.
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text.trim().strip_prefix(SECRET_PREFIX).ok_or(SecretError::Prefix)?;
        // Padded or not, as the reference libraries accept it.
        let key =
            STANDARD_NO_PAD.decode(encoded.trim_end_matches('=')).map_err(|e| SecretError::Base64(e.to_string()))?;
        if !SECRET_BYTES.contains(&key.len()) {
            return Err(SecretError::Length(key.len()));
        }
        Ok(Self { key })
    }

    /// The `webhook-signature` header's value for one attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's reference libraries (their tests
    /// sign this payload with this secret, id and timestamp).
    #[test]
    fn signs_the_reference_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn refuses_what_is_not_a_secret() {
        assert_eq!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(), SecretError::Prefix);
        assert!(matches!(WebhookSecret::parse("whsec_***").unwrap_err(), SecretError::Base64(_)));
        assert_eq!(WebhookSecret::parse("whsec_c2hvcnQ=").unwrap_err(), SecretError::Length(5));
        // Unpadded base64 is the same secret.
        let unpadded = WebhookSecret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let padded = WebhookSecret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
        assert_eq!(unpadded.sign("m", 1, b"x"), padded.sign("m", 1, b"x"));
        assert!(
            format!("{:?}", WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap())
                == "WebhookSecret(..)"
        );
    }
}
