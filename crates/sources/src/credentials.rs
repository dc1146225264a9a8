//! How a source logs in. Secrets never appear in `Debug` output.

use std::fmt;

use std::sync::Arc;

use base64::Engine as _;

use crate::{BearerTokens, SourceError};

/// Login data for IMAP and POP3.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// IMAP LOGIN / POP3 USER+PASS.
    Password { username: String, password: String },
    /// SASL XOAUTH2 with an OAuth2 access token (Microsoft 365, Gmail).
    /// `app_id` is the app's client id when the token is app-only (a
    /// connection in application mode): such a token names no user,
    /// `username` names the mailbox, and a refusal is for the tenant's
    /// admin to fix, not for a new sign-in.
    XOAuth2 { username: String, access_token: String, app_id: Option<String> },
}

impl Credentials {
    pub fn username(&self) -> &str {
        match self {
            Credentials::Password { username, .. } | Credentials::XOAuth2 { username, .. } => username,
        }
    }

    /// The SASL mechanism name, for messages.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Credentials::Password { .. } => "password",
            Credentials::XOAuth2 { .. } => "XOAUTH2",
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Password { username, .. } => {
                f.debug_struct("Password").field("username", username).field("password", &"***").finish()
            }
            Credentials::XOAuth2 { username, app_id, .. } => f
                .debug_struct("XOAuth2")
                .field("username", username)
                .field("access_token", &"***")
                .field("app_id", app_id)
                .finish(),
        }
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        match self {
            Credentials::Password { password, .. } => password.zeroize(),
            Credentials::XOAuth2 { access_token, .. } => access_token.zeroize(),
        }
    }
}

/// For SASL XOAUTH2 with a token source: puts a current token (a renewed
/// one with `renew`) into `credentials` before a session logs in, so a
/// session opened after the last token expired does not present it again.
pub(crate) async fn current(
    credentials: &mut Credentials,
    tokens: Option<&Arc<dyn BearerTokens>>,
    renew: bool,
) -> Result<(), SourceError> {
    if let (Some(tokens), Credentials::XOAuth2 { access_token, .. }) = (tokens, credentials) {
        *access_token = tokens.token(renew).await?;
    }
    Ok(())
}

/// What an admin must have done in Exchange Online before an app-only
/// (application mode) token opens `mailbox` over IMAP, POP or SMTP AUTH:
/// the protocol's application permission (`role`) with admin consent, and an
/// Exchange service principal of the app with access to the mailbox. Said
/// when the server refuses such a login; Setup Authentication cannot help.
pub(crate) fn app_only_hint(role: &str, app_id: &str, mailbox: &str) -> String {
    format!(
        "the app-only token (application mode) was refused for mailbox {mailbox}: the app {app_id} needs \
         the application permission {role} of Office 365 Exchange Online with admin consent, and an Exchange \
         service principal with access to this mailbox — in Exchange Online PowerShell: New-ServicePrincipal \
         -AppId {app_id} -ObjectId <object id of its enterprise application>, then Add-MailboxPermission \
         -Identity {mailbox} -User <that service principal> -AccessRights FullAccess (docs/microsoft365.md)"
    )
}

/// The XOAUTH2 initial client response before base64:
/// `user=USER\x01auth=Bearer TOKEN\x01\x01`.
pub(crate) fn xoauth2_raw(username: &str, access_token: &str) -> String {
    format!("user={username}\x01auth=Bearer {access_token}\x01\x01")
}

/// The XOAUTH2 initial client response, base64-encoded as sent on the wire.
pub fn xoauth2_sasl(username: &str, access_token: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(xoauth2_raw(username, access_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let p = Credentials::Password { username: "u@x".into(), password: "hunter2".into() };
        let t = Credentials::XOAuth2 { username: "u@x".into(), access_token: "eyJtok".into(), app_id: None };
        let (dp, dt) = (format!("{p:?}"), format!("{t:?}"));
        assert!(!dp.contains("hunter2") && dp.contains("***") && dp.contains("u@x"));
        assert!(!dt.contains("eyJtok") && dt.contains("***"));
    }

    #[test]
    fn xoauth2_string() {
        // Example from Google's XOAUTH2 protocol page.
        assert_eq!(
            xoauth2_sasl("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"),
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
    }
}
