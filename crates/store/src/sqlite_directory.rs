//! Rules, templates and contacts on SQLite, and the [`mailrobot_core::Ledger`]
//! reads processing makes of them.

use mailrobot_core::answer::folded;
use mailrobot_core::{MailTemplate, RuleDefinition, StoredRule, StoredTemplate};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::directory::{
    Contact, ContactSource, DirectoryStore, NewContact, NewRule, Rule, Template, TemplateKey, checked_contact,
    checked_rule, checked_template, rule_definition, rule_position, rule_vanished, valid_language,
};
use crate::sqlite::now;
use crate::{Result, SqliteStore, TicketSummary};

const RULE_COLUMNS: &str = "r.id, r.name, r.mailbox_id, m.name, r.position, r.enabled, r.definition, r.created_at FROM rules r \
     LEFT JOIN mailboxes m ON m.id = r.mailbox_id";

fn rule_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Rule, String)> {
    let definition: String = r.get(6)?;
    Ok((
        Rule {
            id: r.get(0)?,
            name: r.get(1)?,
            mailbox_id: r.get(2)?,
            mailbox: r.get(3)?,
            position: r.get(4)?,
            enabled: r.get(5)?,
            definition: RuleDefinition::default(),
            created_at: r.get(7)?,
        },
        definition,
    ))
}

fn rules_in(conn: &Connection, id: Option<i64>) -> Result<Vec<Rule>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {RULE_COLUMNS} WHERE ?1 IS NULL OR r.id = ?1 ORDER BY r.position, r.id"))?;
    let rows = stmt.query_map([id], rule_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(mut rule, definition)| {
            rule.definition = rule_definition(rule.id, &definition)?;
            Ok(rule)
        })
        .collect()
}

/// The enabled rules in order, as processing reads them.
pub(crate) fn stored_rules(tx: &Transaction<'_>) -> Result<Vec<StoredRule>> {
    let mut stmt = tx
        .prepare_cached("SELECT id, name, mailbox_id, definition FROM rules WHERE enabled = 1 ORDER BY position, id")?;
    let rows = stmt
        .query_map([], |r| {
            Ok(StoredRule { id: r.get(0)?, name: r.get(1)?, mailbox_id: r.get(2)?, definition: r.get(3)? })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

const TEMPLATE_COLUMNS: &str = "t.id, t.kind, t.mailbox_id, m.name, t.language, t.subject, t.text, t.html, \
     t.updated_at FROM templates t LEFT JOIN mailboxes m ON m.id = t.mailbox_id";

fn template_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Template> {
    let kind: String = r.get(1)?;
    Ok(Template {
        id: r.get(0)?,
        kind: kind
            .parse()
            .map_err(|e: String| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into()))?,
        mailbox_id: r.get(2)?,
        mailbox: r.get(3)?,
        language: r.get(4)?,
        template: MailTemplate { subject: r.get(5)?, text: r.get(6)?, html: r.get(7)? },
        updated_at: r.get(8)?,
    })
}

/// Every template, as processing reads them.
pub(crate) fn stored_templates(tx: &Transaction<'_>) -> Result<Vec<StoredTemplate>> {
    let mut stmt = tx.prepare_cached(&format!("SELECT {TEMPLATE_COLUMNS}"))?;
    let rows = stmt.query_map([], template_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows.into_iter().map(StoredTemplate::from).collect())
}

const CONTACT_COLUMNS: &str = "c.id, c.email, c.name, c.organisation, c.source, \
     (SELECT COUNT(*) FROM tickets t WHERE t.requester_key = c.email_key), c.created_at FROM contacts c";

fn contact_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Contact> {
    Ok(Contact {
        id: r.get(0)?,
        email: r.get(1)?,
        name: r.get(2)?,
        organisation: r.get(3)?,
        source: ContactSource::from_stored(&r.get::<_, String>(4)?),
        tickets: r.get(5)?,
        created_at: r.get(6)?,
    })
}

/// Adds a contact met in mail (a new ticket's requester); nothing if known.
pub(crate) fn add_mail_contact(tx: &Transaction<'_>, at: &str, address: &mailrobot_core::Address) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO contacts (email, email_key, name, source, created_at) VALUES (?1, ?2, ?3, 'mail', ?4)
         ON CONFLICT(email_key) DO NOTHING",
    )?
    .execute(params![address.as_written, folded(&address.email), address.name, at])?;
    Ok(())
}

pub(crate) fn contact_known(tx: &Transaction<'_>, key: &str) -> Result<bool> {
    Ok(tx
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM contacts WHERE email_key = ?1)")?
        .query_row([key], |r| r.get(0))?)
}

