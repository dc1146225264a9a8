//! Rules, mail templates and contacts: what the CLI, the UI and processing
//! ask of the store, on a real SQLite file and on a real PostgreSQL database
//! (each test runs on both).

use mailrobot_core::rules::{Action, Condition};
use mailrobot_core::{Address, MailTemplate, OutgoingKind, RuleDefinition, StoredTemplate, TagFormat};
use mailrobot_store::*;

fn mailbox(s: &impl Store, name: &str) -> i64 {
    s.add_mailbox(&NewMailbox {
        name: name.into(),
        kind: MailboxKind::DropFolder,
        config: serde_json::json!({"path": "/nonexistent"}),
        sealed_secret: None,
        connection_id: None,
        poll_seconds: 60,
        max_message_bytes: 1 << 20,
    })
    .unwrap()
    .id
}

fn raw_mail(message_id: &str, from: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: desk@contoso.test\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\r\nHello\r\n"
    )
    .into_bytes()
}

fn category_rule(word: &str, category: &str) -> RuleDefinition {
    RuleDefinition {
        conditions: vec![Condition::SubjectContains(word.into())],
        actions: vec![Action::SetCategory(category.into())],
    }
}

fn new_rule(name: &str, position: Option<i64>) -> NewRule {
    NewRule { name: name.into(), mailbox_id: None, position, definition: category_rule(name, name) }
}

fn names(rules: &[Rule]) -> Vec<(String, i64)> {
    rules.iter().map(|r| (r.name.clone(), r.position)).collect()
}

fn pairs(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(n, p)| (n.to_string(), *p)).collect()
}

/// What processing reads, through the ledger.
fn ledger_reads<S: Store>(s: &S) -> (Vec<mailrobot_core::StoredRule>, Vec<StoredTemplate>) {
    let mut found = None;
    s.with_ledger(&mut |ledger| {
        found = Some((ledger.rules()?, ledger.templates()?));
        Ok(())
    })
    .unwrap();
    found.unwrap()
}

fn rules_keep_their_order<S: Store + DirectoryStore>(s: &S) {
    let a = s.add_rule(&new_rule("a", None)).unwrap();
    assert_eq!((a.position, a.enabled, a.mailbox_id, a.mailbox.as_deref()), (1, true, None, None));
    assert_eq!(a.definition, category_rule("a", "a"));
    assert!(!a.created_at.is_empty());
    s.add_rule(&new_rule("b", None)).unwrap();
    // Asked for a place: the rules from there move down.
    let first = s.add_rule(&new_rule("first", Some(1))).unwrap();
    assert_eq!(first.position, 1);
    s.add_rule(&new_rule("second", Some(2))).unwrap();
    // A place past the end (or none that exists) is the end.
    s.add_rule(&new_rule("past the end", Some(99))).unwrap();
    s.add_rule(&new_rule("zero", Some(0))).unwrap();
    assert_eq!(
        names(&s.rules().unwrap()),
        pairs(&[("first", 1), ("second", 2), ("a", 3), ("b", 4), ("past the end", 5), ("zero", 6)])
    );
    // Removing one closes the gap.
    assert!(s.remove_rule(a.id).unwrap());
    assert!(!s.remove_rule(a.id).unwrap());
    assert_eq!(
        names(&s.rules().unwrap()),
        pairs(&[("first", 1), ("second", 2), ("b", 3), ("past the end", 4), ("zero", 5)])
    );
    // Processing reads them in the same order, with their definitions.
    let (stored, _) = ledger_reads(s);
    assert_eq!(
        stored.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["first", "second", "b", "past the end", "zero"]
    );
    assert_eq!(RuleDefinition::parse(&stored[0].definition).unwrap(), category_rule("first", "first"));
    assert_eq!(stored[0].id, first.id);

    // A rule for one mailbox names it; its name is trimmed.
    let mb = mailbox(s, "desk");
    let scoped = s
        .add_rule(&NewRule {
            name: "  billing  ".into(),
            mailbox_id: Some(mb),
            position: None,
            definition: category_rule("invoice", "billing"),
        })
        .unwrap();
    assert_eq!(
        (scoped.name.as_str(), scoped.mailbox_id, scoped.mailbox.as_deref()),
        ("billing", Some(mb), Some("desk"))
    );
    assert_eq!(ledger_reads(s).0.last().unwrap().mailbox_id, Some(mb));

    // Refused: no name, no action.
    assert!(matches!(s.add_rule(&new_rule("  ", None)), Err(StoreError::Invalid(_))));
    let no_action =
        NewRule { definition: RuleDefinition { conditions: Vec::new(), actions: Vec::new() }, ..new_rule("x", None) };
    assert!(matches!(s.add_rule(&no_action), Err(StoreError::Invalid(_))));
    assert_eq!(s.rules().unwrap().len(), 6);
}

