//! Services (provider + capabilities + default scopes), connection modes and
//! states, and where each tenant's endpoints are.

use mailrobot_store::Tenant;

pub const PROVIDER_MICROSOFT365: &str = "microsoft365";
pub const PROVIDER_OAUTH2: &str = "oauth2";

pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
pub const DEFAULT_GRAPH: &str = "https://graph.microsoft.com";
pub const DEFAULT_EWS: &str = "https://outlook.office365.com/EWS/Exchange.asmx";

/// The path the seed's app registration guide registers as redirect URI.
pub const REDIRECT_PATH: &str = "/wm/externalAuth/redirect.html";

pub use mailrobot_store::{Capability, ConnectionState, Mode};

/// Microsoft 365's default scopes for a capability and mode. Delegated
/// scopes come with `openid profile offline_access` so the robot learns who
/// authenticated and gets a refresh token.
pub fn default_scopes(capability: Capability, mode: Mode) -> Vec<String> {
    let resource_scope = match (capability, mode) {
        (Capability::Graph, Mode::Delegated) => "https://graph.microsoft.com/Mail.ReadWrite.Shared",
        (Capability::Ews, Mode::Delegated) => "https://outlook.office365.com/EWS.AccessAsUser.All",
        (Capability::Imap, Mode::Delegated) => "https://outlook.office.com/IMAP.AccessAsUser.All",
        (Capability::Pop, Mode::Delegated) => "https://outlook.office.com/POP.AccessAsUser.All",
        (Capability::Smtp, Mode::Delegated) => "https://outlook.office.com/SMTP.Send",
        (Capability::Graph, Mode::Application) => "https://graph.microsoft.com/.default",
        (_, Mode::Application) => "https://outlook.office365.com/.default",
    };
    let mut scopes = vec![resource_scope.to_string()];
    if mode == Mode::Delegated {
        scopes.extend(OIDC_SCOPES.iter().map(|s| s.to_string()));
    }
    scopes
}

/// Scopes that ask for identity and a refresh token, not for a resource.
pub const OIDC_SCOPES: &[&str] = &["openid", "profile", "offline_access"];

/// The token and authorize endpoints of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub authorize: String,
    pub token: String,
}

