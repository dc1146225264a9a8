//! The emulator's setup: tenants, app registrations, users and consents.
//!
//! The same types are read from `--config FILE.json`, posted to the admin API and passed to the
//! Rust API, so a test can move between the three without translating anything.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Everything the emulator starts with. The JSON config file has exactly this shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Setup {
    pub tenants: Vec<TenantSpec>,
    pub apps: Vec<AppSpec>,
    pub users: Vec<UserSpec>,
    /// Consents granted up front (user consent when `username` is set, admin consent otherwise).
    pub consents: Vec<ConsentSpec>,
    /// Exchange Online mailboxes (Graph mail and EWS).
    pub mailboxes: Vec<MailboxSpec>,
    /// Full access of users to mailboxes other than their own.
    pub mailbox_grants: Vec<MailboxGrant>,
    /// Send As rights of users on mailboxes other than their own (EWS sends need them).
    pub send_as_grants: Vec<MailboxGrant>,
    /// Application access policies (app-only access restricted to some mailboxes).
    pub access_policies: Vec<AccessPolicySpec>,
    /// Apps registered as service principals in Exchange Online (`New-ServicePrincipal`): needed
    /// for app-only IMAP, POP and SMTP AUTH.
    pub exchange_service_principals: Vec<ServicePrincipalSpec>,
    /// Full access of those service principals to mailboxes (`Add-MailboxPermission -User <service
    /// principal>`).
    pub mailbox_app_grants: Vec<MailboxAppGrant>,
    /// The authentication schemes EWS accepts; absent: bearer tokens only (Exchange Online).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ews_auth: Option<EwsAuthSpec>,
    /// EWS closed to callers (HTTP 403); absent: open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ews_block: Option<EwsBlockSpec>,
}

/// EWS closed to callers, as Exchange Online from 2026-10-01 when the organisation has not
/// enabled EWS (`EWSEnabled`) or has not put the app's id on its allow list
/// (`EWSAllowedAppIDs`): every call, once authenticated, is answered HTTP 403, often with a body
/// that is not SOAP (`POST /_admin/ews/block`, `Setup.ews_block`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct EwsBlockSpec {
    /// Whether EWS refuses callers at all.
    pub blocked: bool,
    /// App (client) ids that still get through (`EWSAllowedAppIDs`). Callers signing in with a
    /// password (on-premises mode) have no app id and are refused.
    pub allowed_app_ids: Vec<String>,
    /// What the 403 carries.
    pub body: EwsBlockBody,
}

impl EwsBlockSpec {
    /// Blocked for every app, answering with `body`.
    pub fn blocked(body: EwsBlockBody) -> Self {
        EwsBlockSpec { blocked: true, allowed_app_ids: Vec::new(), body }
    }
}

/// The body of a blocked EWS call's 403.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EwsBlockBody {
    /// An HTML error page (`text/html`).
    #[default]
    Html,
    /// A line of plain text (`text/plain`).
    Text,
    /// A SOAP fault with `ErrorAccessDenied` (`text/xml`).
    Soap,
    /// Nothing at all.
    Empty,
}

/// A read receipt Exchange sent for a message whose sender asked for one
/// (`Disposition-Notification-To`): marked read, or deleted unread, without suppressing it
/// (`GET /_admin/mailboxes/receipts`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ReadReceipt {
    pub mailbox: String,
    /// Where it went: the `Disposition-Notification-To` address.
    pub to: String,
    pub internet_message_id: String,
    pub subject: String,
    /// `read` (marked read) or `not-read` (deleted unread).
    pub kind: String,
    /// What sent it: `EWS UpdateItem`, `EWS DeleteItem` or `Graph PATCH`.
    pub cause: String,
    pub at: Option<DateTime<Utc>>,
}

/// An HTTP authentication scheme of the EWS endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EwsAuthScheme {
    /// OAuth 2.0 bearer tokens of this emulator, as Exchange Online.
    Bearer,
    /// `Authorization: Basic` with a user's name and password, as Exchange Server on-premises.
    Basic,
    /// NTLMv2 over HTTP (MS-NTHT), bound to the TCP connection, as Exchange Server on-premises.
    #[serde(rename = "NTLM")]
    Ntlm,
}

impl EwsAuthScheme {
    /// The scheme's name in `Authorization` / `WWW-Authenticate`.
    pub fn as_str(self) -> &'static str {
        match self {
            EwsAuthScheme::Bearer => "Bearer",
            EwsAuthScheme::Basic => "Basic",
            EwsAuthScheme::Ntlm => "NTLM",
        }
    }
}

