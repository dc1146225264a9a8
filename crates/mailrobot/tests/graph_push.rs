//! Graph change notifications end to end against the emulator: the robot
//! subscribes each Graph mailbox under its public URL, answers the
//! validation handshake, polls at once on each notification whose
//! clientState is right, renews, handles lifecycle events, takes its stored
//! subscription up again after a restart, and falls back to polling where
//! Graph cannot subscribe (delegated access to a shared mailbox).

mod common;

use std::time::{Duration, Instant};

use common::contoso::*;
use common::*;
use m365_emulator::{Emulator, LifecycleEvent, MailboxGrant, NotificationFault, NotificationPolicy, SubscriptionInfo};

fn deliver(emu: &Emulator, n: usize) {
    let mime = String::from_utf8(simple_mail(&format!("push{n}@ex"), &format!("Pushed {n}"), "", "Hello")).unwrap();
    emu.deliver_mime(SHARED, "inbox", &mime).unwrap();
}

/// The shared mailbox through `connection`, polled every `poll_seconds`.
fn add_shared_mailbox(robot: &Robot, connection: &str, poll_seconds: &str) {
    let args = ["--name", "shared", "--kind", "graph", "--connection", connection, "--address", SHARED];
    robot.run(&[&["mailbox", "add"][..], &args, &["--poll-seconds", poll_seconds]].concat());
}

/// An application connection and the shared mailbox, polled every ten
/// minutes: only a notification brings mail in within seconds.
fn robot_with_app_mailbox(emu: &Emulator) -> Robot {
    let robot = robot_with_tenant(emu);
    add_connection(&robot, "app", "graph", "application");
    add_shared_mailbox(&robot, "app", "600");
    robot
}

/// The one subscription, once there is one (and no other).
fn wait_for_subscription(emu: &Emulator, robot: &Robot, other_than: Option<&str>) -> SubscriptionInfo {
    let mut found = None;
    let made = wait_until(Duration::from_secs(20), || {
        let subs = emu.subscriptions();
        found = subs.first().cloned();
        subs.len() == 1 && other_than.is_none_or(|id| subs[0].id != id)
    });
    assert!(made, "no subscription: {:?}\n{}", emu.subscriptions(), robot.serve_logs());
    found.unwrap()
}

/// Delivers mail `n` and waits for its ticket.
fn expect_ticket_soon(emu: &Emulator, robot: &Robot, n: usize, within: Duration) {
    deliver(emu, n);
    let delivered = Instant::now();
    let arrived = wait_until(within, || robot.tickets().len() == n);
    assert!(arrived, "mail {n} was no ticket within {within:?}:\n{}", robot.serve_logs());
    eprintln!("mail {n}: a ticket {:?} after delivery", delivered.elapsed());
}

#[test]
fn a_notification_brings_new_graph_mail_in_at_once() {
    let emu = emulator();
    let robot = robot_with_app_mailbox(&emu);
    let (mut serve, address) = robot.spawn_serve(&[]);
    let sub = wait_for_subscription(&emu, &robot, None);

    let public = format!("http://{address}");
    assert_eq!(sub.notification_url, format!("{public}/graph/notifications"));
    assert_eq!(sub.lifecycle_notification_url.as_deref(), Some(format!("{public}/graph/lifecycle").as_str()));
    assert_eq!(sub.change_type, "created");
    assert!(sub.resource.contains(SHARED), "{}", sub.resource);
    let client_state = sub.client_state.clone().expect("a clientState");
    assert!(client_state.len() >= 32, "a guessable clientState: {client_state}");
    assert!(!robot.database_contains(client_state.as_bytes()), "the clientState is stored in clear");
    assert!(!robot.serve_logs().contains(&client_state), "the clientState was logged");
    // The robot answered Graph's validation of both URLs.
    let validated = emu.notifications().iter().filter(|n| n.outcome == "validated").count();
    assert_eq!(validated, 2, "{:?}", emu.notifications());

    for n in 1..=3 {
        expect_ticket_soon(&emu, &robot, n, Duration::from_secs(5));
    }
    let answers: Vec<Option<u16>> =
        emu.notifications().iter().filter(|n| n.kind == "change").map(|n| n.status).collect();
    assert!(!answers.is_empty() && answers.iter().all(|s| *s == Some(202)), "{answers:?}");
    assert_eq!(emu.count(SHARED, "inbox").unwrap(), 0);

    // A disabled mailbox's subscription ends, at Graph and in the store
    // (its sealed clientState goes with it).
    let sealed = || robot.json(&["secrets", "status", "--json"])["secrets"].as_u64().unwrap();
    let before = sealed();
    robot.run(&["mailbox", "disable", "shared"]);
    let ended = wait_until(Duration::from_secs(20), || emu.subscriptions().is_empty());
    assert!(ended, "still subscribed: {:?}\n{}", emu.subscriptions(), robot.serve_logs());
    let forgotten = wait_until(Duration::from_secs(5), || sealed() == before - 1);
    assert!(forgotten, "the ended subscription is still stored:\n{}", robot.serve_logs());
    serve.kill().unwrap();
    serve.wait().unwrap();
}

