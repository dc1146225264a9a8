//! The token broker: one place that hands out access tokens for
//! connections, and the only code that talks to token endpoints.
//!
//! - Access tokens are cached per (connection, resource) until shortly before
//!   they expire: in memory, and sealed in the store so a new process
//!   (`run-once`, the CLI) does not ask again.
//! - Refreshes are single-flight: within a process through a per-connection
//!   mutex, across processes through a lock row in the store. The holder
//!   re-reads the current refresh token, refreshes, and commits the rotated
//!   refresh token together with the new access token before anyone uses it.
//!   No refresh token stays in memory between refreshes.
//! - A refusal that only a person can fix (reauth_required, secret_invalid,
//!   secret_expired) is recorded on the connection; from then on no process
//!   calls the token endpoint for it until Setup Authentication succeeds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mailrobot_secrets::{Secret, SecretBox};
use mailrobot_store::{AuthFlow, AuthStore, Authorization, CachedToken, Connection, Tenant};

use crate::assertion::{ASSERTION_TYPE, Algorithm, Certificate};
use crate::client::TokenClient;
use crate::error::AuthError;
use crate::flow::{AuthorizeRequest, FLOW_LIFETIME_MINUTES, FlowSecrets, IdTokenExpectation, id_claims};
use crate::model::{ConnectionState, Endpoints, Mode, OIDC_SCOPES, REDIRECT_PATH, microsoft_authority, resource_of};
use crate::protocol::{Grant, TokenResponse};

/// Tokens are renewed this long before they expire, so a token handed out
/// is still good for the request it is used in.
const EXPIRY_MARGIN: chrono::Duration = chrono::Duration::minutes(5);
/// How long one process may hold a connection's refresh lock.
const REFRESH_LOCK: chrono::Duration = chrono::Duration::seconds(60);
const SECRET_EXPIRY_WARNING_DAYS: i64 = 30;

/// Where a connection's tenant serves mail, and whether tokens may go
/// there over `http://` to another machine.
#[derive(Debug, Clone)]
pub struct ServiceUrls {
    pub graph: String,
    pub ews: String,
    pub allow_plaintext: bool,
}

/// An access token ready for use.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: Secret,
    pub expires_at: DateTime<Utc>,
    pub resource: String,
}

pub fn tenant_secret_context(tenant: &Tenant) -> String {
    sealing_context(&mailrobot_store::SealedRef::TenantSecret { tenant_id: tenant.id }).unwrap_or_default()
}

pub fn tenant_certificate_context(tenant: &Tenant) -> String {
    sealing_context(&mailrobot_store::SealedRef::TenantCertificate { tenant_id: tenant.id }).unwrap_or_default()
}

/// The context a value the auth side sealed was sealed for; None for values
/// it does not own (mailbox passwords).
pub fn sealing_context(at: &mailrobot_store::SealedRef) -> Option<String> {
    use mailrobot_store::SealedRef;
    Some(match at {
        SealedRef::TenantSecret { tenant_id } => format!("tenant:{tenant_id}:client_secret"),
        SealedRef::TenantCertificate { tenant_id } => format!("tenant:{tenant_id}:certificate"),
        SealedRef::RefreshToken { connection_id } => refresh_context(*connection_id),
        SealedRef::AccessToken { connection_id, resource } => access_context(*connection_id, resource),
        SealedRef::AuthFlowVerifier { state } => verifier_context(state),
        SealedRef::MailboxPassword { .. }
        | SealedRef::WebhookSecret { .. }
        | SealedRef::MailboxReplyPassword { .. }
        | SealedRef::PushClientState { .. } => return None,
    })
}

/// Whether metrics name connections (`MAILROBOT_METRICS_NAMES`); by default
/// they carry the connection's id, as names can be sensitive.
static LABEL_BY_NAME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set once by the binary, from the operator's choice.
pub fn label_connections_by_name(by_name: bool) {
    LABEL_BY_NAME.store(by_name, std::sync::atomic::Ordering::Relaxed);
}

