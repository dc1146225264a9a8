//! `serve`: HTTP endpoints, SIGTERM, the data-dir lock, and CLI use while it runs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
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
    assert_eq!(serde_json::from_str::<serde_json::Value>(&health).unwrap(), serde_json::json!({"status": "ok"}));
    // Counts are a few seconds old at most.
    assert!(
        wait_until(Duration::from_secs(10), || http_get(&address, "/metrics")
            .is_some_and(|(_, m)| metric(&m, "mailrobot_tickets") == Some(2.0))),
        "{}",
        http_get(&address, "/metrics").unwrap().1
    );

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

fn stop(mut child: std::process::Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn healthz_says_only_ok_or_error() {
    let robot = Robot::new();
    // A failing mailbox whose error names the server and the login.
    robot.add_imap("secret-box", free_port(), "leaky-login@example.com", "pw", &["--poll-seconds", "1"]);
    let (child, address) = robot.spawn_serve(&[]);
    assert!(
        wait_until(Duration::from_secs(20), || robot.json(&["mailbox", "list", "--json"])[0]["last_error"].is_string()),
        "{}",
        robot.serve_logs()
    );
    let health = http_get_full(&address, "/healthz").unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&health.body).unwrap(), serde_json::json!({"status": "ok"}));
    assert!(!health.body.contains("secret-box") && !health.body.contains("leaky-login"), "{}", health.body);
    stop(child);

    // A store that cannot answer: 503 and still no details.
    let robot = Robot::new();
    let (child, address) = robot.spawn_serve(&[]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some_and(|(s, _)| s == 200)));
    robot.sql("DROP TABLE messages", "DROP TABLE messages CASCADE");
    // Within the counts' cache period.
    let mut last = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = http_get(&address, "/healthz");
            last.as_ref().is_some_and(|(s, _)| *s == 503)
        }),
        "{last:?}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&last.unwrap().1).unwrap(),
        serde_json::json!({"status": "error"})
    );
    stop(child);
}

#[test]
fn every_answer_carries_the_security_headers() {
    let robot = Robot::new();
    let (child, address) = robot.spawn_serve(&[]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()));
    // JSON, metrics, the Setup Authentication page (here refusing a redirect without state), a 404.
    for (path, status) in
        [("/healthz", 200), ("/metrics", 200), ("/wm/externalAuth/redirect.html", 400), ("/nope", 404)]
    {
        let answer = http_get_full(&address, path).unwrap();
        assert_eq!(answer.status, status, "{path}");
        let h =
            |name: &str| answer.headers.get(name).map(String::as_str).unwrap_or_else(|| panic!("{path}: no {name}"));
        assert_eq!(h("cache-control"), "no-store", "{path}");
        let csp = h("content-security-policy");
        for directive in ["default-src 'none'", "style-src 'unsafe-inline'", "frame-ancestors 'none'"] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert_eq!(h("x-frame-options"), "DENY", "{path}");
        assert_eq!(h("referrer-policy"), "no-referrer", "{path}");
    }
    stop(child);
}

#[test]
fn a_slow_client_is_cut_off_after_the_header_timeout_while_others_are_served() {
    let robot = Robot::new();
    let (child, address) = robot.spawn_serve(&[("MAILROBOT_HTTP_HEADER_TIMEOUT_SECS", "2")]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()));

    // A slowloris: a request line, then one header line every 300 ms, never the blank line.
    let mut slow = TcpStream::connect(&address).unwrap();
    let opened = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut others_served_at = None;
    let cut_off_after = loop {
        if opened.elapsed() > Duration::from_secs(15) {
            break None;
        }
        if others_served_at.is_none() && http_get(&address, "/healthz").is_some_and(|(s, _)| s == 200) {
            others_served_at = Some(opened.elapsed());
        }
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            Ok(0) => break Some(opened.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break Some(opened.elapsed()),
        }
        if slow.write_all(b"X-Slow: 1\r\n").is_err() {
            break Some(opened.elapsed());
        }
    };
    let cut_off_after = cut_off_after.expect("the slow client was still connected after 15 s");
    assert!(cut_off_after >= Duration::from_millis(1500), "cut off too early: {cut_off_after:?}");
    assert!(cut_off_after <= Duration::from_secs(6), "cut off late: {cut_off_after:?}");
    let served = others_served_at.expect("no one else was served");
    assert!(served < cut_off_after, "others waited for the slow client: {served:?} vs {cut_off_after:?}");
    stop(child);
}