#[test]
fn lifecycle_notifications_renew_catch_up_and_subscribe_again() {
    let emu = emulator();
    let robot = robot_with_app_mailbox(&emu);
    let (mut serve, address) = robot.spawn_serve(&[]);
    let sub = wait_for_subscription(&emu, &robot, None);
    expect_ticket_soon(&emu, &robot, 1, Duration::from_secs(5));

    // reauthorizationRequired: the robot renews (which reauthorizes).
    assert!(emu.trigger_lifecycle(&sub.id, LifecycleEvent::ReauthorizationRequired).unwrap());
    let renewed = wait_until(Duration::from_secs(10), || {
        emu.subscriptions().first().is_some_and(|s| !s.reauthorization_required && s.expiration > sub.expiration)
    });
    assert!(renewed, "not renewed: {:?}\n{}", emu.subscriptions(), robot.serve_logs());

    // missed: change notifications cannot get through; a mail arrives; the
    // lifecycle event alone makes the robot look.
    let notification_url = format!("http://{address}/graph/notifications");
    emu.fail_notifications(NotificationFault { url: notification_url, count: None, ms: Some(60_000) }).unwrap();
    deliver(&emu, 2);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(robot.tickets().len(), 1, "no notification got through, yet the mail came in");
    assert!(emu.trigger_lifecycle(&sub.id, LifecycleEvent::Missed).unwrap());
    let caught_up = wait_until(Duration::from_secs(5), || robot.tickets().len() == 2);
    assert!(caught_up, "no catch-up after `missed`:\n{}", robot.serve_logs());
    emu.clear_notification_faults();

    // subscriptionRemoved: a new subscription, and mail still comes at once.
    assert!(emu.trigger_lifecycle(&sub.id, LifecycleEvent::SubscriptionRemoved).unwrap());
    let again = wait_for_subscription(&emu, &robot, Some(&sub.id));
    assert_ne!(again.client_state, sub.client_state, "a new subscription gets a new clientState");
    expect_ticket_soon(&emu, &robot, 3, Duration::from_secs(5));

    // The mailbox is set to another folder: the subscription follows it.
    robot.run(&["mailbox", "set", "shared", "--folder", "junkemail"]);
    let moved = wait_for_subscription(&emu, &robot, Some(&again.id));
    assert!(moved.resource.to_lowercase().contains("mailfolders("), "{}", moved.resource);
    let mime = String::from_utf8(simple_mail("junk4@ex", "Pushed 4", "", "Hello")).unwrap();
    emu.deliver_mime(SHARED, "junkemail", &mime).unwrap();
    let arrived = wait_until(Duration::from_secs(5), || robot.tickets().len() == 4);
    assert!(arrived, "mail in the new folder was no ticket within 5 s:\n{}", robot.serve_logs());
    serve.kill().unwrap();
    serve.wait().unwrap();
}

