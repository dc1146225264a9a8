//! Acknowledgements by mail (issue 10, first part): through Dovecot's real
//! submission service (password login) into Postfix's smtp-sink. A person's
//! new ticket is acknowledged once, with the headers that stop loops and
//! thread the answer; the mails a robot must never answer are not, each with
//! its reason on the journal row; the requester's answer to the
//! acknowledgement lands on its ticket even without the tag.

mod common;

use common::outbound::DESK_PASSWORD;
use common::*;
use serde_json::{Value, json};
const FROM: &str = "support@contoso.test";

fn mail(from: &str, message_id: &str, subject: &str, headers: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {FROM}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\
         Date: Wed, 02 Dec 2026 09:00:00 +0000\r\n{headers}\r\nPlease help.\r\n"
    )
    .into_bytes()
}

fn answer_of(robot: &Robot, message_id: &str) -> String {
    let rows = robot.json(&["messages", "list", "--json"]);
    let row = rows.as_array().unwrap().iter().find(|r| r["message_id"] == message_id).cloned().unwrap_or(Value::Null);
    row["answer"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_new_ticket_is_acknowledged_once_and_robots_are_never_answered() {
    let (sink, _dc, server) = common::outbound::submission();
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("desk", &drop);

    // Nothing is sent until the operator chooses a transport.
    std::fs::write(drop.join("inbox/0.eml"), mail("zoe@example.com", "z0@example.com", "Before", "")).unwrap();
    robot.run(&["run-once"]);
    assert_eq!(answer_of(&robot, "z0@example.com"), "");

    // No login is an anonymous relay; but mail needs an address to come from.
    let out = robot.run_raw(&["mailbox", "set", "desk", "--reply-via", "smtp", "--smtp-server", &server], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --from ADDR"), "{out:?}");
    let out = robot.run_raw(
        &["mailbox", "set", "desk", "--reply-via", "smtp", "--smtp-server", &server, "--smtp-username", "u"],
        &[],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--smtp-password-env"), "{out:?}");
    common::outbound::reply_via_smtp(&robot, "desk", &server, FROM);
    // `mailbox test` logs in to the SMTP server before the first send.
    let tested = robot.json(&["mailbox", "test", "desk", "--json"]);
    assert_eq!(
        (&tested["reply"]["ok"], &tested["reply"]["authenticated_as"]),
        (&Value::from(true), &Value::from(common::outbound::DESK)),
        "{tested}"
    );
    assert!(robot.run(&["mailbox", "test", "desk"]).contains("replies via smtp: can send"));
    let listed = robot.run(&["mailbox", "list", "--json"]);
    assert!(!listed.contains(DESK_PASSWORD), "the SMTP password is never shown");
    assert!(!robot.database_contains(DESK_PASSWORD.as_bytes()), "the SMTP password is sealed in the database");

    let cases = [
        ("1.eml", mail("Ann <Ann.Desk+tickets@example.com>", "p1@example.com", "Printer on fire", "")),
        ("2.eml", mail("Ann <ann.desk+tickets@example.com>", "p2@example.com", "Also the fax", "")),
        ("3.eml", mail("carol@example.com", "b1@example.com", "Newsletter", "Precedence: bulk\r\n")),
        ("4.eml", mail("noreply@shop.example", "n1@shop.example", "Your order", "")),
        ("5.eml", mail(FROM, "own1@contoso.test", "Loop?", "")),
        ("6.eml", mail("desk@other.example", "r1@other.example", "Ticket 9 opened", "X-Mailrobot: 0.1.0\r\n")),
    ];
    for (name, raw) in &cases {
        std::fs::write(drop.join("inbox").join(name), raw).unwrap();
    }
    robot.run(&["run-once"]);

    // Exactly one mail left: the acknowledgement of Ann's first ticket.
    let sent = sink.mails().unwrap();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].recipients, ["<Ann.Desk+tickets@example.com>"], "to the address as written");
    let data = String::from_utf8_lossy(&sent[0].data).to_string();
    let tickets = robot.tickets();
    let number =
        tickets.iter().find(|t| t["subject"] == "Printer on fire").unwrap()["number"].as_str().unwrap().to_string();
    for line in [
        format!("Subject: [{number}] Printer on fire"),
        format!("From: {FROM}"),
        "Auto-Submitted: auto-replied".to_string(),
        "X-Auto-Response-Suppress: All".to_string(),
        "In-Reply-To: <p1@example.com>".to_string(),
        "X-Mailrobot: ".to_string(),
    ] {
        assert!(data.contains(&line), "{line:?} in\n{data}");
    }
    let ack_id = data.lines().find_map(|l| l.strip_prefix("Message-ID: <")).unwrap().trim_end_matches('>').to_string();
    assert!(ack_id.ends_with("@contoso.test"), "{ack_id}");

    assert_eq!(answer_of(&robot, "p1@example.com"), "acknowledged to Ann.Desk+tickets@example.com");
    for (id, reason) in [
        ("p2@example.com", "the sender got 1 automatic mails in the last 10 minutes"),
        ("b1@example.com", "Precedence: bulk"),
        ("n1@shop.example", "does not read answers"),
        ("own1@contoso.test", "one of the robot's own addresses"),
        ("r1@other.example", "a mailrobot sent it"),
    ] {
        let answer = answer_of(&robot, id);
        assert!(answer.starts_with("not answered: ") && answer.contains(reason), "{id}: {answer}");
    }
    let outbox = robot.json(&["outbox", "list", "--json"]);
    assert_eq!(outbox.as_array().unwrap().len(), 1, "a suppressed answer leaves no outbox row: {outbox}");
    let row = &outbox[0];
    assert_eq!(
        (&row["kind"], &row["state"], &row["ticket"], &row["to"], &row["attempts"]),
        (
            &Value::from("acknowledgement"),
            &Value::from("sent"),
            &Value::from(number.as_str()),
            &Value::from("Ann.Desk+tickets@example.com"),
            &Value::from(1)
        ),
        "{row}"
    );

    // Ann answers the acknowledgement, the tag gone from the subject: her
    // mail threads by In-Reply-To into the same ticket, and is not
    // acknowledged again (a reply, not a new ticket).
    let answer = mail(
        "ann.desk+tickets@example.com",
        "p3@example.com",
        "Re: Printer on fire",
        &format!("In-Reply-To: <{ack_id}>\r\nReferences: <p1@example.com> <{ack_id}>\r\n"),
    );
    std::fs::write(drop.join("inbox/7.eml"), answer).unwrap();
    robot.run(&["run-once"]);
    let ticket = robot.ticket(&number);
    assert_eq!(ticket["entries"].as_array().unwrap().len(), 2, "{ticket}");
    assert_eq!(sink.mails().unwrap().len(), 1, "nothing more was sent");

    // An agent answers from the command line, with a file.
    let body = robot.dir.path().join("reply.txt");
    std::fs::write(&body, "The printer is repaired.\nRegards, the desk").unwrap();
    let report = robot.dir.path().join("Repair report.pdf");
    std::fs::write(&report, b"%PDF-1.4 repaired").unwrap();
    let queued: Value = serde_json::from_str(&robot.run(&[
        "tickets",
        "reply",
        &number,
        "--body-file",
        body.to_str().unwrap(),
        "--attach",
        report.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!((&queued["kind"], &queued["state"]), (&Value::from("reply"), &Value::from("queued")), "{queued}");
    robot.run(&["run-once"]);
    let sent = sink.mails().unwrap();
    assert_eq!(sent.len(), 2);
    let reply = mailrobot_core::parse(&sent[1].data).unwrap();
    assert_eq!(reply.subject, format!("Re: [{number}] Printer on fire"));
    assert!(reply.text_body.contains("The printer is repaired."), "{}", reply.text_body);
    assert_eq!(reply.attachments.len(), 1);
    assert_eq!(reply.attachments[0].filename.as_deref(), Some("Repair report.pdf"));
    assert_eq!(reply.attachments[0].data, b"%PDF-1.4 repaired");
    assert_eq!(reply.in_reply_to, ["p3@example.com"], "under the ticket's latest mail");
    let raw = String::from_utf8_lossy(&sent[1].data).to_string();
    assert!(!raw.contains("Auto-Submitted"), "a person's reply is not automatic");
    let out = robot.run_raw(&["tickets", "reply", "TKT-999999", "--body-file", body.to_str().unwrap()], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ticket TKT-999999"), "{out:?}");

    // Resend: the same mail again, same Message-ID.
    robot.run(&["outbox", "resend", &row["id"].to_string()]);
    robot.run(&["run-once"]);
    let sent = sink.mails().unwrap();
    assert_eq!(sent.len(), 3);
    assert!(String::from_utf8_lossy(&sent[2].data).contains(&format!("Message-ID: <{ack_id}>")));
}

/// A crash right after the server took a mail, before the robot recorded
/// it: the next run sends it once more (same Message-ID), and never again —
/// the one window where a mail can go twice.
#[test]
fn a_crash_between_send_and_record_resends_once_at_most() {
    let (sink, _dc, server) = common::outbound::submission();
    let mut robot = Robot::new();
    robot.env.push(("MAILROBOT_OUTBOX_LEASE_SECS".into(), "1".into()));
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("desk", &drop);
    common::outbound::reply_via_smtp(&robot, "desk", &server, FROM);
    std::fs::write(drop.join("inbox/1.eml"), mail("ann@example.com", "k1@example.com", "Kill me", "")).unwrap();

    let out = robot.run_raw(&["run-once"], &[("MAILROBOT_CRASH_AT", "after-mail-sent")]);
    assert_eq!(out.status.code(), Some(86), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sink.mails().unwrap().len(), 1, "the server took it");
    let row = robot.json(&["outbox", "list", "--json"])[0].clone();
    assert_eq!((&row["state"], &row["attempts"]), (&Value::from("queued"), &Value::from(0)), "not recorded: {row}");

    std::thread::sleep(std::time::Duration::from_millis(1200)); // the dead run's lease runs out
    robot.run(&["run-once"]);
    robot.run(&["run-once"]);
    let sent = sink.mails().unwrap();
    assert_eq!(sent.len(), 2, "sent once more, then never again");
    let id = |i: usize| {
        String::from_utf8_lossy(&sent[i].data).lines().find(|l| l.starts_with("Message-ID:")).unwrap().to_string()
    };
    assert_eq!(id(0), id(1), "the same Message-ID: the receiver can tell");
    assert_eq!(robot.json(&["outbox", "list", "--json"])[0]["state"], "sent");
}

/// The limits are the operator's: `settings set answer.per_sender 2`.
#[test]
fn the_loop_limits_are_settings() {
    let (sink, _dc, server) = common::outbound::submission();
    let robot = Robot::new();
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("desk", &drop);
    common::outbound::reply_via_smtp(&robot, "desk", &server, FROM);
    let out = robot.run_raw(&["settings", "set", "answer.per_sender", "many"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("answer.per_sender must be a whole number"), "{out:?}");
    robot.run(&["settings", "set", "answer.per_sender", "2"]);
    assert!(robot.run(&["settings", "show"]).contains("answer.per_sender = 2"));
    for i in 1..=3 {
        let raw = mail("ann@example.com", &format!("s{i}@example.com"), &format!("Question {i}"), "");
        std::fs::write(drop.join(format!("inbox/{i}.eml")), raw).unwrap();
    }
    robot.run(&["run-once"]);
    assert_eq!(sink.mails().unwrap().len(), 2);
    let third = answer_of(&robot, "s3@example.com");
    assert!(third.contains("got 2 automatic mails in the last 10 minutes (at most 2)"), "{third}");
}

/// A Microsoft 365 mailbox answers through Graph `sendMail` with its own
/// (application) connection: the acknowledgement is kept in its Sent Items.
#[test]
fn a_graph_mailbox_acknowledges_through_send_mail() {
    use common::contoso;
    let emu = contoso::emulator();
    let robot = contoso::robot_with_tenant(&emu);
    contoso::add_connection(&robot, "app", "graph", "application");
    contoso::add_shared_graph_mailbox(&robot, "shared", "app");
    // A drop folder has no connection to send through.
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("desk", &drop);
    let out = robot.run_raw(&["mailbox", "set", "desk", "--reply-via", "graph"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("use --reply-via smtp"), "{out:?}");
    robot.run(&["mailbox", "set", "shared", "--reply-via", "graph"]);
    let tested = robot.json(&["mailbox", "test", "shared", "--json"]);
    assert_eq!(tested["reply"]["checked"], false, "an app-only token tells nothing documented: {tested}");
    assert!(tested["reply"]["needs"].as_str().unwrap().contains("Mail.Send"), "{tested}");

    let mime = String::from_utf8(mail("ann@example.com", "g1@example.com", "VPN down", "")).unwrap();
    emu.deliver_mime(contoso::SHARED, "inbox", &mime).unwrap();
    robot.run(&["run-once"]);
    let outbox = robot.json(&["outbox", "list", "--json"]);
    assert_eq!(outbox[0]["state"], "sent", "{outbox}");
    let sent = emu.messages(contoso::SHARED, "sentitems").unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].subject.starts_with("[TKT-000001] VPN down"), "{:?}", sent[0].subject);
    assert!(sent[0].internet_message_id.contains("mailrobot.acknowledgement.1."), "{:?}", sent[0].internet_message_id);
    assert_eq!(answer_of(&robot, "g1@example.com"), "acknowledged to ann@example.com");
}

/// The whole way round, over real protocols only: Ann's mail reaches the
/// robot's mailbox by SMTP and LMTP, the robot reads it over IMAP and
/// acknowledges it through the submission service, the acknowledgement lands
/// in Ann's INBOX (read back over IMAP), and her answer to it — tag taken
/// out of the subject — lands on the same ticket by `In-Reply-To`.
#[test]
fn acknowledgement_reaches_the_requesters_mailbox_and_the_reply_threads() {
    use common::outbound::{ANN, MAILBOX_PASSWORD, MailWorld, SUPPORT, header};
    let world = MailWorld::start();
    let robot = Robot::new();
    robot.add_imap("desk", world.dc.imap_port(), SUPPORT, MAILBOX_PASSWORD, &[]);
    common::outbound::reply_via_smtp(&robot, "desk", &world.submission, SUPPORT);

    let first = format!(
        "From: Ann <{ANN}>\r\nTo: {SUPPORT}\r\nSubject: Printer on fire\r\nMessage-ID: <ann.1@example.com>\r\n\
         Date: Wed, 02 Dec 2026 09:00:00 +0000\r\n\r\nThe printer on floor 3 is on fire.\r\n"
    );
    world.send(ANN, SUPPORT, first.as_bytes());
    robot.run(&["run-once"]);

    let tickets = robot.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:#?}");
    let number = tickets[0]["number"].as_str().unwrap().to_string();
    let acks = world.fetch(ANN, "INBOX");
    assert_eq!(acks.len(), 1, "the acknowledgement is in Ann's INBOX\n{}", world.dc.log());
    let ack = &acks[0];
    let ack_header =
        |name: &str| header(ack, name).unwrap_or_else(|| panic!("no {name} in\n{}", String::from_utf8_lossy(ack)));
    assert_eq!(ack_header("Subject"), format!("[{number}] Printer on fire"));
    assert_eq!(ack_header("From"), SUPPORT);
    assert_eq!(ack_header("Auto-Submitted"), "auto-replied");
    assert_eq!(ack_header("X-Auto-Response-Suppress"), "All");
    assert_eq!(ack_header("In-Reply-To"), "<ann.1@example.com>");
    assert_eq!(ack_header("Delivered-To"), ANN, "delivered by Dovecot's LMTP");
    let ack_id = ack_header("Message-ID");
    assert!(ack_id.starts_with("<mailrobot.acknowledgement.") && ack_id.ends_with("@contoso.test>"), "{ack_id}");
    assert_eq!(answer_of(&robot, "ann.1@example.com"), format!("acknowledged to {ANN}"));

    // Ann answers from her mail program: "Re:" and the tag gone, threaded
    // under the acknowledgement only by In-Reply-To / References.
    let reply = format!(
        "From: Ann <{ANN}>\r\nTo: {SUPPORT}\r\nSubject: Re: Printer on fire\r\nMessage-ID: <ann.2@example.com>\r\n\
         In-Reply-To: {ack_id}\r\nReferences: <ann.1@example.com> {ack_id}\r\n\
         Date: Wed, 02 Dec 2026 09:30:00 +0000\r\n\r\nThe fire is out, the printer is not.\r\n"
    );
    world.send(ANN, SUPPORT, reply.as_bytes());
    robot.run(&["run-once"]);

    assert_eq!(robot.tickets().len(), 1, "no new ticket: {:#?}", robot.tickets());
    let ticket = robot.ticket(&number);
    let entries = ticket["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{ticket}");
    assert_eq!(entries[1]["message_id"], "ann.2@example.com", "{ticket}");
    assert_eq!(world.fetch(ANN, "INBOX").len(), 1, "a reply on a ticket is not acknowledged again");
    assert_eq!(world.fetch(SUPPORT, "Processed").len(), 2, "both mails read and settled over IMAP");
    assert_eq!(world.fetch(SUPPORT, "INBOX").len(), 0);
}

/// How an out-of-office responder on Ann's mailbox writes its answers.
#[derive(Clone, Copy)]
enum Responder {
    /// As Outlook or Sieve vacation do: `Auto-Submitted: auto-replied`,
    /// "Automatic reply: …", `In-Reply-To` the mail it answers.
    Typical,
    /// Marked as automatic, but a thread of its own: a subject of its own
    /// and no `In-Reply-To`, so each answer would be a new ticket.
    MarkedButUnthreaded,
    /// The worst kind: no automatic-mail header at all, a subject of its
    /// own, no `In-Reply-To` — every answer looks like a person's new mail.
    WithoutAutoHeaders,
}

impl Responder {
    fn answer(self, to: &[u8], n: usize) -> String {
        use common::outbound::{ANN, SUPPORT, header};
        let (subject, extra) = match self {
            Responder::Typical => {
                let id = header(to, "Message-ID").unwrap();
                let subject = header(to, "Subject").unwrap();
                (
                    format!("Automatic reply: {subject}"),
                    format!("Auto-Submitted: auto-replied\r\nIn-Reply-To: {id}\r\nReferences: {id}\r\n"),
                )
            }
            Responder::MarkedButUnthreaded => {
                ("Away until Monday".to_string(), "Auto-Submitted: auto-replied\r\n".to_string())
            }
            Responder::WithoutAutoHeaders => ("Away until Monday".to_string(), String::new()),
        };
        format!(
            "From: Ann <{ANN}>\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\nMessage-ID: <away.{n}@example.com>\r\n\
             Date: Wed, 02 Dec 2026 10:00:00 +0000\r\n{extra}\r\nI am out of the office until Monday.\r\n"
        )
    }
}

/// What the exchange had come to after one round.
#[derive(Debug, Clone, PartialEq)]
struct Tally {
    /// Mails in the robot's mailbox (INBOX, Processed, Failed), over IMAP.
    robot_mailbox: usize,
    /// Mails in Ann's INBOX (the robot's), over IMAP.
    ann_mailbox: usize,
    tickets: usize,
    outbox: usize,
}

/// Ann writes one mail to the desk; then, round after round, the robot
/// runs once and Ann's responder, if any, answers (by SMTP, into the robot's
/// mailbox over LMTP) every mail in her INBOX it has not answered yet.
/// Returns the tally after each round.
fn exchange(
    world: &common::outbound::MailWorld,
    robot: &Robot,
    responder: Option<Responder>,
    rounds: usize,
) -> Vec<Tally> {
    use common::outbound::{ANN, SUPPORT, header};
    let first = format!(
        "From: Ann <{ANN}>\r\nTo: {SUPPORT}\r\nSubject: VPN down\r\nMessage-ID: <ann.vpn@example.com>\r\n\
         Date: Wed, 02 Dec 2026 09:00:00 +0000\r\n\r\nThe VPN refuses me since this morning.\r\n"
    );
    world.send(ANN, SUPPORT, first.as_bytes());
    let mut answered = std::collections::HashSet::new();
    let mut tallies = Vec::new();
    for _ in 0..rounds {
        robot.run(&["run-once"]);
        let inbox = world.fetch(ANN, "INBOX");
        for mail in inbox.iter().filter(|_| responder.is_some()) {
            if answered.insert(header(mail, "Message-ID").unwrap()) {
                world.send(ANN, SUPPORT, responder.unwrap().answer(mail, answered.len()).as_bytes());
            }
        }
        tallies.push(Tally {
            robot_mailbox: world.held(SUPPORT),
            ann_mailbox: inbox.len(),
            tickets: robot.tickets().len(),
            outbox: robot.json(&["outbox", "list", "--json"]).as_array().unwrap().len(),
        });
    }
    tallies
}

/// A well-behaved out-of-office answer to the acknowledgement threads onto
/// the ticket (In-Reply-To): a mail on an existing ticket is never
/// acknowledged, so the exchange ends after one answer each way. The sender
/// limit is set far out of the way: it is not what stops it.
#[test]
fn auto_responder_does_not_loop() {
    use common::outbound::{MAILBOX_PASSWORD, MailWorld, SUPPORT};
    let world = MailWorld::start();
    let robot = Robot::new();
    robot.add_imap("desk", world.dc.imap_port(), SUPPORT, MAILBOX_PASSWORD, &[]);
    common::outbound::reply_via_smtp(&robot, "desk", &world.submission, SUPPORT);
    robot.run(&["settings", "set", "answer.per_sender", "100"]);

    let tallies = exchange(&world, &robot, Some(Responder::Typical), 5);
    let end = Tally { robot_mailbox: 2, ann_mailbox: 1, tickets: 1, outbox: 1 };
    assert_eq!(tallies.last(), Some(&end), "{tallies:#?}\n{}", world.dc.log());
    assert!(tallies.iter().all(|t| *t == end), "it stopped after the first answer: {tallies:#?}");
    let ticket = robot.ticket("TKT-000001");
    assert_eq!(ticket["entries"].as_array().unwrap().len(), 2, "the answer is on the ticket: {ticket}");
    let rows = robot.messages();
    let away = rows.iter().find(|r| r["message_id"] == "away.1@example.com").unwrap();
    // Only a new ticket is acknowledged, so no decision is recorded for it.
    assert_eq!(
        (&away["kind"], &away["ticket"], &away["answer"]),
        (&json!("auto-reply"), &json!("TKT-000001"), &Value::Null),
        "{away}"
    );
}

/// An out-of-office answer marked as automatic but starting a thread of its
/// own (a subject of its own, no `In-Reply-To`) matches no ticket, and an
/// automatic mail never opens one: journaled as an auto-reply, no ticket, so
/// nothing to acknowledge. The sender limit is out of the way.
#[test]
fn auto_responder_starting_new_threads_opens_no_ticket() {
    use common::outbound::{MAILBOX_PASSWORD, MailWorld, SUPPORT};
    let world = MailWorld::start();
    let robot = Robot::new();
    robot.add_imap("desk", world.dc.imap_port(), SUPPORT, MAILBOX_PASSWORD, &[]);
    common::outbound::reply_via_smtp(&robot, "desk", &world.submission, SUPPORT);
    robot.run(&["settings", "set", "answer.per_sender", "100"]);

    let tallies = exchange(&world, &robot, Some(Responder::MarkedButUnthreaded), 5);
    let end = Tally { robot_mailbox: 2, ann_mailbox: 1, tickets: 1, outbox: 1 };
    assert_eq!(tallies.last(), Some(&end), "{tallies:#?}\n{}", world.dc.log());
    assert!(tallies.iter().all(|t| *t == end), "it stopped after the first answer: {tallies:#?}");
    let rows = robot.messages();
    let away = rows.iter().find(|r| r["message_id"] == "away.1@example.com").unwrap();
    assert_eq!(
        (&away["kind"], &away["ticket"], &away["answer"]),
        (&json!("auto-reply"), &Value::Null, &Value::Null),
        "{away}"
    );
}

/// A responder that marks nothing as automatic makes a new ticket with each
/// answer, and each would be acknowledged: the sender limit
/// (`answer.per_sender`, here 3 in an hour) is what ends it.
#[test]
fn responder_without_auto_headers_is_stopped_by_the_sender_limit() {
    use common::outbound::{MAILBOX_PASSWORD, MailWorld, SUPPORT};
    let world = MailWorld::start();
    let robot = Robot::new();
    robot.add_imap("desk", world.dc.imap_port(), SUPPORT, MAILBOX_PASSWORD, &[]);
    common::outbound::reply_via_smtp(&robot, "desk", &world.submission, SUPPORT);
    robot.run(&["settings", "set", "answer.per_sender", "3"]);
    robot.run(&["settings", "set", "answer.sender_window_minutes", "60"]);

    let tallies = exchange(&world, &robot, Some(Responder::WithoutAutoHeaders), 8);
    // Ann's mail and three answers became four tickets; three were acknowledged.
    let end = Tally { robot_mailbox: 4, ann_mailbox: 3, tickets: 4, outbox: 3 };
    assert_eq!(tallies.last(), Some(&end), "{tallies:#?}\n{}", world.dc.log());
    assert!(tallies[tallies.len() - 4..].iter().all(|t| *t == end), "it had stopped for rounds: {tallies:#?}");
    for n in 1..=2 {
        assert_eq!(
            answer_of(&robot, &format!("away.{n}@example.com")),
            format!("acknowledged to {}", common::outbound::ANN)
        );
    }
    let answer = answer_of(&robot, "away.3@example.com");
    assert_eq!(
        answer,
        "not answered: the sender got 3 automatic mails in the last 60 minutes (at most 3)",
        "{:#?}",
        robot.messages()
    );
}

/// Ann's real Sieve `vacation` (Pigeonhole, on LMTP delivery): it answers a
/// colleague, and that answer comes back through the relay — but it follows
/// RFC 3834 and does not answer the robot's `Auto-Submitted: auto-replied`
/// acknowledgement, so the exchange is one mail each way.
#[test]
fn sieve_vacation_does_not_answer_the_acknowledgement() {
    use common::outbound::{ANN, CAROL, MAILBOX_PASSWORD, MailWorld, SUPPORT, header};
    let world = MailWorld::start_with_sieve();
    let vacation = "require \"vacation\";\nvacation :days 1 :subject \"Out of office\" \"I am away until Monday.\";\n";
    world.dc.set_sieve_script(ANN, vacation).unwrap();
    let robot = Robot::new();
    robot.add_imap("desk", world.dc.imap_port(), SUPPORT, MAILBOX_PASSWORD, &[]);
    common::outbound::reply_via_smtp(&robot, "desk", &world.submission, SUPPORT);

    // The vacation is live: a colleague's mail is answered, into her INBOX.
    let lunch = format!(
        "From: Carol <{CAROL}>\r\nTo: {ANN}\r\nSubject: Lunch?\r\nMessage-ID: <carol.1@example.com>\r\n\
         Date: Wed, 02 Dec 2026 08:00:00 +0000\r\n\r\nToday at noon?\r\n"
    );
    world.send(CAROL, ANN, lunch.as_bytes());
    let answers = world.fetch(CAROL, "INBOX");
    assert_eq!(answers.len(), 1, "the vacation answered Carol\n{}", world.dc.log());
    let auto = header(&answers[0], "Auto-Submitted").unwrap_or_default();
    assert!(auto.starts_with("auto-replied"), "Pigeonhole writes \"auto-replied (vacation)\": {auto}");

    let tallies = exchange(&world, &robot, None, 4);
    // Ann's INBOX: Carol's mail and the acknowledgement; nothing came back to the robot.
    let end = Tally { robot_mailbox: 1, ann_mailbox: 2, tickets: 1, outbox: 1 };
    assert!(tallies.iter().all(|t| *t == end), "{tallies:#?}\n{}", world.dc.log());
    assert_eq!(world.fetch(CAROL, "INBOX").len(), 1);
    let log = world.dc.log();
    let why = "msgid=<mailrobot.acknowledgement.1.1@contoso.test>: vacation action: \
               discarding vacation response to auto-submitted message from <support@contoso.test>";
    assert!(log.contains(why), "Pigeonhole says why it kept quiet:\n{log}");
}

/// The requester of the EWS tests: a mailbox of the emulator, so the
/// acknowledgement can be seen arriving.
const ANN: &str = "ann@contoso.test";

fn ask_the_shared_mailbox(emu: &m365_emulator::Emulator, message_id: &str, subject: &str) {
    let mime = String::from_utf8(mail(ANN, message_id, subject, "")).unwrap();
    emu.deliver_mime(common::contoso::SHARED, "inbox", &mime).unwrap();
}

/// The acknowledgement as it arrived in Ann's Inbox: the robot's MIME,
/// with the ticket's tag and the header that stops auto-responders.
fn assert_ann_got_the_acknowledgement(emu: &m365_emulator::Emulator, message_id: &str, subject: &str) {
    let got = emu.messages(ANN, "inbox").unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    let raw = String::from_utf8(emu.mime(ANN, &got[0].id).unwrap()).unwrap();
    for line in [
        format!("Subject: [TKT-000001] {subject}"),
        format!("From: {}", common::contoso::SHARED),
        format!("To: {ANN}"),
        "Auto-Submitted: auto-replied".to_string(),
        format!("In-Reply-To: <{message_id}>"),
        "Message-ID: <mailrobot.acknowledgement.1.".to_string(),
    ] {
        assert!(raw.contains(&line), "{line:?} in\n{raw}");
    }
}

/// An EWS mailbox of Exchange Online (app-only connection, impersonation)
/// answers through EWS CreateItem (SendAndSaveCopy): the copy in its Sent
/// Items, the mail in the requester's Inbox.
#[test]
fn an_ews_mailbox_acknowledges_through_create_item() {
    use common::contoso;
    let emu = contoso::emulator();
    emu.create_mailbox(m365_emulator::MailboxSpec::new(contoso::DOMAIN, ANN)).unwrap();
    let robot = contoso::robot_with_tenant(&emu);
    contoso::add_connection(&robot, "ews-app", "ews", "application");
    robot.run(&[
        "mailbox",
        "add",
        "--name",
        "shared",
        "--kind",
        "ews",
        "--connection",
        "ews-app",
        "--address",
        contoso::SHARED,
    ]);
    // Only an EWS mailbox has an EWS endpoint and login to send with.
    let drop = robot.dir.path().join("drop");
    robot.add_drop_folder("desk", &drop);
    let out = robot.run_raw(&["mailbox", "set", "desk", "--reply-via", "ews"], &[]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("EWS mailbox") && said.contains("use --reply-via smtp"), "{said}");
    robot.run(&["mailbox", "set", "shared", "--reply-via", "ews"]);

    // `mailbox test` signs in and finds Sent Items; it sends nothing.
    let tested = robot.json(&["mailbox", "test", "shared", "--json"]);
    assert_eq!(
        (&tested["reply"]["via"], &tested["reply"]["ok"]),
        (&Value::from("ews"), &Value::from(true)),
        "{tested}"
    );
    assert!(tested["reply"].get("needs").is_none(), "app-only access sends as the mailbox it impersonates: {tested}");
    assert_eq!(emu.count(contoso::SHARED, "sentitems").unwrap(), 0);

    ask_the_shared_mailbox(&emu, "e1@contoso.test", "Printer on fire");
    robot.run(&["run-once"]);
    let outbox = robot.json(&["outbox", "list", "--json"]);
    assert_eq!(outbox.as_array().unwrap().len(), 1, "{outbox}");
    assert_eq!((&outbox[0]["state"], &outbox[0]["attempts"]), (&Value::from("sent"), &Value::from(1)), "{outbox}");
    let sent = emu.messages(contoso::SHARED, "sentitems").unwrap();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].subject, "[TKT-000001] Printer on fire");
    assert!(sent[0].internet_message_id.contains("mailrobot.acknowledgement.1."), "{:?}", sent[0].internet_message_id);
    assert_ann_got_the_acknowledgement(&emu, "e1@contoso.test", "Printer on fire");
    assert_eq!(answer_of(&robot, "e1@contoso.test"), "acknowledged to ann@contoso.test");

    // An agent's reply goes the same way.
    let body = robot.dir.path().join("reply.txt");
    std::fs::write(&body, "The printer is repaired.").unwrap();
    robot.run(&["tickets", "reply", "TKT-000001", "--body-file", body.to_str().unwrap()]);
    robot.run(&["run-once"]);
    assert_eq!(emu.count(contoso::SHARED, "sentitems").unwrap(), 2);
    let got = emu.messages(ANN, "inbox").unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().any(|m| m.subject == "Re: [TKT-000001] Printer on fire"), "{got:?}");
}

/// Exchange Server on-premises over NTLM: the agent the robot signs in as
/// has full access to the shared mailbox but not Send As, so the server
/// refuses the send (ErrorSendAsDenied) and the mail is `failed` at once
/// with that reason; once Send As is granted, a resend goes out.
#[test]
fn an_on_premises_ews_mailbox_without_send_as_fails_with_the_reason() {
    use common::contoso;
    use m365_emulator::{EwsAuthScheme, EwsAuthSpec, MailboxGrant};
    let emu = contoso::emulator();
    emu.create_mailbox(m365_emulator::MailboxSpec::new(contoso::DOMAIN, ANN)).unwrap();
    emu.set_ews_auth(EwsAuthSpec::new(&[EwsAuthScheme::Ntlm])).unwrap();
    let grant = || MailboxGrant {
        tenant: contoso::DOMAIN.into(),
        mailbox: contoso::SHARED.into(),
        username: contoso::AGENT.into(),
    };
    emu.grant_mailbox_access(grant()).unwrap();
    let robot = Robot::new();
    assert!(contoso::add_password_ews_mailbox(&robot, "onprem", emu.base_url(), contoso::AGENT_PASSWORD, &[]));
    robot.run(&["mailbox", "set", "onprem", "--reply-via", "ews"]);
    let tested = robot.run(&["mailbox", "test", "onprem"]);
    assert!(tested.contains("replies via ews: reached; sending also needs Send As"), "{tested}");

    ask_the_shared_mailbox(&emu, "e2@contoso.test", "VPN down");
    robot.run(&["run-once"]);
    let row = robot.json(&["outbox", "list", "--json"])[0].clone();
    assert_eq!((&row["state"], &row["attempts"]), (&Value::from("failed"), &Value::from(1)), "{row}");
    let error = row["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("ErrorSendAsDenied") && error.contains("Send As"), "{row}");
    assert!(error.contains(contoso::SHARED) && !error.contains(contoso::AGENT_PASSWORD), "{row}");
    assert_eq!(emu.count(ANN, "inbox").unwrap(), 0, "nothing sent");
    assert_eq!(emu.count(contoso::SHARED, "sentitems").unwrap(), 0);

    emu.grant_send_as(grant()).unwrap();
    robot.run(&["outbox", "resend", &row["id"].to_string()]);
    robot.run(&["run-once"]);
    let row = robot.json(&["outbox", "list", "--json"])[0].clone();
    assert_eq!(row["state"], "sent", "{row}");
    assert_eq!(emu.count(contoso::SHARED, "sentitems").unwrap(), 1);
    assert_ann_got_the_acknowledgement(&emu, "e2@contoso.test", "VPN down");
}