#[test]
fn connections_over_the_limit_wait_for_a_free_one() {
    let robot = Robot::new();
    let (child, address) =
        robot.spawn_serve(&[("MAILROBOT_HTTP_MAX_CONNECTIONS", "2"), ("MAILROBOT_HTTP_HEADER_TIMEOUT_SECS", "3")]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()));
    std::thread::sleep(Duration::from_millis(300));
    // Two clients that connect and say nothing take both connections...
    let idle: Vec<_> = (0..2).map(|_| TcpStream::connect(&address).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // ...so a third is answered only once the header timeout has closed them.
    let asked = Instant::now();
    let (status, _) = http_get(&address, "/healthz").expect("answered once a connection was free");
    let waited = asked.elapsed();
    assert_eq!(status, 200);
    assert!(waited >= Duration::from_secs(2), "the limit did not hold the third client back: {waited:?}");
    drop(idle);
    stop(child);
}

#[test]
fn a_burst_of_metrics_requests_counts_the_journal_at_most_once_per_period() {
    let robot = Robot::new();
    let (child, address) = robot.spawn_serve(&[]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/metrics").is_some()));
    let counted = |address: &str| {
        let (_, text) = http_get(address, "/metrics").unwrap();
        metric(&text, "mailrobot_store_count_queries_total").unwrap_or_else(|| panic!("no count metric: {text}"))
    };
    let started = Instant::now();
    let before = counted(&address);
    let answers: Vec<_> = (0..40)
        .map(|i| {
            let address = address.clone();
            std::thread::spawn(move || http_get(&address, if i % 2 == 0 { "/metrics" } else { "/healthz" }))
        })
        .collect();
    for answer in answers {
        assert_eq!(answer.join().unwrap().map(|(s, _)| s), Some(200));
    }
    let after = counted(&address);
    // Uncached, that would be 41 counts; cached for 5 s, one per period boundary the burst crossed.
    let allowed = 1 + started.elapsed().as_secs() / 5;
    assert!(after - before <= allowed as f64, "{} counts for 41 requests in {:?}", after - before, started.elapsed());
    stop(child);
}

#[test]
fn metrics_can_be_put_behind_a_token() {
    let robot = Robot::new();
    let (child, address) = robot.spawn_serve(&[("MAILROBOT_METRICS_TOKEN", "prometheus-scrape-secret")]);
    assert!(wait_until(Duration::from_secs(10), || http_get(&address, "/healthz").is_some()));
    let refused = http_get_full(&address, "/metrics").unwrap();
    assert_eq!(refused.status, 401);
    assert!(refused.body.contains("MAILROBOT_METRICS_TOKEN") && !refused.body.contains("prometheus-scrape-secret"));
    let with = |token: &str| {
        let mut stream = TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    assert!(with("wrong").starts_with("HTTP/1.1 401"));
    let answer = with("prometheus-scrape-secret");
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("mailrobot_"), "{answer}");
    stop(child);
}

/// What an operator's dashboard needs, per mailbox: by id unless names are
/// allowed (they can be sensitive).
#[test]
fn metrics_count_per_mailbox_by_id_unless_names_are_allowed() {
    for names_allowed in [false, true] {
        let robot = Robot::new();
        let drop = robot.dir.path().join("drop");
        robot.add_drop_folder("acme-legal-desk", &drop);
        robot.run(&["mailbox", "set", "--name", "acme-legal-desk", "--poll-seconds", "1"]);
        std::fs::write(drop.join("inbox/1.eml"), simple_mail("1@x", "Contract", "", "hi")).unwrap();
        std::fs::write(drop.join("inbox/2.eml"), b"\x00 not a mail").unwrap();
        let id = robot.json(&["mailbox", "list", "--json"])[0]["id"].as_i64().unwrap();
        let env: &[(&str, &str)] = if names_allowed { &[("MAILROBOT_METRICS_NAMES", "1")] } else { &[] };
        let (mut serve, address) = robot.spawn_serve(env);
        let label = if names_allowed { "acme-legal-desk".to_string() } else { id.to_string() };
        let fetched = format!("mailrobot_mails_fetched_total{{mailbox=\"{label}\"}}");
        assert!(
            wait_until(Duration::from_secs(15), || http_get(&address, "/metrics")
                .is_some_and(|(_, m)| metric(&m, &fetched) == Some(2.0))),
            "{}",
            http_get(&address, "/metrics").unwrap().1
        );
        let (_, text) = http_get(&address, "/metrics").unwrap();
        assert_eq!(text.contains("acme-legal-desk"), names_allowed, "{text}");
        let failed = format!("mailrobot_mails_total{{mailbox=\"{label}\",state=\"failed\",kind=\"none\"}}");
        assert_eq!(metric(&text, &failed), Some(1.0), "{text}");
        // Histograms with buckets, not summaries.
        assert!(text.contains(&format!("mailrobot_poll_seconds_bucket{{mailbox=\"{label}\",le=\"0.5\"}}")), "{text}");
        assert!(text.contains(&format!("mailrobot_batch_seconds_bucket{{mailbox=\"{label}\",le=\"0.1\"}}")), "{text}");
        assert_eq!(metric(&text, "mailrobot_mailboxes{state=\"ok\"}"), Some(1.0), "{text}");
        assert_eq!(metric(&text, &format!("mailrobot_mailbox_state{{mailbox=\"{label}\",state=\"ok\"}}")), Some(1.0));
        assert_eq!(
            metric(&text, &format!("mailrobot_mailbox_state{{mailbox=\"{label}\",state=\"error\"}}")),
            Some(0.0)
        );
        assert!(text.contains("mailrobot_webhook_queue_depth 0"), "{text}");
        serve.kill().unwrap();
        let _ = serve.wait();
    }
}

/// The Grafana dashboard in docs/ only asks for metrics the robot records.
#[test]
fn the_grafana_dashboard_uses_only_recorded_metrics() {
    let root = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../..");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).unwrap()).unwrap();
    let sources: String = [
        "crates/mailrobot/src/metrics.rs",
        "crates/mailrobot/src/http.rs",
        "crates/auth/src/broker.rs",
        "crates/outbox/src/engine.rs",
    ]
    .iter()
    .map(|p| std::fs::read_to_string(root.join(p)).unwrap())
    .collect();
    let documented = std::fs::read_to_string(root.join("docs/metrics.md")).unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("mailrobot_"))
            {
                let name = word.trim_end_matches("_bucket");
                assert!(sources.contains(&format!("\"{name}\"")), "{name} (panel {}) is recorded", panel["title"]);
                assert!(documented.contains(&format!("`{name}`")), "{name} is in docs/metrics.md");
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "{checked}");
}