#[test]
fn a_restart_takes_up_the_stored_subscription_and_renewal_comes_before_expiry() {
    let emu = emulator();
    // Graph raises lifetimes under 45 minutes to 45; the emulator lets the
    // test keep one minute, so a renewal comes within seconds.
    emu.set_notification_policy(NotificationPolicy { min_expiration_minutes: 0, ..Default::default() }).unwrap();
    let robot = robot_with_app_mailbox(&emu);
    // A one-minute lifetime: renewed after about 30 s.
    let env = [("MAILROBOT_GRAPH_SUBSCRIPTION_SECONDS", "60")];
    let (mut serve, address) = robot.spawn_serve(&env);
    let sub = wait_for_subscription(&emu, &robot, None);
    // Graph has it before the robot has stored it: killed in between, the
    // next process would rightly make another.
    let stored =
        wait_until(Duration::from_secs(10), || robot.serve_logs().contains("Graph change notifications: subscribed"));
    assert!(stored, "{}", robot.serve_logs());
    serve.kill().unwrap();
    serve.wait().unwrap();

    // The next process, at the same public URL, finds the subscription
    // stored and keeps it: no second subscription, no new validation.
    emu.clear_notifications();
    let (mut serve, _) = robot.spawn_serve_at(&address, &env);
    let taken =
        wait_until(Duration::from_secs(20), || robot.serve_logs().contains("taking up the stored subscription"));
    assert!(taken, "{}", robot.serve_logs());
    let subs = emu.subscriptions();
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert_eq!(subs[0].id, sub.id);
    assert!(emu.notifications().iter().all(|n| n.kind != "validation"), "{:?}", emu.notifications());
    expect_ticket_soon(&emu, &robot, 1, Duration::from_secs(5));

    let renewed = wait_until(Duration::from_secs(45), || {
        emu.subscriptions().first().is_some_and(|s| s.id == sub.id && s.expiration > sub.expiration)
    });
    assert!(renewed, "not renewed before expiry: {:?}\n{}", emu.subscriptions(), robot.serve_logs());
    expect_ticket_soon(&emu, &robot, 2, Duration::from_secs(5));
    serve.kill().unwrap();
    serve.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_without_the_right_client_state_are_ignored() {
    let emu = emulator();
    let robot = robot_with_app_mailbox(&emu);
    let (mut serve, address) = robot.spawn_serve(&[]);
    let sub = wait_for_subscription(&emu, &robot, None);
    let url = format!("http://{address}/graph/notifications");
    let http = reqwest::Client::new();

    // The validation handshake echoes the decoded token as plain text.
    let answer = http.post(format!("{url}?validationToken=Validation%3A%20Testing%20client")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(answer.text().await.unwrap(), "Validation: Testing client");

    // Let the first poll and the catch-up after subscribing finish.
    std::thread::sleep(Duration::from_secs(2));
    let deltas = || emu.stats().requests("graph_delta");
    let notify = |client_state: &str| {
        let body = serde_json::json!({"value": [{
            "subscriptionId": sub.id,
            "clientState": client_state,
            "changeType": "created",
            "resource": "Users/x/Messages/y",
        }]});
        let (http, url) = (http.clone(), url.clone());
        async move { http.post(url).json(&body).send().await.unwrap().status() }
    };
    let before = deltas();
    assert_eq!(notify("not-the-client-state").await, 202);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(deltas(), before, "a forged notification made the robot poll");
    assert!(robot.serve_logs().contains("wrong clientState"), "{}", robot.serve_logs());

    assert_eq!(notify(sub.client_state.as_deref().unwrap()).await, 202);
    let polled = wait_until(Duration::from_secs(5), || deltas() > before);
    assert!(polled, "a genuine notification made no poll:\n{}", robot.serve_logs());

    let garbage = http.post(&url).body("not json").send().await.unwrap();
    assert_eq!(garbage.status(), 400);
    serve.kill().unwrap();
    serve.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn delegated_access_to_a_shared_mailbox_polls_and_says_so() {
    let emu = emulator();
    let robot = robot_with_tenant(&emu);
    add_connection(&robot, "desk", "graph", "delegated");
    oauth::setup_authentication(&robot, &emu, DOMAIN, "desk", AGENT, AGENT_PASSWORD).await;
    emu.grant_mailbox_access(MailboxGrant { tenant: DOMAIN.into(), mailbox: SHARED.into(), username: AGENT.into() })
        .unwrap();
    add_shared_mailbox(&robot, "desk", "2");
    let (mut serve, _) = robot.spawn_serve(&[]);
    let said = wait_until(Duration::from_secs(20), || {
        robot.serve_logs().contains("delegated access to a shared mailbox")
            && robot.serve_logs().contains("polling only")
    });
    assert!(said, "{}", robot.serve_logs());
    deliver(&emu, 1);
    let polled = wait_until(Duration::from_secs(10), || robot.tickets().len() == 1);
    assert!(polled, "{}", robot.serve_logs());
    assert!(emu.subscriptions().is_empty(), "{:?}", emu.subscriptions());
    serve.kill().unwrap();
    serve.wait().unwrap();
}

/// Several nodes behind one public URL: a notification that reaches a node
/// not holding the mailbox is passed to the holder through the database
/// (it hears of it at its next heartbeat) and the mail comes in at once.
#[test]
fn a_notification_reaching_another_node_is_passed_to_the_holder() {
    let emu = emulator();
    let mut robot = Robot::on_postgres();
    robot.env.push(("MAILROBOT_MASTER_KEY".into(), "d4".repeat(32)));
    add_tenant(&robot, &emu);
    add_connection(&robot, "app", "graph", "application");
    add_shared_mailbox(&robot, "app", "600");
    let front = format!("127.0.0.1:{}", free_port());
    let public = format!("http://{front}");
    let env = [("MAILROBOT_PUBLIC_URL", public.as_str())];

    // Node A, at the public address, holds the mailbox and subscribes.
    let (mut a, _) = robot.spawn_serve_at(&front, &env);
    let sub = wait_for_subscription(&emu, &robot, None);
    // Node B joins; A stops and frees its lease: B takes the mailbox and
    // the stored subscription up.
    let other = robot.another_node();
    let (mut b, _) = other.spawn_serve_at("127.0.0.1:0", &env);
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
    a.wait().unwrap();
    let taken =
        wait_until(Duration::from_secs(20), || other.serve_logs().contains("taking up the stored subscription"));
    assert!(taken, "{}", other.serve_logs());

    // A comes back at the public address: Graph's notifications reach A,
    // while B holds the mailbox.
    let (mut a, _) = robot.spawn_serve_at(&front, &env);
    std::thread::sleep(Duration::from_secs(3));
    let nodes = robot.json(&["nodes", "list", "--json"]);
    let alive: Vec<&serde_json::Value> = nodes.as_array().unwrap().iter().filter(|n| n["alive"] == true).collect();
    let holding: Vec<usize> = alive.iter().map(|n| n["mailboxes"].as_array().unwrap().len()).collect();
    assert_eq!(holding.len(), 2, "{nodes}");
    assert_eq!(holding.iter().sum::<usize>(), 1, "one node holds the mailbox: {nodes}");
    expect_ticket_soon(&emu, &other, 1, Duration::from_secs(6));
    assert!(robot.serve_logs().contains("passed on"), "A did not pass the notification on:\n{}", robot.serve_logs());
    let subs = emu.subscriptions();
    assert_eq!((subs.len(), subs[0].id.as_str()), (1, sub.id.as_str()), "{subs:?}");

    // A lifecycle event reaching A is for B's watcher too: Graph removed
    // the subscription, B subscribes again.
    assert!(emu.trigger_lifecycle(&sub.id, LifecycleEvent::SubscriptionRemoved).unwrap());
    let again = wait_for_subscription(&emu, &other, Some(&sub.id));
    assert_ne!(again.id, sub.id);
    expect_ticket_soon(&emu, &other, 2, Duration::from_secs(6));
    for node in [&mut a, &mut b] {
        node.kill().unwrap();
        node.wait().unwrap();
    }
}
