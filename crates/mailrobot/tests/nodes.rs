//! Several `serve` nodes on one PostgreSQL database: leases share the
//! mailboxes out, a killed node's mailboxes are taken over within the lease
//! TTL, a paused node is fenced when it wakes, and through it all every mail
//! becomes exactly one ticket entry.
//!
//! These tests always run on PostgreSQL (several nodes need a shared
//! database), whichever backend the rest of the suite runs on.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;
use mailrobot_testkit::dovecot::Dovecot;
use rand::Rng;

const MASTER_KEY: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
const PASSWORD: &str = "chaos-password";
/// The robot's lease TTL (mailrobot_store::lease::LEASE_TTL).
const LEASE_TTL: Duration = Duration::from_secs(15);
const POLL_SECONDS: u64 = 1;

fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("desk{i:02}")).collect()
}

/// A robot on a fresh PostgreSQL database with `n` IMAP mailboxes in one
/// Dovecot, polled every second.
fn cluster(n: usize) -> (Dovecot, Robot) {
    let names = users(n);
    let accounts: Vec<(&str, &str)> = names.iter().map(|u| (u.as_str(), PASSWORD)).collect();
    let dc = Dovecot::start(&accounts).expect("start Dovecot (scripts/test.sh installs it)");
    let mut robot = Robot::on_postgres();
    robot.env.push(("MAILROBOT_MASTER_KEY".into(), MASTER_KEY.into()));
    for user in &names {
        robot.add_imap(user, dc.imap_port(), user, PASSWORD, &["--poll-seconds", &POLL_SECONDS.to_string()]);
    }
    (dc, robot)
}

fn mail(n: usize) -> Vec<u8> {
    format!(
        "From: Requester {n} <req{n}@example.com>\r\nTo: desk@example.com\r\nSubject: Chaos {n}\r\n\
         Message-ID: <chaos-{n}@example.com>\r\nDate: Wed, 02 Dec 2026 10:00:00 +0000\r\n\r\nMail number {n}.\r\n"
    )
    .into_bytes()
}

fn nodes_list(robot: &Robot) -> Vec<serde_json::Value> {
    robot.json(&["nodes", "list", "--json"]).as_array().unwrap().clone()
}

fn held_by_live_nodes(robot: &Robot) -> Vec<usize> {
    nodes_list(robot).iter().filter(|n| n["alive"] == true).map(|n| n["mailboxes"].as_array().unwrap().len()).collect()
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, signal) };
}

