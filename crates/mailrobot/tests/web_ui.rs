//! The admin UI in a real browser (headless Chromium over WebDriver), and
//! the rules around its sessions checked over plain HTTP.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use mailrobot_testkit::browser::Browser;

const EMAIL: &str = "ada.admin@contoso.test";
const PASSWORD: &str = "a long and good passphrase";

fn create_admin(robot: &Robot, verb: &str, email: &str, password: &str) -> std::process::Output {
    let mut child = robot
        .command(&["admin", verb, "--email", email, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

/// A robot with an administrator and a drop-folder mailbox that has made
/// one ticket and kept one broken mail.
fn robot_with_a_mailbox() -> Robot {
    let robot = Robot::new();
    let out = create_admin(&robot, "create", EMAIL, PASSWORD);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("support-desk", &drop);
    std::fs::write(drop.join("inbox/1.eml"), simple_mail("1@x", "Printer on fire", "", "help")).unwrap();
    std::fs::write(drop.join("inbox/2.eml"), b"\x00\x01 not a mail").unwrap();
    robot.run(&["run-once"]);
    robot
}

#[tokio::test(flavor = "multi_thread")]
async fn an_administrator_signs_in_and_sees_every_mailbox_in_words() {
    let robot = robot_with_a_mailbox();
    let (mut serve, address) = robot.spawn_serve(&[]);
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots/web_ui-sign-in");
    let mut browser = Browser::start(&shots).await;

    // `/` leads to sign-in.
    browser.goto(&format!("http://{address}/")).await;
    browser.heading("Sign in").await;
    assert!(browser.url().await.ends_with("/sign-in"));
    browser.screenshot("sign-in").await;

    browser.fill("Email", EMAIL).await;
    browser.fill("Password", "not the password at all").await;
    browser.click_button("Sign in").await;
    browser.heading("Sign in").await;
    assert!(browser.text().await.contains("The email or password is not right."), "{}", browser.text().await);
    browser.screenshot("wrong-password").await;

    browser.fill("Email", EMAIL).await;
    browser.fill("Password", PASSWORD).await;
    browser.click_button("Sign in").await;
    browser.heading("Dashboard").await;
    let row = browser.row("support-desk").await;
    assert_eq!(&row[..3], ["support-desk", "Drop folder", "ok"], "{row:?}");
    assert_eq!(&row[4..7], ["2", "0", "1"], "mails today, waiting, failed: {row:?}");
    // Which node polls it: this serve's, as `nodes list` names it.
    let node = robot.json(&["nodes", "list", "--json"])[0]["node_id"].as_str().unwrap().to_string();
    assert_eq!(row[7], node, "{row:?}");
    assert!(browser.text().await.contains(EMAIL));
    browser.screenshot("dashboard").await;

    browser.click_button("Sign out").await;
    browser.heading("Sign in").await;
    // Signed out means signed out: the dashboard sends the browser back.
    browser.goto(&format!("http://{address}/dashboard")).await;
    browser.heading("Sign in").await;

    browser.close().await;
    serve.kill().unwrap();
    let _ = serve.wait();
}

fn http_post(address: &str, path: &str, cookie: &str, form: &str) -> HttpAnswer {
    http_post_form(address, path, cookie, form).unwrap()
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

#[test]
fn sign_in_needs_its_own_form_and_slows_down_guessing() {
    let robot = robot_with_a_mailbox();
    let (mut serve, address) = robot.spawn_serve(&[]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()));

    let page = http_get_full(&address, "/sign-in").unwrap();
    assert_eq!(page.status, 200);
    let csp = &page.headers["content-security-policy"];
    assert!(csp.contains("form-action 'self'") && csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    let set_cookie = &page.headers["set-cookie"];
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    let token = common::oauth::hidden(&page.body, "csrf");
    let cookie = format!("mailrobot_sign_in={token}");

    // A form posted from elsewhere carries no sign-in cookie: refused even
    // with the right password.
    let foreign =
        http_post(&address, "/sign-in", "", &form(&[("csrf", &token), ("email", EMAIL), ("password", PASSWORD)]));
    assert_eq!(foreign.status, 403, "{}", foreign.body);

    // Five wrong passwords, then even the right one waits.
    for _ in 0..5 {
        let wrong = http_post(
            &address,
            "/sign-in",
            &cookie,
            &form(&[("csrf", &token), ("email", EMAIL), ("password", "guess-guess-guess")]),
        );
        assert_eq!(wrong.status, 401);
    }
    let held =
        http_post(&address, "/sign-in", &cookie, &form(&[("csrf", &token), ("email", EMAIL), ("password", PASSWORD)]));
    assert_eq!(held.status, 429, "{}", held.body);
    assert!(held.body.contains("Too many failed sign-ins"), "{}", held.body);

    // The dashboard and sign-out need a session; sign-out also its CSRF token.
    let dashboard = http_get_full(&address, "/dashboard").unwrap();
    assert_eq!((dashboard.status, dashboard.headers["location"].as_str()), (303, "/sign-in"));
    let sign_out = http_post(&address, "/sign-out", "mailrobot_session=forged", &form(&[("csrf", "x")]));
    assert_eq!(sign_out.status, 303);

    serve.kill().unwrap();
    let _ = serve.wait();
}

#[test]
fn administrators_are_added_listed_and_removed_with_passwords_from_stdin() {
    let robot = Robot::new();
    let short = create_admin(&robot, "create", EMAIL, "short");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 12 characters"));
    assert!(create_admin(&robot, "create", EMAIL, PASSWORD).status.success());
    let second = create_admin(&robot, "create", "bob@contoso.test", PASSWORD);
    assert!(String::from_utf8_lossy(&second.stderr).contains("admin add"), "only the first is created");
    assert!(create_admin(&robot, "add", "bob@contoso.test", PASSWORD).status.success());
    let again = create_admin(&robot, "add", "BOB@contoso.test", PASSWORD);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let list = robot.json(&["admin", "list", "--json"]);
    let emails: Vec<&str> = list.as_array().unwrap().iter().map(|a| a["email"].as_str().unwrap()).collect();
    assert_eq!(emails, [EMAIL, "bob@contoso.test"]);
    assert!(list.to_string().find("argon2").is_none(), "hashes never leave the database");
    robot.run(&["admin", "remove", "--email", "bob@contoso.test"]);
    assert_eq!(robot.json(&["admin", "list", "--json"]).as_array().unwrap().len(), 1);
    // The password is never an argument.
    let argv = robot.run_raw(&["admin", "add", "--email", "x@y.z", "--password", PASSWORD], &[]);
    assert!(!argv.status.success());
}

/// Signs in on a fresh browser; returns it on the dashboard.
async fn signed_in_browser(address: &str, shots: &str) -> Browser {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots").join(shots);
    let browser = Browser::start(&dir).await;
    browser.goto(&format!("http://{address}/sign-in")).await;
    browser.fill("Email", EMAIL).await;
    browser.fill("Password", PASSWORD).await;
    browser.click_button("Sign in").await;
    browser.heading("Dashboard").await;
    browser
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_added_and_edited_with_a_write_only_secret() {
    const SECRET: &str = "Xy7~secret-value-from-the-portal";
    let robot = robot_with_a_mailbox();
    let (mut serve, address) = robot.spawn_serve(&[]);
    let mut browser = signed_in_browser(&address, "web_ui-tenants").await;

    browser.click_link("Tenants").await;
    browser.heading("Tenants").await;
    browser.click_link("New tenant").await;
    browser.heading("New tenant").await;
    // Neither a secret nor a certificate: refused, what was typed is kept.
    browser.fill("Name", "contoso").await;
    browser.fill("Client ID", "6731de76-14a6-49ae-97bc-6eba6914391e").await;
    browser.fill("Tenant", "contoso.onmicrosoft.com").await;
    browser.click_button("Save").await;
    browser.heading("New tenant").await;
    assert!(browser.text().await.contains("client secret"), "{}", browser.text().await);
    browser.screenshot("tenant-refused").await;

    browser.fill("Client secret", SECRET).await;
    browser.set_value("Secret expires", "2027-06-30").await;
    browser.click_button("Save").await;
    browser.heading("Tenant contoso").await;
    assert!(browser.text().await.contains("Tenant contoso saved."));
    assert!(!browser.source().await.contains(SECRET), "the secret is never shown back");
    browser.screenshot("tenant-saved").await;

    // Edit: a new client id; the empty secret field keeps the stored secret.
    browser.fill("Client ID", "11111111-2222-4333-8444-555555555555").await;
    browser.click_button("Save").await;
    browser.heading("Tenant contoso").await;
    browser.click_link("Tenants").await;
    let row = browser.row("contoso").await;
    assert_eq!(row[1], "11111111-2222-4333-8444-555555555555");
    assert_eq!(row[2], "contoso.onmicrosoft.com");
    assert!(row[3].starts_with("set on "), "{row:?}");
    assert_eq!(row[4], "2027-06-30");
    browser.screenshot("tenants").await;
    browser.close().await;

    // The CLI sees the same tenant; the database holds the secret sealed only.
    let tenants = robot.json(&["tenant", "list", "--json"]);
    assert_eq!(tenants[0]["client_id"], "11111111-2222-4333-8444-555555555555");
    assert_eq!(tenants[0]["secret_expires_at"], "2027-06-30T00:00:00Z");
    assert!(!robot.database_contains(SECRET.as_bytes()), "the secret is stored in clear");
    serve.kill().unwrap();
    let _ = serve.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn mailboxes_are_added_disabled_enabled_and_deleted_after_a_confirmation() {
    let robot = robot_with_a_mailbox();
    let (mut serve, address) = robot.spawn_serve(&[]);
    let mut browser = signed_in_browser(&address, "web_ui-mailboxes").await;
    browser.click_link("Mailboxes").await;
    browser.heading("Mailboxes").await;
    assert_eq!(&browser.row("support-desk").await[..3], ["support-desk", "Drop folder", "ok"]);

    // An IMAP mailbox without a host: refused, and the password typed is not shown back.
    browser.click_link("New mailbox").await;
    browser.fill("Name", "imap-desk").await;
    browser.select("Type", "IMAP").await;
    browser.fill("Username", "desk").await;
    browser.fill("Password", "pw-typed-in-the-form").await;
    browser.click_button("Save").await;
    browser.heading("New mailbox").await;
    assert!(browser.text().await.contains("needs --host"), "{}", browser.text().await);
    assert!(!browser.source().await.contains("pw-typed-in-the-form"));

    let second = robot.dir.path().join("second-drop");
    browser.fill("Name", "second").await;
    browser.select("Type", "Drop folder").await;
    browser.fill("Drop folder path", second.to_str().unwrap()).await;
    browser.fill("Poll every (seconds)", "30").await;
    browser.click_button("Save").await;
    browser.heading("Mailbox second").await;
    assert!(second.join("inbox").is_dir(), "the drop folder is prepared");
    browser.click_button("Disable").await;
    assert!(browser.text().await.contains("Mailbox second disabled."));
    assert!(browser.text().await.contains("disabled"));
    // No node polls a disabled mailbox, and Poll now says so.
    browser.click_button("Poll now").await;
    let text = browser.text().await;
    let refused = "Poll failed: mailbox second is disabled, and nodes poll only enabled mailboxes: enable it first";
    assert!(text.contains(refused), "{text}");
    browser.screenshot("mailbox-disabled-poll").await;
    browser.click_button("Enable").await;
    assert!(browser.text().await.contains("Mailbox second enabled."));
    // Settings: a drop folder has no folders or password to edit; its pace it has.
    assert!(!browser.source().await.contains("id=\"processed_folder\""));
    browser.fill("Poll every (seconds)", "45").await;
    browser.click_button("Save").await;
    assert!(browser.text().await.contains("Mailbox second saved."), "{}", browser.text().await);

    browser.screenshot("mailbox").await;
    browser.click_link("Delete").await;
    browser.heading("Delete mailbox second?").await;
    browser.screenshot("delete-confirmation").await;
    browser.click_button("Delete").await;
    browser.heading("Mailboxes").await;
    assert!(!browser.text().await.lines().any(|l| l.starts_with("second ")), "{}", browser.text().await);
    browser.close().await;
    let names: Vec<String> = robot
        .json(&["mailbox", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("second (removed ")), "{names:?}");
    let second = robot.json(&["mailbox", "list", "--json"]);
    let second = second.as_array().unwrap().iter().find(|m| m["name"].as_str().unwrap().starts_with("second")).unwrap();
    assert_eq!(second["poll_seconds"], 45);
    serve.kill().unwrap();
    let _ = serve.wait();
}

/// A loopback server that counts every request: where a hostile mail's
/// remote content would be fetched from.
fn counting_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut stream = stream;
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
    });
    (base, hits)
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_html_runs_no_script_and_loads_nothing_remote() {
    let (remote, hits) = counting_server();
    let robot = Robot::new();
    assert!(create_admin(&robot, "create", EMAIL, PASSWORD).status.success());
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("desk", &drop);
    let html = format!(
        "<p>Hello</p><script>new Image().src='{remote}/script';</script>\
         <img src=\"x\" onerror=\"new Image().src='{remote}/onerror'\">\
         <img src=\"{remote}/remote-image.png\">\
         <div style=\"width: expression(alert(1)); background: url({remote}/css-background)\">styled</div>\
         <style>@import url({remote}/css-import); body {{ background: url({remote}/css-body) }}</style>\
         <a href=\"javascript:new Image().src='{remote}/js-link'\">link</a>\
         <iframe src=\"{remote}/frame\"></iframe><object data=\"{remote}/object\"></object>"
    );
    let mail = format!(
        "From: Mallory <mallory@example.com>\r\nTo: desk@example.com\r\nSubject: Hostile HTML\r\n\
         Message-ID: <hostile@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
    );
    std::fs::write(drop.join("inbox/hostile.eml"), mail).unwrap();
    robot.run(&["run-once"]);
    let number = robot.tickets()[0]["number"].as_str().unwrap().to_string();
    let (mut serve, address) = robot.spawn_serve(&[]);
    let mut browser = signed_in_browser(&address, "web_ui-hostile-html").await;
    browser.goto(&format!("http://{address}/tickets/{number}")).await;
    browser.heading(&format!("{number} Hostile HTML")).await;
    // Give the frame time to load whatever it would load.
    tokio::time::sleep(Duration::from_secs(2)).await;
    browser.screenshot("hostile-ticket").await;
    let frame =
        http_get_with_cookie(&address, &format!("/tickets/{number}/entries/1/html"), &browser.cookie_header().await);
    assert!(frame.contains("Hello") && !frame.contains("<script") && !frame.contains("onerror"), "{frame}");
    assert!(frame.to_lowercase().contains("content-security-policy: default-src 'none'"), "{frame}");
    browser.close().await;
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "the browser fetched something from the mail");
    serve.kill().unwrap();
    let _ = serve.wait();
}

/// The ticket of each fixture, by subject.
fn ticket_number(robot: &Robot, subject: &str) -> String {
    let tickets = robot.tickets();
    let t = tickets.iter().find(|t| t["subject"] == subject).unwrap_or_else(|| panic!("no ticket {subject:?}"));
    t["number"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ticket_page_folds_quoted_history_shows_inline_images_and_unpacks_winmail_dat() {
    let robot = Robot::new();
    assert!(create_admin(&robot, "create", EMAIL, PASSWORD).status.success());
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("desk", &drop);
    for (name, path) in [
        ("gmail", "reply/gmail-on-wrote-gmail-quote.eml"),
        ("inline", "new/inline-image-cid.eml"),
        ("tnef", "new/tnef-winmail-dat-attachments.eml"),
    ] {
        std::fs::write(drop.join(format!("inbox/{name}.eml")), fixture(path)).unwrap();
    }
    robot.run(&["run-once"]);
    let reply = ticket_number(&robot, "[TKT-000117] New laptop for Renee");
    let inline = ticket_number(&robot, "Error message when opening SAP");
    let tnef = ticket_number(&robot, "Angebot VPN-Lizenzen und Fehlermeldung");
    // The JSON view: the whole text and the new text.
    let entry = &robot.ticket(&reply)["entries"][0];
    assert_eq!(entry["new_text"], "Great, Tuesday works. Please bring the docking station too.\r\n\r\nRaj");
    assert!(entry["text"].as_str().unwrap().contains("> the laptop is ready."));

    let (mut serve, address) = robot.spawn_serve(&[]);
    let mut browser = signed_in_browser(&address, "web_ui-mail-content").await;
    let cookie = browser.cookie_header().await;
    browser.goto(&format!("http://{address}/tickets/{reply}")).await;
    let shown = browser.text().await;
    assert!(shown.contains("Great, Tuesday works."), "{shown}");
    assert!(!shown.contains("the laptop is ready"), "the history is folded away: {shown}");
    browser.open_section("Quoted history (the whole text)").await;
    assert!(browser.text().await.contains("> the laptop is ready."));
    browser.screenshot("reply-history-open").await;
    let frame = |path: String| http_get_with_cookie(&address, &path, &cookie);
    let new_html = frame(format!("/tickets/{reply}/entries/1/html?part=new"));
    assert!(new_html.contains("Great, Tuesday works.") && !new_html.contains("the laptop is ready"), "{new_html}");
    assert!(frame(format!("/tickets/{reply}/entries/1/html")).contains("the laptop is ready"));

    browser.goto(&format!("http://{address}/tickets/{inline}")).await;
    let shown = browser.text().await;
    assert!(shown.contains("image001.png") && shown.contains("inline"), "{shown}");
    browser.screenshot("inline-image").await;
    let html = frame(format!("/tickets/{inline}/entries/1/html"));
    assert!(html.contains("src=\"data:image/png;base64,iVBOR") && !html.contains("cid:"), "{html}");

    browser.goto(&format!("http://{address}/tickets/{tnef}")).await;
    let shown = browser.text().await;
    for name in ["Angebot VPN März 2025.pdf", "Fehlermeldung.png", "Zugang.txt"] {
        assert!(shown.contains(name), "{name} in {shown}");
    }
    // The mail has its own text part: the RTF body is not one more file.
    assert!(!shown.contains("winmail.dat") && !shown.contains("body.rtf"), "{shown}");
    browser.screenshot("winmail-dat-unpacked").await;
    browser.close().await;
    serve.kill().unwrap();
    let _ = serve.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ticket_status_is_changed_and_tickets_are_filtered_by_it() {
    let robot = robot_with_a_mailbox();
    let number = robot.tickets()[0]["number"].as_str().unwrap().to_string();
    let (mut serve, address) = robot.spawn_serve(&[]);
    let mut browser = signed_in_browser(&address, "web_ui-ticket-status").await;
    browser.click_link("Tickets").await;
    browser.click_link(&number).await;
    browser.click_button("Pending").await;
    assert!(browser.text().await.contains(&format!("{number} is now Pending.")));
    browser.click_button("Closed").await;
    assert!(browser.text().await.contains(&format!("{number} is now Closed.")));
    browser.screenshot("ticket-closed").await;
    browser.click_link("Tickets").await;
    browser.select("Status", "Open").await;
    browser.click_button("Search").await;
    assert!(browser.text().await.contains("No ticket found."));
    browser.select("Status", "Closed").await;
    browser.click_button("Search").await;
    assert_eq!(browser.row(&number).await[3], "Closed");
    browser.close().await;
    assert_eq!(robot.ticket(&number)["status"], "closed");
    serve.kill().unwrap();
    let _ = serve.wait();
}

#[test]
fn tenant_set_changes_only_what_it_is_given() {
    let robot = Robot::new();
    let out = robot.run_raw(
        &[
            "tenant",
            "add",
            "--name",
            "contoso",
            "--client-id",
            "a",
            "--tenant",
            "contoso.test",
            "--client-secret-env",
            "S",
        ],
        &[("S", "first-secret")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    robot.run(&[
        "tenant",
        "set",
        "--name",
        "contoso",
        "--graph-url",
        "https://graph.microsoft.us",
        "--secret-expires",
        "2027-01-31",
    ]);
    let t = &robot.json(&["tenant", "list", "--json"])[0];
    assert_eq!((t["client_id"].as_str(), t["tenant"].as_str()), (Some("a"), Some("contoso.test")));
    assert_eq!(t["graph_url"], "https://graph.microsoft.us");
    assert_eq!(t["secret_expires_at"], "2027-01-31T00:00:00Z");
    // Plaintext to another machine is refused here as in `tenant add`.
    let out = robot.run_raw(&["tenant", "set", "--name", "contoso", "--graph-url", "http://graph.example.org"], &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--allow-plaintext"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    robot.run(&["tenant", "set", "--name", "contoso", "--graph-url", ""]);
    assert!(robot.json(&["tenant", "list", "--json"])[0]["graph_url"].is_null());
}

/// The seed's story in the browser, first half: tenant → delegated Graph
/// connection → Setup Authentication on the identity platform's pages →
/// back on the connection page, authenticated → Test connection.
#[tokio::test(flavor = "multi_thread")]
async fn setup_authentication_in_the_browser_comes_back_authenticated() {
    use common::contoso;
    let emu = contoso::emulator();
    let robot = robot_with_a_mailbox();
    let (mut serve, address) = robot.spawn_serve(&[]);
    let mut browser = signed_in_browser(&address, "web_ui-setup-authentication").await;

    browser.click_link("Tenants").await;
    browser.click_link("New tenant").await;
    browser.fill("Name", "contoso").await;
    browser.fill("Client ID", contoso::CLIENT_ID).await;
    browser.fill("Tenant", contoso::DOMAIN).await;
    browser.fill("Client secret", contoso::SECRET).await;
    browser.open_section("Advanced").await;
    browser.fill("Authority URL", emu.base_url()).await;
    browser.fill("Graph URL", emu.base_url()).await;
    browser.click_button("Save").await;
    browser.heading("Tenant contoso").await;

    browser.click_link("Service Connections").await;
    browser.heading("Service Connections").await;
    browser.click_link("New connection").await;
    browser.fill("Name", "servicedesk-graph").await;
    browser.select("Capability", "Exchange / Microsoft Graph").await;
    browser.select("Mode", "Delegated").await;
    browser.click_button("Save").await;
    browser.heading("Connection servicedesk-graph").await;
    assert!(browser.text().await.contains("not authenticated yet"));
    browser.screenshot("connection-new").await;

    browser.click_button("Setup Authentication").await;
    // The identity platform's own sign-in page.
    browser.fill("Email, phone, or Skype", contoso::AGENT).await;
    browser.fill("Password", contoso::AGENT_PASSWORD).await;
    browser.screenshot("identity-platform-sign-in").await;
    browser.click_button("Sign in").await;
    browser.click_button("Accept").await;
    browser.heading("Connection servicedesk-graph").await;
    let text = browser.text().await;
    assert!(text.contains(&format!("Authenticated as {}", contoso::AGENT)), "{text}");
    assert!(text.contains("Setup Authentication complete."), "{text}");
    assert!(text.contains("ready"), "{text}");
    browser.screenshot("connection-authenticated").await;

    browser.click_button("Test connection").await;
    browser.heading("Connection servicedesk-graph").await;
    let text = browser.text().await;
    assert!(text.contains("Test connection succeeded: a token for https://graph.microsoft.com"), "{text}");
    browser.screenshot("connection-tested").await;

    // The agent may open the shared mailbox (Full Access, in Exchange).
    emu.grant_mailbox_access(m365_emulator::MailboxGrant {
        tenant: contoso::DOMAIN.into(),
        mailbox: contoso::SHARED.into(),
        username: contoso::AGENT.into(),
    })
    .unwrap();
    browser.click_link("Mailboxes").await;
    browser.click_link("New mailbox").await;
    browser.fill("Name", "servicedesk").await;
    browser.select("Type", "Exchange / Microsoft Graph").await;
    browser.select("Service connection", "servicedesk-graph").await;
    browser.fill("Mailbox address", contoso::SHARED).await;
    browser.fill("Folder", "inbox").await;
    // `serve` polls a new mailbox at once, then hourly: Poll now is what
    // fetches the mail delivered below.
    browser.fill("Poll every (seconds)", "3600").await;
    browser.screenshot("mailbox-new").await;
    browser.click_button("Save").await;
    browser.heading("Mailbox servicedesk").await;
    browser.click_button("Test connection").await;
    browser.heading("Mailbox servicedesk").await;
    let text = browser.text().await;
    assert!(text.contains("Test connection succeeded: reachable; 0 mails waiting"), "{text}");
    for word in ["error", "failed", "not found"] {
        let note = text.lines().find(|l| l.starts_with("Test connection succeeded")).unwrap().to_lowercase();
        assert!(!note.contains(word), "a success note says {word:?}: {note}");
    }
    // The folder fields offer the live mailbox's folders.
    browser.click_button("Load folders").await;
    assert!(browser.text().await.contains("folders loaded from the mailbox"), "{}", browser.text().await);
    let source = browser.source().await;
    for folder in ["Inbox", "Archive", "Deleted Items"] {
        assert!(source.contains(&format!("<option value=\"{folder}\">")), "{folder} offered:\n{source}");
    }
    assert_eq!(browser.field("Processed folder").await.attr("list").await.unwrap().as_deref(), Some("live-folders"));
    browser.screenshot("mailbox-folders").await;

    let mail = "From: Customer <customer@example.com>\r\nTo: servicedesk@contoso.test\r\nSubject: Toner everywhere\r\n\
                Message-ID: <fire@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
                --b\r\nContent-Type: text/plain\r\n\r\nIt is on fire.\r\n--b\r\nContent-Type: application/pdf\r\n\
                Content-Disposition: attachment; filename=\"photo.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
                JVBERi0xLjQK\r\n--b--\r\n";
    let polled_once = || {
        robot
            .json(&["mailbox", "list", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "servicedesk" && !m["last_poll_at"].is_null())
    };
    assert!(wait_until(Duration::from_secs(15), polled_once), "serve polls a new mailbox");
    emu.deliver_mime(contoso::SHARED, "inbox", mail).unwrap();
    browser.click_button("Poll now").await;
    browser.heading("Mailbox servicedesk").await;
    let text = browser.text().await;
    assert!(text.contains("Poll done: 1 fetched, 1 processed (1 new tickets), 0 failed"), "{text}");
    browser.screenshot("mailbox-polled").await;

    // The ticket is in Tickets, and its attachment downloads.
    browser.click_link("Tickets").await;
    browser.heading("Tickets").await;
    browser.fill("Search", "toner").await;
    browser.click_button("Search").await;
    let rows = browser.text().await;
    assert!(rows.contains("Toner everywhere") && !rows.contains("Printer on fire"), "{rows}");
    let number = robot.tickets().iter().find(|t| t["subject"] == "Toner everywhere").unwrap()["number"]
        .as_str()
        .unwrap()
        .to_string();
    browser.click_link(&number).await;
    browser.heading(&format!("{number} Toner everywhere")).await;
    let text = browser.text().await;
    assert!(text.contains("It is on fire.") && text.contains("customer@example.com"), "{text}");
    browser.screenshot("ticket").await;
    let href = browser.link_href("photo.pdf").await;
    let cookie = browser.cookie_header().await;
    let download = http_get_with_cookie(&address, &href, &cookie);
    assert!(download.starts_with("HTTP/1.1 200"), "{download}");
    assert!(download.contains("content-disposition: attachment; filename=\"photo.pdf\""), "{download}");
    assert!(download.ends_with("%PDF-1.4\n"), "{download}");
    browser.close().await;

    let connections = robot.json(&["connection", "list", "--json"]);
    assert_eq!(connections[0]["state"], "ready");
    assert_eq!(connections[0]["authenticated_as"]["username"], contoso::AGENT);
    serve.kill().unwrap();
    let _ = serve.wait();
}

/// The authorize URL a browser session got is useless in another browser:
/// the redirect must come back with the session that started it.
#[tokio::test(flavor = "multi_thread")]
async fn setup_authentication_finished_in_another_browser_is_refused() {
    use common::contoso;
    let emu = contoso::emulator();
    let robot = robot_with_a_mailbox();
    contoso::add_tenant(&robot, &emu);
    contoso::add_connection(&robot, "desk", "graph", "delegated");
    let (mut serve, address) = robot.spawn_serve(&[]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()));

    // Sign in over plain HTTP as a browser would, and start the flow there.
    let page = http_get_full(&address, "/sign-in").unwrap();
    let token = common::oauth::hidden(&page.body, "csrf");
    let signed_in = http_post(
        &address,
        "/sign-in",
        &format!("mailrobot_sign_in={token}"),
        &form(&[("csrf", &token), ("email", EMAIL), ("password", PASSWORD)]),
    );
    assert_eq!(signed_in.status, 303);
    let session = signed_in.headers["set-cookie"]
        .lines()
        .find(|c| c.starts_with("mailrobot_session="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    assert!(session.starts_with("mailrobot_session="), "{session}");
    let connection_page = http_get_with_cookie(&address, "/connections/desk", &session);
    let csrf = common::oauth::hidden(&connection_page, "csrf");
    let started = http_post(&address, "/connections/desk/authorize", &session, &form(&[("csrf", &csrf)]));
    assert_eq!(started.status, 303, "{}", started.body);
    let authorize_url = started.headers["location"].clone();

    // Someone else's browser (no cookie) completes the sign-in.
    let (status, body, _) =
        common::oauth::sign_in_as(&emu, contoso::DOMAIN, contoso::AGENT, contoso::AGENT_PASSWORD, &authorize_url, true)
            .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("started by someone else"), "{body}");
    let connection = &robot.json(&["connection", "list", "--json"])[0];
    assert_eq!(connection["state"], "not_authenticated");
    assert!(connection["authenticated_as"].is_null());
    serve.kill().unwrap();
    let _ = serve.wait();
}

fn http_get_with_cookie(address: &str, path: &str, cookie: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mail_journal_filters_downloads_and_retries_a_failed_mail() {
    let robot = robot_with_a_mailbox();
    let (mut serve, address) = robot.spawn_serve(&[]);
    let mut browser = signed_in_browser(&address, "web_ui-journal").await;
    browser.click_link("Mail journal").await;
    browser.heading("Mail journal").await;
    browser.select("State", "failed").await;
    browser.click_button("Filter").await;
    let failed = robot.json(&["messages", "list", "--json", "--state", "failed"]);
    let id = failed[0]["id"].as_i64().unwrap().to_string();
    let row = browser.row(&id).await;
    assert_eq!((row[1].as_str(), row[4].as_str()), ("support-desk", "failed"), "{row:?}");
    assert!(row[6].contains("cannot be read as an e-mail"), "{row:?}");
    assert!(!browser.text().await.contains("Printer on fire"), "only failed mails are listed");
    browser.screenshot("journal-failed").await;

    let raw = http_get_with_cookie(&address, &format!("/journal/{id}/raw.eml"), &browser.cookie_header().await);
    assert!(raw.contains(&format!("filename=\"mail-{id}.eml\"")) && raw.ends_with("\u{1} not a mail"), "{raw}");

    browser.click_button("Retry").await;
    assert!(browser.text().await.contains(&format!("Mail {id} queued again")), "{}", browser.text().await);
    let again = robot.json(&["messages", "list", "--json", "--state", "fetched"]);
    assert_eq!(again[0]["id"].as_i64().unwrap().to_string(), id);

    // Processed again, it fails again; all failed mails of the mailbox go
    // back in the queue at once. (`serve` is stopped for the `run-once`,
    // which would leave serve's mailbox to it, and started again.)
    serve.kill().unwrap();
    serve.wait().unwrap();
    robot.run(&["run-once"]);
    let (mut serve, _) = robot.spawn_serve_at(&address, &[]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()));
    browser.goto(&format!("http://{address}/journal?mailbox=support-desk&state=failed")).await;
    browser.click_button("Retry all failed").await;
    assert!(browser.text().await.contains("1 failed mails queued again"), "{}", browser.text().await);
    assert!(robot.json(&["messages", "list", "--json", "--state", "failed"]).as_array().unwrap().is_empty());
    browser.close().await;
    serve.kill().unwrap();
    let _ = serve.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_prints_a_sign_in_that_opens_the_dashboard() {
    use std::io::BufRead;
    let robot = Robot::new();
    let address = format!("127.0.0.1:{}", free_port());
    let mut demo = robot
        .command(&["demo", "--local", "--listen", &address])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(demo.stdout.take().unwrap()).lines();
    let sign_in =
        lines.by_ref().map_while(Result::ok).find(|l| l.contains("sign in as")).expect("the demo says how to sign in");
    let password = sign_in.split("with the password ").nth(1).unwrap().trim().to_string();
    assert!(sign_in.contains(&format!("http://{address}/")) && sign_in.contains("admin@demo.test"), "{sign_in}");
    assert!(wait_until(Duration::from_secs(15), || http_get(&address, "/healthz").is_some()));

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots/web_ui-demo");
    let mut browser = Browser::start(&dir).await;
    browser.goto(&format!("http://{address}/")).await;
    browser.fill("Email", "admin@demo.test").await;
    browser.fill("Password", &password).await;
    browser.click_button("Sign in").await;
    browser.heading("Dashboard").await;
    let row = browser.row("demo-inbox").await;
    assert_eq!(row[2], "ok", "{row:?}");
    browser.screenshot("dashboard").await;
    browser.click_link("Tickets").await;
    browser.screenshot("tickets").await;
    assert!(browser.text().await.contains("TKT-000001"));
    browser.close().await;
    demo.kill().unwrap();
    let _ = demo.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn default_scopes_are_edited_on_the_services_page_and_new_connections_get_them() {
    let emu = common::contoso::emulator();
    let robot = robot_with_a_mailbox();
    common::contoso::add_tenant(&robot, &emu);
    let (mut serve, address) = robot.spawn_serve(&[]);
    let mut browser = signed_in_browser(&address, "web_ui-services").await;
    browser.click_link("Services").await;
    browser.heading("Services").await;
    let row = browser.row("POP3").await;
    assert!(row.iter().any(|c| c == "Delegated"), "{row:?}");
    browser.screenshot("services").await;

    // Two resources in one line: refused, nothing stored.
    let label = "Scopes for POP3 (Delegated)";
    browser.fill(label, "https://outlook.office.com/POP.AccessAsUser.All https://graph.microsoft.com/Mail.Read").await;
    browser.click_button_in_row("POP3", "Delegated", "Save").await;
    assert!(browser.text().await.contains("Not saved:"), "{}", browser.text().await);

    browser.fill(label, "https://outlook.office.com/POP.AccessAsUser.All offline_access").await;
    browser.click_button_in_row("POP3", "Delegated", "Save").await;
    assert!(browser.text().await.contains("Default scopes for POP3 (delegated) saved."), "{}", browser.text().await);
    browser.close().await;

    common::contoso::add_connection(&robot, "pop-desk", "pop", "delegated");
    let connection = &robot.json(&["connection", "list", "--json"])[0];
    assert_eq!(
        connection["scopes"],
        serde_json::json!(["https://outlook.office.com/POP.AccessAsUser.All", "offline_access"])
    );
    serve.kill().unwrap();
    let _ = serve.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn api_tokens_are_made_shown_once_and_revoked_in_the_ui() {
    let robot = robot_with_a_mailbox();
    let (mut serve, address) = robot.spawn_serve(&[]);
    let mut browser = signed_in_browser(&address, "web_ui-api-tokens").await;
    browser.click_link("API tokens").await;
    browser.heading("API tokens").await;
    browser.fill("Name", "helpdesk").await;
    browser.field("Read-only").await.click().await.unwrap();
    browser.click_button("Create token").await;
    assert!(browser.text().await.contains("Token helpdesk created."), "{}", browser.text().await);
    let token = browser.client.find(fantoccini_locator_css("code.token")).await.unwrap().text().await.unwrap();
    assert!(token.starts_with("mrt_"), "{token}");
    assert_eq!(browser.row("helpdesk").await[1], "read-only");
    browser.screenshot("token-created").await;

    let api = |token: String| {
        let url = format!("http://{address}/api/v1/tickets");
        async move { reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(api(token.clone()).await, 200);
    // Shown once: the page does not show it again.
    browser.click_link("API tokens").await;
    assert!(!browser.source().await.contains(&token));
    browser.click_button("Revoke").await;
    assert!(!browser.text().await.contains("helpdesk"), "{}", browser.text().await);
    assert_eq!(api(token).await, 401);
    browser.close().await;
    serve.kill().unwrap();
    let _ = serve.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_added_with_a_secret_and_their_deliveries_shown_and_resent() {
    const HOOK_SECRET: &str = "whsec_q0a2fPKAXz4xZ9eWvC9nhrD0sGZbyVsGN7kq1TLk8qI=";
    let robot = robot_with_a_mailbox();
    let number = robot.tickets()[0]["number"].as_str().unwrap().to_string();
    let (mut serve, address) = robot.spawn_serve(&[]);
    let mut browser = signed_in_browser(&address, "web_ui-webhooks").await;
    browser.click_link("Webhooks").await;
    browser.heading("Webhooks").await;
    // Nobody listens on this port: every attempt fails, visibly.
    let url = format!("http://127.0.0.1:{}/hooks/mailrobot", free_port());
    browser.fill("URL", &url).await;
    browser.fill("Secret", "hunter2").await;
    browser.click_button("Add webhook").await;
    assert!(browser.text().await.contains("a webhook secret starts with `whsec_`"), "{}", browser.text().await);
    assert_eq!(browser.field("URL").await.prop("value").await.unwrap().as_deref(), Some(url.as_str()));
    browser.fill("Secret", HOOK_SECRET).await;
    browser.field("entry.added").await.click().await.unwrap();
    browser.click_button("Add webhook").await;
    assert!(browser.text().await.contains(&format!("Webhook #1 added: {url}")), "{}", browser.text().await);
    let row = browser.row(&url).await;
    assert_eq!(&row[1..4], ["ticket.created ticket.status_changed", "enabled", "0"], "{row:?}");
    assert!(!browser.source().await.contains(&HOOK_SECRET[6..]), "the secret is never shown back");
    browser.screenshot("webhook-added").await;

    // A status change makes an event; its failed attempt shows with the answer.
    browser.click_link("Tickets").await;
    browser.click_link(&number).await;
    browser.click_button("Closed").await;
    browser.click_link("Webhooks").await;
    browser.click_link(&url).await;
    browser.heading(&format!("Webhook {url}")).await;
    let mut cells = Vec::new();
    for _ in 0..50 {
        cells = browser.row("1").await;
        if cells[4] != "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        browser.goto(&browser.url().await).await;
    }
    assert_eq!(&cells[1..4], ["ticket.status_changed", number.as_str(), "queued"], "{cells:?}");
    assert!(cells[5].contains("cannot connect to the receiver"), "{cells:?}");
    browser.screenshot("webhook-deliveries").await;
    browser.click_button_in_row("1", "ticket.status_changed", "Resend").await;
    assert!(browser.text().await.contains("Delivery 1 queued again"), "{}", browser.text().await);
    browser.click_button("Disable").await;
    assert!(browser.text().await.contains("disabled: events wait until it is enabled"));
    browser.click_button("Remove").await;
    browser.heading("Webhooks").await;
    assert!(!browser.text().await.contains(&url));
    assert_eq!(robot.json(&["webhook", "list", "--json"]), serde_json::json!([]));
    browser.close().await;
    serve.kill().unwrap();
    let _ = serve.wait();
}

fn fantoccini_locator_css(css: &str) -> mailrobot_testkit::browser::Locator<'_> {
    mailrobot_testkit::browser::Locator::Css(css)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_how_far_a_large_first_sync_has_got() {
    use common::contoso;
    // Every request to the mailbox takes 300 ms: a sync of 120 mails in
    // batches of 10 takes long enough to be watched.
    let emu = contoso::emulator_with_latency(300);
    let robot = contoso::robot_with_tenant(&emu);
    assert!(create_admin(&robot, "create", EMAIL, PASSWORD).status.success());
    contoso::add_connection(&robot, "app", "graph", "application");
    robot.run(&[
        "mailbox",
        "add",
        "--name",
        "servicedesk",
        "--kind",
        "graph",
        "--connection",
        "app",
        "--address",
        contoso::SHARED,
        "--poll-seconds",
        "1",
    ]);
    let (mut serve, address) = robot.spawn_serve(&[("MAILROBOT_BATCH_MAILS", "10")]);
    let mut browser = signed_in_browser(&address, "web_ui-sync-progress").await;
    for i in 0..120 {
        let mime = String::from_utf8(simple_mail(&format!("p{i}@ex"), &format!("Request {i}"), "", "Help")).unwrap();
        emu.deliver_mime(contoso::SHARED, "inbox", &mime).unwrap();
    }
    let mut seen = None;
    for _ in 0..300 {
        browser.goto(&format!("http://{address}/dashboard")).await;
        let text = browser.text().await;
        // Caught part way: some fetched, not all.
        if let Some(line) = text.lines().find(|l| l.contains("of 120 mails fetched") && !l.contains(" 0 of ")) {
            seen = Some(line.to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = seen.unwrap_or_else(|| panic!("no progress shown\n{}", robot.serve_logs()));
    assert!(line.starts_with("servicedesk"), "{line}");
    let fetched: usize = line.split_whitespace().find_map(|w| w.parse().ok()).unwrap();
    assert!(fetched < 120, "seen while under way: {line}");
    browser.heading("Fetching now").await;
    browser.screenshot("fetching").await;
    // When the sync is done, the section goes and the mails are tickets.
    assert!(
        wait_until(Duration::from_secs(90), || robot.tickets().len() == 120),
        "{} tickets\n{}",
        robot.tickets().len(),
        robot.serve_logs()
    );
    let mut gone = false;
    for _ in 0..100 {
        browser.goto(&format!("http://{address}/dashboard")).await;
        if !browser.text().await.contains("Fetching now") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(gone, "the progress goes once the poll ends");
    browser.close().await;
    serve.kill().unwrap();
    let _ = serve.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_smtp_connection_is_tested_by_logging_in_to_the_smtp_server() {
    use common::contoso;
    use mailrobot_testkit::dovecot::{Dovecot, Options};
    use mailrobot_testkit::smtp_sink::SmtpSink;
    let emu = contoso::emulator();
    // Dovecot's submission service checks XOAUTH2 tokens at the emulator and
    // relays to smtp-sink (which must receive nothing).
    let sink = SmtpSink::start().unwrap();
    let introspection = emu.mail_introspection_url_template();
    let options = Options {
        oauth2_introspection_url: Some(&introspection),
        submission_relay_port: Some(sink.port()),
        ..Options::default()
    };
    let dc = Dovecot::start_with(&[(contoso::AGENT, "unused-password")], &options).unwrap();
    let server = format!("127.0.0.1:{}", dc.submission_port().unwrap());
    let robot = contoso::robot_with_tenant(&emu);
    assert!(create_admin(&robot, "create", EMAIL, PASSWORD).status.success());
    contoso::add_connection(&robot, "desk-smtp", "smtp", "delegated");
    common::oauth::setup_authentication(
        &robot,
        &emu,
        contoso::DOMAIN,
        "desk-smtp",
        contoso::AGENT,
        contoso::AGENT_PASSWORD,
    )
    .await;

    let (mut serve, address) = robot.spawn_serve(&[]);
    let mut browser = signed_in_browser(&address, "web_ui-smtp-connection").await;
    browser.click_link("Service Connections").await;
    browser.click_link("desk-smtp").await;
    browser.fill("SMTP server", &server).await;
    browser.select("Security", "None (this machine only)").await;
    browser.click_button("Test connection").await;
    let text = browser.text().await;
    assert!(
        text.contains("Test connection succeeded: a token for https://outlook.office.com")
            && text.contains(&format!(
                "SMTP {server}: logged in as {} over an unencrypted connection — nothing sent",
                contoso::AGENT
            )),
        "{text}"
    );
    browser.screenshot("smtp-tested").await;
    // Logging in as a mailbox the user may not send as fails, saying why.
    browser.fill("SMTP server", &server).await;
    browser.select("Security", "None (this machine only)").await;
    browser.fill("Sending address", contoso::SHARED).await;
    browser.click_button("Test connection").await;
    let text = browser.text().await;
    assert!(text.contains("Test connection failed: a token for") && text.contains(contoso::SHARED), "{text}");
    assert!(sink.mails().unwrap().is_empty(), "a test sends nothing");
    browser.close().await;
    serve.kill().unwrap();
    let _ = serve.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn administrators_are_added_removed_and_change_their_password_in_the_ui() {
    const COLLEAGUE: &str = "grace.colleague@contoso.test";
    const NEW_PASSWORD: &str = "another long passphrase";
    let robot = robot_with_a_mailbox();
    let (mut serve, address) = robot.spawn_serve(&[]);
    let mut browser = signed_in_browser(&address, "web_ui-administrators").await;
    browser.click_link("Administrators").await;
    browser.heading("Administrators").await;
    // (A password under 12 characters is refused by the form itself, minlength.)
    browser.fill("Email", COLLEAGUE).await;
    browser.fill("Password", "a colleague's long passphrase").await;
    browser.click_button("Add administrator").await;
    assert!(browser.text().await.contains(&format!("Administrator {COLLEAGUE} added.")));
    assert_eq!(browser.row(COLLEAGUE).await[2], "never");
    browser.screenshot("added").await;
    let listed = robot.run(&["admin", "list"]);
    assert!(listed.contains(COLLEAGUE), "{listed}");

    browser.click_button_in_row(COLLEAGUE, "Remove", "Remove").await;
    assert!(browser.text().await.contains(&format!("Administrator {COLLEAGUE} removed")));
    // The last administrator stays.
    browser.click_button_in_row(EMAIL, "Remove", "Remove").await;
    assert!(browser.text().await.contains("The last administrator stays"), "{}", browser.text().await);

    // A password change signs out everywhere; the new password signs in.
    browser.fill("Current password", "not it at all").await;
    browser.fill("New password", NEW_PASSWORD).await;
    browser.click_button("Change password").await;
    assert!(browser.text().await.contains("The current password is not right."));
    browser.fill("Current password", PASSWORD).await;
    browser.fill("New password", NEW_PASSWORD).await;
    browser.click_button("Change password").await;
    browser.heading("Sign in").await;
    browser.fill("Email", EMAIL).await;
    browser.fill("Password", NEW_PASSWORD).await;
    browser.click_button("Sign in").await;
    browser.heading("Dashboard").await;
    browser.close().await;
    serve.kill().unwrap();
    let _ = serve.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_replies_from_the_ticket_page_and_the_api_with_files() {
    let (sink, _dc, server) = common::outbound::submission();
    let robot = robot_with_a_mailbox();
    let number = robot.tickets()[0]["number"].as_str().unwrap().to_string();
    common::outbound::reply_via_smtp(&robot, "support-desk", &server, "support@contoso.test");
    let token = common::api::token(&robot, "helpdesk", false);
    let (mut serve, address) = robot.spawn_serve(&[]);
    let mut browser = signed_in_browser(&address, "web_ui-reply").await;
    browser.click_link("Tickets").await;
    browser.click_link(&number).await;
    browser.fill("Reply", "We replaced the toner.\nThe desk").await;
    let file = robot.dir.path().join("invoice.txt");
    std::fs::write(&file, "toner: 1").unwrap();
    browser.choose_file("Attachments", &file).await;
    browser.screenshot("reply-written").await;
    browser.click_button("Send reply").await;
    assert!(browser.text().await.contains("Reply queued"), "{}", browser.text().await);
    assert!(wait_until(Duration::from_secs(20), || sink.mails().unwrap().len() == 1), "{}", robot.serve_logs());
    let sent = mailrobot_core::parse(&sink.mails().unwrap()[0].data).unwrap();
    assert_eq!(sent.subject, format!("Re: [{number}] Printer on fire"));
    assert!(sent.text_body.contains("We replaced the toner."), "{}", sent.text_body);
    assert_eq!(
        (sent.attachments[0].filename.as_deref(), &sent.attachments[0].data[..]),
        (Some("invoice.txt"), &b"toner: 1"[..])
    );
    assert_eq!(sink.mails().unwrap()[0].recipients, ["<customer@example.com>"]);

    // The Outbox page shows it sent.
    browser.click_link("Outbox").await;
    browser.heading("Outbox").await;
    let row = browser.row("1").await;
    assert_eq!((row[1].as_str(), row[2].as_str(), row[5].as_str()), (number.as_str(), "reply", "sent"), "{row:?}");
    browser.screenshot("outbox").await;

    // And through the API, with a file in base64.
    let reply = serde_json::json!({"text": "One more thing.", "attachments": [
        {"filename": "note.txt", "content_type": "text/plain", "content_base64": "aGVsbG8="}]});
    let (status, body) = common::api::call(
        "POST",
        &format!("http://{address}/api/v1/tickets/{number}/reply"),
        Some(&token),
        Some(reply),
    )
    .await;
    assert_eq!((status, body["kind"].as_str()), (201, Some("reply")), "{body}");
    assert!(wait_until(Duration::from_secs(20), || sink.mails().unwrap().len() == 2));
    let sent = mailrobot_core::parse(&sink.mails().unwrap()[1].data).unwrap();
    assert_eq!(sent.attachments[0].data, b"hello");
    let (_, outbox) = common::api::call("GET", &format!("http://{address}/api/v1/outbox"), Some(&token), None).await;
    assert_eq!(outbox["items"].as_array().unwrap().len(), 2, "{outbox}");
    browser.close().await;
    serve.kill().unwrap();
    let _ = serve.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_templates_and_contacts_are_managed_in_the_ui() {
    let (sink, _dc, server) = common::outbound::submission();
    let robot = robot_with_a_mailbox();
    let (mut serve, address) = robot.spawn_serve(&[]);
    let mut browser = signed_in_browser(&address, "web_ui-rules").await;

    // The reply transport, chosen on the mailbox page.
    browser.click_link("Mailboxes").await;
    browser.click_link("support-desk").await;
    browser.select("Reply via", "SMTP").await;
    browser.fill("SMTP server", &server).await;
    browser.select("SMTP security", "None").await;
    browser.fill("SMTP username", common::outbound::DESK).await;
    browser.fill("SMTP password", common::outbound::DESK_PASSWORD).await;
    browser.fill("From address", "support@contoso.test").await;
    browser.screenshot("reply-transport").await;
    browser.click_button("Save").await;
    assert!(browser.text().await.contains("Mailbox support-desk saved."), "{}", browser.text().await);
    let tested = robot.json(&["mailbox", "test", "support-desk", "--json"]);
    assert_eq!(tested["reply"]["authenticated_as"], common::outbound::DESK, "the password was stored: {tested}");
    assert!(!browser.source().await.contains(common::outbound::DESK_PASSWORD), "never shown again");

    // A rule that routes invoices, added with the form.
    browser.click_link("Rules").await;
    browser.heading("Rules").await;
    browser.fill("Name", "billing").await;
    browser.select("Mailbox", "support-desk").await;
    browser.fill("Subject contains", "invoice").await;
    browser.fill("Set queue", "billing").await;
    browser.fill("Add tags", "money, urgent").await;
    browser.field("No acknowledgement").await.click().await.unwrap();
    browser.screenshot("rule-form").await;
    browser.click_button("Add rule").await;
    assert!(browser.text().await.contains("Rule 1 (billing) added."), "{}", browser.text().await);
    let row = browser.row("billing").await;
    assert_eq!(row[2], "support-desk", "{row:?}");
    assert!(row[3].contains("subject_contains") && row[4].contains("no_acknowledgement"), "{row:?}");
    // A broken one is refused with why.
    browser.fill("Name", "broken").await;
    browser.fill("Subject regex", "(").await;
    browser.field("Ignore (journal only)").await.click().await.unwrap();
    browser.click_button("Add rule").await;
    assert!(browser.text().await.contains("Not added: the regex"), "{}", browser.text().await);
    browser.screenshot("rules").await;

    // An invoice arrives: routed, not acknowledged.
    let drop = robot.dir.path().join("drop");
    std::fs::write(drop.join("inbox/3.eml"), simple_mail("3@x", "Invoice 7 is wrong", "", "see attached")).unwrap();
    browser.click_link("Mailboxes").await;
    browser.click_link("support-desk").await;
    browser.click_button("Poll now").await;
    let number = ticket_number(&robot, "Invoice 7 is wrong");
    browser.click_link("Tickets").await;
    browser.click_link(&number).await;
    let text = browser.text().await;
    assert!(text.contains("Queue\nbilling") || text.contains("Queue billing"), "{text}");
    assert!(text.contains("money, urgent"), "{text}");
    browser.screenshot("routed-ticket").await;
    let journal_id = robot
        .json(&["messages", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["message_id"] == "3@x")
        .unwrap()["id"]
        .as_i64()
        .unwrap();

    // Test rules on it.
    browser.click_link("Rules").await;
    browser.fill("Journal id", &journal_id.to_string()).await;
    browser.click_button("Test rules").await;
    let text = browser.text().await;
    assert!(text.contains(&format!("Mail {journal_id}")) && text.contains("\"queue\": \"billing\""), "{text}");
    browser.click_button_in_row("billing", "1", "Remove").await;
    assert!(browser.text().await.contains("No rules yet"), "{}", browser.text().await);

    // Templates: the rejection text, previewed then saved.
    browser.click_link("Templates").await;
    browser.heading("Templates").await;
    browser.select("Kind", "rejection").await;
    browser.click_button("Load template").await;
    assert_eq!(
        browser.field("Subject").await.prop("value").await.unwrap().as_deref(),
        Some("Not accepted: {{ entry.subject }}")
    );
    browser.fill("Subject", "Refused: {{ entry.subject }} ({{ mailbox.name }})").await;
    browser.click_button("Preview").await;
    let text = browser.text().await;
    assert!(text.contains("Refused: Printer on floor 3 smokes (support)"), "{text}");
    browser.click_button("Save template").await;
    assert!(browser.text().await.contains("The rejection template is saved."), "{}", browser.text().await);
    browser.fill("Subject", "{{ nonsense.field }}").await;
    browser.click_button("Save template").await;
    assert!(browser.text().await.contains("Not saved: the subject template"), "{}", browser.text().await);
    browser.screenshot("templates").await;
    let stored = robot.json(&["templates", "list", "--json"]);
    assert_eq!(stored[0]["subject"], "Refused: {{ entry.subject }} ({{ mailbox.name }})", "{stored}");

    // Contacts: the requester is one; add another; a contact's tickets.
    browser.click_link("Contacts").await;
    browser.heading("Contacts").await;
    let row = browser.row("customer@example.com").await;
    assert_eq!((row[1].as_str(), row[3].as_str(), row[4].as_str()), ("Customer", "mail", "2"), "{row:?}");
    browser.fill("Email", "bob@partner.example").await;
    browser.fill("Name", "Bob").await;
    browser.fill("Organisation", "Partner Ltd").await;
    browser.click_button("Add contact").await;
    assert_eq!(browser.row("bob@partner.example").await[2], "Partner Ltd");
    browser.click_link("customer@example.com").await;
    browser.heading("Tickets").await;
    let text = browser.text().await;
    assert!(text.contains(&number) && text.contains("Invoice 7 is wrong"), "{text}");
    browser.screenshot("contact").await;

    // The ticket's requester links to the contact.
    browser.click_link(&number).await;
    browser.click_link("Customer <customer@example.com>").await;
    browser.heading("customer@example.com").await;
    assert!(sink.mails().unwrap().is_empty(), "the invoice was not acknowledged");
    browser.close().await;
    serve.kill().unwrap();
    let _ = serve.wait();
}
