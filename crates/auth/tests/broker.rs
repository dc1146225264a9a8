//! The token broker in one process, against the identity platform emulator:
//! a hundred concurrent callers make exactly one token request.

use std::sync::Arc;

use m365_emulator::{AppSpec, Emulator, EmulatorConfig, IssueSpec, SecretSpec, Setup, TenantSpec, UserSpec};
use mailrobot_auth::TokenBroker;
use mailrobot_auth::broker::tenant_secret_context;
use mailrobot_secrets::SecretBox;
use mailrobot_store::*;

const CLIENT_ID: &str = "0b5e0a1c-1111-4222-8333-444455556666";
const SECRET: &str = "broker-test-secret";

struct Fixture {
    emu: Emulator,
    store: Arc<SqliteStore>,
    secrets: Arc<SecretBox>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let emu = Emulator::start(EmulatorConfig::http(Setup::default())).unwrap();
    emu.add_tenant(TenantSpec::new("fabrikam.test")).unwrap();
    emu.add_app(AppSpec {
        tenant: "fabrikam.test".into(),
        client_id: Some(CLIENT_ID.into()),
        secrets: vec![SecretSpec::new(SECRET)],
        application_permissions: vec!["https://graph.microsoft.com/Mail.ReadWrite".into()],
        delegated_permissions: vec!["https://graph.microsoft.com/Mail.ReadWrite.Shared".into()],
        ..Default::default()
    })
    .unwrap();
    emu.add_user(UserSpec {
        tenant: "fabrikam.test".into(),
        username: "robot@fabrikam.test".into(),
        password: "pw".into(),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
    let secrets = Arc::new(SecretBox::from_key(&[9u8; 32]));
    Fixture { emu, store, secrets, _dir: dir }
}

fn add_connection(f: &Fixture, name: &str, mode: Mode, scopes: &[&str]) -> Connection {
    let tenant = match f.store.tenant_by_name("fabrikam").unwrap() {
        Some(t) => t,
        None => {
            let t = f
                .store
                .add_tenant(&NewTenant {
                    name: "fabrikam".into(),
                    provider: "microsoft365".into(),
                    client_id: CLIENT_ID.into(),
                    directory: Some("fabrikam.test".into()),
                    authority_url: Some(f.emu.base_url().to_string()),
                    ..Default::default()
                })
                .unwrap();
            let sealed = f.secrets.seal(SECRET.as_bytes(), &tenant_secret_context(&t));
            f.store.set_tenant_credentials(t.id, Some(&sealed), None).unwrap();
            f.store.tenant(t.id).unwrap().unwrap()
        }
    };
    f.store
        .add_connection(&NewConnection {
            name: name.into(),
            tenant_id: tenant.id,
            capability: Capability::Graph,
            mode,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
}

async fn hundred_callers(broker: Arc<TokenBroker>, connection_id: i64) -> Vec<String> {
    let calls = (0..100).map(|_| {
        let broker = broker.clone();
        tokio::spawn(async move { broker.access_token(connection_id).await })
    });
    let mut tokens = Vec::new();
    for call in calls {
        tokens.push(call.await.unwrap().expect("a token").token.expose().to_string());
    }
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_callers_make_one_client_credentials_request() {
    let f = fixture();
    let c = add_connection(&f, "app", Mode::Application, &["https://graph.microsoft.com/.default"]);
    let broker = Arc::new(TokenBroker::new(f.store.clone(), f.secrets.clone()).unwrap());
    let tokens = hundred_callers(broker, c.id).await;
    assert!(tokens.windows(2).all(|w| w[0] == w[1]), "everyone got the same token");
    assert_eq!(f.emu.stats().requests("token"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_callers_make_one_refresh_and_the_rotated_token_is_stored() {
    let f = fixture();
    let scopes = ["https://graph.microsoft.com/Mail.ReadWrite.Shared", "openid", "offline_access"];
    let c = add_connection(&f, "desk", Mode::Delegated, &scopes);
    // What a finished Setup Authentication leaves behind.
    let issued = f
        .emu
        .issue_tokens(&IssueSpec {
            tenant: "fabrikam.test".into(),
            client_id: CLIENT_ID.into(),
            username: "robot@fabrikam.test".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            mfa: false,
        })
        .unwrap();
    let first_refresh = issued["refresh_token"].as_str().unwrap().to_string();
    let sealed = f.secrets.seal(first_refresh.as_bytes(), &format!("connection:{}:refresh_token", c.id));
    f.store
        .complete_authorization(c.id, &Authorization { sealed_refresh_token: Some(sealed), ..Default::default() })
        .unwrap();
    f.emu.reset_stats();

    let broker = Arc::new(TokenBroker::new(f.store.clone(), f.secrets.clone()).unwrap());
    let tokens = hundred_callers(broker, c.id).await;
    assert!(tokens.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(f.emu.stats().requests("token"), 1, "one refresh for a hundred callers");

    // The rotated refresh token replaced the first one in the store.
    let stored = f.store.refresh_token(c.id).unwrap().unwrap();
    let stored = f.secrets.open_str(&stored, &format!("connection:{}:refresh_token", c.id)).unwrap();
    assert_ne!(stored.expose(), first_refresh);
    let current = f.emu.refresh_tokens_of("fabrikam.test", "robot@fabrikam.test").unwrap();
    assert!(current.iter().any(|t| t == stored.expose()), "the stored token is one the emulator issued");
}