#[test]
fn nodes_share_the_mailboxes_and_take_over_a_killed_nodes_share() {
    let (dc, robot) = cluster(6);
    let (a, b) = (robot.another_node(), robot.another_node());
    let (mut a_serve, _) = a.spawn_serve(&[]);
    let (mut b_serve, _) = b.spawn_serve(&[]);
    // Within a few heartbeats the two nodes hold three mailboxes each.
    let shared = wait_until(Duration::from_secs(30), || {
        let mut held = held_by_live_nodes(&robot);
        held.sort();
        held == [3, 3]
    });
    assert!(shared, "{:#}", robot.json(&["nodes", "list", "--json"]));
    let listed = nodes_list(&robot);
    for field in ["node_id", "host", "started", "last_heartbeat", "mailboxes"] {
        assert!(listed[0].get(field).is_some(), "nodes list --json names {field}: {}", listed[0]);
    }
    let ids: HashSet<&str> = listed.iter().map(|n| n["node_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "node ids are unique per process");

    // A killed node's mailboxes are polled again within the lease TTL.
    a_serve.kill().unwrap();
    a_serve.wait().unwrap();
    let killed_at = Instant::now();
    for (i, user) in users(6).iter().enumerate() {
        dc.deliver(user, "INBOX", &mail(i)).unwrap();
    }
    assert!(
        wait_until(LEASE_TTL + Duration::from_secs(20), || robot.tickets().len() == 6),
        "after the kill: {} tickets",
        robot.tickets().len()
    );
    let took = killed_at.elapsed();
    assert!(took < LEASE_TTL + Duration::from_secs(POLL_SECONDS + 3), "took {took:?}");
    assert_eq!(held_by_live_nodes(&robot), [6]);
    b_serve.kill().unwrap();
    b_serve.wait().unwrap();
}

/// A node that started alone hands the mailboxes still waiting for a poll
/// slot to a node that joins, at its next heartbeat: only a poll under way
/// is kept (up to 10 s, so its download is not thrown away). Here every
/// poll hangs on a server that never greets, and a node polls one mailbox
/// at a time.
#[test]
fn mailboxes_waiting_for_a_poll_slot_are_handed_to_a_joining_node() {
    // The kernel accepts connections into the backlog; nobody ever greets.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut robot = Robot::on_postgres();
    robot.env.push(("MAILROBOT_MASTER_KEY".into(), MASTER_KEY.into()));
    robot.env.push(("MAILROBOT_POLL_CONCURRENCY".into(), "1".into()));
    for user in users(6) {
        robot.add_imap(&user, port, &user, PASSWORD, &["--poll-seconds", &POLL_SECONDS.to_string()]);
    }
    let (a, b) = (robot.another_node(), robot.another_node());
    let (mut a_serve, _) = a.spawn_serve(&[]);
    let alone = wait_until(Duration::from_secs(20), || held_by_live_nodes(&robot) == [6]);
    let (mut b_serve, _) = b.spawn_serve(&[]);
    let joined = Instant::now();
    let shared = wait_until(Duration::from_secs(20), || {
        let mut held = held_by_live_nodes(&robot);
        held.sort();
        held == [3, 3]
    });
    let took = joined.elapsed();
    let listed = robot.json(&["nodes", "list", "--json"]);
    for serve in [&mut a_serve, &mut b_serve] {
        serve.kill().unwrap();
        serve.wait().unwrap();
    }
    assert!(alone, "the first node took every mailbox: {listed:#}");
    assert!(shared, "{listed:#}");
    assert!(took < Duration::from_secs(7), "the joining node waited {took:?} for its share: {listed:#}");
}

/// Nodes started together share the mailboxes out from their first poll: a
/// node on a shared database takes no lease when it starts, only at its
/// first heartbeat, by when the nodes starting with it have registered. So
/// each takes its share once, and nothing is handed over (a handover gives
/// the mailbox a new fencing token, and throws away a poll under way).
/// Before, the first node took every mailbox and started polling them all.
#[test]
fn nodes_started_together_take_their_shares_at_their_first_heartbeat() {
    use mailrobot_store::lease::LEASE_TTL;
    use mailrobot_store::{LeaseStore, PgStore};
    use std::sync::Arc;

    let mut robot = Robot::on_postgres();
    robot.env.push(("MAILROBOT_MASTER_KEY".into(), MASTER_KEY.into()));
    // Never polled here: the nodes are started in this process, without
    // their polling loops.
    let port = free_port();
    for user in users(6) {
        robot.add_imap(&user, port, &user, PASSWORD, &["--poll-seconds", "60"]);
    }
    let url = robot.database_url().unwrap().to_string();
    let stores: Vec<Arc<PgStore>> = (0..3).map(|_| Arc::new(PgStore::connect(&url).unwrap())).collect();
    let nodes: Vec<mailrobot::node::Node> =
        stores.iter().map(|store| mailrobot::node::Node::start(store.clone()).unwrap()).collect();
    for node in &nodes {
        assert_eq!(
            node.held(),
            Vec::<i64>::new(),
            "{} took leases as it started, before the others registered",
            node.id
        );
    }
    // The first heartbeats, in the order the nodes started.
    for (node, store) in nodes.iter().zip(&stores) {
        store.heartbeat(&node.id, LEASE_TTL).unwrap();
    }
    let held: Vec<usize> = nodes.iter().map(|node| node.held().len()).collect();
    assert_eq!(held, [2, 2, 2], "each node took its share at its first heartbeat");
    let leases = stores[0].leases().unwrap();
    assert_eq!(leases.len(), 6);
    assert!(leases.iter().all(|lease| lease.token == 1), "every mailbox leased once, none handed over: {leases:?}");
}

/// "Poll now" (the API's, the UI's button) on a node that does not hold the
/// mailbox asks the node that does, instead of failing on a write its fence
/// refuses; on a disabled mailbox, which no node takes, it says so.
#[test]
fn poll_now_on_a_node_without_the_lease_asks_the_holder() {
    let (_dc, robot) = cluster(2);
    let writer = common::api::token(&robot, "ops", false);
    let (a, b) = (robot.another_node(), robot.another_node());
    let (mut a_serve, a_address) = a.spawn_serve(&[]);
    let (mut b_serve, _) = b.spawn_serve(&[]);
    let shared = wait_until(Duration::from_secs(30), || held_by_live_nodes(&robot) == [1, 1]);
    let listed = nodes_list(&robot);
    let held_by_b = listed
        .iter()
        .find(|n| n["alive"] == true && n["pid"].as_u64() == Some(u64::from(b_serve.id())))
        .and_then(|n| n["mailboxes"][0].as_str())
        .map(str::to_string);
    let url = format!("http://{a_address}/api/v1/mailboxes/{}/poll", held_by_b.clone().unwrap_or_default());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = runtime.block_on(common::api::call("POST", &url, Some(&writer), None));
    robot.run(&["mailbox", "disable", held_by_b.as_deref().unwrap_or_default()]);
    let (_, disabled) = runtime.block_on(common::api::call("POST", &url, Some(&writer), None));
    for serve in [&mut a_serve, &mut b_serve] {
        serve.kill().unwrap();
        serve.wait().unwrap();
    }
    assert!(shared && held_by_b.is_some(), "{listed:#?}");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "another node polls this mailbox; it was asked to poll it now", "{body}");
    assert_eq!(disabled["ok"], false, "{disabled}");
    let said = disabled["message"].as_str().unwrap_or_default();
    assert!(said.ends_with("is disabled, and nodes poll only enabled mailboxes: enable it first"), "{disabled}");
}

/// `run-once` beside a running node leaves the node's mailboxes to it and
/// says which node polls them; once that node is killed (on this machine),
/// the next `run-once` frees its leases at once — no waiting out the TTL —
/// and polls every mailbox.
#[test]
fn run_once_leaves_a_nodes_mailboxes_to_it_and_takes_a_killed_nodes_at_once() {
    let (dc, robot) = cluster(3);
    let (mut serve, _) = robot.spawn_serve(&[]);
    assert!(wait_until(Duration::from_secs(30), || held_by_live_nodes(&robot) == [3]), "{:?}", nodes_list(&robot));
    let node_id = nodes_list(&robot)[0]["node_id"].as_str().unwrap().to_string();
    let passes = robot.json(&["run-once", "--json"]);
    let passes = passes.as_array().unwrap();
    assert_eq!(passes.len(), 3, "{passes:?}");
    for pass in passes {
        assert_eq!(pass["report"]["held_by"], node_id.as_str(), "{pass}");
        assert_eq!(pass["report"]["fetched"], 0, "{pass}");
    }
    let text = robot.run(&["run-once"]);
    assert!(text.contains(&format!("polled by node {node_id}")), "{text}");
    assert_eq!(held_by_live_nodes(&robot), [3], "run-once took nothing from the node");

    serve.kill().unwrap();
    serve.wait().unwrap();
    for (i, user) in users(3).iter().enumerate() {
        dc.deliver(user, "INBOX", &mail(i)).unwrap();
    }
    let passes = robot.json(&["run-once", "--json"]);
    for pass in passes.as_array().unwrap() {
        assert!(pass["report"].get("held_by").is_none(), "the killed node's leases were freed: {pass}");
        assert_eq!(pass["report"]["fetched"], 1, "{pass}");
    }
    assert_eq!(robot.tickets().len(), 3);
    assert!(nodes_list(&robot).iter().all(|n| n["alive"] == false), "{:?}", nodes_list(&robot));
}

/// Nodes must share one master key: a node whose key cannot open what the
/// first node sealed is refused with what to do.
#[test]
fn a_node_with_another_master_key_is_refused() {
    let mut first = Robot::on_postgres();
    first.env.push(("MAILROBOT_MASTER_KEY".into(), MASTER_KEY.into()));
    first.run(&["mailbox", "list"]);
    let mut other = first.another_node();
    other.env = vec![("MAILROBOT_MASTER_KEY".into(), "d4".repeat(32))];
    let out = other.run_raw(&["mailbox", "list"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("same MAILROBOT_MASTER_KEY"), "{stderr}");
    assert!(!stderr.contains(&"d4".repeat(32)) && !stderr.contains(MASTER_KEY), "no key is shown: {stderr}");
}

/// `MAILROBOT_DATABASE_SESSIONS` sets the sessions a process opens at most
/// (the store's `postgres_a_process_opens_at_most_the_sessions_it_is_given`
/// shows the bound); fewer than two is refused with what is allowed.
#[test]
fn the_sessions_a_node_opens_are_set_by_the_environment() {
    let robot = Robot::on_postgres();
    let refused = robot.run_raw(&["mailbox", "list"], &[("MAILROBOT_DATABASE_SESSIONS", "1")]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("MAILROBOT_DATABASE_SESSIONS must be a number of sessions, at least 2"), "{stderr}");
    let two = robot.run_raw(&["mailbox", "list"], &[("MAILROBOT_DATABASE_SESSIONS", "2")]);
    assert!(two.status.success(), "{}", String::from_utf8_lossy(&two.stderr));
}

/// The chaos test: three nodes, thirty IMAP mailboxes, mail arriving
/// throughout, nodes killed (SIGKILL) and paused (SIGSTOP/SIGCONT) at random
/// moments. Every mail becomes exactly one ticket entry; no mailbox waits
/// longer than its holder's lease TTL plus its poll interval (twice the TTL
/// when the next holder fails too); nodes that woke up fenced stop polling
/// what they lost, and their refused writes are counted.
///
/// `MAILROBOT_CHAOS_SECONDS` sets how long the chaos lasts (default 120).
#[test]
fn chaos_three_nodes_thirty_mailboxes() {
    let seconds: u64 = std::env::var("MAILROBOT_CHAOS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    let names = users(30);
    let (dc, robot) = cluster(30);
    let nodes: Vec<Robot> = (0..3).map(|_| robot.another_node()).collect();
    let mut running: Vec<Option<Child>> = nodes.iter().map(|n| Some(n.spawn_serve(&[]).0)).collect();
    let mut paused_until: Vec<Option<Instant>> = vec![None; 3];
    let mut down_until: Vec<Option<Instant>> = vec![None; 3];
    let mut rng = rand::thread_rng();
    let (mut kills, mut pauses, mut long_pauses) = (0, 0, 0);

    let start = Instant::now();
    let mut delivered = 0usize;
    let mut next_action = Instant::now() + Duration::from_secs(5);
    let mut next_sample = Instant::now();
    // Per mailbox: the longest time seen since its last poll.
    let mut longest_wait: BTreeMap<String, Duration> = BTreeMap::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        let now = Instant::now();
        // Mail arrives throughout.
        let user = &names[rng.gen_range(0..names.len())];
        dc.deliver(user, "INBOX", &mail(delivered)).unwrap();
        delivered += 1;

        // Paused nodes wake up, killed ones come back.
        for i in 0..3 {
            if paused_until[i].is_some_and(|t| now >= t) {
                signal(running[i].as_ref().unwrap(), libc::SIGCONT);
                paused_until[i] = None;
            }
            if down_until[i].is_some_and(|t| now >= t) {
                running[i] = Some(nodes[i].spawn_serve(&[]).0);
                down_until[i] = None;
            }
        }
        // Now and then, one of the nodes that run is killed or paused (one
        // node always keeps running).
        if now >= next_action {
            let up: Vec<usize> = (0..3).filter(|&i| paused_until[i].is_none() && down_until[i].is_none()).collect();
            if up.len() > 1 {
                let i = up[rng.gen_range(0..up.len())];
                if rng.gen_bool(0.5) {
                    let mut child = running[i].take().unwrap();
                    child.kill().unwrap();
                    child.wait().unwrap();
                    down_until[i] = Some(now + Duration::from_millis(rng.gen_range(500..4000)));
                    kills += 1;
                } else {
                    let pause = Duration::from_secs(rng.gen_range(2..26));
                    signal(running[i].as_ref().unwrap(), libc::SIGSTOP);
                    paused_until[i] = Some(now + pause);
                    pauses += 1;
                    if pause > LEASE_TTL + Duration::from_secs(2) {
                        long_pauses += 1;
                    }
                }
            }
            next_action = now + Duration::from_millis(rng.gen_range(3000..9000));
        }
        // How long each mailbox has waited since its last poll.
        if now >= next_sample {
            let at = chrono::Utc::now();
            for mailbox in robot.json(&["mailbox", "list", "--json"]).as_array().unwrap() {
                if let Some(last) = mailbox["last_poll_at"].as_str() {
                    let last = chrono::DateTime::parse_from_rfc3339(last).unwrap();
                    let waited = (at - last.with_timezone(&chrono::Utc)).to_std().unwrap_or_default();
                    let entry = longest_wait.entry(mailbox["name"].as_str().unwrap().to_string()).or_default();
                    *entry = (*entry).max(waited);
                }
            }
            next_sample = now + Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(150));
    }

    // Everyone back; every mail becomes a ticket.
    for i in 0..3 {
        if paused_until[i].take().is_some() {
            signal(running[i].as_ref().unwrap(), libc::SIGCONT);
        }
        if down_until[i].take().is_some() {
            running[i] = Some(nodes[i].spawn_serve(&[]).0);
        }
    }
    // A mail is filed (its ticket exists) before it is moved; one filed by a
    // node that was then killed or fenced is moved by the mailbox's next
    // holder on its next poll. So wait for both.
    let moved_count = || names.iter().map(|u| dc.count(u, "Processed")).sum::<usize>();
    let settling = Instant::now();
    let all_filed = wait_until(Duration::from_secs(90), || robot.tickets().len() >= delivered);
    let (filed_after, left_to_move) = (settling.elapsed(), delivered.saturating_sub(moved_count()));
    let all_in = all_filed && wait_until(Duration::from_secs(90), || moved_count() >= delivered);
    eprintln!(
        "chaos: every mail filed {filed_after:?} after the chaos ended; {left_to_move} not moved yet then, all moved \
         after {:?}",
        settling.elapsed()
    );
    let tickets = robot.tickets();
    for child in running.iter_mut().flatten() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let logs: String = nodes.iter().map(|n| n.serve_logs()).collect();
    if let Ok(dir) = std::env::var("MAILROBOT_CHAOS_KEEP_LOGS") {
        for (i, node) in nodes.iter().enumerate() {
            std::fs::write(format!("{dir}/node{i}.log"), node.serve_logs()).unwrap();
        }
    }
    let fenced = logs.matches("write refused: fenced").count();
    let leases_lost = logs.matches("leases lost: another node took them while this node was away").count();
    eprintln!(
        "chaos: {seconds} s, {delivered} mails, {kills} kills, {pauses} pauses ({long_pauses} longer than the lease \
         TTL), {fenced} fenced writes refused, {leases_lost} leases found lost on waking, longest wait for a poll {:?}",
        longest_wait.values().max()
    );
    // What went wrong on the nodes, by message, for whoever reads a failure.
    let mut problems: BTreeMap<String, usize> = BTreeMap::new();
    for line in logs.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")) {
        let plain: String =
            line.split('\u{1b}').map(|part| part.split_once('m').map_or(part, |(_, rest)| rest)).collect();
        let message: String = plain.split_whitespace().skip(2).take(12).collect::<Vec<_>>().join(" ");
        *problems.entry(message).or_default() += 1;
    }
    for (message, n) in &problems {
        eprintln!("{n:>5} × {message}");
    }
    assert!(all_in, "{} tickets and {} mails moved for {delivered} mails", tickets.len(), moved_count());

    // Exactly once: one ticket per mail, one entry each, one journal row per mail.
    assert_eq!(tickets.len(), delivered, "no mail became two tickets");
    let subjects: HashSet<&str> = tickets.iter().map(|t| t["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects.len(), delivered);
    assert!(tickets.iter().all(|t| t["entries"] == 1), "one entry per mail");
    let messages = robot.messages();
    assert_eq!(messages.len(), delivered, "one journal row per mail");
    assert!(messages.iter().all(|m| m["state"] == "processed"), "every mail processed");
    assert_eq!(moved_count(), delivered, "every mail moved to Processed once");
    assert!(names.iter().all(|u| dc.count(u, "INBOX") == 0));

    // After one failure, a mailbox waits at most the lease TTL plus its poll
    // interval (the takeover test above measures that alone). Here failures
    // come every few seconds, so a mailbox's new holder may itself be killed
    // or paused before its first poll: the bound allows one such cascade
    // (two TTLs), plus the sampling period and one poll's own time.
    let bound = LEASE_TTL * 2 + Duration::from_secs(POLL_SECONDS + 3);
    let late: Vec<_> = longest_wait.iter().filter(|(_, w)| **w > bound).collect();
    assert!(late.is_empty(), "mailboxes left unpolled longer than {bound:?}: {late:?}");
    // A node that woke after its leases were taken stopped polling them:
    // either a write of its was refused (it was mid-poll when paused) or its
    // next heartbeat found the leases gone first.
    if long_pauses > 0 {
        assert!(
            fenced + leases_lost > 0,
            "{long_pauses} pauses outlived the lease, yet no node found it had lost a mailbox"
        );
    }
}