impl std::str::FromStr for EwsAuthScheme {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [EwsAuthScheme::Bearer, EwsAuthScheme::Basic, EwsAuthScheme::Ntlm]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown EWS authentication scheme '{s}' (Bearer, Basic, NTLM)"))
    }
}

/// Which schemes EWS accepts (`POST /_admin/ews/auth`, `Setup.ews_auth`). A 401 names each of
/// them in its own `WWW-Authenticate` header, in this order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EwsAuthSpec {
    pub schemes: Vec<EwsAuthScheme>,
}

impl Default for EwsAuthSpec {
    /// Bearer only: Exchange Online.
    fn default() -> Self {
        EwsAuthSpec { schemes: vec![EwsAuthScheme::Bearer] }
    }
}

impl EwsAuthSpec {
    pub fn new(schemes: &[EwsAuthScheme]) -> Self {
        EwsAuthSpec { schemes: schemes.to_vec() }
    }

    /// Basic and NTLM: an Exchange Server on-premises with user names and passwords.
    pub fn on_premises() -> Self {
        EwsAuthSpec::new(&[EwsAuthScheme::Basic, EwsAuthScheme::Ntlm])
    }
}

/// How a tenant reads scopes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TenantMode {
    /// Microsoft identity platform rules: `{resource}/{permission}` scopes, one resource per token,
    /// `/.default` for client credentials.
    #[default]
    Microsoft,
    /// A plain OAuth2 server (Google-like): scopes are opaque strings, all of them go into one token.
    Generic,
}

/// A directory (tenant).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSpec {
    /// Tenant id (a GUID). Generated when absent.
    pub id: Option<String>,
    /// Primary domain, e.g. `contoso.onmicrosoft.com`. Usable in URLs instead of the id.
    pub domain: String,
    /// Display name.
    pub name: String,
    pub mode: TenantMode,
    /// `expires_in` of access tokens (Microsoft: 3599, randomised between 60 and 90 minutes in reality).
    pub access_token_lifetime_seconds: u64,
    /// Lifetime of each refresh token from its issue (Microsoft: 90 days). Past it: AADSTS70008.
    pub refresh_token_lifetime_seconds: u64,
    /// When set, a refresh token unused for this long fails with AADSTS700082.
    pub refresh_token_inactivity_seconds: Option<u64>,
    /// How long a refresh token stays usable after it was redeemed (and so replaced by a new
    /// one). 0 (default) = single use. Microsoft itself does not revoke redeemed refresh tokens:
    /// set a large value to imitate that.
    pub refresh_token_reuse_grace_seconds: u64,
    /// Whether a refresh returns a new refresh token (Microsoft: always). Google does not rotate.
    pub rotate_refresh_tokens: bool,
    /// Whether users may consent to delegated permissions themselves. When false, a user who
    /// would need the consent page gets AADSTS90094 (admin approval required).
    pub user_consent_allowed: bool,
}

impl Default for TenantSpec {
    fn default() -> Self {
        TenantSpec {
            id: None,
            domain: String::new(),
            name: String::new(),
            mode: TenantMode::Microsoft,
            access_token_lifetime_seconds: 3599,
            refresh_token_lifetime_seconds: 90 * 24 * 3600,
            refresh_token_inactivity_seconds: None,
            refresh_token_reuse_grace_seconds: 0,
            rotate_refresh_tokens: true,
            user_consent_allowed: true,
        }
    }
}

impl TenantSpec {
    /// A tenant with Microsoft's defaults and the given domain.
    pub fn new(domain: impl Into<String>) -> Self {
        TenantSpec { domain: domain.into(), ..Default::default() }
    }
}

/// A client secret of an app registration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub value: String,
    /// RFC 3339; absent = never expires.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl SecretSpec {
    pub fn new(value: impl Into<String>) -> Self {
        SecretSpec { value: value.into(), expires_at: None }
    }
}

/// A certificate credential of an app registration (public part only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    /// PEM, `-----BEGIN CERTIFICATE-----`.
    pub pem: String,
}

