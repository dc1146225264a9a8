//! `migrate-store`: an SQLite installation copied into an empty PostgreSQL
//! database reads back the same through every store trait; refusals
//! (a target with data, a live node) leave the target as it was; new rows
//! on PostgreSQL get ids past the copied ones.

use std::fmt::Debug;
use std::time::Duration;

use mailrobot_core::rules::{Action, Condition};
use mailrobot_core::{MailTemplate, OutgoingKind, OutgoingMail, RuleDefinition};
use mailrobot_store::migrate::sqlite_to_postgres;
use mailrobot_store::testing::TestDatabase;
use mailrobot_store::*;

const TTL: Duration = Duration::from_secs(15);

fn new_mailbox(name: &str, sealed_secret: Option<Vec<u8>>) -> NewMailbox {
    NewMailbox {
        name: name.into(),
        kind: MailboxKind::DropFolder,
        config: serde_json::json!({"path": format!("/srv/drop/{name}")}),
        sealed_secret,
        connection_id: None,
        poll_seconds: 60,
        max_message_bytes: 50 << 20,
    }
}

fn mail(id: &str, from: &str, subject: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: desk@contoso.test\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\
         Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n{extra}\r\n{body}\r\n"
    )
    .into_bytes()
}

/// A mail with a binary attachment of `size` bytes (base64, so the raw
/// mail is larger still).
fn mail_with_attachment(id: &str, size: usize) -> Vec<u8> {
    let data = mailrobot_store::testing::random_looking_bytes(size);
    let encoded = base64(&data);
    let lines: Vec<&str> = encoded.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>();
    let body = format!(
        "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe scan is attached.\r\n\
         --b1\r\nContent-Type: application/octet-stream; name=\"scan.bin\"\r\n\
         Content-Disposition: attachment; filename=\"scan.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         {}\r\n--b1--",
        lines.join("\r\n")
    );
    mail(
        id,
        "Bob <bob@example.com>",
        "Scanner output",
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n",
        &body,
    )
}

/// Standard base64 with padding (this crate has no base64 dependency).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn rules() -> ProcessingRules {
    ProcessingRules::default()
}

/// What the tests read back (ids and keys made while filling the source).
struct Filled {
    tenant: i64,
    connection: i64,
    webhook: i64,
    session_token: String,
    flow_state: String,
    big_attachment_sha: String,
}

