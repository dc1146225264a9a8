//! `mailrobot rules …`, `templates …` and `contacts …`: what the operator
//! says about mail itself. The UI and the API call the same functions.

use anyhow::{Context, anyhow, bail};
use mailrobot_core::rules::RuleForm;
use mailrobot_core::{MailTemplate, OutgoingKind, RuleDefinition};
use mailrobot_store::{NewContact, NewRule, TemplateKey};
use mailrobot_views::{ContactDetailJson, ContactJson, RuleJson, TemplateJson, TemplatePreviewJson};

use crate::app::App;
use crate::cli::{ContactsCommand, RuleAdd, RulesCommand, TemplateKeyArgs, TemplatesCommand};
use crate::commands::{find_mailbox, print_json};

/// The rule `add` describes, from its flags (or its `--definition` JSON).
pub fn rule_definition(add: &RuleAdd) -> anyhow::Result<RuleDefinition> {
    if let Some(json) = &add.definition {
        return RuleDefinition::parse(json).map_err(|e| anyhow!("--definition: {e}"));
    }
    let form = RuleForm {
        from: add.from.clone(),
        to: add.to.clone(),
        cc: add.cc.clone(),
        subject_contains: add.subject_contains.clone(),
        subject_regex: add.subject_regex.clone(),
        body_contains: add.body_contains.clone(),
        body_regex: add.body_regex.clone(),
        headers: add.header.clone(),
        attachment_type: add.attachment_type.clone(),
        larger_than: add.larger_than,
        smaller_than: add.smaller_than,
        classification: add.classification.clone(),
        contact: add.contact.clone(),
        set_category: add.set_category.clone(),
        set_priority: add.set_priority.clone(),
        set_queue: add.set_queue.clone(),
        set_assignee: add.set_assignee.clone(),
        add_tags: add.add_tag.clone(),
        no_acknowledgement: add.no_acknowledgement,
        ignore: add.ignore,
        reject: add.reject,
        forward: add.forward.clone(),
        stop: add.stop,
    };
    form.definition().map_err(|e| match e {
        mailrobot_core::rules::RuleError::NoAction => anyhow!(
            "a rule needs an action: --set-category, --set-priority, --set-queue, --set-assignee, --add-tag, \
             --no-acknowledgement, --ignore, --reject, --forward or --stop"
        ),
        e => anyhow!("{e}"),
    })
}

/// Adds a rule (the CLI, the API and the UI all come here).
pub fn add_rule(
    app: &App,
    name: &str,
    mailbox: Option<&str>,
    position: Option<i64>,
    definition: RuleDefinition,
) -> anyhow::Result<mailrobot_store::Rule> {
    let mailbox_id = mailbox.map(|m| find_mailbox(app.store.as_ref(), m).map(|m| m.id)).transpose()?;
    let rule = app.directory.add_rule(&NewRule { name: name.to_string(), mailbox_id, position, definition })?;
    tracing::info!(rule = rule.id, name = %rule.name, "rule added");
    Ok(rule)
}

fn describe(rule: &RuleJson) -> String {
    let compact = |v: &serde_json::Value| serde_json::to_string(v).unwrap_or_default();
    format!(
        "{:<4} {:<3} {:<20} {:<12} if {} then {}",
        rule.id,
        rule.position,
        rule.name,
        rule.mailbox.as_deref().unwrap_or("(all)"),
        compact(&rule.conditions),
        compact(&rule.actions)
    )
}

pub fn rules_command(app: &App, command: &RulesCommand) -> anyhow::Result<()> {
    match command {
        RulesCommand::Add(add) => {
            let definition = rule_definition(add)?;
            let rule = add_rule(app, &add.name, add.mailbox.as_deref(), add.position, definition)?;
            let view = RuleJson::of(&rule);
            if add.json {
                print_json(&serde_json::to_value(&view)?);
            } else {
                crate::say!("Rule {} added at position {}.", view.id, view.position);
                crate::say!("{}", describe(&view));
            }
        }
        RulesCommand::List { json } => {
            let views: Vec<RuleJson> = app.directory.rules()?.iter().map(RuleJson::of).collect();
            if *json {
                print_json(&serde_json::to_value(&views)?);
            } else if views.is_empty() {
                crate::say!("No rules: every mail is filed as it comes.");
            } else {
                for view in &views {
                    crate::say!("{}", describe(view));
                }
            }
        }
        RulesCommand::Remove { id } => {
            if !app.directory.remove_rule(*id)? {
                bail!("no rule {id}; `mailrobot rules list` shows them");
            }
            crate::say!("Rule {id} removed.");
        }
        RulesCommand::Test { message, json } => {
            let tag = app.tag_format()?;
            let test = app.directory.test_rules(*message, &tag)?;
            if *json {
                print_json(&serde_json::to_value(&test)?);
            } else {
                crate::say!(
                    "Mail {message}: {}, contact {}.",
                    test.classification.as_str(),
                    if test.contact_known { "known" } else { "unknown" }
                );
                if test.verdict.matched.is_empty() {
                    crate::say!("No rule matches.");
                }
                for m in &test.verdict.matched {
                    crate::say!("Matches rule {} ({}): {}", m.id, m.name, serde_json::to_string(&m.actions)?);
                }
                for skipped in &test.verdict.skipped {
                    crate::say!("{skipped}");
                }
                crate::say!("Would be: {}", serde_json::to_string(&test.verdict.disposition)?);
                crate::say!("Nothing was changed.");
            }
        }
    }
    Ok(())
}

