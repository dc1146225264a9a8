//! Rules, the sender directory, mail templates and notifications (issue 10),
//! end to end through the CLI: mails dropped into a drop folder, answers
//! sent through Dovecot's real submission service into smtp-sink.

mod common;

use common::*;
use serde_json::Value;

const FROM: &str = "support@contoso.test";

fn mail(from: &str, message_id: &str, subject: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {FROM}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\
         Date: Wed, 02 Dec 2026 09:00:00 +0000\r\n{headers}\r\n{body}\r\n"
    )
    .into_bytes()
}

fn journal_row(robot: &Robot, message_id: &str) -> Value {
    let rows = robot.json(&["messages", "list", "--json"]);
    rows.as_array().unwrap().iter().find(|r| r["message_id"] == message_id).cloned().unwrap_or(Value::Null)
}

fn outbox(robot: &Robot) -> Vec<Value> {
    robot.json(&["outbox", "list", "--json"]).as_array().unwrap().clone()
}

/// A drop-folder mailbox `desk` that answers through the submission service.
fn desk() -> (mailrobot_testkit::smtp_sink::SmtpSink, mailrobot_testkit::dovecot::Dovecot, Robot, std::path::PathBuf) {
    let (sink, dc, server) = common::outbound::submission();
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("desk", &drop);
    common::outbound::reply_via_smtp(&robot, "desk", &server, FROM);
    (sink, dc, robot, drop)
}