/// An SQLite store with rows in every table.
fn fill(s: &SqliteStore) -> Filled {
    // Mailboxes, one with a sealed password and a sealed reply password.
    let desk = s.add_mailbox(&new_mailbox("desk", Some(b"sealed-mailbox-password".to_vec()))).unwrap().id;
    let other = s.add_mailbox(&new_mailbox("other", None)).unwrap().id;
    s.set_mailbox_reply_secret(desk, Some(b"sealed-smtp-password")).unwrap();
    s.set_mailbox_sync_state(other, Some("delta-token-1")).unwrap();

    // Service connections: a tenant, a connection, tokens and a flow.
    let tenant = s
        .add_tenant(&NewTenant {
            name: "contoso".into(),
            provider: "microsoft365".into(),
            client_id: "cid".into(),
            directory: Some("contoso.com".into()),
            sealed_secret: Some(b"sealed-client-secret".to_vec()),
            secret_expires_at: Some("2027-01-01T00:00:00.000Z".into()),
            sealed_certificate: Some(b"sealed-certificate".to_vec()),
            certificate_info: Some("CN=robot".into()),
            allow_plaintext: true,
            ..Default::default()
        })
        .unwrap();
    let connection = s
        .add_connection(&NewConnection {
            name: "desk-graph".into(),
            tenant_id: tenant.id,
            capability: Capability::Graph,
            mode: Mode::Delegated,
            scopes: vec!["Mail.ReadWrite".into(), "offline_access".into()],
        })
        .unwrap();
    s.complete_authorization(
        connection.id,
        &Authorization {
            sealed_refresh_token: Some(b"sealed-refresh-token".to_vec()),
            name: Some("Desk".into()),
            upn: Some("desk@contoso.com".into()),
            oid: Some("oid-1".into()),
            granted_scopes: Some("Mail.ReadWrite offline_access".into()),
        },
    )
    .unwrap();
    s.put_token(
        connection.id,
        "https://graph.microsoft.com",
        &CachedToken { sealed_token: b"sealed-access-token".to_vec(), expires_at: "2099-01-01T00:00:00.000Z".into() },
    )
    .unwrap();
    let flow_state = "state-123".to_string();
    s.create_auth_flow(&AuthFlow {
        state: flow_state.clone(),
        connection_id: connection.id,
        sealed_verifier: b"sealed-verifier".to_vec(),
        nonce: "nonce".into(),
        redirect_uri: "http://127.0.0.1:8025/wm/externalAuth/redirect.html".into(),
        initiator: "cli".into(),
        created_at: "2026-11-26T10:00:00.000Z".into(),
        expires_at: "2099-01-01T00:00:00.000Z".into(),
    })
    .unwrap();
    s.set_mailbox_connection(other, Some(connection.id)).unwrap();
    s.set_service_scopes(&ServiceScopes {
        capability: Capability::Graph,
        mode: Mode::Delegated,
        scopes: vec!["Mail.ReadWrite".into()],
    })
    .unwrap();

    // A webhook (its secret sealed) before the mail, so events queue.
    let webhook = s
        .add_webhook(
            "https://hooks.example/robot",
            &[WebhookEvent::TicketCreated, WebhookEvent::EntryAdded, WebhookEvent::TicketStatusChanged],
            &mut |id| format!("sealed-webhook-secret-{id}").into_bytes(),
        )
        .unwrap();

    // Rules, a template, contacts.
    s.add_rule(&NewRule {
        name: "printers".into(),
        mailbox_id: None,
        position: None,
        definition: RuleDefinition {
            conditions: vec![Condition::SubjectContains("Printer".into())],
            actions: vec![Action::SetCategory("hardware".into())],
        },
    })
    .unwrap();
    s.set_template(
        &TemplateKey { kind: OutgoingKind::Acknowledgement, mailbox_id: Some(desk), language: "de".into() },
        &MailTemplate { subject: "Eingang".into(), text: "Wir haben Ihre Mail.".into(), html: None },
    )
    .unwrap();
    s.add_contact(&NewContact {
        email: "Carol@Example.com".into(),
        name: Some("Carol".into()),
        organisation: Some("Example".into()),
    })
    .unwrap();

    // The journal: tickets with entries and attachments, a reply, a mail
    // over 4 MiB, one waiting, one failed; some settled.
    let tnef = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/eml/new/winmail-dat-tnef.eml"),
    )
    .unwrap();
    // Long enough that SQLite keeps its body packed (blob_codec).
    let printer_body = "It is broken. The tray jams at the second page, every time.\r\n".repeat(30);
    let printer = mail("1@x", "Ann <ann@example.com>", "Printer broken", "", &printer_body);
    let reply = mail("2@x", "Ann <ann@example.com>", "Re: Printer broken", "In-Reply-To: <1@x>\r\n", "Still.");
    let big = mail_with_attachment("3@x", 4_600_000);
    assert!(big.len() > 6 << 20, "the raw mail is over 4 MiB too: {}", big.len());
    s.journal(desk, &[IncomingMail::fetched("r1", &printer), IncomingMail::fetched("r2", &reply)]).unwrap();
    // Stored compressed, as the pipeline hands SQLite its mails: copied as
    // it is, and read back through its codec on PostgreSQL.
    let tnef_packed = blob_codec::pack(&tnef);
    assert!(tnef_packed.is_some(), "the TNEF mail compresses");
    s.journal(desk, &[IncomingMail::fetched("r3", &big), IncomingMail::fetched("r4", &tnef).packed(tnef_packed)])
        .unwrap();
    s.journal(other, &[IncomingMail::rejected("r5", 99 << 20, "over the size limit")]).unwrap();
    s.process_pending(None, 100, u64::MAX, &rules()).unwrap();
    s.journal(other, &[IncomingMail::fetched("r6", &mail("6@x", "dave@example.com", "Waiting", "", "Later"))]).unwrap();
    let unsettled: Vec<i64> = s.unsettled(desk).unwrap().iter().map(|u| u.journal_id).take(2).collect();
    s.mark_settled(&unsettled).unwrap();
    let tickets = s.tickets().unwrap();
    assert!(tickets.len() >= 3, "{tickets:?}");
    s.set_ticket_status(tickets[0].id, TicketStatus::Closed).unwrap();
    let big_ticket = tickets.iter().find(|t| t.subject == "Scanner output").unwrap().id;
    let big_attachment = s.ticket(big_ticket).unwrap().unwrap().entries[0].attachments[0].clone();
    assert!(big_attachment.size > 4 << 20, "{big_attachment:?}");

    // A queued mail in the outbox.
    s.with_ledger(&mut |ledger| {
        ledger.queue_mail(&OutgoingMail {
            kind: OutgoingKind::Acknowledgement,
            mailbox_id: desk,
            ticket: Some(tickets[0].id as u64),
            journal_id: 0,
            from: "desk@contoso.test".into(),
            to: "ann@example.com".into(),
            subject: "Received".into(),
            message_id: "ack-1@contoso.test".into(),
            in_reply_to: None,
            references: Vec::new(),
            text: "We have your mail.".into(),
            html: None,
            reply_to: None,
            attachments: Vec::new(),
        })?;
        Ok(())
    })
    .unwrap();

    // Administrators, a session, API tokens, settings.
    let ada = s.add_admin("Ada@Example.com", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA").unwrap();
    s.create_session("session-sha", ada.id, "csrf", Duration::from_secs(3600)).unwrap();
    s.add_api_token("ci", "token-sha-ci", true).unwrap();
    s.add_api_token("ops", "token-sha-ops", false).unwrap();
    s.set_setting("ticket.prefix", "HELP").unwrap();
    s.set_setting("public_url", "https://robot.example").unwrap();

    // A Graph subscription, its clientState sealed.
    s.save_push_subscription(&PushSubscription {
        mailbox_id: desk,
        subscription_id: "sub-1".into(),
        sealed_client_state: b"sealed-client-state".to_vec(),
        notification_url: "https://robot.example/graph/notifications".into(),
        watching: "connection 1: desk@contoso.test inbox".into(),
        expires_at: "2026-12-05T10:00:00.000Z".into(),
        created_at: "2026-12-02T10:00:00.000Z".into(),
        renewed_at: None,
    })
    .unwrap();

    // A node that ran and stopped, with the leases it held.
    s.register_node(&NewNode::serve("old-node", "box1", 4242)).unwrap();
    s.heartbeat("old-node", TTL).unwrap();
    s.stop_node("old-node").unwrap();

    Filled {
        tenant: tenant.id,
        connection: connection.id,
        webhook: webhook.id,
        session_token: "session-sha".into(),
        flow_state,
        big_attachment_sha: big_attachment.sha256,
    }
}