/// The store's key for `key`'s arguments.
pub fn template_key(app: &App, kind: &str, mailbox: Option<&str>, language: &str) -> anyhow::Result<TemplateKey> {
    let kind: OutgoingKind = kind.parse().map_err(|e: String| anyhow!("{e}"))?;
    let mailbox_id = mailbox.map(|m| find_mailbox(app.store.as_ref(), m).map(|m| m.id)).transpose()?;
    Ok(TemplateKey { kind, mailbox_id, language: language.trim().to_ascii_lowercase() })
}

fn key_of(app: &App, key: &TemplateKeyArgs) -> anyhow::Result<TemplateKey> {
    template_key(app, &key.kind, key.mailbox.as_deref(), &key.language)
}

/// The template that applies at `key` (stored, or the built-in one) and its
/// preview rendered with sample values.
pub fn template_preview(app: &App, key: &TemplateKey, mailbox: Option<&str>) -> anyhow::Result<TemplatePreviewJson> {
    let stored = app.directory.templates()?;
    TemplatePreviewJson::of(&stored, key, mailbox.map(str::to_string)).map_err(|e| anyhow!("{e}"))
}

pub fn templates_command(app: &App, command: &TemplatesCommand) -> anyhow::Result<()> {
    match command {
        TemplatesCommand::List { json } => {
            let views: Vec<TemplateJson> = app.directory.templates()?.iter().map(TemplateJson::of).collect();
            if *json {
                print_json(&serde_json::to_value(&views)?);
            } else {
                for kind in OutgoingKind::ALL {
                    let stored: Vec<&TemplateJson> = views.iter().filter(|t| t.kind == kind.as_str()).collect();
                    if stored.is_empty() {
                        crate::say!("{:<16} built-in", kind.as_str());
                    }
                    for t in stored {
                        crate::say!(
                            "{:<16} mailbox {:<12} language {:<6} {}",
                            t.kind,
                            t.mailbox.as_deref().unwrap_or("(all)"),
                            if t.language.is_empty() { "(any)" } else { &t.language },
                            t.subject
                        );
                    }
                }
            }
        }
        TemplatesCommand::Show { key, json } => {
            let shown = template_preview(app, &key_of(app, key)?, key.mailbox.as_deref())?;
            if *json {
                print_json(&serde_json::to_value(&shown)?);
            } else {
                crate::say!("{} template ({}):", shown.kind, shown.source);
                crate::say!("Subject: {}", shown.subject);
                println!("{}", shown.text);
                if let Some(html) = &shown.html {
                    crate::say!("HTML:");
                    println!("{html}");
                }
                crate::say!("--- preview with sample values ---");
                crate::say!("Subject: {}", shown.preview.subject);
                println!("{}", shown.preview.text);
            }
        }
        TemplatesCommand::Set { key, subject, text_file, html_file, reset } => {
            let key = key_of(app, key)?;
            if *reset {
                if !app.directory.remove_template(&key)? {
                    bail!("no stored {} template there; the built-in one applies already", key.kind);
                }
                crate::say!("The {} template is the built-in one again.", key.kind);
                return Ok(());
            }
            let read = |path: &std::path::Path| -> anyhow::Result<String> {
                if path.as_os_str() == "-" {
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
                    Ok(text)
                } else {
                    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
                }
            };
            let template = MailTemplate {
                subject: subject.clone().unwrap_or_default(),
                text: read(text_file.as_deref().ok_or_else(|| anyhow!("--text-file is needed"))?)?,
                html: html_file.as_deref().map(read).transpose()?,
            };
            let stored = app.directory.set_template(&key, &template)?;
            crate::say!("The {} template is stored (id {}).", stored.kind, stored.id);
        }
    }
    Ok(())
}

pub fn contacts_command(app: &App, command: &ContactsCommand) -> anyhow::Result<()> {
    match command {
        ContactsCommand::List { json } => {
            let views: Vec<ContactJson> = app.directory.contacts()?.iter().map(ContactJson::of).collect();
            if *json {
                print_json(&serde_json::to_value(&views)?);
            } else {
                for c in &views {
                    crate::say!(
                        "{:<32} {:<24} {:<20} {} ticket(s)",
                        c.email,
                        c.name.as_deref().unwrap_or("-"),
                        c.organisation.as_deref().unwrap_or("-"),
                        c.tickets
                    );
                }
            }
        }
        ContactsCommand::Add { email, name, organisation, json } => {
            let contact = app.directory.add_contact(&NewContact {
                email: email.clone(),
                name: name.clone(),
                organisation: organisation.clone(),
            })?;
            if *json {
                print_json(&serde_json::to_value(ContactJson::of(&contact))?);
            } else {
                crate::say!("Contact {} ({}).", contact.email, contact.id);
            }
        }
        ContactsCommand::Show { email, json } => {
            let tag = app.tag_format()?;
            let (contact, tickets) = app
                .directory
                .contact(email)?
                .ok_or_else(|| anyhow!("no contact {email}; `mailrobot contacts list` shows them"))?;
            let view = ContactDetailJson::of(&contact, &tickets, &tag);
            if *json {
                print_json(&serde_json::to_value(&view)?);
            } else {
                crate::say!("{} {}", view.contact.email, view.contact.name.as_deref().unwrap_or(""));
                if let Some(o) = &view.contact.organisation {
                    crate::say!("Organisation: {o}");
                }
                for t in &view.requested_tickets {
                    crate::say!("{:<12} {:<8} {}", t.number, t.status, t.subject);
                }
            }
        }
    }
    Ok(())
}
