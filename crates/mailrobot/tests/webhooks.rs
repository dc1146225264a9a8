//! Webhooks end to end: a helpdesk's receiver on loopback that is down, then
//! answers 500, then 200 — with a SIGKILL of `serve` in between. Every event
//! arrives, in order per ticket, verified by the Standard Webhooks reference
//! library (Python, from PyPI); retries keep their `webhook-id` and are
//! signed afresh; the attachment's download URL serves the attachment.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::api::{call, token};
use common::*;
use serde_json::{Value, json};

const STANDARDWEBHOOKS_VERSION: &str = "1.1.0";
/// 32 random bytes, as `echo whsec_$(openssl rand -base64 32)` makes them.
const SECRET: &str = "whsec_q0a2fPKAXz4xZ9eWvC9nhrD0sGZbyVsGN7kq1TLk8qI=";

/// The receiver script, running; what it printed is gathered as it comes.
struct Receiver {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start(port: u16, fail_first: usize) -> Self {
        let python = mailrobot_testkit::python::venv_python(
            Path::new(env!("CARGO_TARGET_TMPDIR")),
            "standardwebhooks",
            STANDARDWEBHOOKS_VERSION,
        );
        let script = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("tests/python/webhook_receiver.py");
        let config = json!({"port": port, "secret": SECRET, "fail_first": fail_first});
        let mut child = Command::new(python)
            .arg(script)
            .arg(config.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python runs");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(serde_json::from_str::<Value>(&line).expect("the receiver prints JSON"));
            }
        });
        assert!(
            wait_until(Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "the receiver did not start"
        );
        Self { child, lines }
    }

    fn requests(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mail_with_attachment() -> Vec<u8> {
    b"From: Ann Example <ann@example.com>\r\nTo: support@example.com\r\nSubject: Printer on fire\r\n\
Message-ID: <printer-1@example.com>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\n\
The printer on floor 3 is on fire.\r\n--b1\r\nContent-Type: text/plain; name=\"smoke.txt\"\r\n\
Content-Disposition: attachment; filename=\"smoke.txt\"\r\n\r\nlots of smoke\r\n--b1--\r\n"
        .to_vec()
}

fn drop_mail(drop: &Path, name: &str, raw: &[u8]) {
    let tmp = drop.join("tmp").join(name);
    std::fs::write(&tmp, raw).unwrap();
    std::fs::rename(&tmp, drop.join("inbox").join(name)).unwrap();
}

fn deliveries(robot: &Robot) -> Vec<Value> {
    robot.json(&["webhook", "deliveries", "--json"]).as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_arrives_signed_and_in_order_through_a_down_receiver_500s_and_a_sigkill() {
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("support", &drop);
    robot.run(&["mailbox", "set", "--name", "support", "--poll-seconds", "1"]);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hooks/mailrobot");
    let out =
        robot.run_raw(&["webhook", "add", "--url", &url, "--secret-env", "HOOK_SECRET"], &[("HOOK_SECRET", SECRET)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = robot.json(&["webhook", "list", "--json"]);
    assert_eq!(listed[0]["events"], json!(["ticket.created", "entry.added", "ticket.status_changed"]), "{listed}");
    assert!(!listed.to_string().contains(&SECRET[6..]), "the secret is never shown: {listed}");
    let writer = token(&robot, "helpdesk", false);

    // Two mails of one thread and one of another, while the receiver is down.
    drop_mail(&drop, "1.eml", &mail_with_attachment());
    drop_mail(
        &drop,
        "2.eml",
        &simple_mail(
            "printer-2@example.com",
            "Re: Printer on fire",
            "In-Reply-To: <printer-1@example.com>\r\n",
            "Still burning.",
        ),
    );
    drop_mail(&drop, "3.eml", &simple_mail("vpn-1@example.com", "VPN down", "", "No VPN since 9:00."));
    let (mut serve, address) = robot.spawn_serve(&[]);
    let api = format!("http://{address}/api/v1");
    assert!(
        wait_until(Duration::from_secs(30), || {
            let d = deliveries(&robot);
            d.len() == 3
                && d.iter()
                    .filter(|d| d["attempts"] == 1)
                    .all(|d| d["last_answer"].as_str().unwrap_or("").contains("cannot connect"))
                && d.iter().filter(|d| d["attempts"] == 1).count() == 2
        }),
        "the first attempts fail on the closed port: {:#?}\n{}",
        deliveries(&robot),
        robot.serve_logs()
    );
    // A status change, queued behind the ticket's earlier events.
    let (status, body) =
        call("PATCH", &format!("{api}/tickets/TKT-000001"), Some(&writer), Some(json!({"status": "closed"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(deliveries(&robot).len(), 4);

    // SIGKILL, then the receiver comes up answering 500 twice, then 200.
    serve.kill().unwrap();
    serve.wait().unwrap();
    let receiver = Receiver::start(port, 2);
    let (mut serve, address) = robot.spawn_serve(&[]);
    assert!(
        wait_until(Duration::from_secs(120), || deliveries(&robot).iter().all(|d| d["state"] == "sent")),
        "every delivery ends delivered: {:#?}\n{}",
        deliveries(&robot),
        robot.serve_logs()
    );

    let requests = receiver.requests();
    for r in &requests {
        assert_eq!(r["verified"], true, "the reference library verifies every request: {r}");
    }
    let delivered: Vec<&Value> = requests.iter().filter(|r| r["status"] == 200).collect();
    let listed = deliveries(&robot);
    let mut event_ids: Vec<&str> = listed.iter().map(|d| d["event_id"].as_str().unwrap()).collect();
    let mut received_ids: Vec<&str> = delivered.iter().map(|r| r["id"].as_str().unwrap()).collect();
    event_ids.sort();
    received_ids.sort();
    received_ids.dedup();
    assert_eq!(received_ids, event_ids, "every event arrives");

    // Each first event failed twice (closed port, 500) and kept its id, with
    // a fresh timestamp and signature on each attempt.
    for d in listed.iter().filter(|d| d["event"] == "ticket.created") {
        assert_eq!((d["attempts"].as_i64(), d["last_status"].as_i64()), (Some(3), Some(200)), "{d}");
        let tries: Vec<&Value> = requests.iter().filter(|r| r["id"] == d["event_id"]).collect();
        assert_eq!(tries.iter().map(|r| r["status"].as_i64().unwrap()).collect::<Vec<_>>(), [500, 200]);
        assert_ne!(tries[0]["timestamp"], tries[1]["timestamp"], "signed afresh: {tries:?}");
        assert_ne!(tries[0]["signature"], tries[1]["signature"]);
    }

    // In order per ticket.
    let of_ticket = |number: &str| -> Vec<String> {
        delivered
            .iter()
            .filter(|r| r["payload"]["data"]["ticket"]["number"] == number)
            .map(|r| r["payload"]["type"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(of_ticket("TKT-000001"), ["ticket.created", "entry.added", "ticket.status_changed"]);
    assert_eq!(of_ticket("TKT-000002"), ["ticket.created"]);

    // What a helpdesk needs is in the document.
    let created = delivered
        .iter()
        .map(|r| &r["payload"])
        .find(|p| p["type"] == "ticket.created" && p["data"]["ticket"]["number"] == "TKT-000001")
        .unwrap();
    let data = &created["data"];
    assert_eq!(created["id"].as_str().unwrap(), requests.iter().find(|r| r["payload"] == *created).unwrap()["id"]);
    assert_eq!(data["ticket"]["subject"], "Printer on fire");
    assert_eq!(data["ticket"]["requester"], "ann@example.com");
    assert_eq!(data["ticket"]["status"], "open", "the status when it happened");
    assert_eq!(data["entry"]["from"], "ann@example.com");
    assert!(data["entry"]["text"].as_str().unwrap().contains("floor 3 is on fire"), "{data}");
    let attachment = &data["entry"]["attachments"][0];
    assert_eq!((attachment["filename"].as_str(), attachment["size"].as_i64()), (Some("smoke.txt"), Some(13)));
    let download = attachment["download_url"].as_str().unwrap();
    // The document was rendered by the first `serve`, under its public URL
    // (here a port the kernel picked; a real one stays put).
    let path = download.strip_prefix("http://").and_then(|rest| rest.split_once('/')).map(|(_, p)| p).unwrap();
    assert!(path.starts_with("api/v1/tickets/TKT-000001/entries/1/attachments/0"), "{download}");
    let bytes = reqwest::Client::new()
        .get(format!("http://{address}/{path}"))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], b"lots of smoke");
    let added = delivered.iter().map(|r| &r["payload"]).find(|p| p["type"] == "entry.added").unwrap();
    assert_eq!(added["data"]["entry"]["position"], 2);
    assert!(added["data"]["entry"]["text"].as_str().unwrap().contains("Still burning"));
    let changed = delivered.iter().map(|r| &r["payload"]).find(|p| p["type"] == "ticket.status_changed").unwrap();
    assert_eq!(
        (&changed["data"]["ticket"]["status"], &changed["data"]["previous_status"], &changed["data"]["entry"]),
        (&json!("closed"), &json!("open"), &Value::Null)
    );

    // Resend: the same event again, same id.
    let first = listed.iter().find(|d| d["event"] == "entry.added").unwrap();
    robot.run(&["webhook", "resend", "--id", &first["id"].to_string()]);
    assert!(
        wait_until(Duration::from_secs(30), || {
            receiver.requests().iter().filter(|r| r["id"] == first["event_id"] && r["status"] == 200).count() == 2
        }),
        "a resent delivery arrives again with its id"
    );
    serve.kill().unwrap();
    serve.wait().unwrap();

    // The secret is sealed: not in the database, not in the logs.
    assert!(!robot.database_contains(&SECRET.as_bytes()[6..]), "the secret is stored sealed");
    assert!(!robot.serve_logs().contains(&SECRET[6..]));
}

#[test]
fn webhook_add_refuses_bad_urls_and_secrets_with_what_to_do() {
    let robot = Robot::new();
    let add = |url: &str, secret: &str| {
        robot.run_raw(&["webhook", "add", "--url", url, "--secret-env", "HOOK_SECRET"], &[("HOOK_SECRET", secret)])
    };
    let out = add("ftp://example.com/x", SECRET);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("http:// or https://"));
    let out = add("https://helpdesk.example.com/hook", "not-a-secret");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("openssl rand -base64 32"), "{out:?}");
    let out = robot
        .run_raw(&["webhook", "add", "--url", "https://helpdesk.example.com/hook", "--secret-env", "UNSET_VAR"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNSET_VAR"));
    assert_eq!(robot.json(&["webhook", "list", "--json"]), json!([]));
    // Only the events asked for.
    let out = robot.run_raw(
        &[
            "webhook",
            "add",
            "--url",
            "https://helpdesk.example.com/hook",
            "--secret-env",
            "HOOK_SECRET",
            "--event",
            "ticket.created",
        ],
        &[("HOOK_SECRET", SECRET)],
    );
    assert!(out.status.success());
    assert_eq!(robot.json(&["webhook", "list", "--json"])[0]["events"], json!(["ticket.created"]));
}