#[track_caller]
fn same<T: Debug>(what: &str, sqlite: T, postgres: T) {
    let (a, b) = (format!("{sqlite:#?}"), format!("{postgres:#?}"));
    assert!(a == b, "{what} differs:\nSQLite: {a}\nPostgreSQL: {b}");
}

fn sorted_sealed(store: &impl SealedStore) -> Vec<String> {
    let mut all: Vec<String> = store.sealed_values().unwrap().iter().map(|v| format!("{v:?}")).collect();
    all.sort();
    all
}

#[test]
fn everything_is_copied_and_reads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailrobot.db");
    let s = SqliteStore::open(&path).unwrap();
    let filled = fill(&s);
    let db = TestDatabase::create();

    let packed_bodies: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM ticket_entries WHERE typeof(text_body) = 'blob'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(packed_bodies, 1, "the printer mail's body is packed in SQLite");

    let report = sqlite_to_postgres(&path, &db.url).unwrap();
    let p = PgStore::connect(&db.url).unwrap();

    // The report: every table, with rows, each verified by its checksum.
    let names: Vec<&str> = report.tables.iter().map(|t| t.table.as_str()).collect();
    for table in [
        "mailboxes",
        "blobs",
        "tickets",
        "messages",
        "ticket_entries",
        "entry_attachments",
        "outbox",
        "settings",
        "tenants",
        "connections",
        "access_tokens",
        "auth_flows",
        "admins",
        "sessions",
        "api_tokens",
        "service_scopes",
        "webhooks",
        "rules",
        "templates",
        "contacts",
        "nodes",
        "mailbox_leases",
        "push_subscriptions",
    ] {
        let t = report.tables.iter().find(|t| t.table == table).unwrap_or_else(|| panic!("{table} in {names:?}"));
        assert!(t.rows > 0, "{table} has rows: {report:?}");
        assert_eq!(t.checksum.len(), 64, "{t:?}");
    }
    assert_eq!(report.tables.len(), 23, "{names:?}");
    assert!(!names.contains(&"schema_version"));
    let position = |t: &str| names.iter().position(|n| *n == t).unwrap();
    assert!(position("blobs") < position("messages") && position("messages") < position("ticket_entries"));
    assert!(position("tenants") < position("connections") && position("connections") < position("mailboxes"));
    assert_eq!(report.rows, report.tables.iter().map(|t| t.rows).sum::<u64>());
    assert!(!report.target.contains(&password(&db.url).unwrap_or_else(|| "\u{0}".into())), "{}", report.target);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["tables"].as_array().unwrap().len(), 23);
    assert_eq!(json["replaced"], 0);

    // Mailboxes and their sealed secrets.
    same("mailboxes", s.mailboxes().unwrap(), p.mailboxes().unwrap());
    same("push subscription", s.push_subscription_by_id("sub-1").unwrap(), p.push_subscription_by_id("sub-1").unwrap());
    assert!(p.push_subscription(1).unwrap().is_some());
    for m in s.mailboxes().unwrap() {
        same("mailbox secret", s.mailbox_secret(m.id).unwrap(), p.mailbox_secret(m.id).unwrap());
        same("reply secret", s.mailbox_reply_secret(m.id).unwrap(), p.mailbox_reply_secret(m.id).unwrap());
        same("sync state", s.mailbox_sync_state(m.id).unwrap(), p.mailbox_sync_state(m.id).unwrap());
    }
    assert_eq!(p.mailbox_secret(1).unwrap().as_deref(), Some(b"sealed-mailbox-password".as_slice()));
    same("sealed values", sorted_sealed(&s), sorted_sealed(&p));
    assert_eq!(sorted_sealed(&p).len(), 9, "every kind of sealed value: {:?}", sorted_sealed(&p));

    // Tickets, the journal, blobs.
    same("tickets", s.tickets().unwrap(), p.tickets().unwrap());
    for t in s.tickets().unwrap() {
        same("ticket", s.ticket(t.id).unwrap(), p.ticket(t.id).unwrap());
        for entry in s.ticket(t.id).unwrap().unwrap().entries {
            for a in entry.attachments {
                same("attachment", s.blob(&a.sha256).unwrap(), p.blob(&a.sha256).unwrap());
            }
        }
    }
    let query = TicketQuery { limit: 100, ..Default::default() };
    same("ticket search", s.search_tickets(&query).unwrap(), p.search_tickets(&query).unwrap());
    let messages = s.messages(&MessageFilter::default()).unwrap();
    assert_eq!(messages.len(), 6);
    same("messages", &messages, &p.messages(&MessageFilter::default()).unwrap());
    for m in &messages {
        same("raw mail", s.message_raw(m.journal_id).unwrap(), p.message_raw(m.journal_id).unwrap());
        if let Some(sha) = &m.raw_sha256 {
            same("raw blob", s.blob(sha).unwrap(), p.blob(sha).unwrap());
        }
    }
    let big = p.blob(&filled.big_attachment_sha).unwrap().unwrap();
    assert!(big.len() > 4 << 20);
    same("counts", s.counts().unwrap(), p.counts().unwrap());
    let since = "2000-01-01T00:00:00.000Z";
    same("mailbox counts", s.mailbox_counts(since).unwrap(), p.mailbox_counts(since).unwrap());
    for mailbox in [1, 2] {
        same("unsettled", s.unsettled(mailbox).unwrap(), p.unsettled(mailbox).unwrap());
    }
    let pending = |store: &dyn Store| {
        store.pending_mails(None, 10, u64::MAX).unwrap().iter().map(|m| format!("{m:?}")).collect::<Vec<_>>()
    };
    same("pending mails", pending(&s), pending(&p));

    // Service connections.
    same("tenants", s.tenants().unwrap(), p.tenants().unwrap());
    same("tenant secret", s.tenant_secret(filled.tenant).unwrap(), p.tenant_secret(filled.tenant).unwrap());
    same(
        "tenant certificate",
        s.tenant_certificate(filled.tenant).unwrap(),
        p.tenant_certificate(filled.tenant).unwrap(),
    );
    same("connections", s.connections().unwrap(), p.connections().unwrap());
    same("refresh token", s.refresh_token(filled.connection).unwrap(), p.refresh_token(filled.connection).unwrap());
    let resource = "https://graph.microsoft.com";
    same(
        "access token",
        s.cached_token(filled.connection, resource).unwrap(),
        p.cached_token(filled.connection, resource).unwrap(),
    );
    same("service scopes", s.service_scopes().unwrap(), p.service_scopes().unwrap());

    // Webhooks and the outbox.
    same("webhooks", s.webhooks().unwrap(), p.webhooks().unwrap());
    same("webhook secret", s.webhook_secret(filled.webhook).unwrap(), p.webhook_secret(filled.webhook).unwrap());
    let all = DeliveryFilter::default();
    assert!(!s.deliveries(&all).unwrap().is_empty());
    same("deliveries", s.deliveries(&all).unwrap(), p.deliveries(&all).unwrap());
    same("pending deliveries", s.pending_deliveries().unwrap(), p.pending_deliveries().unwrap());
    assert_eq!(s.mails().unwrap().len(), 1);
    same("mails", s.mails().unwrap(), p.mails().unwrap());

    // Rules, templates, contacts.
    same("rules", s.rules().unwrap(), p.rules().unwrap());
    same("templates", s.templates().unwrap(), p.templates().unwrap());
    same("contacts", s.contacts().unwrap(), p.contacts().unwrap());
    same("contact", s.contact("ann@example.com").unwrap(), p.contact("ann@example.com").unwrap());

    // Administrators, sessions, API tokens, settings.
    same("admins", s.admins().unwrap(), p.admins().unwrap());
    same("sign in", s.admin_for_sign_in("ada@example.com").unwrap(), p.admin_for_sign_in("ada@example.com").unwrap());
    same("session", s.session(&filled.session_token).unwrap(), p.session(&filled.session_token).unwrap());
    assert!(p.session(&filled.session_token).unwrap().is_some());
    same("api tokens", s.api_tokens().unwrap(), p.api_tokens().unwrap());
    same("api token", s.api_token("token-sha-ops").unwrap(), p.api_token("token-sha-ops").unwrap());
    for key in ["ticket.prefix", "public_url", "missing"] {
        same("setting", s.setting(key).unwrap(), p.setting(key).unwrap());
    }

    // Nodes and leases.
    same("nodes", s.nodes(TTL).unwrap(), p.nodes(TTL).unwrap());
    same("leases", s.leases().unwrap(), p.leases().unwrap());
    assert!(!p.leases().unwrap().is_empty());

    // Last, as taking it removes it.
    let flow = |f: Option<AuthFlow>| f.map(|f| format!("{f:?}"));
    same(
        "auth flow",
        flow(s.take_auth_flow(&filled.flow_state).unwrap()),
        flow(p.take_auth_flow(&filled.flow_state).unwrap()),
    );
}