impl DirectoryStore for SqliteStore {
    fn add_rule(&self, rule: &NewRule) -> Result<Rule> {
        let definition = checked_rule(rule)?;
        let id = self.write(|tx| {
            let last: i64 = tx.query_row("SELECT COALESCE(MAX(position), 0) FROM rules", [], |r| r.get(0))?;
            let (position, shift) = rule_position(rule.position, last);
            if shift {
                tx.execute("UPDATE rules SET position = position + 1 WHERE position >= ?1", [position])?;
            }
            tx.execute(
                "INSERT INTO rules (name, mailbox_id, position, definition, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![rule.name.trim(), rule.mailbox_id, position, definition, now()],
            )?;
            Ok(tx.last_insert_rowid())
        })?;
        rules_in(&self.lock(), Some(id))?.pop().ok_or_else(rule_vanished)
    }

    fn rules(&self) -> Result<Vec<Rule>> {
        rules_in(&self.read(), None)
    }

    fn remove_rule(&self, id: i64) -> Result<bool> {
        self.write(|tx| {
            let position: Option<i64> =
                tx.query_row("SELECT position FROM rules WHERE id = ?1", [id], |r| r.get(0)).optional()?;
            let Some(position) = position else { return Ok(false) };
            tx.execute("DELETE FROM rules WHERE id = ?1", [id])?;
            tx.execute("UPDATE rules SET position = position - 1 WHERE position > ?1", [position])?;
            Ok(true)
        })
    }

    fn test_rules(&self, journal_id: i64, tag: &mailrobot_core::TagFormat) -> Result<mailrobot_core::RulesTest> {
        let mailbox_id: Option<i64> = self
            .read()
            .query_row("SELECT mailbox_id FROM messages WHERE id = ?1", [journal_id], |r| r.get(0))
            .optional()?;
        crate::directory::test_rules(self, journal_id, mailbox_id, tag)
    }

    fn set_template(&self, key: &TemplateKey, template: &MailTemplate) -> Result<Template> {
        let language = checked_template(key, template)?;
        let id = self.write(|tx| {
            tx.execute(
                "INSERT INTO templates (kind, mailbox_id, language, subject, text, html, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(kind, IFNULL(mailbox_id, 0), language) DO UPDATE SET
                 subject = excluded.subject, text = excluded.text, html = excluded.html,
                 updated_at = excluded.updated_at",
                params![
                    key.kind.as_str(),
                    key.mailbox_id,
                    language,
                    template.subject,
                    template.text,
                    template.html,
                    now()
                ],
            )?;
            Ok(tx.query_row(
                "SELECT id FROM templates WHERE kind = ?1 AND IFNULL(mailbox_id, 0) = IFNULL(?2, 0) AND language = ?3",
                params![key.kind.as_str(), key.mailbox_id, language],
                |r| r.get::<_, i64>(0),
            )?)
        })?;
        let conn = self.lock();
        Ok(conn.query_row(&format!("SELECT {TEMPLATE_COLUMNS} WHERE t.id = ?1"), [id], template_from_row)?)
    }

    fn templates(&self) -> Result<Vec<Template>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TEMPLATE_COLUMNS} ORDER BY t.kind, m.name IS NOT NULL, m.name, t.language"
        ))?;
        let rows = stmt.query_map([], template_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn remove_template(&self, key: &TemplateKey) -> Result<bool> {
        let language = valid_language(&key.language)?;
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM templates WHERE kind = ?1 AND IFNULL(mailbox_id, 0) = IFNULL(?2, 0) AND language = ?3",
                params![key.kind.as_str(), key.mailbox_id, language],
            )? > 0)
        })
    }

    fn add_contact(&self, contact: &NewContact) -> Result<Contact> {
        let contact = checked_contact(contact)?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO contacts (email, email_key, name, organisation, source, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'operator', ?5)
                 ON CONFLICT(email_key) DO UPDATE SET name = COALESCE(excluded.name, name),
                 organisation = COALESCE(excluded.organisation, organisation)",
                params![contact.email, contact.key, contact.name, contact.organisation, now()],
            )?;
            Ok(())
        })?;
        let conn = self.lock();
        Ok(conn.query_row(
            &format!("SELECT {CONTACT_COLUMNS} WHERE c.email_key = ?1"),
            [&contact.key],
            contact_from_row,
        )?)
    }

    fn contacts(&self) -> Result<Vec<Contact>> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!("SELECT {CONTACT_COLUMNS} ORDER BY c.email_key"))?;
        let rows = stmt.query_map([], contact_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn contact(&self, email: &str) -> Result<Option<(Contact, Vec<TicketSummary>)>> {
        let key = folded(email);
        let conn = self.read();
        let Some(contact) = conn
            .query_row(&format!("SELECT {CONTACT_COLUMNS} WHERE c.email_key = ?1"), [&key], contact_from_row)
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = conn.prepare_cached(&format!(
            "{} WHERE t.requester_key = ?1 ORDER BY t.id DESC",
            crate::sqlite::TICKET_SUMMARY_SQL
        ))?;
        let tickets = stmt.query_map([&key], crate::sqlite::ticket_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some((contact, tickets)))
    }
}