impl Endpoints {
    /// The tenant's sign-in endpoints. Refused when one is `http://` to
    /// another machine and the tenant was not added with
    /// `--allow-plaintext`: the client secret, codes and tokens travel there.
    pub fn of(tenant: &Tenant) -> Result<Self, String> {
        let endpoints = Self::unchecked(tenant)?;
        for url in [&endpoints.token, &endpoints.authorize] {
            mailrobot_sources::plaintext::check_url(
                url,
                &format!("tenant {}'s secret and tokens", tenant.name),
                tenant.allow_plaintext,
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(endpoints)
    }

    fn unchecked(tenant: &Tenant) -> Result<Self, String> {
        match tenant.provider.as_str() {
            PROVIDER_OAUTH2 => Ok(Endpoints {
                authorize: tenant.authorize_url.clone().ok_or("this OAuth2 tenant has no authorize URL")?,
                token: tenant.token_url.clone().ok_or("this OAuth2 tenant has no token URL")?,
            }),
            _ => {
                let authority = microsoft_authority(tenant).unwrap_or(DEFAULT_AUTHORITY);
                let directory = tenant.directory.as_deref().unwrap_or("organizations");
                Ok(Endpoints {
                    authorize: format!("{authority}/{directory}/oauth2/v2.0/authorize"),
                    token: format!("{authority}/{directory}/oauth2/v2.0/token"),
                })
            }
        }
    }
}

/// The sign-in authority of a Microsoft 365 tenant, without a trailing slash
/// (`https://login.microsoftonline.com`); None for generic OAuth2 providers.
pub fn microsoft_authority(tenant: &Tenant) -> Option<&str> {
    match tenant.provider.as_str() {
        PROVIDER_OAUTH2 => None,
        _ => Some(tenant.authority_url.as_deref().unwrap_or(DEFAULT_AUTHORITY).trim_end_matches('/')),
    }
}

/// The resource a set of scopes is for, used to key cached access tokens:
/// `https://graph.microsoft.com/Mail.ReadWrite.Shared` → `https://graph.microsoft.com`.
/// Scopes without a URL prefix (generic OAuth2) key by the whole scope list.
pub fn resource_of(scopes: &[String]) -> String {
    let resource_scopes: Vec<&String> = scopes.iter().filter(|s| !OIDC_SCOPES.contains(&s.as_str())).collect();
    match resource_scopes.first() {
        Some(first) if first.starts_with("https://") || first.starts_with("http://") => {
            let after_scheme = first.find("://").map_or(0, |i| i + 3);
            match first[after_scheme..].find('/') {
                Some(slash) => first[..after_scheme + slash].to_string(),
                None => first.to_string(),
            }
        }
        _ => resource_scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "),
    }
}

/// OpenID Connect scopes: they ask for identity, and name no resource.
const IDENTITY_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

/// The resources Microsoft 365 scopes name, in order, each once: what comes
/// before a scope's last `/`, lower-cased (`https://graph.microsoft.com/Mail.Read`
/// → `https://graph.microsoft.com`); a bare permission (`Mail.Read`) is
/// Microsoft Graph's; OIDC scopes name none. `https://outlook.office.com` and
/// `https://outlook.office365.com` stay two resources, as Entra counts them.
pub fn resources_named(scopes: &[String]) -> Vec<String> {
    let mut resources: Vec<String> = Vec::new();
    for scope in scopes.iter().filter(|s| !IDENTITY_SCOPES.iter().any(|o| o.eq_ignore_ascii_case(s))) {
        let whole = scope.trim_end_matches('/');
        let resource = match whole.rsplit_once('/') {
            // `https://host` alone: the resource itself, no permission after it.
            Some((before, _)) if before.ends_with(':') || before.ends_with(":/") => whole.to_ascii_lowercase(),
            Some((before, _)) => before.trim_end_matches('/').to_ascii_lowercase(),
            None => DEFAULT_GRAPH.to_string(),
        };
        if !resources.contains(&resource) {
            resources.push(resource);
        }
    }
    resources
}

/// Entra issues a token for one resource at a time: a code redemption whose
/// scopes span two (OIDC scopes aside) is refused, so such a connection could
/// never work. Err says what to do instead.
pub fn check_one_resource(scopes: &[String]) -> Result<(), String> {
    let resources = resources_named(scopes);
    if resources.len() > 1 {
        return Err(format!(
            "these scopes span {} resources ({}): Microsoft issues a token for one resource at a time and refuses \
             such a set when Setup Authentication redeems its code; make one connection per resource, each with \
             that resource's scopes only (openid, profile, email and offline_access may go with any)",
            resources.len(),
            resources.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scopes_follow_the_documentation() {
        assert_eq!(
            default_scopes(Capability::Graph, Mode::Delegated),
            vec!["https://graph.microsoft.com/Mail.ReadWrite.Shared", "openid", "profile", "offline_access"]
        );
        assert_eq!(default_scopes(Capability::Ews, Mode::Application), vec!["https://outlook.office365.com/.default"]);
        assert_eq!(default_scopes(Capability::Graph, Mode::Application), vec!["https://graph.microsoft.com/.default"]);
        assert_eq!(
            default_scopes(Capability::Imap, Mode::Delegated)[0],
            "https://outlook.office.com/IMAP.AccessAsUser.All"
        );
    }

    #[test]
    fn scopes_of_two_resources_are_refused() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for capability in Capability::ALL {
            for mode in [Mode::Delegated, Mode::Application] {
                assert!(check_one_resource(&default_scopes(*capability, mode)).is_ok(), "{capability} {mode:?}");
            }
        }
        assert!(check_one_resource(&s(&["Mail.Read", "https://graph.microsoft.com/User.Read", "openid"])).is_ok());
        assert!(check_one_resource(&s(&["https://Graph.Microsoft.com/Mail.Read", "EMAIL", "offline_access"])).is_ok());
        let err = check_one_resource(&s(&[
            "https://graph.microsoft.com/Mail.ReadWrite.Shared",
            "https://outlook.office365.com/EWS.AccessAsUser.All",
            "offline_access",
        ]))
        .unwrap_err();
        assert!(err.contains("https://graph.microsoft.com, https://outlook.office365.com"), "{err}");
        assert!(err.contains("one connection per resource"), "{err}");
        // Entra counts these two Exchange Online URIs as two resources.
        assert!(
            check_one_resource(&s(&[
                "https://outlook.office.com/IMAP.AccessAsUser.All",
                "https://outlook.office365.com/SMTP.Send"
            ]))
            .is_err()
        );
        // A bare permission is Graph's.
        assert!(check_one_resource(&s(&["Mail.Read", "https://outlook.office.com/SMTP.Send"])).is_err());
        assert_eq!(resources_named(&s(&["api://abc/access_as_user", "openid"])), ["api://abc"]);
        assert_eq!(resources_named(&s(&["https://mail.google.com/"])), ["https://mail.google.com"]);
    }

    #[test]
    fn resources_key_the_token_cache() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resource_of(&s(&["openid", "https://graph.microsoft.com/Mail.ReadWrite.Shared"])),
            "https://graph.microsoft.com"
        );
        assert_eq!(resource_of(&s(&["https://outlook.office365.com/.default"])), "https://outlook.office365.com");
        assert_eq!(resource_of(&s(&["https://mail.google.com/"])), "https://mail.google.com");
        assert_eq!(resource_of(&s(&["mail.read", "offline_access"])), "mail.read");
    }
}