#[test]
fn a_rule_rejects_one_ignores_one_and_routes_one() {
    let (sink, _dc, robot, drop) = desk();
    robot.run(&["rules", "add", "--name", "no-spam", "--subject-regex", r"^\s*(win|free)\b", "--ignore", "--stop"]);
    robot.run(&["rules", "add", "--name", "no-sales", "--from", "sales.example", "--reject"]);
    robot.run(&[
        "rules",
        "add",
        "--name",
        "copy-printers",
        "--subject-contains",
        "printer",
        "--forward",
        "boss@partner.example",
    ]);
    let routed = robot.json(&[
        "rules",
        "add",
        "--name",
        "billing",
        "--mailbox",
        "desk",
        "--subject-contains",
        "INVOICE",
        "--header",
        "X-Customer=gold",
        "--set-queue",
        "billing",
        "--set-assignee",
        "bob",
        "--set-priority",
        "high",
        "--set-category",
        "finance",
        "--add-tag",
        "money",
        "--add-tag",
        "gold",
        "--no-acknowledgement",
        "--json",
    ]);
    assert_eq!((&routed["position"], &routed["mailbox"]), (&Value::from(4), &Value::from("desk")), "{routed}");
    // A rule that cannot work is refused when added, with why.
    let bad = robot.run_raw(&["rules", "add", "--name", "bad", "--body-regex", "(", "--ignore"], &[]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("is not usable"), "{bad:?}");
    let none = robot.run_raw(&["rules", "add", "--name", "nothing", "--from", "a@b.c"], &[]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("a rule needs an action"), "{none:?}");

    let listed = robot.json(&["rules", "list", "--json"]);
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["no-spam", "no-sales", "copy-printers", "billing"]);
    assert_eq!(listed[1]["conditions"], serde_json::json!([{"from": ["sales.example"]}]));
    assert_eq!(listed[1]["actions"], serde_json::json!(["reject"]));

    for (name, raw) in [
        ("1.eml", mail("lucky@spam.example", "s1@spam.example", "WIN a cruise", "", "Click.")),
        ("2.eml", mail("Seller <max@sales.example>", "r1@sales.example", "Great offer", "", "Buy.")),
        ("3.eml", mail("ann@example.com", "i1@example.com", "Invoice 42", "X-Customer: Gold\r\n", "Pay?")),
        ("4.eml", mail("carl@example.com", "n1@example.com", "Printer", "", "Broken.")),
        // Another robot's copy (a forward come back through a group): not passed on again.
        ("5.eml", mail("desk@other.example", "x9@other.example", "Printer copy", "X-Mailrobot: 0.1.0\r\n", "Fwd.")),
    ] {
        std::fs::write(drop.join("inbox").join(name), raw).unwrap();
    }
    robot.run(&["run-once"]);

    let tickets = robot.tickets();
    let subjects: Vec<&str> = tickets.iter().map(|t| t["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects.len(), 3, "the ignored and the rejected mail make no ticket: {subjects:?}");
    let robot_copy = journal_row(&robot, "x9@other.example");
    let said = robot_copy["rules"].as_str().unwrap_or_default();
    assert!(said.contains("not forwarded to boss@partner.example: a mailrobot sent it"), "{robot_copy}");
    let invoice = tickets.iter().find(|t| t["subject"] == "Invoice 42").unwrap();
    assert_eq!(
        (&invoice["queue"], &invoice["assignee"], &invoice["priority"], &invoice["category"], &invoice["tags"]),
        (
            &Value::from("billing"),
            &Value::from("bob"),
            &Value::from("high"),
            &Value::from("finance"),
            &serde_json::json!(["money", "gold"])
        )
    );
    let printer = tickets.iter().find(|t| t["subject"] == "Printer").unwrap();
    assert_eq!((&printer["queue"], &printer["tags"]), (&Value::Null, &serde_json::json!([])));

    // The journal keeps every mail, and says what the rules did.
    let spam = journal_row(&robot, "s1@spam.example");
    assert_eq!((&spam["state"], &spam["ticket"]), (&Value::from("processed"), &Value::Null));
    assert!(spam["rules"].as_str().unwrap().contains("ignored by rule \"no-spam\""), "{spam}");
    assert_eq!(spam["answer"], Value::Null, "an ignored mail is not answered");
    let sales = journal_row(&robot, "r1@sales.example");
    assert!(sales["rules"].as_str().unwrap().contains("rejected by rule \"no-sales\""), "{sales}");
    assert_eq!(sales["answer"], "rejected; told max@sales.example");
    let invoice_row = journal_row(&robot, "i1@example.com");
    assert_eq!(invoice_row["answer"], "not answered: a rule said no acknowledgement");
    // The ticket says it too, on the entry.
    let ticket = robot.json(&["tickets", "show", invoice["number"].as_str().unwrap(), "--json"]);
    assert_eq!((&ticket["queue"], &ticket["assignee"]), (&Value::from("billing"), &Value::from("bob")), "{ticket}");
    let entry = &ticket["entries"][0];
    assert_eq!(entry["answer"], "not answered: a rule said no acknowledgement", "{ticket}");
    assert!(entry["rules"].as_str().unwrap().contains("rule 4 (billing) matched"), "{ticket}");

    // Sent: the rejection, Carl's acknowledgement and the copy of his mail
    // for the boss, nothing else.
    let rows = outbox(&robot);
    let kinds: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["to"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("rejection", "max@sales.example", "sent"),
            ("acknowledgement", "carl@example.com", "sent"),
            ("notification", "boss@partner.example", "sent")
        ],
        "{rows:#?}"
    );
    assert_eq!(rows[0]["ticket"], Value::Null, "a rejection has no ticket");
    let sent = sink.mails().unwrap();
    let rejection = sent.iter().find(|m| m.recipients == ["<max@sales.example>"]).expect("the rejection arrived");
    let text = String::from_utf8_lossy(&rejection.data);
    assert!(text.contains("Subject: Not accepted: Great offer"), "{text}");
    assert!(text.contains("Auto-Submitted: auto-replied") && text.contains("In-Reply-To: <r1@sales.example>"));

    let copy = sent.iter().find(|m| m.recipients == ["<boss@partner.example>"]).expect("the copy arrived");
    let copy = mailrobot_core::parse(&copy.data).unwrap();
    assert_eq!(copy.subject, "Fwd: Printer");
    assert!(copy.text_body.contains("Forwarded by rule \"copy-printers\""), "{}", copy.text_body);
    let original = copy.attachments.iter().find(|a| a.filename.as_deref() == Some("original.eml")).expect("attached");
    assert!(String::from_utf8_lossy(&original.data).contains("Message-ID: <n1@example.com>"));

    // `rules test` shows what would happen to a stored mail, changing nothing.
    let id = spam["id"].as_i64().unwrap().to_string();
    let test = robot.json(&["rules", "test", "--message", &id, "--json"]);
    assert_eq!((&test["disposition"], &test["matched"][0]["name"]), (&Value::from("ignore"), &Value::from("no-spam")));
    let invoice_id = invoice_row["id"].as_i64().unwrap().to_string();
    let test = robot.json(&["rules", "test", "--message", &invoice_id, "--json"]);
    // As it came: it made its ticket, and its sender is a contact since.
    assert_eq!((&test["classification"], &test["contact_known"]), (&Value::from("new"), &Value::from(true)), "{test}");
    assert_eq!(test["fields"]["queue"], "billing");
    assert_eq!(test["acknowledge"], false);
    assert_eq!(robot.tickets().len(), 3);
    assert_eq!(outbox(&robot).len(), 3);
    let said = robot.run(&["rules", "test", "--message", &id]);
    assert!(said.contains("Matches rule 1 (no-spam)") && said.contains("Nothing was changed."), "{said}");

    robot.run(&["rules", "remove", "1"]);
    let names: Vec<String> = robot
        .json(&["rules", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["no-sales", "copy-printers", "billing"]);
    let gone = robot.run_raw(&["rules", "remove", "1"], &[]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no rule 1"), "{gone:?}");
}

#[test]
fn requesters_become_contacts_and_unknown_senders_can_be_rejected() {
    let (sink, _dc, robot, drop) = desk();
    std::fs::write(
        drop.join("inbox/1.eml"),
        mail("Ann Example <Ann+desk@Example.com>", "a1@example.com", "Printer", "", "x"),
    )
    .unwrap();
    robot.run(&["run-once"]);
    let contacts = robot.json(&["contacts", "list", "--json"]);
    assert_eq!(contacts.as_array().unwrap().len(), 1, "{contacts}");
    assert_eq!(
        (&contacts[0]["email"], &contacts[0]["name"], &contacts[0]["source"], &contacts[0]["tickets"]),
        (&Value::from("Ann+desk@Example.com"), &Value::from("Ann Example"), &Value::from("mail"), &Value::from(1))
    );
    // Matching folds case and +tags.
    let shown = robot.json(&["contacts", "show", "ann@example.com", "--json"]);
    assert_eq!(shown["requested_tickets"][0]["subject"], "Printer", "{shown}");

    robot.run(&["mailbox", "set", "desk", "--unknown-senders", "reject"]);
    robot.json(&["contacts", "add", "bob@partner.example", "--name", "Bob", "--organisation", "Partner Ltd", "--json"]);
    for (name, raw) in [
        ("2.eml", mail("stranger@else.example", "x1@else.example", "Hello", "", "Who?")),
        ("3.eml", mail("BOB@partner.example", "b1@partner.example", "Order", "", "Known.")),
        ("4.eml", mail("ann@example.com", "a2@example.com", "Scanner", "", "Known too.")),
    ] {
        std::fs::write(drop.join("inbox").join(name), raw).unwrap();
    }
    robot.run(&["run-once"]);
    let subjects: Vec<String> = robot.tickets().iter().map(|t| t["subject"].as_str().unwrap().to_string()).collect();
    assert!(subjects.contains(&"Order".to_string()) && subjects.contains(&"Scanner".to_string()), "{subjects:?}");
    assert!(!subjects.contains(&"Hello".to_string()), "an unknown sender is refused: {subjects:?}");
    let stranger = journal_row(&robot, "x1@else.example");
    assert!(stranger["rules"].as_str().unwrap().contains("unknown-sender policy"), "{stranger}");
    assert!(sink.mails().unwrap().iter().any(|m| m.recipients == ["<stranger@else.example>"]), "told");
    let bob = robot.json(&["contacts", "show", "bob@partner.example", "--json"]);
    assert_eq!((&bob["organisation"], &bob["tickets"]), (&Value::from("Partner Ltd"), &Value::from(1)));
    assert_eq!(robot.json(&["contacts", "list", "--json"]).as_array().unwrap().len(), 2, "no contact for the stranger");

    // `accept`: tickets, but the directory is left alone.
    robot.run(&["mailbox", "set", "desk", "--unknown-senders", "accept"]);
    std::fs::write(drop.join("inbox/5.eml"), mail("new@else.example", "y1@else.example", "Hi", "", "x")).unwrap();
    robot.run(&["run-once"]);
    assert!(robot.tickets().iter().any(|t| t["subject"] == "Hi"));
    assert_eq!(robot.json(&["contacts", "list", "--json"]).as_array().unwrap().len(), 2);
    let bad = robot.run_raw(&["contacts", "add", "not an address"], &[]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not an e-mail address"), "{bad:?}");
}

#[test]
fn templates_per_language_and_a_notification_when_an_agent_closes_the_ticket() {
    let (sink, _dc, robot, drop) = desk();
    let dir = robot.dir.path();
    std::fs::write(dir.join("de.txt"), "Hallo {{ requester.name }},\n\nIhr Ticket {{ ticket.number }} ist angelegt.\n")
        .unwrap();
    std::fs::write(dir.join("de.html"), "<p>Ticket <b>{{ ticket.number }}</b> für {{ requester.name }}</p>\n").unwrap();
    robot.run(&[
        "templates",
        "set",
        "acknowledgement",
        "--language",
        "de",
        "--subject",
        "{{ ticket.tag }} Eingang: {{ ticket.subject }}",
        "--text-file",
        dir.join("de.txt").to_str().unwrap(),
        "--html-file",
        dir.join("de.html").to_str().unwrap(),
    ]);
    // A template with a typo is refused before it is stored.
    std::fs::write(dir.join("typo.txt"), "{{ tikcet.number }}").unwrap();
    let typo = robot.run_raw(
        &["templates", "set", "notification", "--subject", "x", "--text-file", dir.join("typo.txt").to_str().unwrap()],
        &[],
    );
    assert!(!typo.status.success() && String::from_utf8_lossy(&typo.stderr).contains("the text template"), "{typo:?}");
    let listed = robot.json(&["templates", "list", "--json"]);
    assert_eq!((listed.as_array().unwrap().len(), &listed[0]["language"]), (1, &Value::from("de")), "{listed}");
    let shown = robot.json(&["templates", "show", "acknowledgement", "--language", "de", "--json"]);
    assert_eq!(shown["source"], "stored");
    assert_eq!(shown["preview"]["subject"], "[#123] Eingang: Printer on floor 3 smokes", "{shown}");
    let builtin = robot.json(&["templates", "show", "rejection", "--json"]);
    assert_eq!(builtin["source"], "built-in");

    robot.run(&["mailbox", "set", "desk", "--reply-to", "servicedesk@contoso.test"]);
    std::fs::write(
        drop.join("inbox/1.eml"),
        mail("Jörg <joerg@example.de>", "d1@example.de", "Drucker", "Content-Language: de-DE\r\n", "Kaputt."),
    )
    .unwrap();
    std::fs::write(drop.join("inbox/2.eml"), mail("ann@example.com", "e1@example.com", "Printer", "", "Broken."))
        .unwrap();
    robot.run(&["run-once"]);
    let sent = sink.mails().unwrap();
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let german = sent.iter().find(|m| m.recipients == ["<joerg@example.de>"]).unwrap();
    let parsed = mailrobot_core::parse(&german.data).unwrap();
    assert!(parsed.subject.ends_with("Eingang: Drucker"), "{}", parsed.subject);
    assert!(parsed.text_body.starts_with("Hallo Jörg,"), "{}", parsed.text_body);
    assert!(parsed.html_body.as_deref().unwrap_or("").contains("für Jörg"), "{:?}", parsed.html_body);
    let raw = String::from_utf8_lossy(&german.data);
    assert!(raw.lines().any(|l| l.trim_end() == "Reply-To: servicedesk@contoso.test"), "{raw}");
    let english = sent.iter().find(|m| m.recipients == ["<ann@example.com>"]).unwrap();
    let parsed = mailrobot_core::parse(&english.data).unwrap();
    assert!(
        parsed.text_body.replace("\r\n", "\n").starts_with("Hello,\n\nthank you"),
        "the built-in one: {}",
        parsed.text_body
    );

    // An agent closes Ann's ticket: she is told, once.
    let number =
        robot.tickets().iter().find(|t| t["subject"] == "Printer").unwrap()["number"].as_str().unwrap().to_string();
    robot.run(&["tickets", "status", &number, "closed"]);
    robot.run(&["tickets", "status", &number, "closed"]);
    let rows = outbox(&robot);
    let notifications: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "notification").collect();
    assert_eq!(notifications.len(), 1, "a status that does not change tells no one: {rows:#?}");
    assert_eq!(
        (&notifications[0]["to"], &notifications[0]["ticket"]),
        (&Value::from("ann@example.com"), &Value::from(number.clone()))
    );
    robot.run(&["run-once"]);
    let sent = sink.mails().unwrap();
    let told = sent.iter().filter(|m| m.recipients == ["<ann@example.com>"]).nth(1).expect("the notification arrived");
    let parsed = mailrobot_core::parse(&told.data).unwrap();
    assert!(parsed.text_body.contains("is now closed"), "{}", parsed.text_body);
    assert!(String::from_utf8_lossy(&told.data).contains("Auto-Submitted: auto-replied"));

    robot.run(&["templates", "set", "acknowledgement", "--language", "de", "--reset"]);
    assert!(robot.json(&["templates", "list", "--json"]).as_array().unwrap().is_empty());
}
