//! `mailrobot demo`: the seed document's story, locally. A Microsoft 365
//! tenant runs in-process (the emulator): an app registration with the
//! seed's redirect path, a shared mailbox `servicedesk@` holding the sample
//! mails. The robot gets the tenant, a delegated Graph service connection,
//! runs Setup Authentication (signing in for the user), adds the mailbox and
//! turns the mails into tickets — saying what it does at each step.

use std::net::SocketAddr;

use anyhow::{Context, anyhow, bail};
use m365_emulator::{
    AppSpec, Emulator, EmulatorConfig, MailboxGrant, MailboxSpec, SecretSpec, Setup, TenantSpec, UserSpec,
};
use mailrobot_auth::model::REDIRECT_PATH;
use mailrobot_secrets::Secret;
use mailrobot_store::{Capability, MailboxKind, Mode, NewConnection};
use rand::Rng;

use crate::app::App;
use crate::cli::{AuthArg, MailboxAdd, ProviderArg, SettleArg, TenantAdd, TlsArg};
use crate::commands::mailbox_add;
use crate::commands_auth::tenant_add_with_secret;
use crate::demo::{poll_and_report, samples};
use crate::http::{HttpLimits, HttpState, router, serve_http};

const DOMAIN: &str = "contoso.test";
const CLIENT_ID: &str = "6d656d6f-6465-4d6f-8000-00000000d3e0";
const SHARED: &str = "servicedesk@contoso.test";
const ADMIN: &str = "ada.admin@contoso.test";

fn random(len: usize) -> String {
    rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(len).map(char::from).collect()
}

pub async fn run(app: &App, once: bool, listen: SocketAddr) -> anyhow::Result<()> {
    println!("mailrobot demo — Microsoft 365, locally (data in {})\n", app.data_dir.display());
    // Mailboxes of an earlier demo point at an emulator that is gone.
    for m in app.store.mailboxes()? {
        if m.name.starts_with("servicedesk-") && m.kind == mailrobot_store::MailboxKind::Graph && m.enabled {
            app.store.set_mailbox_enabled(m.id, false)?;
        }
    }
    let stamp = chrono::Utc::now().format("%H%M%S").to_string();
    let secret = random(40);
    let password = random(16);

    println!("1. A Microsoft 365 tenant starts (the local emulator of Entra ID and Exchange Online):");
    let (emu, delivered) = {
        let (secret, password) = (secret.clone(), password.clone());
        tokio::task::spawn_blocking(move || start_tenant(&secret, &password)).await??
    };
    println!("   sign-in at {}/{DOMAIN}, Graph at {}/v1.0", emu.base_url(), emu.base_url());
    println!(
        "   app registration \"Service desk robot\", client id {CLIENT_ID}, redirect URI .../wm/externalAuth/redirect.html"
    );
    println!("   shared mailbox {SHARED} with {} mails in its Inbox\n", delivered.len());

    println!("2. Tenant configuration (Administration → Service Connections → Tenants):");
    let tenant_name = format!("contoso-{stamp}");
    let tenant =
        tenant_add_with_secret(app, &demo_tenant(&tenant_name, emu.base_url()), Some(Secret::new(secret)), None)?;
    println!("   tenant {tenant_name}: client id {CLIENT_ID}, tenant {DOMAIN}, client secret stored encrypted\n");

    println!("3. A delegated Exchange / Microsoft Graph service connection:");
    let connection_name = format!("servicedesk-graph-{stamp}");
    let connection = app.auth_store.add_connection(&NewConnection {
        name: connection_name.clone(),
        tenant_id: tenant.id,
        capability: Capability::Graph,
        mode: Mode::Delegated,
        scopes: mailrobot_auth::model::default_scopes(Capability::Graph, Mode::Delegated),
    })?;
    println!("   {connection_name}: scopes {}\n", connection.scopes.join(" "));

    println!("4. Setup Authentication (signing in as {ADMIN} for you):");
    let who = setup_authentication(app, connection.id, &password).await?;
    println!("   connection ready, authenticated as {who}\n");

    println!("5. The shared mailbox, read through that connection:");
    let mut add = demo_mailbox(&format!("servicedesk-{stamp}"));
    add.connection = Some(connection_name);
    let mailbox = mailbox_add(app, &add)?;
    println!(
        "   mailbox {} → {SHARED}, Inbox; processed mails move to Processed, failed ones to Failed\n",
        mailbox.name
    );

    println!("6. One pass of the robot:\n");
    poll_and_report(app, mailbox.id, &delivered, "moved to the Failed folder").await?;
    let count = |folder: &str| emu.count(SHARED, folder).unwrap_or(0);
    println!(
        "\n   In the mailbox now: Inbox {}, Processed {}, Failed {}.",
        count("inbox"),
        count("Processed"),
        count("Failed")
    );
    println!("\nTry: mailrobot --data-dir {} tickets list --json", app.data_dir.display());
    if once {
        return Ok(());
    }
    println!(
        "\n7. Serving; the tenant keeps running inside this process. Deliver more mail with\n   \
         curl -X POST {}/_admin/mailboxes/deliver -H 'content-type: application/json' \\\n     \
         -d '{{\"mailbox\":\"{SHARED}\",\"mime\":\"From: you@example.com\\r\\nSubject: Hello\\r\\n\\r\\nHi\"}}'\n   Ctrl-C stops.",
        emu.base_url()
    );
    crate::web::print_demo_sign_in(app, listen)?;
    crate::serve::serve(app, listen, None).await
}

