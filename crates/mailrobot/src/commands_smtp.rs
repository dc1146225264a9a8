//! SMTP checks on the command line: `mailrobot smtp test` (password or a
//! service connection) and the SMTP part of `mailrobot connection test` for
//! connections with the smtp capability. Both connect, log in and quit:
//! nothing is sent.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use mailrobot_sources::smtp::{self, SmtpConfig, SmtpLogin};
use mailrobot_sources::{BearerTokens, TlsMode};
use mailrobot_store::Connection;
use serde_json::{Value, json};

use crate::app::App;
use crate::cli::SmtpTest;
use crate::commands::print_json;
use crate::pipeline::ConnectionTokens;

/// Microsoft 365's SMTP AUTH endpoint (STARTTLS on 587).
pub const M365_SMTP_SERVER: &str = "smtp.office365.com:587";

const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// `host[:port]`; the port defaults from the TLS mode.
pub fn parse_server(server: &str, tls: TlsMode) -> anyhow::Result<(String, u16)> {
    let server = server.trim();
    match server.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.ends_with(':') => {
            let port = port.parse().map_err(|_| anyhow!("{server:?}: the port after ':' must be a number"))?;
            Ok((host.trim_matches(['[', ']']).to_string(), port))
        }
        _ if !server.is_empty() => Ok((server.to_string(), SmtpConfig::default_port(tls))),
        _ => bail!("the SMTP server is empty: give host[:port]"),
    }
}

pub(crate) fn config(
    server: &str,
    tls: TlsMode,
    login: SmtpLogin,
    ca_file: Option<PathBuf>,
) -> anyhow::Result<SmtpConfig> {
    let (host, port) = parse_server(server, tls)?;
    Ok(SmtpConfig { host, port, tls, login, client_name: hostname(), timeout: CHECK_TIMEOUT, extra_ca_file: ca_file })
}

/// The name the robot gives in EHLO: this machine's, as servers log it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
        .unwrap_or_else(|| "localhost".to_string())
}

/// Runs the check; the JSON says what the server offered or why it failed.
async fn run_check(cfg: &SmtpConfig) -> (bool, Value) {
    let mut value = json!({
        "server": cfg.endpoint(),
        "tls": cfg.tls.as_str(),
        "sent": false,
    });
    match smtp::check(cfg).await {
        Ok(info) => {
            value["ok"] = json!(true);
            value["secured"] = json!(info.secured);
            value["authenticated_as"] = json!(info.authenticated_as);
            value["auth_mechanisms"] = json!(info.auth_mechanisms);
            value["max_size"] = json!(info.max_size);
            value["greeting"] = json!(info.greeting);
            (true, value)
        }
        Err(err) => {
            value["ok"] = json!(false);
            value["error"] = json!(err.to_string());
            value["transient"] = json!(err.is_transient());
            (false, value)
        }
    }
}

/// One line for people: who logged in where, or why not.
pub fn outcome_line(value: &Value) -> String {
    if value["ok"] == json!(true) {
        format!(
            "SMTP {}: logged in as {} over {} — nothing sent",
            value["server"].as_str().unwrap_or_default(),
            value["authenticated_as"].as_str().unwrap_or("(no login)"),
            if value["secured"] == json!(true) { "TLS" } else { "an unencrypted connection" }
        )
    } else {
        format!(
            "SMTP {}: {}",
            value["server"].as_str().unwrap_or_default(),
            value["error"].as_str().unwrap_or_default()
        )
    }
}

pub fn print_outcome(value: &Value) {
    crate::say!("{}", outcome_line(value));
}

pub(crate) fn connection_tokens(app: &App, connection: &Connection) -> anyhow::Result<Arc<dyn BearerTokens>> {
    Ok(Arc::new(ConnectionTokens { broker: app.broker()?, connection_id: connection.id }))
}