/// The password in a URL, if it has one.
fn password(url: &str) -> Option<String> {
    url::Url::parse(url).ok()?.password().map(str::to_string)
}

#[test]
fn a_second_migration_into_the_same_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailrobot.db");
    let s = SqliteStore::open(&path).unwrap();
    s.add_mailbox(&new_mailbox("desk", None)).unwrap();
    s.journal(1, &[IncomingMail::fetched("r1", &mail("1@x", "ann@example.com", "Hello", "", "Hi"))]).unwrap();
    s.process_pending(None, 10, u64::MAX, &rules()).unwrap();
    let db = TestDatabase::create();
    sqlite_to_postgres(&path, &db.url).unwrap();

    // More mail on SQLite since: the second copy must not merge it in.
    s.journal(1, &[IncomingMail::fetched("r2", &mail("2@x", "bob@example.com", "Other", "", "Hi"))]).unwrap();
    s.process_pending(None, 10, u64::MAX, &rules()).unwrap();
    let err = sqlite_to_postgres(&path, &db.url).unwrap_err().to_string();
    assert!(err.contains("already holds data"), "{err}");
    assert!(err.contains("tickets: 1 row)") && err.contains("mailboxes: 1 row,"), "{err}");
    assert!(err.contains("empty database"), "says what to do: {err}");
    if let Some(password) = password(&db.url) {
        assert!(!err.contains(&password), "{err}");
    }
    let p = PgStore::connect(&db.url).unwrap();
    assert_eq!(p.tickets().unwrap().len(), 1, "the target is as the first copy left it");
    assert_eq!(p.messages(&MessageFilter::default()).unwrap().len(), 1);
}