/// The tenant, the app registration, the admin and the shared mailbox with
/// the sample mails; returns each sample's Graph id.
fn start_tenant(secret: &str, password: &str) -> anyhow::Result<(Emulator, Vec<(String, String)>)> {
    let emu = Emulator::start(EmulatorConfig::http(Setup::default())).map_err(|e| anyhow!("emulator: {e}"))?;
    let fail = |e: m365_emulator::EmulatorError| anyhow!("emulator setup: {e}");
    emu.add_tenant(TenantSpec { name: "Contoso".into(), ..TenantSpec::new(DOMAIN) }).map_err(fail)?;
    emu.add_app(AppSpec {
        tenant: DOMAIN.into(),
        client_id: Some(CLIENT_ID.into()),
        name: "Service desk robot".into(),
        // Loopback redirect URIs match on any port (Microsoft's localhost rule).
        redirect_uris: vec![format!("http://127.0.0.1{REDIRECT_PATH}")],
        secrets: vec![SecretSpec::new(secret)],
        // What "Grant admin consent" leaves behind.
        delegated_permissions: vec!["https://graph.microsoft.com/Mail.ReadWrite.Shared".into()],
        ..Default::default()
    })
    .map_err(fail)?;
    emu.add_user(UserSpec {
        tenant: DOMAIN.into(),
        username: ADMIN.into(),
        password: password.into(),
        name: Some("Ada Admin".into()),
        ..Default::default()
    })
    .map_err(fail)?;
    emu.create_mailbox(MailboxSpec::new(DOMAIN, SHARED)).map_err(fail)?;
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: ADMIN.into() })
        .map_err(fail)?;
    let mut delivered = Vec::new();
    for (name, bytes) in samples::DEMO_MAILS {
        let info = emu.deliver_mime(SHARED, "inbox", &String::from_utf8_lossy(bytes)).map_err(fail)?;
        delivered.push((name.to_string(), info.immutable_id));
    }
    Ok((emu, delivered))
}

/// Runs the redirect endpoint on a free loopback port, starts Setup
/// Authentication, and fills in the sign-in form as the admin would.
async fn setup_authentication(app: &App, connection_id: i64, password: &str) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let public_url = format!("http://{}", listener.local_addr()?);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle();
    let limits = HttpLimits::default();
    let state = HttpState::new(app.store.clone(), metrics, app.broker()?, limits);
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve_http(listener, router(state, None, None), limits, stop_rx));

    let result = async {
        let broker = app.broker()?;
        let url = broker.begin_authorization(connection_id, &public_url, "cli", Some(ADMIN)).await?;
        println!("   open {}…", &url[..url.find('?').unwrap_or(url.len())]);
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        let page = http.get(&url).send().await?.text().await?;
        let flow = hidden_field(&page, "flow").context("the sign-in page has no flow field")?;
        let login = url.replace("/oauth2/v2.0/authorize", "/login");
        let login = &login[..login.find('?').unwrap_or(login.len())];
        let mut response = http
            .post(login)
            .form(&[("flow", flow.as_str()), ("username", ADMIN), ("password", password)])
            .send()
            .await?;
        if response.status().as_u16() == 200 {
            // A consent page: accept it.
            let page = response.text().await?;
            let flow = hidden_field(&page, "flow").context("unexpected page after sign-in")?;
            let consent = login.replace("/login", "/consent");
            response = http.post(&consent).form(&[("flow", flow.as_str()), ("action", "accept")]).send().await?;
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_string)
            .context("the sign-in did not redirect back to the robot")?;
        println!("   signed in; the identity platform redirects to {public_url}{REDIRECT_PATH}");
        let back = http.get(&location).send().await?;
        if !back.status().is_success() {
            bail!("Setup Authentication failed: {}", back.text().await.unwrap_or_default());
        }
        let connection = app.auth_store.connection(connection_id)?.context("connection vanished")?;
        anyhow::Ok(connection.authenticated_upn.unwrap_or_default())
    }
    .await;
    server.abort();
    result
}

fn hidden_field(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    Some(page[start..start + page[start..].find('"')?].to_string())
}

fn demo_tenant(name: &str, base_url: &str) -> TenantAdd {
    TenantAdd {
        name: name.into(),
        provider: ProviderArg::Microsoft365,
        client_id: CLIENT_ID.into(),
        tenant: Some(DOMAIN.into()),
        client_secret_env: None,
        client_secret_stdin: false,
        secret_expires: None,
        certificate_file: None,
        authority_url: Some(base_url.into()),
        graph_url: Some(base_url.into()),
        ews_url: Some(format!("{base_url}/EWS/Exchange.asmx")),
        authorize_url: None,
        token_url: None,
        allow_plaintext: false,
    }
}

fn demo_mailbox(name: &str) -> MailboxAdd {
    MailboxAdd {
        name: name.into(),
        kind: MailboxKind::Graph,
        host: None,
        port: None,
        tls: TlsArg::Tls,
        username: None,
        password_env: None,
        password_stdin: false,
        folder: "inbox".into(),
        processed_folder: "Processed".into(),
        error_folder: "Failed".into(),
        settle: SettleArg::Move,
        keep_on_server: false,
        path: None,
        connection: None,
        auth: AuthArg::Password,
        address: Some(SHARED.into()),
        ews_url: None,
        ews_auth: None,
        poll_seconds: 10,
        max_message_mb: 50,
        disabled: false,
        allow_plaintext: false,
    }
}
