//! The in-memory directory (tenants, apps, users, consents), the grants handed out (codes,
//! refresh tokens, sign-in sessions), the emulator clock, and the admin operations on them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::EmulatorError;
use crate::config::{AppSpec, ConsentSpec, SecretSpec, Setup, TenantMode, TenantSpec, UserSpec, UserUpdate};
use crate::faults::Faults;
use crate::jwt::{RegisteredCert, SigningKey};
use crate::scopes::{self, Permission, Scope};

/// Milliseconds in a second, for the many conversions between config (seconds) and state (ms).
pub(crate) const MS: i64 = 1000;
/// Authorization codes live about 10 minutes.
pub(crate) const CODE_LIFETIME_MS: i64 = 10 * 60 * MS;
/// A sign-in page left open this long is stale (AADSTS50089).
pub(crate) const FLOW_LIFETIME_MS: i64 = 60 * 60 * MS;

/// Wall clock plus an offset the admin API can advance, so tests can expire tokens and codes
/// without waiting.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis() + self.offset_ms.load(Ordering::Relaxed)
    }

    pub fn now_s(&self) -> i64 {
        self.now_ms().div_euclid(MS)
    }

    pub fn advance(&self, secs: i64) -> i64 {
        self.offset_ms.fetch_add(secs * MS, Ordering::Relaxed) / MS + secs
    }

    pub fn offset_s(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed) / MS
    }

    pub fn reset(&self) {
        self.offset_ms.store(0, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    pub id: String,
    pub spec: TenantSpec,
}

impl Tenant {
    pub fn generic(&self) -> bool {
        self.spec.mode == TenantMode::Generic
    }

    pub fn display(&self) -> &str {
        if self.spec.name.is_empty() { &self.spec.domain } else { &self.spec.name }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Secret {
    pub value: String,
    pub expires_ms: Option<i64>,
}

#[derive(Debug, Clone)]
pub(crate) struct App {
    pub tenant_id: String,
    pub client_id: String,
    /// The service principal's object id: `oid`/`sub` of app-only tokens.
    pub object_id: String,
    pub spec: AppSpec,
    pub secrets: Vec<Secret>,
    pub certs: Vec<RegisteredCert>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RevokeReason {
    /// An admin revoked the user's sessions: AADSTS70008.
    Admin,
    /// The password changed: AADSTS50173.
    PasswordChange,
}

#[derive(Debug, Clone)]
pub(crate) struct Revocation {
    /// Grants whose session sequence number is below this are dead.
    pub before_seq: u64,
    pub reason: RevokeReason,
    pub at_ms: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct User {
    pub tenant_id: String,
    pub oid: String,
    pub spec: UserSpec,
    /// client id → delegated scopes the user consented to (raw strings, read on use).
    pub consents: HashMap<String, Vec<String>>,
    pub revoked: Option<Revocation>,
}

impl User {
    pub fn name(&self) -> &str {
        self.spec.name.as_deref().unwrap_or(&self.spec.username)
    }

    pub fn email(&self) -> &str {
        self.spec.email.as_deref().unwrap_or(&self.spec.username)
    }

    pub fn mfa_code(&self) -> &str {
        self.spec.mfa_code.as_deref().unwrap_or("123456")
    }

    /// Whether a grant from the session numbered `seq` was revoked, and why.
    pub fn revoked_for(&self, seq: u64) -> Option<&Revocation> {
        self.revoked.as_ref().filter(|r| seq < r.before_seq)
    }
}

/// How the tenant segment of a URL was written; codes must be redeemed through the same kind
/// (AADSTS700005).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TenantPath {
    Common,
    Organizations,
    Consumers,
    Tenant(String),
}

impl TenantPath {
    pub fn is_multi(&self) -> bool {
        !matches!(self, TenantPath::Tenant(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PkceMethod {
    Plain,
    S256,
}

#[derive(Debug, Clone)]
pub(crate) struct AuthCode {
    pub client_id: String,
    pub tenant_id: String,
    pub path: TenantPath,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub user_oid: String,
    pub challenge: Option<(String, PkceMethod)>,
    pub nonce: Option<String>,
    pub issued_ms: i64,
    pub session_seq: u64,
    pub auth_time_s: i64,
    pub mfa: bool,
    pub offline: bool,
    pub redeemed: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct RefreshGrant {
    pub client_id: String,
    pub tenant_id: String,
    pub user_oid: String,
    /// Scopes of the original authorization (the default when a refresh names none).
    pub scopes: Vec<String>,
    pub issued_ms: i64,
    pub session_seq: u64,
    pub auth_time_s: i64,
    pub mfa: bool,
    /// When it was redeemed and replaced by a newer one.
    pub superseded_ms: Option<i64>,
}

/// Where a sign-in flow stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowStage {
    SignIn,
    Mfa,
    Consent,
}

/// An authorize request in progress: created by `/authorize`, carried through the sign-in, MFA
/// and consent forms by its id.
#[derive(Debug, Clone)]
pub(crate) struct Flow {
    pub id: String,
    pub path: TenantPath,
    pub path_raw: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub response_mode: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub scopes: Vec<String>,
    pub prompt: Option<String>,
    pub challenge: Option<(String, PkceMethod)>,
    pub offline: bool,
    pub created_ms: i64,
    pub stage: FlowStage,
    /// (tenant id, oid) once the password was accepted.
    pub user: Option<(String, String)>,
    pub session_seq: u64,
    pub auth_time_s: i64,
    pub mfa_done: bool,
    /// The SSO session (cookie) the sign-in created or reused.
    pub sso: Option<String>,
}

/// A browser sign-in session (the `ESTSAUTH` cookie), for single sign-on and `prompt=none`.
#[derive(Debug, Clone)]
pub(crate) struct SsoSession {
    pub tenant_id: String,
    pub user_oid: String,
    pub session_seq: u64,
    pub auth_time_s: i64,
    pub mfa: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub tenants: Vec<Tenant>,
    pub apps: Vec<App>,
    pub users: Vec<User>,
    pub codes: HashMap<String, AuthCode>,
    pub refresh: HashMap<String, RefreshGrant>,
    pub flows: HashMap<String, Flow>,
    pub sso: HashMap<String, SsoSession>,
    seq: u64,
    ops: u64,
}

/// Lower-cased comparison of tenant domains and user names.
fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

pub(crate) fn random_token(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    crate::jwt::b64url(&b)
}

impl Inner {
    /// A new session sequence number (orders sign-ins against revocations without relying on
    /// clock resolution).
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn tenant_path(&self, raw: &str) -> Option<TenantPath> {
        match raw.to_ascii_lowercase().as_str() {
            "common" => Some(TenantPath::Common),
            "organizations" => Some(TenantPath::Organizations),
            "consumers" => Some(TenantPath::Consumers),
            _ => self.tenant(raw).map(|t| TenantPath::Tenant(t.id.clone())),
        }
    }

    /// A tenant by id or domain.
    pub fn tenant(&self, id_or_domain: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| same(&t.id, id_or_domain) || same(&t.spec.domain, id_or_domain))
    }

    pub fn tenant_by_id(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id == id)
    }

    pub fn app(&self, client_id: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.client_id == client_id)
    }

    fn app_mut(&mut self, client_id: &str) -> Option<&mut App> {
        self.apps.iter_mut().find(|a| a.client_id == client_id)
    }

    /// Whether the app can be used in `tenant_id` (its home tenant, or any if multi-tenant).
    pub fn app_usable_in(&self, app: &App, tenant_id: &str) -> bool {
        app.tenant_id == tenant_id || app.spec.multi_tenant
    }

    pub fn user(&self, tenant_id: &str, oid: &str) -> Option<&User> {
        self.users.iter().find(|u| u.tenant_id == tenant_id && u.oid == oid)
    }

    pub fn user_mut(&mut self, tenant_id: &str, oid: &str) -> Option<&mut User> {
        self.users.iter_mut().find(|u| u.tenant_id == tenant_id && u.oid == oid)
    }

    /// A user by UPN, in one tenant or (for `/common`) any.
    pub fn user_by_name(&self, tenant_id: Option<&str>, username: &str) -> Option<&User> {
        self.users.iter().find(|u| same(&u.spec.username, username) && tenant_id.is_none_or(|t| u.tenant_id == t))
    }

    /// Resolves URIs owned by app registrations to their client id (see `scopes::canonical_resource`).
    pub fn app_ids(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |lower: &str| {
            self.apps.iter().find_map(|a| {
                let id = a.client_id.to_ascii_lowercase();
                let owns = lower == id
                    || lower.strip_prefix("api://") == Some(id.as_str())
                    || a.spec.identifier_uris.iter().any(|u| u.trim_end_matches('/').eq_ignore_ascii_case(lower));
                owns.then(|| a.client_id.clone())
            })
        }
    }

    /// Whether a resource exists for token purposes: first-party, or an app registration.
    pub fn resource_known(&self, r: &scopes::Resource) -> bool {
        r.is_builtin() || self.app(&r.id).is_some()
    }

    /// Reads scope strings for a tenant.
    pub fn parse_scopes(&self, tenant: &Tenant, raw: &[String]) -> Result<Vec<Scope>, scopes::BadScope> {
        scopes::parse_all(raw, tenant.generic(), &self.app_ids())
    }

    /// Permissions from raw strings, skipping unreadable ones (they were checked on the way in).
    fn perms(&self, tenant: &Tenant, raw: &[String]) -> Vec<Permission> {
        raw.iter()
            .filter_map(|s| scopes::parse(s, tenant.generic(), &self.app_ids()).ok())
            .filter_map(|s| match s {
                Scope::Perm(p) => Some(p),
                Scope::Oidc(_) => None,
            })
            .collect()
    }

    /// Delegated permissions the user may use through the app: admin consent plus the user's own.
    pub fn granted(&self, tenant: &Tenant, app: &App, user: &User) -> Vec<Permission> {
        let mut out: Vec<Permission> = Vec::new();
        let mine = user.consents.get(&app.client_id).map(Vec::as_slice).unwrap_or(&[]);
        let admin = if app.tenant_id == user.tenant_id || app.spec.multi_tenant {
            app.spec.delegated_permissions.as_slice()
        } else {
            &[]
        };
        for p in self.perms(tenant, admin).into_iter().chain(self.perms(tenant, mine)) {
            if !p.is_default() && !out.iter().any(|q| q.key() == p.key()) {
                out.push(p);
            }
        }
        out
    }

    /// Application permissions (roles) of the app on a resource.
    pub fn roles(&self, tenant: &Tenant, app: &App, resource_id: &str) -> Vec<String> {
        self.perms(tenant, &app.spec.application_permissions)
            .into_iter()
            .filter(|p| tenant.generic() || p.resource.id == resource_id)
            .map(|p| p.name)
            .collect()
    }

    /// Whether `name` is a delegated permission that exists on the resource.
    pub fn permission_exists(&self, tenant: &Tenant, app: &App, p: &Permission) -> bool {
        if tenant.generic() || p.is_default() || !p.resource.is_builtin() {
            return true;
        }
        p.resource.has_builtin_permission(&p.name)
            || self.perms(tenant, &app.spec.delegated_permissions).iter().any(|q| q.key() == p.key())
    }

    /// Drops expired codes, flows and replaced refresh tokens now and then, so long benchmarks
    /// do not grow without bound.
    pub fn maybe_prune(&mut self, now_ms: i64) {
        self.ops += 1;
        if !self.ops.is_multiple_of(256) {
            return;
        }
        let grace = |g: &RefreshGrant, tenants: &[Tenant]| {
            tenants
                .iter()
                .find(|t| t.id == g.tenant_id)
                .map(|t| t.spec.refresh_token_reuse_grace_seconds as i64 * MS)
                .unwrap_or(0)
        };
        self.codes.retain(|_, c| now_ms - c.issued_ms < 2 * CODE_LIFETIME_MS);
        self.flows.retain(|_, f| now_ms - f.created_ms < FLOW_LIFETIME_MS);
        let tenants = &self.tenants;
        self.refresh.retain(|_, g| match g.superseded_ms {
            Some(at) => now_ms - at < grace(g, tenants) + 3600 * MS,
            None => true,
        });
    }
}

/// The shared state of one emulator instance.
#[derive(Debug)]
pub(crate) struct Emu {
    pub base_url: String,
    pub key: Arc<SigningKey>,
    pub clock: Clock,
    inner: Mutex<Inner>,
    pub faults: Mutex<Faults>,
    mail: Mutex<crate::mail::MailStore>,
    ews_auth: Mutex<crate::ewsauth::EwsAuthState>,
    /// Graph change notifications: subscriptions, deliveries in progress, their log.
    subs: Mutex<crate::subscriptions::SubStore>,
    /// Wakes the notifier (a subscription change, a test hook) before its next tick.
    pub notifier: tokio::sync::Notify,
    initial: Setup,
}

impl Emu {
    pub fn new(base_url: String, key: Arc<SigningKey>, setup: Setup) -> Result<Emu, EmulatorError> {
        let emu = Emu {
            base_url,
            key,
            clock: Clock::default(),
            inner: Mutex::new(Inner::default()),
            faults: Mutex::new(Faults::default()),
            mail: Mutex::new(crate::mail::MailStore::new()),
            ews_auth: Mutex::new(Default::default()),
            subs: Mutex::new(Default::default()),
            notifier: tokio::sync::Notify::new(),
            initial: setup.clone(),
        };
        emu.load(&setup)?;
        Ok(emu)
    }

    /// The directory lock. A poisoned lock only means a handler panicked mid-request; the data
    /// is still usable for a test tool.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mailbox store lock. Never taken while holding the directory lock's guard across it
    /// in the other order: callers take the directory first, copy what they need, release it.
    pub fn mail(&self) -> MutexGuard<'_, crate::mail::MailStore> {
        self.mail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// EWS authentication schemes and NTLM handshakes in progress.
    pub fn ews_auth(&self) -> MutexGuard<'_, crate::ewsauth::EwsAuthState> {
        self.ews_auth.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The change notification state. Lock order: this one may be held while taking the mail lock
    /// (never the other way round), and never while taking the directory lock.
    pub fn subs(&self) -> MutexGuard<'_, crate::subscriptions::SubStore> {
        self.subs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn issuer(&self, tenant_id: &str) -> String {
        format!("{}/{}/v2.0", self.base_url, tenant_id)
    }

    /// Back to the setup the emulator started with: grants, sessions, faults, counters and the
    /// clock offset are dropped. `empty` drops the setup too.
    pub fn reset(&self, empty: bool) -> Result<(), EmulatorError> {
        *self.lock() = Inner::default();
        *self.faults() = Faults::default();
        *self.mail() = crate::mail::MailStore::new();
        *self.ews_auth() = Default::default();
        self.subs().reset();
        self.clock.reset();
        if !empty {
            self.load(&self.initial.clone())?;
        }
        Ok(())
    }

    pub fn load(&self, setup: &Setup) -> Result<(), EmulatorError> {
        for t in &setup.tenants {
            self.add_tenant(t.clone())?;
        }
        for a in &setup.apps {
            self.add_app(a.clone())?;
        }
        for u in &setup.users {
            self.add_user(u.clone())?;
        }
        for c in &setup.consents {
            self.grant_consent(c.clone())?;
        }
        for m in &setup.mailboxes {
            self.create_mailbox(m.clone())?;
        }
        for g in &setup.mailbox_grants {
            self.grant_mailbox_access(g.clone())?;
        }
        for g in &setup.send_as_grants {
            self.grant_send_as(g.clone())?;
        }
        for sp in &setup.exchange_service_principals {
            self.register_service_principal(sp.clone())?;
        }
        for g in &setup.mailbox_app_grants {
            self.grant_mailbox_access_to_app(g.clone())?;
        }
        for p in &setup.access_policies {
            self.set_access_policy(p.clone())?;
        }
        if let Some(a) = &setup.ews_auth {
            self.set_ews_auth(a.clone())?;
        }
        if let Some(b) = &setup.ews_block {
            self.set_ews_block(b.clone());
        }
        Ok(())
    }

    /// The current directory, in the config file's shape (generated ids filled in).
    pub fn dump(&self) -> Setup {
        let g = self.lock();
        let mut consents = Vec::new();
        for u in &g.users {
            for (client_id, scopes) in &u.consents {
                consents.push(ConsentSpec {
                    tenant: u.tenant_id.clone(),
                    client_id: client_id.clone(),
                    username: Some(u.spec.username.clone()),
                    scopes: scopes.clone(),
                });
            }
        }
        let mut setup = Setup {
            tenants: g.tenants.iter().map(|t| t.spec.clone()).collect(),
            apps: g.apps.iter().map(|a| a.spec.clone()).collect(),
            users: g.users.iter().map(|u| u.spec.clone()).collect(),
            consents,
            ..Default::default()
        };
        self.dump_mail(&g, &mut setup);
        let ews_auth = self.ews_auth_spec();
        setup.ews_auth = (ews_auth != Default::default()).then_some(ews_auth);
        let ews_block = self.ews_block_spec();
        setup.ews_block = (ews_block != Default::default()).then_some(ews_block);
        setup
    }

    pub fn add_tenant(&self, mut spec: TenantSpec) -> Result<TenantSpec, EmulatorError> {
        let id = match spec.id.take() {
            Some(id) => uuid::Uuid::parse_str(&id)
                .map_err(|_| EmulatorError::Invalid(format!("tenant id '{id}' is not a GUID")))?
                .to_string(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        if spec.domain.is_empty() || spec.domain.contains('/') {
            return Err(EmulatorError::Invalid("a tenant needs a domain (no '/')".into()));
        }
        if ["common", "organizations", "consumers"].iter().any(|r| same(r, &spec.domain)) {
            return Err(EmulatorError::Invalid(format!("'{}' is reserved", spec.domain)));
        }
        let mut g = self.lock();
        if g.tenant(&id).is_some() || g.tenant(&spec.domain).is_some() {
            return Err(EmulatorError::Conflict(format!("tenant {id} / {}", spec.domain)));
        }
        spec.id = Some(id.clone());
        if spec.name.is_empty() {
            spec.name = spec.domain.clone();
        }
        g.tenants.push(Tenant { id, spec: spec.clone() });
        tracing::info!(tenant = %spec.domain, "tenant added");
        Ok(spec)
    }

    pub fn add_app(&self, mut spec: AppSpec) -> Result<AppSpec, EmulatorError> {
        let mut g = self.lock();
        let tenant =
            g.tenant(&spec.tenant).ok_or_else(|| EmulatorError::NotFound(format!("tenant {}", spec.tenant)))?;
        let tenant = tenant.clone();
        let client_id = spec.client_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if client_id.is_empty() || g.app(&client_id).is_some() {
            return Err(EmulatorError::Conflict(format!("app {client_id}")));
        }
        let mut certs = Vec::new();
        for c in &spec.certificates {
            certs.extend(RegisteredCert::from_pem(&c.pem)?);
        }
        for s in spec.delegated_permissions.iter().chain(&spec.application_permissions) {
            if scopes::is_oidc(s) {
                continue;
            }
            scopes::parse(s, tenant.generic(), &g.app_ids())
                .map_err(|b| EmulatorError::Invalid(format!("permission '{}' is not a scope", b.0)))?;
        }
        let secrets = spec.secrets.iter().map(secret).collect::<Result<Vec<_>, _>>()?;
        spec.client_id = Some(client_id.clone());
        spec.tenant = tenant.id.clone();
        if spec.name.is_empty() {
            spec.name = client_id.clone();
        }
        g.apps.push(App {
            tenant_id: tenant.id.clone(),
            client_id: client_id.clone(),
            object_id: uuid::Uuid::new_v4().to_string(),
            spec: spec.clone(),
            secrets,
            certs,
        });
        tracing::info!(client_id, tenant = %tenant.spec.domain, "app registered");
        Ok(spec)
    }

    pub fn add_user(&self, mut spec: UserSpec) -> Result<UserSpec, EmulatorError> {
        let mut g = self.lock();
        let tenant_id = g
            .tenant(&spec.tenant)
            .ok_or_else(|| EmulatorError::NotFound(format!("tenant {}", spec.tenant)))?
            .id
            .clone();
        if spec.username.is_empty() {
            return Err(EmulatorError::Invalid("a user needs a username".into()));
        }
        // UPNs are unique across the directory: `/common` sign-in finds the tenant by them.
        if g.user_by_name(None, &spec.username).is_some() {
            return Err(EmulatorError::Conflict(format!("user {}", spec.username)));
        }
        let oid = match spec.oid.take() {
            Some(o) => uuid::Uuid::parse_str(&o)
                .map_err(|_| EmulatorError::Invalid(format!("oid '{o}' is not a GUID")))?
                .to_string(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        spec.oid = Some(oid.clone());
        spec.tenant = tenant_id.clone();
        g.users.push(User { tenant_id, oid, spec: spec.clone(), consents: HashMap::new(), revoked: None });
        tracing::info!(user = %spec.username, "user added");
        Ok(spec)
    }

    fn with_user<T>(
        &self,
        tenant: &str,
        username: &str,
        f: impl FnOnce(&mut Inner, String, String) -> T,
    ) -> Result<T, EmulatorError> {
        let mut g = self.lock();
        let tid = g.tenant(tenant).ok_or_else(|| EmulatorError::NotFound(format!("tenant {tenant}")))?.id.clone();
        let oid = g
            .user_by_name(Some(&tid), username)
            .ok_or_else(|| EmulatorError::NotFound(format!("user {username}")))?
            .oid
            .clone();
        Ok(f(&mut g, tid, oid))
    }

    pub fn grant_consent(&self, spec: ConsentSpec) -> Result<(), EmulatorError> {
        let mut g = self.lock();
        let tenant =
            g.tenant(&spec.tenant).ok_or_else(|| EmulatorError::NotFound(format!("tenant {}", spec.tenant)))?;
        let tenant = tenant.clone();
        g.app(&spec.client_id).ok_or_else(|| EmulatorError::NotFound(format!("app {}", spec.client_id)))?;
        for s in &spec.scopes {
            g.parse_scopes(&tenant, std::slice::from_ref(s))
                .map_err(|b| EmulatorError::Invalid(format!("'{}' is not a scope", b.0)))?;
        }
        match &spec.username {
            Some(name) => {
                let oid = g
                    .user_by_name(Some(&tenant.id), name)
                    .ok_or_else(|| EmulatorError::NotFound(format!("user {name}")))?
                    .oid
                    .clone();
                let user = g.user_mut(&tenant.id, &oid).expect("user just found");
                let list = user.consents.entry(spec.client_id.clone()).or_default();
                for s in spec.scopes {
                    if !list.iter().any(|x| same(x, &s)) {
                        list.push(s);
                    }
                }
            }
            None => {
                let app = g.app_mut(&spec.client_id).expect("app just found");
                for s in spec.scopes {
                    if !app.spec.delegated_permissions.iter().any(|x| same(x, &s)) {
                        app.spec.delegated_permissions.push(s);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn revoke_consent(&self, spec: ConsentSpec) -> Result<(), EmulatorError> {
        let mut g = self.lock();
        let tenant =
            g.tenant(&spec.tenant).ok_or_else(|| EmulatorError::NotFound(format!("tenant {}", spec.tenant)))?;
        let tenant = tenant.clone();
        g.app(&spec.client_id).ok_or_else(|| EmulatorError::NotFound(format!("app {}", spec.client_id)))?;
        let remove: Vec<String> = g.perms(&tenant, &spec.scopes).iter().map(Permission::key).collect();
        let keep = |list: &mut Vec<String>, g: &Inner| {
            if spec.scopes.is_empty() {
                list.clear();
            } else {
                list.retain(|s| g.perms(&tenant, std::slice::from_ref(s)).iter().all(|p| !remove.contains(&p.key())));
            }
        };
        match &spec.username {
            Some(name) => {
                let oid = g
                    .user_by_name(Some(&tenant.id), name)
                    .ok_or_else(|| EmulatorError::NotFound(format!("user {name}")))?
                    .oid
                    .clone();
                let mut list = g.user(&tenant.id, &oid).and_then(|u| u.consents.get(&spec.client_id)).cloned();
                if let Some(l) = list.as_mut() {
                    keep(l, &g);
                }
                let user = g.user_mut(&tenant.id, &oid).expect("user just found");
                match list {
                    Some(l) if !l.is_empty() => {
                        user.consents.insert(spec.client_id.clone(), l);
                    }
                    _ => {
                        user.consents.remove(&spec.client_id);
                    }
                }
            }
            None => {
                let mut list = g.app(&spec.client_id).expect("app just found").spec.delegated_permissions.clone();
                keep(&mut list, &g);
                g.app_mut(&spec.client_id).expect("app just found").spec.delegated_permissions = list;
            }
        }
        Ok(())
    }

    fn revoke(
        &self,
        tenant: &str,
        username: &str,
        reason: RevokeReason,
        password: Option<String>,
    ) -> Result<(), EmulatorError> {
        let now = self.clock.now_ms();
        self.with_user(tenant, username, |g, tid, oid| {
            let before_seq = g.next_seq();
            g.sso.retain(|_, s| !(s.tenant_id == tid && s.user_oid == oid));
            let user = g.user_mut(&tid, &oid).expect("user just found");
            user.revoked = Some(Revocation { before_seq, reason, at_ms: now });
            if let Some(p) = password {
                user.spec.password = p;
            }
        })
    }

    /// Revokes every refresh token and sign-in session of the user (as `revokeSignInSessions`).
    pub fn revoke_user_tokens(&self, tenant: &str, username: &str) -> Result<(), EmulatorError> {
        self.revoke(tenant, username, RevokeReason::Admin, None)
    }

    /// Every refresh token held for the user (current and replaced ones not yet swept).
    pub fn refresh_tokens_of(&self, tenant: &str, username: &str) -> Result<Vec<String>, EmulatorError> {
        self.with_user(tenant, username, |g, tid, oid| {
            g.refresh
                .iter()
                .filter(|(_, grant)| grant.tenant_id == tid && grant.user_oid == oid)
                .map(|(token, _)| token.clone())
                .collect()
        })
    }

    /// Sets a new password; earlier grants then fail with AADSTS50173.
    pub fn change_password(&self, tenant: &str, username: &str, password: &str) -> Result<(), EmulatorError> {
        self.revoke(tenant, username, RevokeReason::PasswordChange, Some(password.to_string()))
    }

    pub fn update_user(&self, u: UserUpdate) -> Result<UserSpec, EmulatorError> {
        self.with_user(&u.tenant, &u.username, |g, tid, oid| {
            let user = g.user_mut(&tid, &oid).expect("user just found");
            if let Some(v) = u.mfa_required {
                user.spec.mfa_required = v;
            }
            if let Some(v) = u.blocked_by_conditional_access {
                user.spec.blocked_by_conditional_access = v;
            }
            if let Some(v) = u.name {
                user.spec.name = Some(v);
            }
            user.spec.clone()
        })
    }

    fn with_app<T>(
        &self,
        tenant: &str,
        client_id: &str,
        f: impl FnOnce(&mut App) -> Result<T, EmulatorError>,
    ) -> Result<T, EmulatorError> {
        let mut g = self.lock();
        let tid = g.tenant(tenant).ok_or_else(|| EmulatorError::NotFound(format!("tenant {tenant}")))?.id.clone();
        let app = g
            .app_mut(client_id)
            .filter(|a| a.tenant_id == tid)
            .ok_or_else(|| EmulatorError::NotFound(format!("app {client_id} in tenant {tenant}")))?;
        f(app)
    }

    pub fn add_secret(&self, tenant: &str, client_id: &str, s: SecretSpec) -> Result<(), EmulatorError> {
        self.with_app(tenant, client_id, |app| {
            app.secrets.push(secret(&s)?);
            app.spec.secrets.push(s);
            Ok(())
        })
    }

    /// Makes a secret (or all, when `value` is None) expired as of now on the emulator clock.
    pub fn expire_secret(&self, tenant: &str, client_id: &str, value: Option<&str>) -> Result<usize, EmulatorError> {
        let now = self.clock.now_ms();
        let at = chrono::DateTime::from_timestamp_millis(now - MS).unwrap_or_default();
        self.with_app(tenant, client_id, |app| {
            let mut n = 0;
            for (s, spec) in app.secrets.iter_mut().zip(app.spec.secrets.iter_mut()) {
                if value.is_none_or(|v| v == s.value) {
                    s.expires_ms = Some(now - MS);
                    spec.expires_at = Some(at);
                    n += 1;
                }
            }
            if n == 0 {
                return Err(EmulatorError::NotFound("no such secret".into()));
            }
            Ok(n)
        })
    }
}

fn secret(s: &SecretSpec) -> Result<Secret, EmulatorError> {
    if s.value.is_empty() {
        return Err(EmulatorError::Invalid("empty client secret".into()));
    }
    Ok(Secret { value: s.value.clone(), expires_ms: s.expires_at.map(|t| t.timestamp_millis()) })
}