/// An app registration (plus its service principal, which the emulator does not model apart).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AppSpec {
    /// Home tenant: id or domain.
    pub tenant: String,
    /// Application (client) id. Generated (a GUID) when absent.
    pub client_id: Option<String>,
    pub name: String,
    /// Registered redirect URIs; the authorize request must use one of them exactly.
    pub redirect_uris: Vec<String>,
    pub secrets: Vec<SecretSpec>,
    pub certificates: Vec<CertificateSpec>,
    /// Delegated permissions granted tenant-wide by admin consent, e.g.
    /// `https://graph.microsoft.com/Mail.ReadWrite.Shared` (no resource prefix = Microsoft Graph).
    pub delegated_permissions: Vec<String>,
    /// Application permissions (app roles) granted by admin consent, e.g.
    /// `https://graph.microsoft.com/Mail.ReadWrite`, `https://outlook.office365.com/full_access_as_app`.
    pub application_permissions: Vec<String>,
    /// A public client (desktop/mobile): no secret, and presenting one is an error (AADSTS700025).
    pub public_client: bool,
    /// Whether the app may be used through `/common` and `/organizations` and by users of other
    /// tenants. Single-tenant apps get AADSTS50194 there, as in Entra.
    pub multi_tenant: bool,
    /// Application ID URIs under which this app is itself a resource (besides `api://{client_id}`).
    pub identifier_uris: Vec<String>,
    /// Conditional Access blocks this workload identity: client credentials fail with AADSTS53003.
    pub blocked_by_conditional_access: bool,
}

/// A user account.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UserSpec {
    /// Tenant id or domain.
    pub tenant: String,
    /// User principal name, e.g. `robot@contoso.onmicrosoft.com`.
    pub username: String,
    pub password: String,
    /// Display name; defaults to the username.
    pub name: Option<String>,
    /// Object id (a GUID). Generated when absent.
    pub oid: Option<String>,
    /// Mail address (the `email` claim); defaults to the username.
    pub email: Option<String>,
    /// Multi-factor authentication required: sign-in asks for `mfa_code`, and refresh tokens
    /// obtained without MFA fail with AADSTS50076.
    pub mfa_required: bool,
    /// The one-time code the MFA step accepts (default `123456`).
    pub mfa_code: Option<String>,
    /// Conditional Access blocks this user: sign-in shows AADSTS53003, token requests fail with it.
    pub blocked_by_conditional_access: bool,
}

/// A consent to grant or revoke.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ConsentSpec {
    pub tenant: String,
    pub client_id: String,
    /// The user who consents; absent = admin consent for the whole tenant.
    pub username: Option<String>,
    /// Delegated permissions, e.g. `https://graph.microsoft.com/Mail.ReadWrite.Shared`. On revoke,
    /// empty = all.
    pub scopes: Vec<String>,
}

/// A change to a user's flags (absent fields are left as they are).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UserUpdate {
    pub tenant: String,
    pub username: String,
    pub mfa_required: Option<bool>,
    pub blocked_by_conditional_access: Option<bool>,
    pub name: Option<String>,
}

/// Tokens for a user without the browser dance: what a finished authorization code flow returns.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IssueSpec {
    pub tenant: String,
    pub client_id: String,
    pub username: String,
    /// As on the authorize request; include `offline_access` for a refresh token, `openid` for an
    /// id_token. The resource scopes are consented for the user as a side effect.
    pub scopes: Vec<String>,
    /// Mark the session as having passed MFA.
    pub mfa: bool,
}

/// Claims to change in the next `count` id_tokens the token endpoint issues, so a client's
/// id_token checks can be tried: `{"claims": {"aud": "someone-else"}}`. A `null` value removes
/// the claim. The token is still signed with the emulator's key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdTokenFault {
    pub claims: serde_json::Map<String, serde_json::Value>,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// A fault to inject into the next `count` requests to an endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSpec {
    /// `token`, `authorize`, `login`, `openid_configuration`, `jwks`, `instance_discovery`,
    /// `introspect`, `userinfo`, `logout`, `graph`, `graph_value`, `graph_delta`, `graph_batch`,
    /// `ews`, `other`, or `*` for any of them.
    pub endpoint: String,
    /// How many requests this fault applies to.
    pub count: u32,
    /// Answer with this HTTP status (Microsoft-shaped JSON body) instead of handling the request.
    pub status: Option<u16>,
    /// `Retry-After` seconds to send with `status`.
    pub retry_after: Option<u64>,
    /// Wait this long before answering (or before the status / the drop).
    pub latency_ms: u64,
    /// Close the connection without an answer.
    pub drop_connection: bool,
    /// Apply to each matching request only with this probability (0–1), so
    /// faults strike independently at random; `count` then bounds how often.
    /// None: every matching request until `count` is used up.
    #[serde(default)]
    pub probability: Option<f64>,
}

impl Default for FaultSpec {
    fn default() -> Self {
        FaultSpec {
            endpoint: "token".into(),
            count: 1,
            status: None,
            retry_after: None,
            latency_ms: 0,
            drop_connection: false,
            probability: None,
        }
    }
}

