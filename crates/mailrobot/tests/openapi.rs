//! The REST API's OpenAPI document against the live server: schemathesis
//! (from PyPI) generates requests from the document — valid ones and broken
//! ones — and checks every answer: documented status codes and content
//! types, bodies that match their schemas, 401 without a token, no 5xx.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::api::token;
use common::*;

const SCHEMATHESIS_VERSION: &str = "4.32.5";

#[test]
fn the_openapi_document_describes_what_the_live_server_answers() {
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("desk", &drop);
    std::fs::write(drop.join("inbox/1.eml"), simple_mail("1@x", "Printer", "", "It smokes.")).unwrap();
    std::fs::write(drop.join("inbox/2.eml"), b"\x00 not a mail").unwrap();
    robot.run(&["run-once"]);
    let out = robot.run_raw(
        &["webhook", "add", "--url", "http://127.0.0.1:9/hook", "--secret-env", "HOOK_SECRET"],
        &[("HOOK_SECRET", "whsec_q0a2fPKAXz4xZ9eWvC9nhrD0sGZbyVsGN7kq1TLk8qI=")],
    );
    assert!(out.status.success());
    let writer = token(&robot, "schemathesis", false);
    let (mut serve, address) = robot.spawn_serve(&[]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()));

    // The document itself: OpenAPI 3.1, public, naming every part of the API.
    let (status, body) = http_get(&address, "/api/v1/openapi.json").unwrap();
    assert_eq!(status, 200);
    let document: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"), "{}", document["openapi"]);
    for path in [
        "/api/v1/tickets",
        "/api/v1/tickets/{number}",
        "/api/v1/messages",
        "/api/v1/mailboxes",
        "/api/v1/tenants",
        "/api/v1/connections/{name}/authorize",
        "/api/v1/webhooks",
        "/api/v1/webhooks/{id}/deliveries",
        "/api/v1/api-tokens",
    ] {
        assert!(document["paths"].get(path).is_some(), "{path} is documented");
    }
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");

    let python = mailrobot_testkit::python::venv_python(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "schemathesis",
        SCHEMATHESIS_VERSION,
    );
    let st = python.parent().unwrap().join("st");
    let out = Command::new(st)
        .current_dir(robot.dir.path())
        .args(["run", &format!("http://{address}/api/v1/openapi.json"), "--no-color", "--seed", "20261202"])
        .args(["--max-examples", "30"])
        .args(["-H", &format!("Authorization: Bearer {writer}")])
        // Revoking tokens would revoke the one the run itself uses (tests/api.rs covers it).
        .args(["--exclude-path", "/api/v1/api-tokens/{name}"])
        // Requests valid by the schema may still be refused by the robot's own
        // rules (a tenant that must exist, fields that depend on the mailbox's
        // kind): 422 with the reason. Every other check runs.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found problems:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    let operations: usize = document["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    let tested = format!("Tested: {}", operations - 1);
    assert!(report.contains(&tested), "every operation but token revocation was tested ({tested}):\n{report}");
    serve.kill().unwrap();
    let _ = serve.wait();
}
