//! Tenants (app registrations) and service connections on the command line.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, anyhow, bail};
use mailrobot_auth::broker::{tenant_certificate_context, tenant_secret_context};
use mailrobot_auth::model::{PROVIDER_MICROSOFT365, PROVIDER_OAUTH2};
use mailrobot_auth::{AuthError, Capability, Mode};
use mailrobot_secrets::Secret;
use mailrobot_store::{AuthStore, Connection, NewConnection, NewTenant, Tenant, TenantUpdate};
use serde_json::{Value, json};

use crate::app::App;
use crate::cli::{ConnectionCommand, ProviderArg, TenantAdd, TenantCommand, TenantSet};
use crate::commands::print_json;

pub const SETTING_PUBLIC_URL: &str = "public_url";
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8025";

/// The client secret from `env` (a variable's name) or the first line of
/// stdin, if either was asked for.
fn read_client_secret(tenant: &str, env: Option<&str>, stdin: bool) -> anyhow::Result<Option<Secret>> {
    if let Some(var) = env {
        let value = std::env::var(var)
            .map_err(|_| anyhow!("environment variable {var} (named by --client-secret-env) is not set"))?;
        if value.trim().is_empty() {
            bail!("environment variable {var} is empty; put the client secret's value in it");
        }
        return Ok(Some(Secret::new(value.trim())));
    }
    if stdin {
        if std::io::stdin().is_terminal() {
            crate::esay!("Client secret for tenant {tenant} (the secret's Value, one line):");
        }
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the client secret from stdin")?;
        let value = line.trim().to_string();
        if value.is_empty() {
            bail!("no client secret on stdin");
        }
        return Ok(Some(Secret::new(value)));
    }
    Ok(None)
}

/// https:// everywhere; http:// only to this machine, or where the
/// operator allowed it (`--allow-plaintext`): the secret and tokens travel there.
fn check_url(flag: &str, value: &Option<String>, allow_plaintext: bool) -> anyhow::Result<()> {
    let Some(value) = value else { return Ok(()) };
    mailrobot_sources::plaintext::check_url(value, &format!("tokens and secrets for {flag}"), allow_plaintext)
        .map_err(|e| anyhow!("{flag}: {e}"))
}

