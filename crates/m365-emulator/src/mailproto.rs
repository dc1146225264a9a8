//! IMAP, POP and SMTP AUTH logins with OAuth (SASL XOAUTH2) as Exchange Online checks them, for
//! the introspection endpoint a mail server (Dovecot's `passdb oauth2`) asks before it lets a
//! login in. The token must be for Exchange Online (audience `https://outlook.office.com` or
//! `https://outlook.office365.com`) and carry the protocol's delegated scope
//! (`IMAP.AccessAsUser.All`, `POP.AccessAsUser.All`, `SMTP.Send`) or application role
//! (`IMAP.AccessAsApp`, `POP.AccessAsApp`, `SMTP.SendAsApp`). A delegated token opens its user's
//! own mailbox, or one the user has full access to. An application token names no user: the SASL
//! `user=` names the mailbox, which the app reaches only through an Exchange service principal
//! (`New-ServicePrincipal`) with full access to it (`Add-MailboxPermission`).

use serde_json::Value;

use crate::mailauth::{self, Caller, Denied};
use crate::scopes::EXCHANGE_ID;
use crate::state::Emu;

/// The protocol a login is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Imap,
    Pop,
    Smtp,
}

impl Protocol {
    /// Dovecot's service names (`imap`, `pop3`, `submission`) and the plain ones (`pop`, `smtp`).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "imap" => Some(Protocol::Imap),
            "pop3" | "pop" => Some(Protocol::Pop),
            "submission" | "smtp" => Some(Protocol::Smtp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Imap => "IMAP",
            Protocol::Pop => "POP",
            Protocol::Smtp => "SMTP AUTH",
        }
    }

    /// The delegated permission of Office 365 Exchange Online a user's token needs.
    pub fn delegated_scope(self) -> &'static str {
        match self {
            Protocol::Imap => "IMAP.AccessAsUser.All",
            Protocol::Pop => "POP.AccessAsUser.All",
            Protocol::Smtp => "SMTP.Send",
        }
    }

    /// The application permission (app role) an app-only token needs.
    pub fn app_role(self) -> &'static str {
        match self {
            Protocol::Imap => "IMAP.AccessAsApp",
            Protocol::Pop => "POP.AccessAsApp",
            Protocol::Smtp => "SMTP.SendAsApp",
        }
    }
}

/// Why a login is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No token, not one of this emulator, or expired.
    Token(Denied),
    /// A token for another resource (its `aud`).
    WrongAudience(String),
    /// The token lacks the protocol's scope (delegated) or role (application).
    MissingPermission { needed: &'static str, app: bool },
    /// An application token, and no mailbox to map it to.
    NoMailboxNamed,
    /// The mailbox does not exist in the token's tenant.
    NoMailbox(String),
    /// The app has no service principal in Exchange Online.
    NoServicePrincipal { client_id: String },
    /// The user, or the app's service principal, has no access to the mailbox.
    NoAccess { mailbox: String, who: String },
}

impl Refusal {
    /// The RFC 6750 error code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Token(_) | Refusal::WrongAudience(_) => "invalid_token",
            Refusal::MissingPermission { .. } => "insufficient_scope",
            _ => "access_denied",
        }
    }

    pub fn description(&self, p: Protocol) -> String {
        match self {
            Refusal::Token(Denied::NoToken) => "No access token.".into(),
            Refusal::Token(Denied::Expired) => "The access token has expired.".into(),
            Refusal::Token(_) => "The access token is not valid.".into(),
            Refusal::WrongAudience(aud) => format!(
                "The token's audience '{aud}' is not Exchange Online: {} needs a token for https://outlook.office.com \
                 (or https://outlook.office365.com).",
                p.name()
            ),
            Refusal::MissingPermission { needed, app: false } => {
                format!("The token lacks the delegated permission {needed} that {} needs.", p.name())
            }
            Refusal::MissingPermission { needed, app: true } => format!(
                "The app-only token lacks the application permission {needed} that {} needs (admin consent).",
                p.name()
            ),
            Refusal::NoMailboxNamed => {
                "An application token names no user: the login must name the mailbox (the SASL user).".into()
            }
            Refusal::NoMailbox(m) => format!("There is no mailbox {m} in the token's tenant."),
            Refusal::NoServicePrincipal { client_id } => format!(
                "App {client_id} has no service principal in Exchange Online (New-ServicePrincipal), so it can \
                 reach no mailbox over {}.",
                p.name()
            ),
            Refusal::NoAccess { mailbox, who } => {
                format!("{who} has no access to mailbox {mailbox} (Add-MailboxPermission -AccessRights FullAccess).")
            }
        }
    }
}

