//! `serve`: HTTP endpoints, SIGTERM, the data-dir lock, and CLI use while it runs.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn sigterm(child: &std::process::Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

#[test]
fn serve_polls_answers_health_and_metrics_and_stops_on_sigterm() {
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    robot.run(&[
        "mailbox",
        "add",
        "--name",
        "drop",
        "--kind",
        "drop-folder",
        "--path",
        drop.to_str().unwrap(),
        "--poll-seconds",
        "1",
    ]);
    let (mut child, address) = robot.spawn_serve(&[]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some_and(|(s, _)| s == 200)));

    std::fs::write(drop.join("tmp/1.eml"), simple_mail("1@x", "While serving", "", "hi")).unwrap();
    std::fs::rename(drop.join("tmp/1.eml"), drop.join("inbox/1.eml")).unwrap();
    assert!(wait_until(Duration::from_secs(15), || drop.join("processed/1.eml").exists()), "{}", robot.serve_logs());

    // The CLI works while serve holds the database, and a mailbox added now
    // is picked up without a restart.
    assert_eq!(robot.tickets().len(), 1);
    robot.run(&["mailbox", "list", "--json"]);
    let late = robot.dir.path().join("late");
    robot.run(&[
        "mailbox",
        "add",
        "--name",
        "late",
        "--kind",
        "drop-folder",
        "--path",
        late.to_str().unwrap(),
        "--poll-seconds",
        "1",
    ]);
    std::fs::write(late.join("inbox/2.eml"), simple_mail("2@x", "Added later", "", "hi")).unwrap();
    assert!(wait_until(Duration::from_secs(15), || late.join("processed/2.eml").exists()), "{}", robot.serve_logs());
    assert_eq!(robot.tickets().len(), 2);

    let (status, metrics) = http_get(&address, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("mailrobot_polls_total"), "{metrics}");
    assert!(metrics.contains("mailrobot_tickets_created_total"), "{metrics}");
    let (_, health) = http_get(&address, "/healthz").unwrap();
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["counts"]["tickets"], 2);

    // A second serve on the same data dir is refused with a clear message.
    let second = robot.run_raw(&["serve", "--listen", &format!("127.0.0.1:{}", free_port())], &[]);
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another `mailrobot serve` is running"));

    let asked = Instant::now();
    sigterm(&child);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(asked.elapsed() < Duration::from_secs(10), "serve did not stop within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "serve exited with {status}");
}

#[test]
fn a_killed_serve_never_blocks_the_restart() {
    let robot = Robot::new();
    let (mut child, address) = robot.spawn_serve(&[]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()));
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut again, address) = robot.spawn_serve(&[]);
    assert!(
        wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()),
        "restart blocked: {}",
        robot.serve_logs()
    );
    again.kill().unwrap();
    again.wait().unwrap();
}