fn rules_are_tested_against_a_journaled_mail<S: Store + DirectoryStore>(s: &S) {
    let mb = mailbox(s, "desk");
    s.add_rule(&NewRule {
        name: "billing".into(),
        mailbox_id: None,
        position: None,
        definition: category_rule("invoice", "billing"),
    })
    .unwrap();
    s.journal(mb, &[IncomingMail::fetched("r1", &raw_mail("1@x", "ann@example.com", "Invoice 42"))]).unwrap();
    let journal_id = s.known_remote_ids(mb, &["r1".into()]).unwrap()[0].journal_id;
    let tested = s.test_rules(journal_id, &TagFormat::default()).unwrap();
    assert_eq!(tested.verdict.matched.len(), 1, "{tested:?}");
    assert_eq!(tested.verdict.fields.category.as_deref(), Some("billing"));
    assert!(!tested.contact_known);
    // Nothing was written: the mail still waits, and made no ticket.
    assert_eq!(s.known_remote_ids(mb, &["r1".into()]).unwrap()[0].state, JournalState::Fetched);
    assert!(s.tickets().unwrap().is_empty());
    assert!(matches!(s.test_rules(journal_id + 100, &TagFormat::default()), Err(StoreError::NotFound(_))));
}

fn template(subject: &str) -> MailTemplate {
    MailTemplate { subject: subject.into(), text: "Hello {{ requester.email }}".into(), html: None }
}

fn key(kind: OutgoingKind, mailbox_id: Option<i64>, language: &str) -> TemplateKey {
    TemplateKey { kind, mailbox_id, language: language.into() }
}

