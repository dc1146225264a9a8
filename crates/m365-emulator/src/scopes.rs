//! Scope strings as the Microsoft identity platform reads them.
//!
//! A scope is an OpenID Connect scope (`openid`, `profile`, `email`, `offline_access`) or a
//! permission on a resource: `{resource}/{permission}`, where the resource is an application ID
//! URI (`https://graph.microsoft.com`, `api://…`) or a GUID. Without a resource prefix the
//! resource is Microsoft Graph. In a generic (non-Microsoft) tenant scopes are opaque strings.

pub(crate) const GRAPH_ID: &str = "00000003-0000-0000-c000-000000000000";
pub(crate) const GRAPH_URI: &str = "https://graph.microsoft.com";
pub(crate) const EXCHANGE_ID: &str = "00000002-0000-0ff1-ce00-000000000000";

pub(crate) const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Resource URIs that name the same first-party resource (national clouds included: the
/// emulator does not keep clouds apart).
const GRAPH_ALIASES: &[&str] = &[
    GRAPH_ID,
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
];
const EXCHANGE_ALIASES: &[&str] = &[
    EXCHANGE_ID,
    "https://outlook.office365.com",
    "https://outlook.office.com",
    "https://outlook.office365.us",
    "https://partner.outlook.cn",
];

/// Delegated permissions of the first-party resources a mail robot meets (Graph and Exchange
/// Online). Asking for one that is neither here nor configured on the app gives AADSTS650053.
const GRAPH_DELEGATED: &[&str] = &[
    "User.Read",
    "User.ReadBasic.All",
    "User.Read.All",
    "User.ReadWrite",
    "Mail.Read",
    "Mail.ReadBasic",
    "Mail.ReadWrite",
    "Mail.Read.Shared",
    "Mail.ReadBasic.Shared",
    "Mail.ReadWrite.Shared",
    "Mail.Send",
    "Mail.Send.Shared",
    "MailboxSettings.Read",
    "MailboxSettings.ReadWrite",
    "MailboxFolder.Read",
    "MailboxFolder.ReadWrite",
    "MailboxItem.Read",
    "MailboxItem.ImportExport",
    "Calendars.Read",
    "Calendars.ReadWrite",
    "Calendars.Read.Shared",
    "Contacts.Read",
    "Contacts.ReadWrite",
    "People.Read",
    "Files.Read",
    "Files.ReadWrite",
    "Files.Read.All",
    "Files.ReadWrite.All",
    "Sites.Read.All",
    "Group.Read.All",
    "GroupMember.Read.All",
    "Directory.Read.All",
    "Tasks.ReadWrite",
    "IMAP.AccessAsUser.All",
    "POP.AccessAsUser.All",
    "SMTP.Send",
    "EWS.AccessAsUser.All",
];
const EXCHANGE_DELEGATED: &[&str] = &[
    "EWS.AccessAsUser.All",
    "IMAP.AccessAsUser.All",
    "POP.AccessAsUser.All",
    "SMTP.Send",
    "full_access_as_user",
    "Mail.Read",
    "Mail.ReadWrite",
    "Mail.Send",
    "User.Read",
];

/// A resource (API) as named in a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resource {
    /// Canonical identity used for comparisons: the first-party app id, an app's client id, or
    /// the lower-cased URI.
    pub id: String,
    /// As the client wrote it (trailing `/` removed); becomes the token's `aud`.
    pub uri: String,
}

impl Resource {
    pub fn graph() -> Resource {
        Resource { id: GRAPH_ID.into(), uri: GRAPH_URI.into() }
    }

    /// Whether this is a first-party resource the emulator knows by itself.
    pub fn is_builtin(&self) -> bool {
        self.id == GRAPH_ID || self.id == EXCHANGE_ID
    }

    /// Whether `name` is a delegated permission of this first-party resource.
    pub fn has_builtin_permission(&self, name: &str) -> bool {
        let list = if self.id == GRAPH_ID {
            GRAPH_DELEGATED
        } else if self.id == EXCHANGE_ID {
            EXCHANGE_DELEGATED
        } else {
            return false;
        };
        list.iter().any(|p| p.eq_ignore_ascii_case(name))
    }
}

impl Resource {
    /// What "one resource" means when a token request may name only one: the canonical id,
    /// except that Exchange Online's URIs count apart (`https://outlook.office.com` and
    /// `https://outlook.office365.com` are two resources to Entra's token endpoint, though they
    /// share permissions and consent).
    pub fn token_key(&self) -> String {
        if self.id == EXCHANGE_ID { self.uri.to_ascii_lowercase() } else { self.id.clone() }
    }
}

/// The resources a request's scopes name, each once, in order (OIDC scopes name none).
pub(crate) fn distinct_resources(scopes: &[Scope]) -> Vec<&Resource> {
    let mut out: Vec<&Resource> = Vec::new();
    for p in permissions(scopes) {
        if !out.iter().any(|r| r.token_key() == p.resource.token_key()) {
            out.push(&p.resource);
        }
    }
    out
}

/// A permission on a resource (or, in a generic tenant, an opaque scope with an empty resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Permission {
    pub resource: Resource,
    pub name: String,
}

impl Permission {
    /// Comparison key: permissions are case-insensitive in Entra.
    pub fn key(&self) -> String {
        format!("{}|{}", self.resource.id, self.name.to_ascii_lowercase())
    }

    pub fn is_default(&self) -> bool {
        self.name == ".default"
    }

    /// `https://graph.microsoft.com/Mail.Read`, or the bare scope in a generic tenant.
    pub fn full(&self) -> String {
        if self.resource.uri.is_empty() { self.name.clone() } else { format!("{}/{}", self.resource.uri, self.name) }
    }