pub fn parse_expiry(date: &str) -> anyhow::Result<String> {
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .with_context(|| format!("--secret-expires {date:?} is not a date like 2027-06-30"))?;
    Ok(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

pub fn tenant_add(app: &App, add: &TenantAdd) -> anyhow::Result<Tenant> {
    let secret = read_client_secret(&add.name, add.client_secret_env.as_deref(), add.client_secret_stdin)?;
    let certificate = add.certificate_file.as_deref().map(read_pem).transpose()?;
    tenant_add_with_secret(app, add, secret, certificate)
}

fn read_pem(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A PEM certificate and key, checked, with the facts shown about it.
fn certificate_of(pem: String) -> anyhow::Result<(Secret, String)> {
    let cert = mailrobot_auth::assertion::Certificate::from_pem(&pem)
        .map_err(|e| anyhow!("the certificate cannot be used: {e}"))?;
    Ok((Secret::new(pem), format!("SHA-256 thumbprint {}", cert.thumbprint_sha256_hex())))
}

/// Adds a tenant whose client secret and certificate (PEM), if any, the
/// caller already holds (`add.certificate_file` is not read here).
pub fn tenant_add_with_secret(
    app: &App,
    add: &TenantAdd,
    secret: Option<Secret>,
    certificate_pem: Option<String>,
) -> anyhow::Result<Tenant> {
    crate::commands::check_new_name("tenant", &add.name)?;
    let provider = match add.provider {
        ProviderArg::Microsoft365 => PROVIDER_MICROSOFT365,
        ProviderArg::Oauth2 => PROVIDER_OAUTH2,
    };
    if provider == PROVIDER_MICROSOFT365 && add.tenant.as_deref().is_none_or(|t| t.trim().is_empty()) {
        bail!("--tenant is needed: the app registration's Directory (tenant) ID, or the tenant's domain");
    }
    if provider == PROVIDER_OAUTH2 && (add.authorize_url.is_none() || add.token_url.is_none()) {
        bail!("--provider oauth2 needs --authorize-url and --token-url");
    }
    for (flag, value) in [
        ("--authority-url", &add.authority_url),
        ("--graph-url", &add.graph_url),
        ("--ews-url", &add.ews_url),
        ("--authorize-url", &add.authorize_url),
        ("--token-url", &add.token_url),
    ] {
        check_url(flag, value, add.allow_plaintext)?;
    }
    let certificate = certificate_pem.map(certificate_of).transpose()?;
    if secret.is_none() && certificate.is_none() {
        bail!("give the client secret (--client-secret-env VAR or --client-secret-stdin) or --certificate-file PEM");
    }
    let secret_expires_at = add.secret_expires.as_deref().map(parse_expiry).transpose()?;
    // Sealing needs the tenant's id in the context: insert, then seal.
    let tenant = app.auth_store.add_tenant(&NewTenant {
        name: add.name.clone(),
        provider: provider.to_string(),
        client_id: add.client_id.trim().to_string(),
        directory: add.tenant.as_ref().map(|t| t.trim().to_string()),
        authority_url: add.authority_url.clone(),
        graph_url: add.graph_url.clone(),
        ews_url: add.ews_url.clone(),
        authorize_url: add.authorize_url.clone(),
        token_url: add.token_url.clone(),
        sealed_secret: None,
        secret_expires_at,
        sealed_certificate: None,
        certificate_info: certificate.as_ref().map(|(_, info)| info.clone()),
        allow_plaintext: add.allow_plaintext,
    })?;
    let sealed_secret = secret.map(|s| app.secrets.seal_str(&s, &tenant_secret_context(&tenant)));
    let sealed_certificate =
        certificate.map(|(pem, _)| app.secrets.seal_str(&pem, &tenant_certificate_context(&tenant)));
    app.auth_store.set_tenant_credentials(tenant.id, sealed_secret.as_deref(), sealed_certificate.as_deref())?;
    Ok(app.auth_store.tenant(tenant.id)?.expect("tenant just added"))
}

/// Changes a tenant: `update` holds every setting as it should be; a
/// secret or certificate given replaces the stored one (None keeps it).
pub fn tenant_update(
    app: &App,
    tenant: &Tenant,
    update: TenantUpdate,
    secret: Option<Secret>,
    certificate_pem: Option<String>,
) -> anyhow::Result<Tenant> {
    if tenant.provider == PROVIDER_MICROSOFT365 && update.directory.as_deref().is_none_or(|t| t.trim().is_empty()) {
        bail!("the Directory (tenant) ID is needed, or the tenant's domain");
    }
    if update.client_id.trim().is_empty() {
        bail!("the Application (client) ID is needed");
    }
    for (flag, value) in
        [("--authority-url", &update.authority_url), ("--graph-url", &update.graph_url), ("--ews-url", &update.ews_url)]
    {
        check_url(flag, value, tenant.allow_plaintext)?;
    }
    let certificate = certificate_pem.map(certificate_of).transpose()?;
    let update = TenantUpdate { certificate_info: certificate.as_ref().map(|(_, info)| info.clone()), ..update };
    let updated = app.auth_store.update_tenant(tenant.id, &update)?;
    let sealed_secret = secret.map(|s| app.secrets.seal_str(&s, &tenant_secret_context(&updated)));
    let sealed_certificate =
        certificate.map(|(pem, _)| app.secrets.seal_str(&pem, &tenant_certificate_context(&updated)));
    app.auth_store.set_tenant_credentials(updated.id, sealed_secret.as_deref(), sealed_certificate.as_deref())?;
    Ok(app.auth_store.tenant(updated.id)?.expect("tenant just updated"))
}

/// `tenant set`: the flags given replace those settings; the rest stay.
fn tenant_set(app: &App, set: &TenantSet) -> anyhow::Result<Tenant> {
    let tenant = app.auth_store.tenant_by_name(&set.name)?.ok_or_else(|| anyhow!("no tenant named {:?}", set.name))?;
    let keep_or = |given: &Option<String>, current: &Option<String>| match given {
        // An empty value goes back to the default.
        Some(v) if v.is_empty() => None,
        Some(v) => Some(v.clone()),
        None => current.clone(),
    };
    let update = TenantUpdate {
        client_id: set.client_id.clone().unwrap_or_else(|| tenant.client_id.clone()),
        directory: keep_or(&set.tenant, &tenant.directory),
        authority_url: keep_or(&set.authority_url, &tenant.authority_url),
        graph_url: keep_or(&set.graph_url, &tenant.graph_url),
        ews_url: keep_or(&set.ews_url, &tenant.ews_url),
        secret_expires_at: match &set.secret_expires {
            Some(date) => Some(parse_expiry(date)?),
            None => tenant.secret_expires_at.clone(),
        },
        certificate_info: None,
    };
    let secret = read_client_secret(&set.name, set.client_secret_env.as_deref(), set.client_secret_stdin)?;
    let certificate = set.certificate_file.as_deref().map(read_pem).transpose()?;
    tenant_update(app, &tenant, update, secret, certificate)
}

pub fn tenant_json(t: &Tenant) -> Value {
    serde_json::to_value(mailrobot_web::json::TenantJson::of(t)).expect("views serialize")
}

pub fn tenant_command(app: &App, command: &TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Add(add) => {
            let t = tenant_add(app, add)?;
            crate::say!("Added tenant {} (client id {}).", t.name, t.client_id);
        }
        TenantCommand::Set(set) => {
            let t = tenant_set(app, set)?;
            crate::say!("Tenant {} saved.", t.name);
        }
        TenantCommand::List { json } => {
            let tenants = app.auth_store.tenants()?;
            if *json {
                print_json(&Value::Array(tenants.iter().map(tenant_json).collect()));
            } else {
                for t in &tenants {
                    let credential = if t.has_certificate {
                        "certificate"
                    } else if t.has_secret {
                        "secret"
                    } else {
                        "none"
                    };
                    crate::say!("{:<20} {:<12} {:<38} {}", t.name, t.provider, t.client_id, credential);
                }
            }
        }
    }
    Ok(())
}

pub fn find_connection(store: &dyn AuthStore, name: &str) -> anyhow::Result<Connection> {
    store
        .connection_by_name(name)?
        .ok_or_else(|| anyhow!("no connection named {name:?}; `mailrobot connection list` shows them"))
}

pub fn connection_json(app: &App, c: &Connection) -> anyhow::Result<Value> {
    let tenant = app.auth_store.tenant(c.tenant_id)?.map(|t| t.name);
    Ok(serde_json::to_value(mailrobot_web::json::ConnectionJson::of(c, tenant))?)
}

/// The public URL for redirects: the flag or env, else what `serve` recorded.
pub fn public_url(app: &App, given: Option<&str>) -> anyhow::Result<String> {
    Ok(match given {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => app.store.setting(SETTING_PUBLIC_URL)?.unwrap_or_else(|| DEFAULT_PUBLIC_URL.to_string()),
    })
}

/// Adds a connection; `scopes` empty means the capability's defaults.
pub fn connection_add(
    app: &App,
    name: &str,
    tenant: &str,
    capability: Capability,
    mode: Mode,
    scopes: &[String],
) -> anyhow::Result<Connection> {
    crate::commands::check_new_name("connection", name)?;
    let tenant = app.auth_store.tenant_by_name(tenant)?.ok_or_else(|| anyhow!("no tenant named {tenant:?}"))?;
    let scopes = if scopes.iter().all(|s| s.trim().is_empty()) {
        if tenant.provider == PROVIDER_OAUTH2 {
            bail!("a generic OAuth2 tenant has no default scopes: give them with --scope (repeatable)");
        }
        // The Services page's defaults, else the built-in ones.
        app.auth_store
            .service_scopes()?
            .into_iter()
            .find(|s| s.capability == capability && s.mode == mode)
            .map(|s| s.scopes)
            .unwrap_or_else(|| mailrobot_auth::model::default_scopes(capability, mode))
    } else {
        scopes.iter().flat_map(|s| s.split_whitespace()).map(str::to_string).collect()
    };
    if mode == Mode::Application && scopes.iter().any(|s| !s.ends_with("/.default")) {
        bail!("application mode (client credentials) takes one scope of the form {{resource}}/.default");
    }
    // Generic OAuth2 scopes are opaque; Microsoft's name their resource.
    if tenant.provider != PROVIDER_OAUTH2 {
        mailrobot_auth::model::check_one_resource(&scopes).map_err(|e| anyhow!("connection {name} not added: {e}"))?;
    }
    Ok(app.auth_store.add_connection(&NewConnection {
        name: name.to_string(),
        tenant_id: tenant.id,
        capability,
        mode,
        scopes,
    })?)
}

/// A token for the connection now, unless it waits for a person (then its
/// stored state, with no network call).
pub async fn connection_token(app: &App, c: &Connection) -> Result<mailrobot_auth::AccessToken, AuthError> {
    if c.state.blocks_token_requests() {
        return Err(AuthError::Blocked {
            connection: c.name.clone(),
            state: c.state.as_str(),
            reason: c.last_error.clone().unwrap_or_default(),
        });
    }
    match app.broker() {
        Ok(broker) => broker.access_token(c.id).await,
        Err(e) => Err(AuthError::Config(e.to_string())),
    }
}

pub async fn connection_command(app: &App, command: &ConnectionCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {
        ConnectionCommand::Add { name, tenant, capability, mode, scopes } => {
            let (capability, mode) = (*capability, *mode);
            let c = connection_add(app, name, tenant, capability, mode, scopes)?;
            crate::say!("Added connection {} ({}, {}).", c.name, capability.label(), c.mode);
            if mode == Mode::Delegated {
                crate::say!("Next: run Setup Authentication with `mailrobot connection authorize {}`.", c.name);
            }
        }
        ConnectionCommand::Authorize { name, public_url: given, login_hint } => {
            let c = find_connection(app.auth_store.as_ref(), name)?;
            let public = public_url(app, given.as_deref())?;
            let url = app.broker()?.begin_authorization(c.id, &public, "cli", login_hint.as_deref()).await?;
            crate::say!("{url}");
            crate::esay!(
                "Open this URL in a browser and sign in within 10 minutes. `mailrobot serve` must be reachable at \
                 {public}{} to receive the answer.",
                mailrobot_auth::model::REDIRECT_PATH
            );
        }
        ConnectionCommand::Test { name, json, smtp_server, smtp_tls, address } => {
            let c = find_connection(app.auth_store.as_ref(), name)?;
            // A connection waiting for a person is reported as stored: no network call.
            let outcome = connection_token(app, &c).await;
            let c = find_connection(app.auth_store.as_ref(), name)?;
            let mut value = connection_json(app, &c)?;
            let mut ok = outcome.is_ok();
            match &outcome {
                Ok(token) => {
                    value["token_expires_at"] = json!(token.expires_at.to_rfc3339());
                    value["resource"] = json!(token.resource);
                }
                Err(err) => value["error"] = json!(err.to_string()),
            }
            // An smtp connection is only useful if the server takes its tokens.
            if ok && c.capability == Capability::Smtp {
                ok = crate::commands_smtp::connection_smtp_check(
                    app,
                    &c,
                    smtp_server.as_deref(),
                    (*smtp_tls).into(),
                    address.as_deref(),
                    &mut value,
                )
                .await?;
            }
            value["ok"] = json!(ok);
            if *json {
                print_json(&value);
            } else {
                match &outcome {
                    Ok(token) => crate::say!(
                        "{}: {} — token for {} valid until {}{}",
                        c.name,
                        c.state,
                        token.resource,
                        token.expires_at.to_rfc3339(),
                        c.authenticated_upn.as_deref().map(|u| format!(", authenticated as {u}")).unwrap_or_default()
                    ),
                    Err(err) => crate::say!("{}: {} — {err}", c.name, c.state),
                }
                if let Some(smtp) = value.get("smtp") {
                    crate::commands_smtp::print_outcome(smtp);
                }
            }
            return Ok(if ok { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(3) });
        }
        ConnectionCommand::List { json } => {
            let connections = app.auth_store.connections()?;
            if *json {
                let rows = connections.iter().map(|c| connection_json(app, c)).collect::<anyhow::Result<Vec<_>>>()?;
                print_json(&Value::Array(rows));
            } else {
                for c in &connections {
                    crate::say!(
                        "{:<20} {:<6} {:<12} {:<18} {}",
                        c.name,
                        c.capability,
                        c.mode,
                        c.state,
                        c.last_error.as_deref().unwrap_or("")
                    );
                }
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