/// Mails processed again from the journal (after `messages retry`, or a
/// crash) are read within the node's memory budget too: a serve with
/// nothing to fetch holds exactly their bytes while it files them.
#[test]
fn mails_processed_again_from_the_journal_count_in_the_memory_budget() {
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    let path = drop.to_str().unwrap();
    robot.run(&["mailbox", "add", "--name", "desk", "--kind", "drop-folder", "--path", path, "--poll-seconds", "1"]);
    // Not mails at all (no header): each fails, and is kept.
    let broken: Vec<Vec<u8>> =
        (0..4).map(|i| [b"\x00 not a mail ".as_slice(), &vec![b'a' + i; 300_000 + usize::from(i)]].concat()).collect();
    for (i, bytes) in broken.iter().enumerate() {
        std::fs::write(drop.join(format!("inbox/{i}.eml")), bytes).unwrap();
    }
    robot.run(&["run-once"]);
    let states = |robot: &Robot| -> Vec<String> {
        robot.messages().iter().map(|m| m["state"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(states(&robot), ["failed"; 4]);
    robot.run(&["messages", "retry"]);
    assert_eq!(states(&robot), ["fetched"; 4]);

    let (child, address) = robot.spawn_serve(&[]);
    let filed_again = || {
        http_get(&address, "/metrics").is_some_and(|(_, m)| {
            metric(&m, r#"mailrobot_mails_total{mailbox="1",state="failed",kind="none"}"#) == Some(4.0)
        })
    };
    assert!(wait_until(Duration::from_secs(60), filed_again), "{}", robot.serve_logs());
    let (_, metrics) = http_get(&address, "/metrics").unwrap();
    stop(child);
    assert_eq!(states(&robot), ["failed"; 4]);
    assert_eq!(metric(&metrics, "mailrobot_mail_in_memory_bytes"), Some(0.0), "given back once filed");
    let held: u64 = broken.iter().map(|b| b.len() as u64).sum();
    assert_eq!(metric(&metrics, "mailrobot_mail_in_memory_peak_bytes"), Some(held as f64), "{metrics}");
}

/// Polls of many mailboxes with a backlog share one budget for fetched mail
/// not yet filed (`MAILROBOT_MAIL_IN_MEMORY_MB`): below it, batches wait
/// their turn instead of piling up in memory; every mail still gets filed.
#[test]
fn polls_share_a_node_wide_budget_for_mail_in_memory() {
    const MAILBOXES: usize = 6;
    const MAILS: usize = 30;
    // Mailbox i's mails weigh (40 + 10 i) KB: its one batch (all 30) is
    // 1.2–2.7 MB, each over a 1 MB budget, so one at a time may be held.
    let line = format!("{}\r\n", "y".repeat(76));
    let batch_bytes = |i: usize| -> u64 {
        let body = line.repeat((40 + 10 * i) * 1024 / line.len());
        (0..MAILS).map(|n| simple_mail(&format!("{i}-{n}@x"), "Backlog", "", &body).len() as u64).sum()
    };
    let peak_with = |budget_mb: Option<&str>| -> f64 {
        let robot = Robot::new();
        let mut folders = Vec::new();
        for i in 0..MAILBOXES {
            let folder = robot.dir.path().join(format!("drop-{i}"));
            robot.add_drop_folder(&format!("drop-{i}"), &folder);
            let body = line.repeat((40 + 10 * i) * 1024 / line.len());
            for n in 0..MAILS {
                let mail = simple_mail(&format!("{i}-{n}@x"), "Backlog", "", &body);
                std::fs::write(folder.join(format!("inbox/{n}.eml")), mail).unwrap();
            }
            folders.push(folder);
        }
        let env: Vec<(&str, &str)> = budget_mb.map(|mb| ("MAILROBOT_MAIL_IN_MEMORY_MB", mb)).into_iter().collect();
        let (child, address) = robot.spawn_serve(&env);
        let all_filed =
            || folders.iter().all(|f| std::fs::read_dir(f.join("processed")).map_or(0, |d| d.count()) == MAILS);
        assert!(wait_until(Duration::from_secs(60), all_filed), "{}", robot.serve_logs());
        assert_eq!(robot.tickets().len(), MAILBOXES * MAILS);
        let (_, metrics) = http_get(&address, "/metrics").unwrap();
        stop(child);
        assert_eq!(metric(&metrics, "mailrobot_mail_in_memory_bytes"), Some(0.0), "all given back once filed");
        metric(&metrics, "mailrobot_mail_in_memory_peak_bytes").unwrap_or_else(|| panic!("{metrics}"))
    };
    let largest_batch = batch_bytes(MAILBOXES - 1) as f64;
    let bounded = peak_with(Some("1"));
    assert!(bounded <= largest_batch, "peak {bounded} with a 1 MB budget; the largest batch is {largest_batch}");
    // The check above can fail: without a tight budget the polls hold
    // several batches at once.
    let unbounded = peak_with(None);
    assert!(
        unbounded > largest_batch,
        "peak {unbounded} with the default budget; the largest batch is {largest_batch}"
    );
}