    pub fn opaque(scope: &str) -> Permission {
        Permission { resource: Resource { id: String::new(), uri: String::new() }, name: scope.to_string() }
    }
}

/// One parsed scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// `openid`, `profile`, `email` or `offline_access` (lower-cased).
    Oidc(String),
    Perm(Permission),
}

/// Why a scope string could not be read (the caller turns it into AADSTS70011).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadScope(pub String);

pub(crate) fn is_oidc(scope: &str) -> bool {
    OIDC_SCOPES.iter().any(|s| s.eq_ignore_ascii_case(scope))
}

/// Splits a space-separated scope parameter (any whitespace, empty parts dropped).
pub(crate) fn split(scope: &str) -> Vec<String> {
    scope.split_whitespace().map(str::to_string).collect()
}

/// Canonical id of a resource URI, with `app_ids` resolving URIs owned by app registrations
/// (`api://{client_id}`, a client id GUID, or a registered identifier URI) to the client id.
pub(crate) fn canonical_resource(uri: &str, app_ids: &dyn Fn(&str) -> Option<String>) -> String {
    let lower = uri.trim_end_matches('/').to_ascii_lowercase();
    if GRAPH_ALIASES.contains(&lower.as_str()) {
        return GRAPH_ID.into();
    }
    if EXCHANGE_ALIASES.contains(&lower.as_str()) {
        return EXCHANGE_ID.into();
    }
    app_ids(&lower).unwrap_or(lower)
}

/// Reads one scope. `generic` = opaque scopes.
pub(crate) fn parse(scope: &str, generic: bool, app_ids: &dyn Fn(&str) -> Option<String>) -> Result<Scope, BadScope> {
    if is_oidc(scope) {
        return Ok(Scope::Oidc(scope.to_ascii_lowercase()));
    }
    if generic {
        return Ok(Scope::Perm(Permission::opaque(scope)));
    }
    match scope.rfind('/') {
        None => Ok(Scope::Perm(Permission { resource: Resource::graph(), name: scope.to_string() })),
        Some(i) => {
            let (uri, name) = (&scope[..i], &scope[i + 1..]);
            // `https://host/` has its last slash inside the authority part: no permission at all.
            if name.is_empty() || uri.is_empty() || uri.ends_with(':') || uri.ends_with("//") {
                return Err(BadScope(scope.to_string()));
            }
            let uri = uri.trim_end_matches('/').to_string();
            let id = canonical_resource(&uri, app_ids);
            Ok(Scope::Perm(Permission { resource: Resource { id, uri }, name: name.to_string() }))
        }
    }
}

/// All scopes of a request, read.
pub(crate) fn parse_all(
    scopes: &[String],
    generic: bool,
    app_ids: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Scope>, BadScope> {
    scopes.iter().map(|s| parse(s, generic, app_ids)).collect()
}

/// The resource permissions among parsed scopes.
pub(crate) fn permissions(scopes: &[Scope]) -> Vec<&Permission> {
    scopes
        .iter()
        .filter_map(|s| match s {
            Scope::Perm(p) => Some(p),
            Scope::Oidc(_) => None,
        })
        .collect()
}

pub(crate) fn has_oidc(scopes: &[Scope], name: &str) -> bool {
    scopes.iter().any(|s| matches!(s, Scope::Oidc(n) if n == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn graph_is_the_default_resource() {
        let s = parse("Mail.Read", false, &none).unwrap();
        let Scope::Perm(p) = s else { panic!() };
        assert_eq!(p.resource.id, GRAPH_ID);
        assert_eq!(p.full(), "https://graph.microsoft.com/Mail.Read");
    }

    #[test]
    fn resource_aliases_and_case() {
        let Scope::Perm(a) = parse("https://outlook.office.com/IMAP.AccessAsUser.All", false, &none).unwrap() else {
            panic!()
        };
        let Scope::Perm(b) = parse("https://outlook.office365.com/imap.accessasuser.all", false, &none).unwrap() else {
            panic!()
        };
        assert_eq!(a.key(), b.key());
        assert_eq!(a.resource.uri, "https://outlook.office.com");
    }

    #[test]
    fn bad_and_oidc_scopes() {
        assert!(parse("https://mail.google.com/", false, &none).is_err());
        assert_eq!(parse("OpenID", false, &none).unwrap(), Scope::Oidc("openid".into()));
        let Scope::Perm(p) = parse("https://mail.google.com/", true, &none).unwrap() else { panic!() };
        assert_eq!(p.full(), "https://mail.google.com/");
    }

    #[test]
    fn resources_are_counted_as_the_token_endpoint_counts_them() {
        let parsed = |v: &[&str]| parse_all(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>(), false, &none);
        let n = |v: &[&str]| distinct_resources(&parsed(v).unwrap()).len();
        assert_eq!(n(&["openid", "Mail.Read", "https://graph.microsoft.com/User.Read", "offline_access"]), 1);
        assert_eq!(
            n(&["https://graph.microsoft.com/Mail.Read", "https://outlook.office365.com/EWS.AccessAsUser.All"]),
            2
        );
        assert_eq!(
            n(&["https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office365.com/SMTP.Send"]),
            2
        );
        assert_eq!(n(&["https://outlook.office.com/IMAP.AccessAsUser.All", "https://OUTLOOK.office.com/SMTP.Send"]), 1);
        assert_eq!(n(&["openid", "profile"]), 0);
    }

    #[test]
    fn app_owned_resources_resolve_to_the_client_id() {
        let ids = |u: &str| (u == "api://abc").then(|| "abc".to_string());
        let Scope::Perm(p) = parse("api://abc/access_as_user", false, &ids).unwrap() else { panic!() };
        assert_eq!(p.resource.id, "abc");
        assert_eq!(p.resource.uri, "api://abc");
    }
}