#[test]
fn a_source_with_a_live_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailrobot.db");
    let s = SqliteStore::open(&path).unwrap();
    s.add_mailbox(&new_mailbox("desk", None)).unwrap();
    s.register_node(&NewNode::serve("node-on-box7", "box7", 777)).unwrap();
    s.heartbeat("node-on-box7", TTL).unwrap();
    let db = TestDatabase::create();

    let err = sqlite_to_postgres(&path, &db.url).unwrap_err().to_string();
    assert!(err.contains("node node-on-box7 on box7 (pid 777"), "names the node: {err}");
    assert!(err.contains("stop"), "says what to do: {err}");
    assert!(pg_tools::table_names(&db.url).unwrap().is_empty(), "nothing was written to the target");

    // Once it has stopped, the copy goes ahead.
    s.stop_node("node-on-box7").unwrap();
    let report = sqlite_to_postgres(&path, &db.url).unwrap();
    assert_eq!(report.tables.iter().find(|t| t.table == "nodes").unwrap().rows, 1);
}

#[test]
fn a_target_with_a_live_node_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailrobot.db");
    let s = SqliteStore::open(&path).unwrap();
    s.add_mailbox(&new_mailbox("desk", None)).unwrap();
    let db = TestDatabase::create();
    let p = PgStore::connect(&db.url).unwrap();
    p.register_node(&NewNode::serve("pg-node", "box9", 99)).unwrap();

    let err = sqlite_to_postgres(&path, &db.url).unwrap_err().to_string();
    assert!(err.contains("node pg-node on box9 (pid 99") && err.contains("PostgreSQL"), "{err}");
    assert!(p.mailboxes().unwrap().is_empty());
}

