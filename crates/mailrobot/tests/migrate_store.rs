//! `mailrobot migrate-store`: a robot that ran on SQLite moves into an empty
//! PostgreSQL database and answers every command as before; refused while
//! a `serve` runs on the SQLite database. The source is SQLite whatever
//! MAILROBOT_TEST_BACKEND says.

mod common;

use common::*;
use mailrobot_store::testing::TestDatabase;
use serde_json::Value;
use std::time::Duration;

const SECRET: &str = "whsec_q0a2fPKAXz4xZ9eWvC9nhrD0sGZbyVsGN7kq1TLk8qI=";

fn source_arg(robot: &Robot) -> String {
    format!("sqlite:{}", robot.data_dir().join("mailrobot.db").display())
}

/// What the CLI answers, as JSON, with these extra environment variables.
fn answers(robot: &Robot, env: &[(&str, &str)]) -> Vec<(String, Value)> {
    [
        &["tickets", "list", "--json"][..],
        &["tickets", "show", "TKT-000002", "--json"],
        &["messages", "list", "--json"],
        &["mailbox", "list", "--json"],
        &["webhook", "list", "--json"],
        &["secrets", "status", "--json"],
        &["tenant", "list", "--json"],
        &["connection", "list", "--json"],
        &["outbox", "list", "--json"],
    ]
    .iter()
    .map(|args| {
        let out = robot.run_raw(args, env);
        assert!(
            out.status.success(),
            "mailrobot {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
        (args.join(" "), value)
    })
    .collect()
}

fn password(url: &str) -> Option<String> {
    url::Url::parse(url).ok()?.password().filter(|p| !p.is_empty()).map(str::to_string)
}

#[test]
fn a_sqlite_robot_moves_to_postgres_and_answers_the_same() {
    let robot = Robot::on_sqlite();
    robot.run(&["demo", "--once"]);
    let out = robot.run_raw(
        &["webhook", "add", "--url", "https://hooks.example/robot", "--secret-env", "HOOK"],
        &[("HOOK", SECRET)],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = answers(&robot, &[]);
    let secrets = &before.iter().find(|(c, _)| c == "secrets status --json").unwrap().1;
    assert!(secrets["secrets"].as_u64().unwrap() >= 3, "the demo's secrets and the webhook's: {secrets}");

    let db = TestDatabase::create();
    let out = robot
        .run_raw(&["migrate-store", "--from", &source_arg(&robot), "--json"], &[("MAILROBOT_DATABASE_URL", &db.url)]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    if let Some(password) = password(&db.url) {
        assert!(!stdout.contains(&password) && !stderr.contains(&password), "the password is never shown");
    }
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let tables = report["tables"].as_array().unwrap();
    let rows = |name: &str| {
        tables.iter().find(|t| t["table"] == name).unwrap_or_else(|| panic!("{name}: {report}"))["rows"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(rows("tickets"), 6, "{report}");
    assert_eq!(rows("messages"), 12);
    assert_eq!(rows("webhooks"), 1);
    assert!(rows("blobs") > 0 && rows("tenants") == 1 && rows("connections") == 1, "{report}");
    assert!(tables.iter().all(|t| t["checksum"].as_str().unwrap().len() == 64), "{report}");
    assert_eq!(report["rows"].as_u64().unwrap(), tables.iter().map(|t| t["rows"].as_u64().unwrap()).sum::<u64>());

    // The same data dir (the same master key), on PostgreSQL now.
    let after = answers(&robot, &[("MAILROBOT_DATABASE_URL", &db.url)]);
    for ((command, sqlite), (_, postgres)) in before.iter().zip(&after) {
        assert_eq!(sqlite, postgres, "`{command}` answers otherwise on PostgreSQL");
    }
    // The sealed secrets open with the same key: the robot can sign with them.
    let status = &after.iter().find(|(c, _)| c == "secrets status --json").unwrap().1;
    assert_eq!(status["not_current"], 0, "{status}");

    // A second migration into the same database is refused; the text
    // output of a migration into a new one is a table per line.
    let out = robot.run_raw(&["migrate-store", "--from", &source_arg(&robot)], &[("MAILROBOT_DATABASE_URL", &db.url)]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already holds data") && stderr.contains("tickets: 6 rows"), "{stderr}");
    let second = TestDatabase::create();
    let out = robot.run_raw(&["migrate-store", "--from", &source_arg(&robot), "--to", &second.url], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("in one transaction; every table verified"), "{stdout}");
    assert!(stdout.lines().any(|l| l.split_whitespace().take(2).eq(["tickets", "6"])), "{stdout}");
    if let Some(password) = password(&second.url) {
        assert!(!stdout.contains(&password), "{stdout}");
    }
}

#[test]
fn migrate_store_is_refused_while_serve_runs_on_the_sqlite_database() {
    let robot = Robot::on_sqlite();
    robot.run(&["demo", "--once", "--local"]);
    let db = TestDatabase::create();

    // No target: the robot's command line has no MAILROBOT_DATABASE_URL.
    let out = robot.run_raw(&["migrate-store", "--from", &source_arg(&robot)], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("set MAILROBOT_DATABASE_URL"), "{out:?}");
    let out = robot.run_raw(&["migrate-store", "--from", "mailrobot.db"], &[("MAILROBOT_DATABASE_URL", &db.url)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("sqlite:PATH"), "{out:?}");

    let (mut serve, _address) = robot.spawn_serve(&[]);
    // It registers its node just after it starts listening.
    let registered = wait_until(Duration::from_secs(10), || {
        robot
            .json(&["nodes", "list", "--json"])
            .as_array()
            .is_some_and(|nodes| nodes.iter().any(|n| n["alive"] == true))
    });
    assert!(registered, "{}", robot.serve_logs());
    let out = robot.run_raw(&["migrate-store", "--from", &source_arg(&robot)], &[("MAILROBOT_DATABASE_URL", &db.url)]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let pid = serve.id();
    serve.kill().unwrap();
    serve.wait().unwrap();
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("`mailrobot serve`") && stderr.contains(&format!("pid {pid}")), "{stderr}");
    assert!(stderr.contains("stop it first"), "{stderr}");
    assert!(mailrobot_store::pg_tools::table_names(&db.url).unwrap().is_empty(), "the target was not touched");

    // Killed, it leaves its node row behind, alive for the lease's time:
    // still refused, naming the node, until its heartbeat is that old.
    let out = robot.run_raw(&["migrate-store", "--from", &source_arg(&robot)], &[("MAILROBOT_DATABASE_URL", &db.url)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("(pid {pid}, last heartbeat")) && stderr.contains("SQLite database"), "{stderr}");
    assert!(mailrobot_store::pg_tools::table_names(&db.url).unwrap().is_empty(), "the target was not touched");
}