/// Counts a token request: `mailrobot_token_refreshes_total{connection, outcome}`.
fn record_refresh(connection: &Connection, ok: bool) {
    let label = if LABEL_BY_NAME.load(std::sync::atomic::Ordering::Relaxed) {
        connection.name.clone()
    } else {
        connection.id.to_string()
    };
    let outcome = if ok { "ok" } else { "failed" };
    metrics::counter!("mailrobot_token_refreshes_total", "connection" => label, "outcome" => outcome).increment(1);
}

fn refresh_context(connection_id: i64) -> String {
    format!("connection:{connection_id}:refresh_token")
}

fn access_context(connection_id: i64, resource: &str) -> String {
    format!("connection:{connection_id}:access_token:{resource}")
}

fn verifier_context(state: &str) -> String {
    format!("auth_flow:{state}:verifier")
}

/// How the robot proves it is the app.
enum ClientCredential {
    Secret(Secret),
    Certificate(Box<Certificate>),
}

pub struct TokenBroker {
    store: Arc<dyn AuthStore>,
    secrets: Arc<SecretBox>,
    client: TokenClient,
    /// Identifies this process as holder of refresh locks.
    owner: String,
    memory: Mutex<HashMap<(i64, String), AccessToken>>,
    flights: tokio::sync::Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl TokenBroker {
    pub fn new(store: Arc<dyn AuthStore>, secrets: Arc<SecretBox>) -> Result<Self, AuthError> {
        let mut nonce = [0u8; 6];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut nonce);
        Ok(Self {
            store,
            secrets,
            client: TokenClient::new()?,
            owner: format!("pid{}-{}", std::process::id(), hex::encode(nonce)),
            memory: Mutex::new(HashMap::new()),
            flights: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn AuthStore) -> mailrobot_store::Result<T> + Send + 'static,
    ) -> Result<T, AuthError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| AuthError::Transient(format!("internal: {e}")))?
            .map_err(AuthError::from)
    }

    async fn load(&self, connection_id: i64) -> Result<(Connection, Tenant), AuthError> {
        self.blocking(move |s| {
            let connection = s.connection(connection_id)?;
            let tenant = match &connection {
                Some(c) => s.tenant(c.tenant_id)?,
                None => None,
            };
            Ok(connection.zip(tenant))
        })
        .await?
        .ok_or_else(|| AuthError::Config(format!("connection {connection_id} or its tenant no longer exists")))
    }

    /// A valid access token for the connection's resource.
    pub async fn access_token(&self, connection_id: i64) -> Result<AccessToken, AuthError> {
        let (connection, tenant) = self.load(connection_id).await?;
        let resource = resource_of(&connection.scopes);
        let key = (connection_id, resource.clone());
        if let Some(token) = self.fresh_in_memory(&key) {
            return Ok(token);
        }
        check_usable(&connection)?;

        // One refresh per connection in this process; the others wait here
        // and then find the new token in memory.
        let flight = self.flights.lock().await.entry(connection_id).or_default().clone();
        let _guard = flight.lock().await;
        if let Some(token) = self.fresh_in_memory(&key) {
            return Ok(token);
        }
        if let Some(token) = self.fresh_in_store(connection_id, &resource).await? {
            return Ok(self.remember(key, token));
        }

        // Across processes: hold the store's refresh lock, or wait for the
        // holder's result.
        let deadline = tokio::time::Instant::now() + REFRESH_LOCK.to_std().unwrap_or(Duration::from_secs(60));
        loop {
            let owner = self.owner.clone();
            let until = (Utc::now() + REFRESH_LOCK).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            if self.blocking(move |s| s.try_lock_refresh(connection_id, &owner, &until)).await? {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(token) = self.fresh_in_store(connection_id, &resource).await? {
                return Ok(self.remember(key, token));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(AuthError::Transient(format!(
                    "another process has been refreshing connection {} for too long; try again",
                    connection.name
                )));
            }
        }
        let result = self.refresh_locked(connection_id, &tenant, &resource).await;
        let owner = self.owner.clone();
        if let Err(err) = self.blocking(move |s| s.unlock_refresh(connection_id, &owner)).await {
            tracing::warn!(connection = %connection.name, error = %err, "could not release the refresh lock; it expires by itself");
        }
        let token = result?;
        Ok(self.remember(key, token))
    }

    /// The Graph base URL (host without version) and EWS URL of the
    /// connection's tenant: configured, or Microsoft's global cloud.
    pub async fn service_urls(&self, connection_id: i64) -> Result<ServiceUrls, AuthError> {
        let (_, tenant) = self.load(connection_id).await?;
        Ok(ServiceUrls {
            graph: tenant.graph_url.unwrap_or_else(|| crate::model::DEFAULT_GRAPH.to_string()),
            ews: tenant.ews_url.unwrap_or_else(|| crate::model::DEFAULT_EWS.to_string()),
            allow_plaintext: tenant.allow_plaintext,
        })
    }

    /// The tenant's client id when the connection is in application mode:
    /// its tokens name the app, not a user, so a mail server needs the
    /// mailbox named, and a refusal is for the tenant's admin to fix.
    pub async fn app_only_client_id(&self, connection_id: i64) -> Result<Option<String>, AuthError> {
        let (connection, tenant) = self.load(connection_id).await?;
        Ok((connection.mode == Mode::Application).then_some(tenant.client_id))
    }

    /// Who completed Setup Authentication of a delegated connection (its
    /// user principal name), as far as the robot knows; None in application
    /// mode.
    pub async fn signed_in_user(&self, connection_id: i64) -> Result<Option<String>, AuthError> {
        let (connection, _) = self.load(connection_id).await?;
        Ok(match connection.mode {
            Mode::Application => None,
            _ => Some(connection.authenticated_upn.unwrap_or_default()),
        })
    }

    /// Forgets the connection's cached access tokens, here and in the
    /// store: a server refused one before it expired (revoked, or its
    /// scopes changed), so the next caller gets a new one.
    pub async fn forget(&self, connection_id: i64) -> Result<(), AuthError> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner()).retain(|(c, _), _| *c != connection_id);
        self.blocking(move |s| s.forget_tokens(connection_id)).await
    }

    fn fresh_in_memory(&self, key: &(i64, String)) -> Option<AccessToken> {
        let memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        memory.get(key).filter(|t| t.expires_at - EXPIRY_MARGIN > Utc::now()).cloned()
    }

    fn remember(&self, key: (i64, String), token: AccessToken) -> AccessToken {
        self.memory.lock().unwrap_or_else(|p| p.into_inner()).insert(key, token.clone());
        token
    }

    async fn fresh_in_store(&self, connection_id: i64, resource: &str) -> Result<Option<AccessToken>, AuthError> {
        let r = resource.to_string();
        let Some(cached) = self.blocking(move |s| s.cached_token(connection_id, &r)).await? else {
            return Ok(None);
        };
        let Ok(expires_at) = DateTime::parse_from_rfc3339(&cached.expires_at) else { return Ok(None) };
        let expires_at = expires_at.with_timezone(&Utc);
        if expires_at - EXPIRY_MARGIN <= Utc::now() {
            return Ok(None);
        }
        match self.secrets.open_str(&cached.sealed_token, &access_context(connection_id, resource)) {
            Ok(token) => Ok(Some(AccessToken { token, expires_at, resource: resource.to_string() })),
            // A token sealed with a key we no longer have: just get a new one.
            Err(_) => Ok(None),
        }
    }

    /// Runs under the refresh lock: re-reads the state and the current
    /// refresh token (another process may have rotated it), asks the token
    /// endpoint, and commits the result before returning it.
    async fn refresh_locked(
        &self,
        connection_id: i64,
        tenant: &Tenant,
        resource: &str,
    ) -> Result<AccessToken, AuthError> {
        let (connection, _) = self.load(connection_id).await?;
        check_usable(&connection)?;
        if let Some(token) = self.fresh_in_store(connection_id, resource).await? {
            return Ok(token);
        }
        let endpoints = Endpoints::of(tenant).map_err(AuthError::Config)?;
        let credential = self.client_credential(tenant).await?;
        let mode = connection.mode;
        let scope = connection.scopes.join(" ");
        let refresh_token = match mode {
            Mode::Delegated => {
                let sealed = self.blocking(move |s| s.refresh_token(connection_id)).await?.ok_or_else(|| {
                    AuthError::Blocked {
                        connection: connection.name.clone(),
                        state: ConnectionState::NotAuthenticated.as_str(),
                        reason: format!(
                            "no refresh token: run Setup Authentication (mailrobot connection authorize {})",
                            connection.name
                        ),
                    }
                })?;
                Some(self.secrets.open_str(&sealed, &refresh_context(connection_id)).map_err(|e| {
                    AuthError::Config(format!(
                        "the stored refresh token cannot be opened ({e}); run Setup Authentication again"
                    ))
                })?)
            }
            Mode::Application => None,
        };
        let (grant, mut form): (Grant, Vec<(&str, String)>) = match &refresh_token {
            Some(rt) => (
                Grant::RefreshToken,
                vec![
                    ("grant_type", "refresh_token".into()),
                    ("refresh_token", rt.expose().to_string()),
                    ("scope", scope),
                ],
            ),
            None => (Grant::ClientCredentials, vec![("grant_type", "client_credentials".into()), ("scope", scope)]),
        };
        drop(refresh_token);
        let result = self.request_token(&endpoints.token, tenant, &credential, &mut form, grant).await;
        record_refresh(&connection, result.is_ok());
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                self.record_refusal(&connection, &err).await;
                return Err(err);
            }
        };
        let token = self.cache_response(connection_id, resource, &response, true).await?;
        tracing::info!(connection = %connection.name, resource, expires_at = %token.expires_at, "access token obtained");
        Ok(token)
    }

    async fn request_token(
        &self,
        token_url: &str,
        tenant: &Tenant,
        credential: &ClientCredential,
        form: &mut Vec<(&str, String)>,
        grant: Grant,
    ) -> Result<TokenResponse, AuthError> {
        form.push(("client_id", tenant.client_id.clone()));
        match credential {
            ClientCredential::Secret(secret) => form.push(("client_secret", secret.expose().to_string())),
            ClientCredential::Certificate(cert) => {
                form.push(("client_assertion_type", ASSERTION_TYPE.to_string()));
                form.push(("client_assertion", cert.client_assertion(&tenant.client_id, token_url, Algorithm::Ps256)));
            }
        }
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let result = self.client.token(token_url, &pairs, None, grant).await;
        // Clear secrets from the form as soon as the request is done.
        for (_, value) in form.iter_mut() {
            value.clear();
        }
        result
    }

    async fn record_refusal(&self, connection: &Connection, err: &AuthError) {
        let AuthError::Refused { state: Some(state), message, .. } = err else { return };
        let advice = match state {
            ConnectionState::ReauthRequired => {
                format!(
                    "{message} — run Setup Authentication again: mailrobot connection authorize {}",
                    connection.name
                )
            }
            // The message already says what the refused credential needs (see protocol::classify).
            _ => message.clone(),
        };
        tracing::warn!(connection = %connection.name, state = state.as_str(), reason = %advice, "connection needs a person");
        let (id, state, advice) = (connection.id, *state, advice.clone());
        if let Err(e) = self.blocking(move |s| s.set_connection_state(id, state, Some(&advice))).await {
            tracing::error!(error = %e, "could not record the connection state");
        }
        self.memory.lock().unwrap_or_else(|p| p.into_inner()).retain(|(c, _), _| *c != connection.id);
    }

    async fn client_credential(&self, tenant: &Tenant) -> Result<ClientCredential, AuthError> {
        if let Some(expires) = tenant.secret_expires_at.as_deref().and_then(|d| DateTime::parse_from_rfc3339(d).ok()) {
            let left = expires.with_timezone(&Utc) - Utc::now();
            if left < chrono::Duration::days(SECRET_EXPIRY_WARNING_DAYS) {
                tracing::warn!(tenant = %tenant.name, expires_at = %expires, days_left = left.num_days(), "the client secret expires soon: create a new one in the app registration");
            }
        }
        let id = tenant.id;
        if tenant.has_certificate {
            let sealed = self
                .blocking(move |s| s.tenant_certificate(id))
                .await?
                .ok_or_else(|| AuthError::Config("certificate missing".into()))?;
            let pem = self
                .secrets
                .open_str(&sealed, &tenant_certificate_context(tenant))
                .map_err(|e| AuthError::Config(e.to_string()))?;
            let cert = Certificate::from_pem(pem.expose()).map_err(AuthError::Config)?;
            return Ok(ClientCredential::Certificate(Box::new(cert)));
        }
        let sealed = self.blocking(move |s| s.tenant_secret(id)).await?.ok_or_else(|| {
            AuthError::Config(format!("tenant {} has no client secret or certificate; add one", tenant.name))
        })?;
        let secret = self
            .secrets
            .open_str(&sealed, &tenant_secret_context(tenant))
            .map_err(|e| AuthError::Config(e.to_string()))?;
        Ok(ClientCredential::Secret(secret))
    }

    /// Seals and stores the rotated refresh token (if any) and the access
    /// token in one commit.
    async fn cache_response(
        &self,
        connection_id: i64,
        resource: &str,
        response: &TokenResponse,
        rotate: bool,
    ) -> Result<AccessToken, AuthError> {
        let expires_at = Utc::now() + chrono::Duration::seconds(response.expires_in_seconds());
        let sealed_access =
            self.secrets.seal(response.access_token.as_bytes(), &access_context(connection_id, resource));
        let sealed_refresh = match (&response.refresh_token, rotate) {
            (Some(rt), true) => Some(self.secrets.seal(rt.as_bytes(), &refresh_context(connection_id))),
            _ => None,
        };
        let cached = CachedToken {
            sealed_token: sealed_access,
            expires_at: expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let r = resource.to_string();
        self.blocking(move |s| s.store_refresh(connection_id, sealed_refresh.as_deref(), &r, &cached)).await?;
        Ok(AccessToken {
            token: Secret::new(response.access_token.clone()),
            expires_at,
            resource: resource.to_string(),
        })
    }

    /// Starts Setup Authentication: records a single-use flow bound to
    /// `initiator` and returns the URL the person must open.
    pub async fn begin_authorization(
        &self,
        connection_id: i64,
        public_url: &str,
        initiator: &str,
        login_hint: Option<&str>,
    ) -> Result<String, AuthError> {
        let (connection, tenant) = self.load(connection_id).await?;
        if connection.mode != Mode::Delegated {
            return Err(AuthError::Config(format!(
                "connection {} uses application mode (client credentials): it needs no Setup Authentication",
                connection.name
            )));
        }
        let endpoints = Endpoints::of(&tenant).map_err(AuthError::Config)?;
        let redirect_uri = format!("{}{REDIRECT_PATH}", public_url.trim_end_matches('/'));
        let flow = FlowSecrets::generate();
        let url = AuthorizeRequest {
            authorize_endpoint: &endpoints.authorize,
            client_id: &tenant.client_id,
            redirect_uri: &redirect_uri,
            scopes: &connection.scopes,
            state: &flow.state,
            nonce: &flow.nonce,
            code_challenge: &flow.challenge(),
            login_hint,
            offline_access_type: tenant.provider == crate::model::PROVIDER_OAUTH2,
        }
        .url()
        .map_err(AuthError::Config)?;
        let now = Utc::now();
        let record = AuthFlow {
            state: flow.state.clone(),
            connection_id,
            sealed_verifier: self.secrets.seal(flow.verifier.as_bytes(), &verifier_context(&flow.state)),
            nonce: flow.nonce.clone(),
            redirect_uri,
            initiator: initiator.to_string(),
            created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            expires_at: (now + chrono::Duration::minutes(FLOW_LIFETIME_MINUTES))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        self.blocking(move |s| s.create_auth_flow(&record)).await?;
        Ok(url)
    }

    /// Finishes Setup Authentication from the redirect: checks `state`
    /// (known, unused, unexpired, same initiator), redeems the code with the
    /// PKCE verifier, checks the id_token (nonce, audience, issuer, expiry),
    /// and stores the refresh token and who authenticated. Any failure leaves
    /// the connection as it was.
    pub async fn complete_authorization(
        &self,
        state: &str,
        code: Option<&str>,
        error: Option<(&str, &str)>,
        initiator_allowed: impl Fn(&str) -> bool,
    ) -> Result<Connection, AuthError> {
        let s = state.to_string();
        let flow = self.blocking(move |st| st.take_auth_flow(&s)).await?.ok_or_else(|| {
            AuthError::Config(
                "this sign-in link is unknown or was already used; start Setup Authentication again".into(),
            )
        })?;
        if DateTime::parse_from_rfc3339(&flow.expires_at).map(|e| e.with_timezone(&Utc) < Utc::now()).unwrap_or(true) {
            return Err(AuthError::Config(format!(
                "this sign-in took longer than {FLOW_LIFETIME_MINUTES} minutes; start Setup Authentication again"
            )));
        }
        if !initiator_allowed(&flow.initiator) {
            return Err(AuthError::Config(
                "this sign-in was started by someone else; start Setup Authentication yourself".into(),
            ));
        }
        let (connection, tenant) = self.load(flow.connection_id).await?;
        if let Some((error, description)) = error {
            let first_line = description.split(['\r', '\n']).next().unwrap_or("").trim();
            return Err(AuthError::Refused {
                state: None,
                code: None,
                message: format!("sign-in for connection {} was not completed: {error}: {first_line}", connection.name),
            });
        }
        let code = code.ok_or_else(|| AuthError::Config("the redirect carries neither a code nor an error".into()))?;
        let verifier = self
            .secrets
            .open_str(&flow.sealed_verifier, &verifier_context(&flow.state))
            .map_err(|e| AuthError::Config(e.to_string()))?;
        let endpoints = Endpoints::of(&tenant).map_err(AuthError::Config)?;
        let credential = self.client_credential(&tenant).await?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", flow.redirect_uri.clone()),
            ("code_verifier", verifier.expose().to_string()),
            ("scope", connection.scopes.join(" ")),
        ];
        let response =
            match self.request_token(&endpoints.token, &tenant, &credential, &mut form, Grant::AuthorizationCode).await
            {
                Ok(r) => r,
                Err(err) => {
                    // Secret problems are the tenant's, whatever the flow.
                    if matches!(err, AuthError::Refused { state: Some(_), .. }) {
                        self.record_refusal(&connection, &err).await;
                    }
                    return Err(err);
                }
            };
        let claims = match &response.id_token {
            Some(id_token) => {
                let claims = id_claims(id_token).map_err(AuthError::Config)?;
                claims
                    .check(&IdTokenExpectation {
                        authority: microsoft_authority(&tenant),
                        client_id: &tenant.client_id,
                        nonce: &flow.nonce,
                        now: Utc::now().timestamp(),
                    })
                    .map_err(AuthError::Config)?;
                claims
            }
            None => Default::default(),
        };
        let refresh = response.refresh_token.as_deref().ok_or_else(|| {
            AuthError::Config("no refresh token came back: the connection's scopes must include offline_access".into())
        })?;
        let granted: Vec<&str> =
            response.scope.as_deref().unwrap_or("").split_whitespace().filter(|s| !OIDC_SCOPES.contains(s)).collect();
        let authorization = Authorization {
            sealed_refresh_token: Some(self.secrets.seal(refresh.as_bytes(), &refresh_context(connection.id))),
            name: claims.name.clone(),
            upn: claims.preferred_username.clone().or(claims.upn.clone()).or(claims.email.clone()),
            oid: claims.oid.clone().or(claims.sub.clone()),
            granted_scopes: Some(granted.join(" ")),
        };
        let id = connection.id;
        self.blocking(move |s| s.complete_authorization(id, &authorization)).await?;
        self.memory.lock().unwrap_or_else(|p| p.into_inner()).retain(|(c, _), _| *c != id);
        let resource = resource_of(&connection.scopes);
        let token = self.cache_response(id, &resource, &response, false).await?;
        self.remember((id, resource), token);
        tracing::info!(connection = %connection.name, user = ?claims.preferred_username, "Setup Authentication completed");
        self.load(id).await.map(|(c, _)| c)
    }
}

fn check_usable(connection: &Connection) -> Result<(), AuthError> {
    let state = connection.state;
    if state.blocks_token_requests() {
        return Err(AuthError::Blocked {
            connection: connection.name.clone(),
            state: state.as_str(),
            reason: connection.last_error.clone().unwrap_or_default(),
        });
    }
    if connection.mode == Mode::Delegated && !connection.has_refresh_token {
        return Err(AuthError::Blocked {
            connection: connection.name.clone(),
            state: ConnectionState::NotAuthenticated.as_str(),
            reason: format!("run Setup Authentication first: mailrobot connection authorize {}", connection.name),
        });
    }
    Ok(())
}