fn templates_are_unique_per_kind_mailbox_and_language<S: Store + DirectoryStore>(s: &S) {
    use OutgoingKind::*;
    let zeta = mailbox(s, "Zeta");
    let alpha = mailbox(s, "alpha");
    let global = s.set_template(&key(Acknowledgement, None, ""), &template("one")).unwrap();
    assert_eq!((global.kind, global.mailbox_id, global.mailbox.as_deref()), (Acknowledgement, None, None));
    assert_eq!((global.language.as_str(), global.template.subject.as_str()), ("", "one"));
    // The same key again replaces it (one row, the same id).
    let replaced = s.set_template(&key(Acknowledgement, None, ""), &template("two")).unwrap();
    assert_eq!((replaced.id, replaced.template.subject.as_str()), (global.id, "two"));
    // Another mailbox or language is another template; languages are normalised.
    let german = s.set_template(&key(Acknowledgement, None, " DE "), &template("eins")).unwrap();
    assert_eq!(german.language, "de");
    assert_ne!(german.id, global.id);
    assert_eq!(s.set_template(&key(Acknowledgement, None, "de"), &template("zwei")).unwrap().id, german.id);
    let for_zeta = s.set_template(&key(Acknowledgement, Some(zeta), ""), &template("zeta")).unwrap();
    assert_eq!((for_zeta.mailbox_id, for_zeta.mailbox.as_deref()), (Some(zeta), Some("Zeta")));
    assert_ne!(for_zeta.id, global.id);
    assert_eq!(s.set_template(&key(Acknowledgement, Some(zeta), ""), &template("zeta 2")).unwrap().id, for_zeta.id);
    s.set_template(&key(Acknowledgement, Some(alpha), ""), &template("alpha")).unwrap();
    let mut html = template("rejected");
    html.html = Some("<p>{{ entry.subject }}</p>".into());
    s.set_template(&key(Rejection, None, ""), &html).unwrap();
    s.set_template(&key(Notification, None, "en-gb"), &template("note")).unwrap();

    // By kind, every mailbox's first, then by mailbox name (as bytes) and language.
    let listed: Vec<(OutgoingKind, Option<String>, String, String)> =
        s.templates().unwrap().into_iter().map(|t| (t.kind, t.mailbox, t.language, t.template.subject)).collect();
    let want =
        |k, m: Option<&str>, l: &str, subject: &str| (k, m.map(str::to_string), l.to_string(), subject.to_string());
    assert_eq!(
        listed,
        vec![
            want(Acknowledgement, None, "", "two"),
            want(Acknowledgement, None, "de", "zwei"),
            want(Acknowledgement, Some("Zeta"), "", "zeta 2"),
            want(Acknowledgement, Some("alpha"), "", "alpha"),
            want(Notification, None, "en-gb", "note"),
            want(Rejection, None, "", "rejected"),
        ]
    );
    let (_, stored) = ledger_reads(s);
    assert_eq!(stored.len(), 6);
    let rejection = stored.iter().find(|t| t.kind == Rejection).unwrap();
    assert_eq!((rejection.mailbox_id, rejection.language.as_str()), (None, ""));
    assert_eq!(rejection.template.html.as_deref(), Some("<p>{{ entry.subject }}</p>"));
    assert!(stored.iter().any(|t| t.mailbox_id == Some(zeta) && t.template.subject == "zeta 2"));

    // Reset: back to the built-in (the row is gone), once.
    assert!(s.remove_template(&key(Acknowledgement, None, "DE")).unwrap());
    assert!(!s.remove_template(&key(Acknowledgement, None, "de")).unwrap());
    assert!(s.remove_template(&key(Acknowledgement, Some(zeta), "")).unwrap());
    assert!(!s.remove_template(&key(Acknowledgement, Some(alpha + zeta + 100), "")).unwrap());
    let left: Vec<(OutgoingKind, Option<i64>, String)> =
        s.templates().unwrap().into_iter().map(|t| (t.kind, t.mailbox_id, t.language)).collect();
    assert_eq!(
        left,
        vec![
            (Acknowledgement, None, String::new()),
            (Acknowledgement, Some(alpha), String::new()),
            (Notification, None, "en-gb".into()),
            (Rejection, None, String::new()),
        ]
    );

    // Refused: a language that is none, a template that does not render.
    assert!(matches!(s.set_template(&key(Reply, None, "de_DE"), &template("x")), Err(StoreError::Invalid(_))));
    assert!(matches!(s.remove_template(&key(Reply, None, "d e")), Err(StoreError::Invalid(_))));
    assert!(matches!(s.set_template(&key(Reply, None, ""), &template("{{ ticket.tag ")), Err(StoreError::Invalid(_))));
    assert_eq!(s.templates().unwrap().len(), 4);
}