/// The tenant's client id when the connection is in application mode.
pub(crate) fn app_only_client_id(app: &App, connection: &Connection) -> anyhow::Result<Option<String>> {
    if connection.mode != mailrobot_auth::model::Mode::Application {
        return Ok(None);
    }
    let tenant = app
        .auth_store
        .tenant(connection.tenant_id)?
        .ok_or_else(|| anyhow!("the tenant of connection {} no longer exists", connection.name))?;
    Ok(Some(tenant.client_id))
}

/// `mailrobot smtp test`.
pub async fn smtp_test(app: &App, test: &SmtpTest) -> anyhow::Result<ExitCode> {
    let login = match (&test.connection, &test.username) {
        (Some(_), Some(_)) => bail!("give either --connection (XOAUTH2) or --username (password), not both"),
        (Some(name), None) => {
            let connection = app
                .auth_store
                .connection_by_name(name)?
                .ok_or_else(|| anyhow!("no connection named {name:?}; `mailrobot connection list` shows them"))?;
            let username = sending_address(&connection, test.address.as_deref())?;
            SmtpLogin::XOAuth2 {
                username,
                tokens: connection_tokens(app, &connection)?,
                app_id: app_only_client_id(app, &connection)?,
            }
        }
        (None, Some(username)) => {
            let var = test.password_env.as_deref().ok_or_else(|| {
                anyhow!("--username needs --password-env VAR naming the variable that holds the password")
            })?;
            let password = std::env::var(var)
                .map_err(|_| anyhow!("environment variable {var} (named by --password-env) is not set"))?;
            SmtpLogin::Password { username: username.clone(), password }
        }
        (None, None) => SmtpLogin::Anonymous,
    };
    let cfg = config(&test.server, test.tls.into(), login, test.ca_file.clone())?;
    if !matches!(cfg.login, SmtpLogin::Anonymous) {
        mailrobot_sources::plaintext::check_host(
            &cfg.host,
            cfg.tls != TlsMode::None,
            "the SMTP login",
            test.allow_plaintext,
        )
        .map_err(|e| anyhow!("{e}"))?;
    }
    let (ok, value) = run_check(&cfg).await;
    if test.json {
        print_json(&value);
    } else {
        print_outcome(&value);
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

/// Which address logs in: the one given, else the user who ran Setup
/// Authentication (delegated). Application tokens name no user.
fn sending_address(connection: &Connection, address: Option<&str>) -> anyhow::Result<String> {
    if let Some(address) = address {
        return Ok(address.to_string());
    }
    connection.authenticated_upn.clone().ok_or_else(|| {
        anyhow!(
            "connection {} has no signed-in user to send as: give --address (the mailbox that sends)",
            connection.name
        )
    })
}

/// The SMTP part of `connection test` for an smtp connection, after its
/// token was obtained: `value` gains an `smtp` object.
pub async fn connection_smtp_check(
    app: &App,
    connection: &Connection,
    server: Option<&str>,
    tls: TlsMode,
    address: Option<&str>,
    value: &mut Value,
) -> anyhow::Result<bool> {
    let username = sending_address(connection, address)?;
    let login = SmtpLogin::XOAuth2 {
        username,
        tokens: connection_tokens(app, connection)?,
        app_id: app_only_client_id(app, connection)?,
    };
    let cfg = config(server.unwrap_or(M365_SMTP_SERVER), tls, login, None)?;
    let (ok, smtp_value) = run_check(&cfg).await;
    value["smtp"] = smtp_value;
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_with_and_without_port() {
        assert_eq!(parse_server("smtp.office365.com", TlsMode::StartTls).unwrap(), ("smtp.office365.com".into(), 587));
        assert_eq!(
            parse_server("mail.example.test:2525", TlsMode::StartTls).unwrap(),
            ("mail.example.test".into(), 2525)
        );
        assert_eq!(parse_server("mail.example.test", TlsMode::Tls).unwrap().1, 465);
        assert_eq!(parse_server("[::1]:25", TlsMode::None).unwrap(), ("::1".into(), 25));
        assert!(parse_server("host:port", TlsMode::None).is_err());
        assert!(parse_server("", TlsMode::None).is_err());
    }
}