impl FaultSpec {
    /// Faults that make about `rate` of all Graph requests (`$batch` items
    /// included) fail, each independently: 429 with Retry-After 1 s, 429
    /// without, 503 and dropped connections in equal shares. Inject them all.
    pub fn graph_failure_rate(rate: f64) -> Vec<FaultSpec> {
        let kinds = [
            FaultSpec { status: Some(429), retry_after: Some(1), ..Default::default() },
            FaultSpec { status: Some(429), ..Default::default() },
            FaultSpec { status: Some(503), ..Default::default() },
            FaultSpec { drop_connection: true, ..Default::default() },
        ];
        // Four chances in a row: 1 - (1 - p)^4 = rate.
        let p = 1.0 - (1.0 - rate.clamp(0.0, 1.0)).powf(1.0 / kinds.len() as f64);
        ["graph", "graph_value", "graph_delta", "graph_batch"]
            .iter()
            .flat_map(|endpoint| {
                kinds.iter().map(move |kind| FaultSpec {
                    endpoint: endpoint.to_string(),
                    count: u32::MAX,
                    probability: Some(p),
                    ..kind.clone()
                })
            })
            .collect()
    }
}

/// An Exchange Online mailbox: a user's (its address is the user's UPN) or a shared one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MailboxSpec {
    /// Tenant id or domain.
    pub tenant: String,
    /// SMTP address; a user's UPN makes it that user's mailbox.
    pub address: String,
    /// Defaults to the user's name or the address.
    pub display_name: Option<String>,
    /// REST (Graph) access disabled: Graph answers 404 `MailboxNotEnabledForRESTAPI`.
    pub rest_disabled: bool,
    /// Latency added to every Graph/EWS request on this mailbox, while it counts against the
    /// concurrency limit (lets tests reach the limit).
    pub latency_ms: u64,
}

impl MailboxSpec {
    pub fn new(tenant: impl Into<String>, address: impl Into<String>) -> Self {
        MailboxSpec { tenant: tenant.into(), address: address.into(), ..Default::default() }
    }
}

/// Full access of a user to a mailbox (`Add-MailboxPermission -AccessRights FullAccess`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MailboxGrant {
    pub tenant: String,
    /// The mailbox address.
    pub mailbox: String,
    /// The user's UPN.
    pub username: String,
}

/// An app's service principal registered in Exchange Online (`New-ServicePrincipal -AppId …
/// -ObjectId …`). App-only IMAP, POP and SMTP AUTH logins need one, with mailbox permissions.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServicePrincipalSpec {
    pub tenant: String,
    /// The app's client id (`-AppId`).
    pub client_id: String,
}

/// Full access of an app's Exchange service principal to a mailbox (`Add-MailboxPermission
/// -Identity <mailbox> -User <service principal> -AccessRights FullAccess`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MailboxAppGrant {
    pub tenant: String,
    /// The mailbox address.
    pub mailbox: String,
    /// The app's client id; its service principal must be registered first.
    pub client_id: String,
}

/// An application access policy (`New-ApplicationAccessPolicy -AccessRight RestrictAccess`):
/// app-only tokens of the app reach only these mailboxes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AccessPolicySpec {
    pub tenant: String,
    pub client_id: String,
    /// Mailbox addresses the app may reach; every other mailbox answers 403.
    pub mailboxes: Vec<String>,
}

/// A mail to put into a mailbox folder, as if delivered by transport.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverSpec {
    /// Mailbox address.
    pub mailbox: String,
    /// Folder id, well-known name (default `inbox`) or display name of a top-level folder.
    pub folder: Option<String>,
    /// The raw RFC 5322 message.
    pub mime: String,
    /// `receivedDateTime`; default now on the emulator clock.
    pub received_at: Option<DateTime<Utc>>,
    pub is_read: bool,
}

/// A message as the admin API lists it (for tests to check where mails ended up).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MessageInfo {
    /// The current (move-changing) id.
    pub id: String,
    /// The immutable id (`Prefer: IdType="ImmutableId"`).
    pub immutable_id: String,
    pub folder_id: String,
    /// The folder's well-known name, or its display name.
    pub folder: String,
    pub subject: String,
    pub internet_message_id: String,
    pub is_read: bool,
    pub categories: Vec<String>,
    pub received_at: Option<DateTime<Utc>>,
}

/// A folder as the admin API lists it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FolderInfo {
    pub id: String,
    pub display_name: String,
    pub well_known_name: Option<String>,
    pub parent_id: Option<String>,
    pub total: usize,
    pub unread: usize,
}