fn contacts_fold_case_and_plus_tags<S: Store + DirectoryStore>(s: &S) {
    let ann = s
        .add_contact(&NewContact {
            email: " Ann.Lee+billing@Example.COM ".into(),
            name: Some("Ann Lee".into()),
            organisation: Some("  ".into()),
        })
        .unwrap();
    assert_eq!(ann.email, "Ann.Lee+billing@Example.COM", "as written, trimmed");
    assert_eq!((ann.name.as_deref(), ann.organisation.as_deref()), (Some("Ann Lee"), None), "blanks are none");
    assert_eq!((ann.source, ann.tickets), (ContactSource::Operator, 0));
    // The same person in another case or with another tag: updated, not added.
    let again = s
        .add_contact(&NewContact {
            email: "ann.lee@example.com".into(),
            name: None,
            organisation: Some("Contoso".into()),
        })
        .unwrap();
    assert_eq!(again.id, ann.id);
    assert_eq!(again.email, "Ann.Lee+billing@Example.COM", "the first spelling stays");
    assert_eq!((again.name.as_deref(), again.organisation.as_deref()), (Some("Ann Lee"), Some("Contoso")));
    let renamed = s
        .add_contact(&NewContact {
            email: "ANN.LEE+x@example.com".into(),
            name: Some("Ann".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        (renamed.id, renamed.name.as_deref(), renamed.organisation.as_deref()),
        (ann.id, Some("Ann"), Some("Contoso"))
    );

    // Mail meets new people (source mail) and leaves known ones as they are.
    let mb = mailbox(s, "desk");
    let mut known = None;
    s.with_ledger(&mut |ledger| {
        let address = |email: &str, as_written: &str, name: Option<&str>| Address {
            name: name.map(str::to_string),
            email: email.into(),
            as_written: as_written.into(),
        };
        ledger.add_contact(&address("bob@example.com", "Bob@Example.com", Some("Bob")))?;
        ledger.add_contact(&address("ann.lee+other@example.com", "ann.lee+other@example.com", Some("Someone else")))?;
        known = Some((
            ledger.contact_known("bob@example.com")?,
            ledger.contact_known("ann.lee@example.com")?,
            ledger.contact_known("carl@example.com")?,
        ));
        Ok(())
    })
    .unwrap();
    assert_eq!(known, Some((true, true, false)));
    s.add_contact(&NewContact { email: "b.b@example.com".into(), ..Default::default() }).unwrap();
    let listed: Vec<(String, Option<String>, ContactSource)> =
        s.contacts().unwrap().into_iter().map(|c| (c.email, c.name, c.source)).collect();
    assert_eq!(
        listed,
        vec![
            ("Ann.Lee+billing@Example.COM".into(), Some("Ann".into()), ContactSource::Operator),
            ("b.b@example.com".into(), None, ContactSource::Operator),
            ("Bob@Example.com".into(), Some("Bob".into()), ContactSource::Mail),
        ],
        "by folded address, as bytes"
    );
    // An operator's details on a contact mail made keep its source.
    let bob = s
        .add_contact(&NewContact {
            email: "bob@example.com".into(),
            organisation: Some("Fabrikam".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((bob.source, bob.organisation.as_deref()), (ContactSource::Mail, Some("Fabrikam")));

    // A contact with the tickets they requested, newest first, in any spelling.
    for (i, subject) in ["Printer", "Scanner"].iter().enumerate() {
        let raw = raw_mail(&format!("{i}@x"), "Ann Lee <ANN.lee+desk@example.com>", subject);
        s.journal(mb, &[IncomingMail::fetched(format!("r{i}"), &raw)]).unwrap();
        s.process_pending(Some(mb), 10, u64::MAX, &ProcessingRules::default()).unwrap();
    }
    s.journal(mb, &[IncomingMail::fetched("r9", &raw_mail("9@x", "bob@example.com", "Other"))]).unwrap();
    s.process_pending(Some(mb), 10, u64::MAX, &ProcessingRules::default()).unwrap();
    let (contact, tickets) = s.contact("Ann.Lee@EXAMPLE.com").unwrap().unwrap();
    assert_eq!((contact.id, contact.tickets), (ann.id, 2));
    assert_eq!(tickets.iter().map(|t| t.subject.as_str()).collect::<Vec<_>>(), ["Scanner", "Printer"]);
    assert!(tickets[0].id > tickets[1].id);
    assert_eq!(s.contacts().unwrap().iter().map(|c| c.tickets).collect::<Vec<_>>(), [2, 0, 1]);
    assert!(s.contact("carl@example.com").unwrap().is_none());

    // Refused: what is no address.
    for bad in ["", "ann", "@example.com", "ann@", "ann@.example.com", "a b@example.com"] {
        let refused = s.add_contact(&NewContact { email: bad.into(), ..Default::default() });
        assert!(matches!(refused, Err(StoreError::Invalid(_))), "{bad:?}: {refused:?}");
    }
    assert_eq!(s.contacts().unwrap().len(), 3);
}

mailrobot_store::on_both_backends!(
    rules_keep_their_order,
    rules_are_tested_against_a_journaled_mail,
    templates_are_unique_per_kind_mailbox_and_language,
    contacts_fold_case_and_plus_tags,
);