/// A login let in: the user name the server should see (the mailbox), and the token's claims.
pub(crate) struct Login {
    pub username: String,
    pub claims: Value,
}

/// Decides a login for `protocol` to `mailbox` (the SASL user) with `token`. Without a mailbox a
/// delegated token logs in as its own user, an application token not at all.
pub(crate) fn check(emu: &Emu, token: &str, protocol: Protocol, mailbox: Option<&str>) -> Result<Login, Refusal> {
    if token.is_empty() {
        return Err(Refusal::Token(Denied::NoToken));
    }
    let claims = mailauth::verified_claims(emu, token).map_err(Refusal::Token)?;
    if mailauth::audience(&claims) != EXCHANGE_ID {
        let aud = claims.get("aud").and_then(Value::as_str).unwrap_or_default().to_string();
        return Err(Refusal::WrongAudience(aud));
    }
    let caller = mailauth::caller_of(&claims);
    let mailbox = mailbox.map(str::trim).filter(|m| !m.is_empty());
    let username = match &caller.user {
        Some((oid, upn)) => {
            let needed = protocol.delegated_scope();
            if !caller.has(&[needed]) {
                return Err(Refusal::MissingPermission { needed, app: false });
            }
            let email = claims.get("email").and_then(Value::as_str).unwrap_or(upn);
            match mailbox {
                None => email.to_string(),
                Some(m) if m.eq_ignore_ascii_case(upn) || m.eq_ignore_ascii_case(email) => m.to_string(),
                Some(m) => {
                    user_may_open(emu, &caller, oid, upn, m)?;
                    m.to_string()
                }
            }
        }
        None => {
            let needed = protocol.app_role();
            if !caller.has(&[needed]) {
                return Err(Refusal::MissingPermission { needed, app: true });
            }
            let m = mailbox.ok_or(Refusal::NoMailboxNamed)?;
            app_may_open(emu, &caller, m)?;
            m.to_string()
        }
    };
    Ok(Login { username, claims })
}

fn user_may_open(emu: &Emu, caller: &Caller, oid: &str, upn: &str, mailbox: &str) -> Result<(), Refusal> {
    let mail = emu.mail();
    let mb = mail
        .find(mailbox)
        .map(|i| &mail.mailboxes[i])
        .filter(|mb| mb.tenant_id == caller.tenant_id)
        .ok_or_else(|| Refusal::NoMailbox(mailbox.to_string()))?;
    if mb.owner_oid.as_deref() == Some(oid) || mb.full_access.iter().any(|o| o == oid) {
        Ok(())
    } else {
        Err(Refusal::NoAccess { mailbox: mailbox.to_string(), who: format!("User {upn}") })
    }
}

fn app_may_open(emu: &Emu, caller: &Caller, mailbox: &str) -> Result<(), Refusal> {
    let mail = emu.mail();
    let mb = mail
        .find(mailbox)
        .map(|i| &mail.mailboxes[i])
        .filter(|mb| mb.tenant_id == caller.tenant_id)
        .ok_or_else(|| Refusal::NoMailbox(mailbox.to_string()))?;
    let client_id = &caller.client_id;
    if !mail.has_service_principal(&caller.tenant_id, client_id) {
        return Err(Refusal::NoServicePrincipal { client_id: client_id.clone() });
    }
    if !mb.app_full_access.iter().any(|c| c.eq_ignore_ascii_case(client_id)) {
        return Err(Refusal::NoAccess {
            mailbox: mailbox.to_string(),
            who: format!("The Exchange service principal of app {client_id}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dovecot_service_names_map_to_protocols() {
        assert_eq!(Protocol::parse("imap"), Some(Protocol::Imap));
        assert_eq!(Protocol::parse("pop3"), Some(Protocol::Pop));
        assert_eq!(Protocol::parse("submission"), Some(Protocol::Smtp));
        assert_eq!(Protocol::parse("SMTP"), Some(Protocol::Smtp));
        assert_eq!(Protocol::parse("lmtp"), None);
        assert_eq!(Protocol::Pop.app_role(), "POP.AccessAsApp");
        assert_eq!(Protocol::Smtp.delegated_scope(), "SMTP.Send");
    }
}
