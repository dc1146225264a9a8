//! One Microsoft 365 tenant for mailbox tests: the emulator with an app
//! registration (delegated and application permissions for Graph, EWS and
//! IMAP/POP/SMTP AUTH), an agent who can sign in, a shared mailbox, and a
//! robot that knows the tenant.

use m365_emulator::{
    AppSpec, Emulator, EmulatorConfig, MailboxAppGrant, MailboxSpec, SecretSpec, ServicePrincipalSpec, Setup,
    TenantSpec, UserSpec,
};

use super::Robot;

pub const CLIENT_ID: &str = "7c0ffee0-1111-4222-8333-444455556666";
pub const SECRET: &str = "graph-test-secret";
pub const DOMAIN: &str = "contoso.test";
pub const SHARED: &str = "servicedesk@contoso.test";
pub const AGENT: &str = "agent@contoso.test";
pub const AGENT_PASSWORD: &str = "Agent!Pass1";

pub fn emulator() -> Emulator {
    emulator_with_latency(0)
}

/// [`emulator`] whose shared mailbox takes `latency_ms` per request while the request holds one
/// of the app's concurrency slots on it (so requests running together overlap).
pub fn emulator_with_latency(latency_ms: u64) -> Emulator {
    let emu = Emulator::start(EmulatorConfig::http(Setup::default())).unwrap();
    emu.add_tenant(TenantSpec::new(DOMAIN)).unwrap();
    emu.add_app(AppSpec {
        tenant: DOMAIN.into(),
        client_id: Some(CLIENT_ID.into()),
        secrets: vec![SecretSpec::new(SECRET)],
        // Loopback redirect URIs match on any port (Microsoft's localhost rule).
        redirect_uris: vec!["http://127.0.0.1/wm/externalAuth/redirect.html".into()],
        application_permissions: vec![
            "https://graph.microsoft.com/Mail.ReadWrite".into(),
            "https://graph.microsoft.com/Mail.Send".into(),
            "https://outlook.office365.com/full_access_as_app".into(),
            "https://outlook.office365.com/IMAP.AccessAsApp".into(),
            "https://outlook.office365.com/POP.AccessAsApp".into(),
            "https://outlook.office365.com/SMTP.SendAsApp".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    emu.add_user(UserSpec {
        tenant: DOMAIN.into(),
        username: AGENT.into(),
        password: AGENT_PASSWORD.into(),
        ..Default::default()
    })
    .unwrap();
    emu.create_mailbox(MailboxSpec { latency_ms, ..MailboxSpec::new(DOMAIN, SHARED) }).unwrap();
    emu
}

/// What the tenant admin does in Exchange Online PowerShell before the app
/// may use IMAP/POP/SMTP AUTH on `mailbox`: `New-ServicePrincipal`, then
/// `Add-MailboxPermission -AccessRights FullAccess`.
pub fn let_app_into(emu: &Emulator, mailbox: &str) {
    emu.register_service_principal(ServicePrincipalSpec { tenant: DOMAIN.into(), client_id: CLIENT_ID.into() })
        .unwrap();
    emu.grant_mailbox_access_to_app(MailboxAppGrant {
        tenant: DOMAIN.into(),
        mailbox: mailbox.into(),
        client_id: CLIENT_ID.into(),
    })
    .unwrap();
}

pub fn robot_with_tenant(emu: &Emulator) -> Robot {
    let robot = Robot::new();
    add_tenant(&robot, emu);
    robot
}

/// `tenant add contoso` pointing at the emulator (the secret through an
/// environment variable).
pub fn add_tenant(robot: &Robot, emu: &Emulator) {
    let ews = format!("{}/EWS/Exchange.asmx", emu.base_url());
    let out = robot.run_raw(
        &[
            "tenant",
            "add",
            "--name",
            "contoso",
            "--client-id",
            CLIENT_ID,
            "--tenant",
            DOMAIN,
            "--client-secret-env",
            "S",
            "--authority-url",
            emu.base_url(),
            "--graph-url",
            emu.base_url(),
            "--ews-url",
            &ews,
        ],
        &[("S", SECRET)],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `connection add NAME --tenant contoso --capability CAPABILITY --mode MODE`.
pub fn add_connection(robot: &Robot, name: &str, capability: &str, mode: &str) {
    robot.run(&[
        "connection",
        "add",
        "--name",
        name,
        "--tenant",
        "contoso",
        "--capability",
        capability,
        "--mode",
        mode,
    ]);
}

/// `mailbox add NAME --kind graph --connection CONNECTION --address` the shared mailbox.
pub fn add_shared_graph_mailbox(robot: &Robot, name: &str, connection: &str) {
    robot.run(&["mailbox", "add", "--name", name, "--kind", "graph", "--connection", connection, "--address", SHARED]);
}

/// `mailbox add NAME --kind ews` over the shared mailbox as Exchange Server on-premises: the
/// emulator's EWS URL, the agent's user name and `password` (through an environment variable),
/// plus `extra`. Whether the robot took it.
pub fn add_password_ews_mailbox(robot: &Robot, name: &str, emu_base: &str, password: &str, extra: &[&str]) -> bool {
    let ews = format!("{emu_base}/EWS/Exchange.asmx");
    let mut args = vec![
        "mailbox",
        "add",
        "--name",
        name,
        "--kind",
        "ews",
        "--ews-url",
        &ews,
        "--address",
        SHARED,
        "--username",
        AGENT,
        "--password-env",
        "EWS_PW",
    ];
    args.extend_from_slice(extra);
    robot.run_raw(&args, &[("EWS_PW", password)]).status.success()
}