/// A database some command opened once (built-in service scopes, the
/// master-key check) counts as empty: the source's rows replace those.
#[test]
fn a_target_that_was_only_opened_counts_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailrobot.db");
    let s = SqliteStore::open(&path).unwrap();
    s.add_mailbox(&new_mailbox("desk", None)).unwrap();
    s.set_service_scopes(&ServiceScopes {
        capability: Capability::Imap,
        mode: Mode::Delegated,
        scopes: vec!["a".into()],
    })
    .unwrap();
    s.set_setting("secrets.key_check", "from-sqlite").unwrap();
    let db = TestDatabase::create();
    let p = PgStore::connect(&db.url).unwrap();
    p.set_service_scopes(&ServiceScopes {
        capability: Capability::Imap,
        mode: Mode::Delegated,
        scopes: vec!["b".into()],
    })
    .unwrap();
    p.set_setting("secrets.key_check", "from-postgres").unwrap();

    let report = sqlite_to_postgres(&path, &db.url).unwrap();
    assert_eq!(report.replaced, 2);
    assert_eq!(p.setting("secrets.key_check").unwrap().as_deref(), Some("from-sqlite"));
    same("service scopes", s.service_scopes().unwrap(), p.service_scopes().unwrap());
    assert_eq!(p.mailboxes().unwrap().len(), 1);
}

/// A row PostgreSQL stores otherwise than SQLite gave it (a trigger
/// changes it here) fails the table's checksum: nothing is committed.
#[test]
fn a_table_that_does_not_read_back_the_same_rolls_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailrobot.db");
    let s = SqliteStore::open(&path).unwrap();
    s.add_mailbox(&new_mailbox("desk", None)).unwrap();
    s.set_setting("ticket.prefix", "HELP").unwrap();
    let db = TestDatabase::create();
    let p = PgStore::connect(&db.url).unwrap();
    pg_tools::execute_batch(
        &db.url,
        "CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN NEW.status := 'tampered'; RETURN NEW; END $$;
         CREATE TRIGGER tamper BEFORE INSERT ON mailboxes FOR EACH ROW EXECUTE FUNCTION tamper();",
    )
    .unwrap();

    let err = sqlite_to_postgres(&path, &db.url).unwrap_err().to_string();
    assert!(err.contains("table mailboxes differs"), "{err}");
    assert!(err.contains("nothing was committed"), "{err}");
    assert_eq!(p.setting("ticket.prefix").unwrap(), None, "tables copied before it were rolled back too");
    assert!(p.mailboxes().unwrap().is_empty());
}

#[test]
fn tables_that_differ_are_refused_before_anything_is_copied() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailrobot.db");
    let s = SqliteStore::open(&path).unwrap();
    s.add_mailbox(&new_mailbox("desk", None)).unwrap();
    let db = TestDatabase::create();
    let p = PgStore::connect(&db.url).unwrap();
    pg_tools::execute_batch(&db.url, "CREATE TABLE invoices (id BIGINT PRIMARY KEY)").unwrap();

    let err = sqlite_to_postgres(&path, &db.url).unwrap_err().to_string();
    assert!(err.contains("only on SQLite: nothing; only on PostgreSQL: invoices.id"), "{err}");
    assert!(p.mailboxes().unwrap().is_empty());
}

