//! The REST API over HTTP: bearer tokens from `mailrobot api-token create`,
//! JSON errors with stable codes, read-only tokens, cursor pages.

mod common;

use std::time::Duration;

use common::api::{call, token};
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn tokens_read_and_write_tickets_and_read_only_ones_only_read() {
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("desk", &drop);
    for i in 1..=3 {
        std::fs::write(
            drop.join(format!("inbox/{i}.eml")),
            simple_mail(&format!("{i}@x"), &format!("Question {i}"), "", "?"),
        )
        .unwrap();
    }
    robot.run(&["run-once"]);
    let (writer, reader) = (token(&robot, "helpdesk", false), token(&robot, "dashboard", true));
    let (mut serve, address) = robot.spawn_serve(&[]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()));
    let api = format!("http://{address}/api/v1");

    // No token, an unknown one: 401 with a code.
    let (status, body) = call("GET", &format!("{api}/tickets"), None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    let (status, _) = call("GET", &format!("{api}/tickets"), Some("mrt_not-a-token"), None).await;
    assert_eq!(status, 401);

    // Pages, newest first, one at a time.
    let (status, page) = call("GET", &format!("{api}/tickets?limit=2"), Some(&reader), None).await;
    assert_eq!(status, 200, "{page}");
    let numbers: Vec<&str> = page["items"].as_array().unwrap().iter().map(|t| t["number"].as_str().unwrap()).collect();
    assert_eq!(numbers, ["TKT-000003", "TKT-000002"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = call("GET", &format!("{api}/tickets?limit=2&cursor={cursor}"), Some(&reader), None).await;
    assert_eq!(rest["items"][0]["number"], "TKT-000001");
    assert!(rest["next_cursor"].is_null());
    let (_, found) = call("GET", &format!("{api}/tickets?q=question%202"), Some(&reader), None).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1);

    // One ticket with its entries, the same view as `tickets show --json`.
    let (status, ticket) = call("GET", &format!("{api}/tickets/TKT-000002"), Some(&reader), None).await;
    assert_eq!(status, 200);
    assert_eq!(ticket, robot.json(&["tickets", "show", "TKT-000002", "--json"]));
    assert_eq!(ticket["entries"][0]["text"].as_str().map(str::trim), Some("?"));

    // A read-only token cannot change the status; a read-write one can.
    let patch = json!({"status": "closed"});
    let (status, body) = call("PATCH", &format!("{api}/tickets/TKT-000002"), Some(&reader), Some(patch.clone())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("read_only_token")), "{body}");
    let (status, body) = call("PATCH", &format!("{api}/tickets/TKT-000002"), Some(&writer), Some(patch)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("closed")), "{body}");
    assert_eq!(robot.ticket("TKT-000002")["status"], "closed");
    let (status, body) =
        call("PATCH", &format!("{api}/tickets/TKT-000002"), Some(&writer), Some(json!({"status": "done"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_status")), "{body}");
    let (status, _) = call("GET", &format!("{api}/tickets/TKT-000099"), Some(&reader), None).await;
    assert_eq!(status, 404);

    // Mailboxes: the view `mailbox list --json` prints; tokens: no secrets.
    let (_, mailboxes) = call("GET", &format!("{api}/mailboxes"), Some(&reader), None).await;
    assert_eq!(mailboxes["items"][0], robot.json(&["mailbox", "list", "--json"])[0]);
    let (_, tokens) = call("GET", &format!("{api}/api-tokens"), Some(&reader), None).await;
    assert_eq!(tokens["items"].as_array().unwrap().len(), 2);
    assert!(!tokens.to_string().contains("mrt_"), "{tokens}");
    let (status, body) = call("GET", &format!("{api}/no-such-thing"), Some(&reader), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));

    // Revoked: refused at once.
    robot.run(&["api-token", "revoke", "--name", "dashboard"]);
    let (status, _) = call("GET", &format!("{api}/tickets"), Some(&reader), None).await;
    assert_eq!(status, 401);
    // The database holds no token, only hashes.
    assert!(!robot.database_contains(writer.as_bytes()), "a token is stored in clear");
    serve.kill().unwrap();
    let _ = serve.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_journal_mailboxes_and_connections_through_the_api() {
    use common::contoso;
    let emu = contoso::emulator();
    let robot = Robot::new();
    contoso::add_tenant(&robot, &emu);
    contoso::add_connection(&robot, "desk", "graph", "delegated");
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("desk-drop", &drop);
    std::fs::write(drop.join("inbox/1.eml"), simple_mail("1@x", "With a file", "", "hi")).unwrap();
    std::fs::write(drop.join("inbox/2.eml"), b"\x00 not a mail").unwrap();
    robot.run(&["run-once"]);
    let (writer, reader) = (token(&robot, "ops", false), token(&robot, "viewer", true));
    let (mut serve, address) = robot.spawn_serve(&[]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()));
    let api = format!("http://{address}/api/v1");

    // The journal: the same rows as `messages list --json`, a page at a time.
    let (_, failed) = call("GET", &format!("{api}/messages?state=failed"), Some(&reader), None).await;
    let cli = robot.json(&["messages", "list", "--json", "--state", "failed"]);
    assert_eq!(failed["items"][0], cli[0]);
    let id = cli[0]["id"].as_i64().unwrap();
    let raw = reqwest::Client::new().get(format!("{api}/messages/{id}/raw")).bearer_auth(&reader).send().await.unwrap();
    assert_eq!(raw.headers()["content-type"], "application/octet-stream");
    assert_eq!(raw.bytes().await.unwrap().as_ref(), b"\x00 not a mail");
    let (status, _) = call("POST", &format!("{api}/messages/{id}/retry"), Some(&reader), None).await;
    assert_eq!(status, 403);
    let (status, body) = call("POST", &format!("{api}/messages/{id}/retry"), Some(&writer), None).await;
    assert_eq!((status, body["ok"].as_bool()), (200, Some(true)), "{body}");
    let (status, body) = call("POST", &format!("{api}/messages/{id}/retry"), Some(&writer), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("not_retryable")), "{body}");

    // Mailboxes: test and poll.
    let (_, tested) = call("POST", &format!("{api}/mailboxes/desk-drop/test"), Some(&writer), None).await;
    assert_eq!(tested["ok"], true, "{tested}");
    let (_, polled) = call("POST", &format!("{api}/mailboxes/desk-drop/poll"), Some(&writer), None).await;
    assert!(polled["message"].as_str().unwrap().contains("processed"), "{polled}");

    // Tenants and connections: the CLI's views, no secret.
    let (_, tenants) = call("GET", &format!("{api}/tenants"), Some(&reader), None).await;
    assert_eq!(tenants["items"][0], robot.json(&["tenant", "list", "--json"])[0]);
    assert!(!tenants.to_string().contains(contoso::SECRET));
    // Setup Authentication started through the API, finished in a browser.
    let (status, started) = call("POST", &format!("{api}/connections/desk/authorize"), Some(&writer), None).await;
    assert_eq!(status, 200, "{started}");
    let url = started["authorize_url"].as_str().unwrap();
    let (status, body, _) =
        common::oauth::sign_in_as(&emu, contoso::DOMAIN, contoso::AGENT, contoso::AGENT_PASSWORD, url, true).await;
    assert_eq!(status, 200, "{body}");
    let (_, connections) = call("GET", &format!("{api}/connections"), Some(&reader), None).await;
    assert_eq!(connections["items"][0]["state"], "ready", "{connections}");
    assert_eq!(connections["items"][0], robot.json(&["connection", "list", "--json"])[0]);
    let (_, tested) = call("POST", &format!("{api}/connections/desk/test"), Some(&writer), None).await;
    assert_eq!(tested["ok"], true, "{tested}");
    serve.kill().unwrap();
    let _ = serve.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_added_paused_listed_with_deliveries_resent_and_removed() {
    const HOOK_SECRET: &str = "whsec_q0a2fPKAXz4xZ9eWvC9nhrD0sGZbyVsGN7kq1TLk8qI=";
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("desk", &drop);
    std::fs::write(drop.join("inbox/1.eml"), simple_mail("1@x", "Question", "", "?")).unwrap();
    robot.run(&["run-once"]);
    let (writer, reader) = (token(&robot, "helpdesk", false), token(&robot, "dashboard", true));
    let (mut serve, address) = robot.spawn_serve(&[]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()));
    let api = format!("http://{address}/api/v1");
    let hook = json!({"url": "http://127.0.0.1:9/hook", "secret": HOOK_SECRET, "events": ["ticket.status_changed"]});

    let (status, _) = call("POST", &format!("{api}/webhooks"), Some(&reader), Some(hook.clone())).await;
    assert_eq!(status, 403, "read-only tokens add no webhook");
    let (status, body) =
        call("POST", &format!("{api}/webhooks"), Some(&writer), Some(json!({"url": "http://x/", "secret": "s"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_webhook")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("whsec_"), "{body}");
    let (status, body) = call("POST", &format!("{api}/webhooks"), Some(&writer), Some(json!({"url": 1}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_body")), "{body}");
    let (status, created) = call("POST", &format!("{api}/webhooks"), Some(&writer), Some(hook)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["events"], json!(["ticket.status_changed"]));
    assert!(!created.to_string().contains("whsec_"), "the secret is write-only: {created}");
    let id = created["id"].as_i64().unwrap();

    // Paused: events queue, nothing is attempted.
    let (status, paused) =
        call("PATCH", &format!("{api}/webhooks/{id}"), Some(&writer), Some(json!({"enabled": false}))).await;
    assert_eq!((status, paused["enabled"].as_bool()), (200, Some(false)), "{paused}");
    let (status, _) =
        call("PATCH", &format!("{api}/tickets/TKT-000001"), Some(&writer), Some(json!({"status": "pending"}))).await;
    assert_eq!(status, 200);
    let (_, page) = call("GET", &format!("{api}/webhooks/{id}/deliveries"), Some(&reader), None).await;
    let delivery = &page["items"][0];
    assert_eq!(
        (&delivery["event"], &delivery["ticket"], &delivery["state"], &delivery["attempts"]),
        (&json!("ticket.status_changed"), &json!("TKT-000001"), &json!("queued"), &json!(0)),
        "{page}"
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(robot.json(&["webhook", "deliveries", "--json"])[0], *delivery, "the CLI shows the same view");
    let (_, listed) = call("GET", &format!("{api}/webhooks"), Some(&reader), None).await;
    assert_eq!(listed["items"][0]["pending"], 1, "{listed}");
    let delivery_id = delivery["id"].as_i64().unwrap();
    let resend = format!("{api}/webhooks/{id}/deliveries/{delivery_id}/resend");
    let (status, _) = call("POST", &resend, Some(&reader), None).await;
    assert_eq!(status, 403);
    let (status, resent) = call("POST", &resend, Some(&writer), None).await;
    assert_eq!((status, resent["state"].as_str()), (200, Some("queued")), "{resent}");
    let (status, _) = call("POST", &format!("{api}/webhooks/{id}/deliveries/999/resend"), Some(&writer), None).await;
    assert_eq!(status, 404);
    let (status, body) = call("GET", &format!("{api}/webhooks/{id}/deliveries?state=lost"), Some(&reader), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_state")), "{body}");

    let (status, _) = call("DELETE", &format!("{api}/webhooks/{id}"), Some(&reader), None).await;
    assert_eq!(status, 403);
    let (status, body) = call("DELETE", &format!("{api}/webhooks/{id}"), Some(&writer), None).await;
    assert_eq!((status, body["ok"].as_bool()), (200, Some(true)), "{body}");
    let (status, body) = call("GET", &format!("{api}/webhooks/{id}"), Some(&reader), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    serve.kill().unwrap();
    let _ = serve.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_connections_mailboxes_services_and_tokens_are_made_and_changed_through_the_api() {
    let emu = contoso::emulator();
    let robot = Robot::new();
    let (writer, reader) = (token(&robot, "ops", false), token(&robot, "viewer", true));
    let (mut serve, address) = robot.spawn_serve(&[]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()));
    let api = format!("http://{address}/api/v1");

    // A tenant, with a write-only secret.
    let tenant = json!({
        "name": "contoso", "client_id": contoso::CLIENT_ID, "tenant": contoso::DOMAIN,
        "client_secret": contoso::SECRET, "secret_expires": "2027-06-30",
        "authority_url": emu.base_url(), "graph_url": emu.base_url(),
    });
    let (status, _) = call("POST", &format!("{api}/tenants"), Some(&reader), Some(tenant.clone())).await;
    assert_eq!(status, 403);
    let (status, body) =
        call("POST", &format!("{api}/tenants"), Some(&writer), Some(json!({"name": "x", "colour": 1}))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_body")),
        "unknown fields are refused: {body}"
    );
    let (status, created) = call("POST", &format!("{api}/tenants"), Some(&writer), Some(tenant)).await;
    assert_eq!(status, 201, "{created}");
    assert!(!created.to_string().contains(contoso::SECRET), "{created}");
    assert!(created["client_secret"].as_str().unwrap().starts_with("set on "), "{created}");
    let ews = format!("{}/EWS/Exchange.asmx", emu.base_url());
    let (status, changed) =
        call("PATCH", &format!("{api}/tenants/contoso"), Some(&writer), Some(json!({"ews_url": ews}))).await;
    assert_eq!((status, changed["ews_url"].as_str()), (200, Some(ews.as_str())), "{changed}");
    assert_eq!(changed["client_id"], contoso::CLIENT_ID, "what is not sent stays");
    assert_eq!(changed["client_secret"], created["client_secret"], "the secret stays");
    let (_, shown) = call("GET", &format!("{api}/tenants/contoso"), Some(&reader), None).await;
    assert_eq!(shown, robot.json(&["tenant", "list", "--json"])[0]);

    // A connection; its test gets a token from the emulator (application mode).
    let (status, connection) = call(
        "POST",
        &format!("{api}/connections"),
        Some(&writer),
        Some(json!({"name": "desk-app", "tenant": "contoso", "capability": "graph", "mode": "application"})),
    )
    .await;
    assert_eq!(status, 201, "{connection}");
    assert_eq!(connection["capability_label"], "Exchange / Microsoft Graph");
    let (status, body) = call(
        "POST",
        &format!("{api}/connections"),
        Some(&writer),
        Some(json!({"name": "bad", "tenant": "nowhere", "capability": "graph", "mode": "delegated"})),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_request")), "{body}");
    let (_, tested) = call("POST", &format!("{api}/connections/desk-app/test"), Some(&writer), None).await;
    assert_eq!(tested["ok"], true, "{tested}");
    let (_, shown) = call("GET", &format!("{api}/connections/desk-app"), Some(&reader), None).await;
    assert_eq!(shown["state"], "ready", "{shown}");
    // Token requests are counted per connection (by id: names stay out of metrics).
    let (_, text) = http_get(&address, "/metrics").unwrap();
    let refreshes = format!("mailrobot_token_refreshes_total{{connection=\"{}\",outcome=\"ok\"}}", shown["id"]);
    assert_eq!(metric(&text, &refreshes), Some(1.0), "{text}");

    // A mailbox: made, changed, disabled, removed.
    let drop = robot.dir.path().join("api-drop");
    let (status, mailbox) = call(
        "POST",
        &format!("{api}/mailboxes"),
        Some(&writer),
        Some(json!({"name": "desk", "kind": "drop-folder", "path": drop.to_str().unwrap()})),
    )
    .await;
    assert_eq!((status, mailbox["poll_seconds"].as_i64()), (201, Some(60)), "{mailbox}");
    let (status, mailbox) = call(
        "PATCH",
        &format!("{api}/mailboxes/desk"),
        Some(&writer),
        Some(json!({"poll_seconds": 5, "enabled": false})),
    )
    .await;
    assert_eq!((status, mailbox["poll_seconds"].as_i64(), mailbox["enabled"].as_bool()), (200, Some(5), Some(false)));
    assert_eq!(mailbox, robot.json(&["mailbox", "list", "--json"])[0]);
    let (status, body) = call("DELETE", &format!("{api}/mailboxes/desk"), Some(&writer), None).await;
    assert_eq!((status, body["ok"].as_bool()), (200, Some(true)), "{body}");
    let (status, _) = call("GET", &format!("{api}/mailboxes/desk"), Some(&reader), None).await;
    assert_eq!(status, 404);

    // Services: default scopes per capability and mode.
    let (_, services) = call("GET", &format!("{api}/services"), Some(&reader), None).await;
    let graph =
        services["items"].as_array().unwrap().iter().find(|s| s["capability"] == "graph" && s["mode"] == "delegated");
    assert!(
        graph.unwrap()["scopes"].as_array().unwrap().iter().any(|s| s.as_str().unwrap().contains("Mail.")),
        "{services}"
    );
    let scopes = json!({"scopes": ["offline_access", "https://graph.microsoft.com/Mail.ReadWrite"]});
    let (status, set) =
        call("PUT", &format!("{api}/services/graph/delegated"), Some(&writer), Some(scopes.clone())).await;
    assert_eq!((status, &set["scopes"]), (200, &scopes["scopes"]), "{set}");
    let (status, _) = call("PUT", &format!("{api}/services/fax/delegated"), Some(&writer), Some(scopes)).await;
    assert_eq!(status, 404);

    // API tokens: made (shown once), used, revoked.
    let (status, made) =
        call("POST", &format!("{api}/api-tokens"), Some(&writer), Some(json!({"name": "bot", "read_only": true})))
            .await;
    assert_eq!(status, 201, "{made}");
    let bot = made["token"].as_str().unwrap().to_string();
    let (status, listed) = call("GET", &format!("{api}/api-tokens"), Some(&bot), None).await;
    assert_eq!(status, 200);
    assert!(!listed.to_string().contains(&bot), "a token is never listed: {listed}");
    let (status, body) = call("POST", &format!("{api}/api-tokens"), Some(&writer), Some(json!({"name": "bot"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("exists")), "{body}");
    let (status, _) = call("DELETE", &format!("{api}/api-tokens/bot"), Some(&bot), None).await;
    assert_eq!(status, 403, "a read-only token revokes nothing");
    let (status, _) = call("DELETE", &format!("{api}/api-tokens/bot"), Some(&writer), None).await;
    assert_eq!(status, 200);
    let (status, _) = call("GET", &format!("{api}/api-tokens"), Some(&bot), None).await;
    assert_eq!(status, 401);
    serve.kill().unwrap();
    let _ = serve.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_templates_and_contacts_through_the_api() {
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    let path = drop.to_str().unwrap();
    robot.run(&["mailbox", "add", "--name", "desk", "--kind", "drop-folder", "--path", path, "--poll-seconds", "1"]);
    let (writer, reader) = (token(&robot, "helpdesk", false), token(&robot, "dashboard", true));
    let (mut serve, address) = robot.spawn_serve(&[]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()));
    let api = format!("http://{address}/api/v1");

    // Rules: added (refused with why when they cannot work), listed, used, tested, removed.
    let rule = json!({"name": "vip", "mailbox": "desk", "conditions": [{"from": ["vip.example"]}],
        "actions": [{"set_priority": "high"}, {"add_tags": ["vip"]}]});
    let (status, _) = call("POST", &format!("{api}/rules"), Some(&reader), Some(rule.clone())).await;
    assert_eq!(status, 403, "a read-only token changes nothing");
    let (status, added) = call("POST", &format!("{api}/rules"), Some(&writer), Some(rule)).await;
    assert_eq!((status, &added["position"], &added["mailbox"]), (201, &json!(1), &json!("desk")), "{added}");
    let bad = json!({"name": "bad", "conditions": [{"subject_regex": "("}], "actions": ["ignore"]});
    let (status, body) = call("POST", &format!("{api}/rules"), Some(&writer), Some(bad)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_request")), "{body}");
    let unknown = json!({"name": "x", "actions": ["explode"]});
    let (status, _) = call("POST", &format!("{api}/rules"), Some(&writer), Some(unknown)).await;
    assert_eq!(status, 422);
    let (_, listed) = call("GET", &format!("{api}/rules"), Some(&reader), None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");

    std::fs::write(
        drop.join("inbox/1.eml"),
        b"From: Val <val@vip.example>\r\nSubject: Help\r\nMessage-ID: <v1@vip.example>\r\n\r\nx\r\n",
    )
    .unwrap();
    // `serve` polls the mailbox (a `run-once` beside it would leave it to serve).
    assert!(wait_until(Duration::from_secs(20), || robot.tickets().len() == 1));
    let (_, tickets) = call("GET", &format!("{api}/tickets"), Some(&reader), None).await;
    assert_eq!((&tickets["items"][0]["priority"], &tickets["items"][0]["tags"]), (&json!("high"), &json!(["vip"])));
    let id = robot.messages()[0]["id"].as_i64().unwrap();
    let (status, test) = call("GET", &format!("{api}/messages/{id}/rules"), Some(&reader), None).await;
    assert_eq!((status, &test["matched"][0]["name"]), (200, &json!("vip")), "{test}");
    let (status, _) = call("GET", &format!("{api}/messages/999/rules"), Some(&reader), None).await;
    assert_eq!(status, 404);
    let rule_id = added["id"].as_i64().unwrap();
    let (status, _) = call("DELETE", &format!("{api}/rules/{rule_id}"), Some(&writer), None).await;
    assert_eq!(status, 204);
    let (status, _) = call("DELETE", &format!("{api}/rules/{rule_id}"), Some(&writer), None).await;
    assert_eq!(status, 404);

    // Templates: stored per kind, mailbox and language; previewed; refused with a typo.
    let template = json!({"subject": "{{ ticket.tag }} Eingang", "text": "Hallo {{ requester.name }}"});
    let url = format!("{api}/templates/acknowledgement?mailbox=desk&language=de");
    let (status, stored) = call("PUT", &url, Some(&writer), Some(template)).await;
    assert_eq!((status, &stored["language"], &stored["mailbox"]), (200, &json!("de"), &json!("desk")), "{stored}");
    let typo = json!({"subject": "{{ tikcet.tag }}", "text": "x"});
    let (status, body) = call("PUT", &url, Some(&writer), Some(typo)).await;
    assert_eq!(status, 422, "{body}");
    let (status, preview) =
        call("GET", &format!("{api}/templates/acknowledgement/preview?mailbox=desk&language=de"), Some(&reader), None)
            .await;
    assert_eq!((status, &preview["preview"]["subject"]), (200, &json!("[#123] Eingang")), "{preview}");
    let (status, _) = call("GET", &format!("{api}/templates/nonsense/preview"), Some(&reader), None).await;
    assert_eq!(status, 404);
    let (_, listed) = call("GET", &format!("{api}/templates"), Some(&reader), None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let (status, _) = call("DELETE", &url, Some(&writer), None).await;
    assert_eq!(status, 204);

    // The reply transport: set, shown without its password, refused when it cannot work.
    let reply = json!({"reply": {"via": "smtp", "smtp_server": "127.0.0.1:2525", "smtp_tls": "none",
        "smtp_username": "desk", "smtp_password": "Pa55-word", "from": "desk@contoso.test"}});
    let (status, mailbox) = call("PATCH", &format!("{api}/mailboxes/desk"), Some(&writer), Some(reply)).await;
    assert_eq!((status, &mailbox["settings"]["reply"]["via"]), (200, &json!("smtp")), "{mailbox}");
    assert!(!mailbox.to_string().contains("Pa55-word"), "{mailbox}");
    let graph = json!({"reply": {"via": "graph"}});
    let (status, body) = call("PATCH", &format!("{api}/mailboxes/desk"), Some(&writer), Some(graph)).await;
    assert_eq!(status, 422, "a drop folder has no Graph connection: {body}");

    // Contacts: the requester is one; more are added; one shows its tickets.
    let (_, contacts) = call("GET", &format!("{api}/contacts"), Some(&reader), None).await;
    assert_eq!(contacts["items"][0]["email"], "val@vip.example", "{contacts}");
    let bob = json!({"email": "Bob@Partner.example", "name": "Bob", "organisation": "Partner Ltd"});
    let (status, added) = call("POST", &format!("{api}/contacts"), Some(&writer), Some(bob)).await;
    assert_eq!((status, &added["organisation"]), (201, &json!("Partner Ltd")), "{added}");
    let (status, _) = call("POST", &format!("{api}/contacts"), Some(&writer), Some(json!({"email": "nope"}))).await;
    assert_eq!(status, 422);
    let (status, val) = call("GET", &format!("{api}/contacts/VAL+x@vip.example"), Some(&reader), None).await;
    assert_eq!((status, &val["requested_tickets"][0]["subject"]), (200, &json!("Help")), "{val}");
    let (status, _) = call("GET", &format!("{api}/contacts/nobody@x.example"), Some(&reader), None).await;
    assert_eq!(status, 404);
    serve.kill().unwrap();
    let _ = serve.wait();
}