#[test]
fn a_missing_source_is_refused_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nothing-here.db");
    let db = TestDatabase::create();
    let err = sqlite_to_postgres(&path, &db.url).unwrap_err().to_string();
    assert!(err.contains("no SQLite database at"), "{err}");
    assert!(!path.exists());
}

/// After the copy, PostgreSQL hands out ids past the copied ones in every
/// table rows are added to (the blobs' too: a new mail stores one).
#[test]
fn new_rows_on_postgres_get_ids_above_the_copied_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mailrobot.db");
    let s = SqliteStore::open(&path).unwrap();
    let filled = fill(&s);
    let db = TestDatabase::create();
    let report = sqlite_to_postgres(&path, &db.url).unwrap();
    let next = |table: &str| report.tables.iter().find(|t| t.table == table).unwrap().next_id.unwrap();
    let p = PgStore::connect(&db.url).unwrap();

    let max = |ids: Vec<i64>| ids.into_iter().max().unwrap();
    let mailbox = p.add_mailbox(&new_mailbox("third", None)).unwrap().id;
    assert!(mailbox > max(s.mailboxes().unwrap().iter().map(|m| m.id).collect()));
    assert_eq!(mailbox, next("mailboxes"));
    let raw = mail("new@x", "erin@example.com", "A new one", "", "Hello");
    p.journal(mailbox, &[IncomingMail::fetched("n1", &raw)]).unwrap();
    let out = p.process_pending(Some(mailbox), 10, u64::MAX, &rules()).unwrap();
    let ticket = out[0].ticket_id.unwrap();
    assert!(ticket > max(s.tickets().unwrap().iter().map(|t| t.id).collect()));
    assert_eq!(ticket, next("tickets"));
    let journal_id = out[0].journal_id;
    assert!(journal_id > max(s.messages(&MessageFilter::default()).unwrap().iter().map(|m| m.journal_id).collect()));
    assert_eq!(p.message_raw(journal_id).unwrap().as_deref(), Some(raw.as_slice()));
    let webhook = p.add_webhook("https://b.example/", &[WebhookEvent::TicketCreated], &mut |_| b"x".to_vec()).unwrap();
    assert!(webhook.id > filled.webhook);
    let tenant = p
        .add_tenant(&NewTenant {
            name: "fabrikam".into(),
            provider: "oauth2".into(),
            client_id: "c".into(),
            ..Default::default()
        })
        .unwrap();
    assert!(tenant.id > filled.tenant);
    let connection = p
        .add_connection(&NewConnection {
            name: "second".into(),
            tenant_id: tenant.id,
            capability: Capability::Imap,
            mode: Mode::Delegated,
            scopes: vec![],
        })
        .unwrap();
    assert!(connection.id > filled.connection);
    assert!(
        p.add_admin("grace@example.com", "h").unwrap().id > max(s.admins().unwrap().iter().map(|a| a.id).collect())
    );
    assert!(
        p.add_api_token("new", "sha-new", false).unwrap().id
            > max(s.api_tokens().unwrap().iter().map(|t| t.id).collect())
    );
    let contact = p.add_contact(&NewContact { email: "zed@example.com".into(), ..Default::default() }).unwrap();
    assert!(contact.id > max(s.contacts().unwrap().iter().map(|c| c.id).collect()));
    let rule = p
        .add_rule(&NewRule {
            name: "second".into(),
            mailbox_id: None,
            position: None,
            definition: RuleDefinition {
                conditions: vec![Condition::SubjectContains("x".into())],
                actions: vec![Action::SetCategory("y".into())],
            },
        })
        .unwrap();
    assert!(rule.id > max(s.rules().unwrap().iter().map(|r| r.id).collect()));
    let template = p
        .set_template(
            &TemplateKey { kind: OutgoingKind::Acknowledgement, mailbox_id: None, language: String::new() },
            &MailTemplate { subject: "Got it".into(), text: "Thanks.".into(), html: None },
        )
        .unwrap();
    assert!(template.id > max(s.templates().unwrap().iter().map(|t| t.id).collect()));
}
