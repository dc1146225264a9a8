//! Rules, templates and contacts on PostgreSQL, and the
//! [`mailrobot_core::Ledger`] reads processing makes of them.
//!
//! Lists sort their text columns with `COLLATE "C"`: byte order, as on
//! SQLite, whatever collation the database was created with.

use mailrobot_core::answer::folded;
use mailrobot_core::{MailTemplate, StoredRule, StoredTemplate};
use tokio_postgres::Row;

use super::store::{TICKET_SUMMARY_SQL, ticket_from_row};
use super::{PgStore, PgTx, now};
use crate::directory::{
    Contact, ContactSource, DirectoryStore, NewContact, NewRule, Rule, Template, TemplateKey, checked_contact,
    checked_rule, checked_template, rule_definition, rule_position, rule_vanished, valid_language,
};
use crate::{Result, StoreError, TicketSummary};

const RULE_COLUMNS: &str = "r.id, r.name, r.mailbox_id, m.name, r.position, r.enabled, r.definition, r.created_at \
     FROM rules r LEFT JOIN mailboxes m ON m.id = r.mailbox_id";

fn rule_from_row(r: &Row) -> Result<Rule> {
    let id: i64 = r.try_get(0)?;
    Ok(Rule {
        id,
        name: r.try_get(1)?,
        mailbox_id: r.try_get(2)?,
        mailbox: r.try_get(3)?,
        position: r.try_get(4)?,
        enabled: r.try_get(5)?,
        definition: rule_definition(id, r.try_get(6)?)?,
        created_at: r.try_get(7)?,
    })
}

/// Every rule in order, or only rule `id`.
fn rules_in(tx: &mut PgTx<'_>, id: Option<i64>) -> Result<Vec<Rule>> {
    tx.query(&format!("SELECT {RULE_COLUMNS} WHERE $1::bigint IS NULL OR r.id = $1 ORDER BY r.position, r.id"), &[&id])?
        .iter()
        .map(rule_from_row)
        .collect()
}

/// The enabled rules in order, as processing reads them.
pub(crate) fn stored_rules(tx: &mut PgTx<'_>) -> Result<Vec<StoredRule>> {
    tx.query("SELECT id, name, mailbox_id, definition FROM rules WHERE enabled ORDER BY position, id", &[])?
        .iter()
        .map(|r| {
            Ok(StoredRule {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                mailbox_id: r.try_get(2)?,
                definition: r.try_get(3)?,
            })
        })
        .collect()
}

const TEMPLATE_COLUMNS: &str = "t.id, t.kind, t.mailbox_id, m.name, t.language, t.subject, t.text, t.html, \
     t.updated_at FROM templates t LEFT JOIN mailboxes m ON m.id = t.mailbox_id";

fn template_from_row(r: &Row) -> Result<Template> {
    let id: i64 = r.try_get(0)?;
    let kind: &str = r.try_get(1)?;
    Ok(Template {
        id,
        kind: kind.parse().map_err(|e: String| StoreError::Corrupt(format!("template {id}: {e}")))?,
        mailbox_id: r.try_get(2)?,
        mailbox: r.try_get(3)?,
        language: r.try_get(4)?,
        template: MailTemplate { subject: r.try_get(5)?, text: r.try_get(6)?, html: r.try_get(7)? },
        updated_at: r.try_get(8)?,
    })
}

/// Every template, as processing reads them.
pub(crate) fn stored_templates(tx: &mut PgTx<'_>) -> Result<Vec<StoredTemplate>> {
    tx.query(&format!("SELECT {TEMPLATE_COLUMNS}"), &[])?
        .iter()
        .map(|r| template_from_row(r).map(StoredTemplate::from))
        .collect()
}

const CONTACT_COLUMNS: &str = "c.id, c.email, c.name, c.organisation, c.source, \
     (SELECT COUNT(*) FROM tickets t WHERE t.requester_key = c.email_key), c.created_at FROM contacts c";

fn contact_from_row(r: &Row) -> Result<Contact> {
    Ok(Contact {
        id: r.try_get(0)?,
        email: r.try_get(1)?,
        name: r.try_get(2)?,
        organisation: r.try_get(3)?,
        source: ContactSource::from_stored(r.try_get(4)?),
        tickets: r.try_get(5)?,
        created_at: r.try_get(6)?,
    })
}

pub(crate) fn contact_known(tx: &mut PgTx<'_>, key: &str) -> Result<bool> {
    Ok(tx.query_one("SELECT EXISTS(SELECT 1 FROM contacts WHERE email_key = $1)", &[&key])?.try_get(0)?)
}

impl DirectoryStore for PgStore {
    fn add_rule(&self, rule: &NewRule) -> Result<Rule> {
        let definition = checked_rule(rule)?;
        let id = self.write(|tx| {
            let last: i64 = tx.query_one("SELECT COALESCE(MAX(position), 0) FROM rules", &[])?.try_get(0)?;
            let (position, shift) = rule_position(rule.position, last);
            if shift {
                tx.exec("UPDATE rules SET position = position + 1 WHERE position >= $1", &[&position])?;
            }
            let row = tx.query_one(
                "INSERT INTO rules (name, mailbox_id, position, definition, created_at) VALUES ($1, $2, $3, $4, $5)
                 RETURNING id",
                &[&rule.name.trim(), &rule.mailbox_id, &position, &definition, &now()],
            )?;
            Ok(row.try_get::<_, i64>(0)?)
        })?;
        self.read(|tx| rules_in(tx, Some(id)))?.pop().ok_or_else(rule_vanished)
    }

    fn rules(&self) -> Result<Vec<Rule>> {
        self.read(|tx| rules_in(tx, None))
    }

    fn remove_rule(&self, id: i64) -> Result<bool> {
        self.write(|tx| {
            let Some(row) = tx.query_opt("SELECT position FROM rules WHERE id = $1", &[&id])? else {
                return Ok(false);
            };
            let position: i64 = row.try_get(0)?;
            tx.exec("DELETE FROM rules WHERE id = $1", &[&id])?;
            tx.exec("UPDATE rules SET position = position - 1 WHERE position > $1", &[&position])?;
            Ok(true)
        })
    }

    fn test_rules(&self, journal_id: i64, tag: &mailrobot_core::TagFormat) -> Result<mailrobot_core::RulesTest> {
        let mailbox_id: Option<i64> = self.read(|tx| {
            Ok(tx
                .query_opt("SELECT mailbox_id FROM messages WHERE id = $1", &[&journal_id])?
                .map(|r| r.try_get(0))
                .transpose()?)
        })?;
        crate::directory::test_rules(self, journal_id, mailbox_id, tag)
    }

    fn set_template(&self, key: &TemplateKey, template: &MailTemplate) -> Result<Template> {
        let language = checked_template(key, template)?;
        let id = self.write(|tx| {
            let row = tx.query_one(
                "INSERT INTO templates (kind, mailbox_id, language, subject, text, html, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (kind, COALESCE(mailbox_id, 0), language) DO UPDATE SET
                 subject = EXCLUDED.subject, text = EXCLUDED.text, html = EXCLUDED.html,
                 updated_at = EXCLUDED.updated_at
                 RETURNING id",
                &[
                    &key.kind.as_str(),
                    &key.mailbox_id,
                    &language,
                    &template.subject,
                    &template.text,
                    &template.html,
                    &now(),
                ],
            )?;
            Ok(row.try_get::<_, i64>(0)?)
        })?;
        self.read(|tx| template_from_row(&tx.query_one(&format!("SELECT {TEMPLATE_COLUMNS} WHERE t.id = $1"), &[&id])?))
    }

    fn templates(&self) -> Result<Vec<Template>> {
        self.read(|tx| {
            tx.query(
                &format!(
                    "SELECT {TEMPLATE_COLUMNS}
                     ORDER BY t.kind COLLATE \"C\", m.name IS NOT NULL, m.name COLLATE \"C\", t.language COLLATE \"C\""
                ),
                &[],
            )?
            .iter()
            .map(template_from_row)
            .collect()
        })
    }

    fn remove_template(&self, key: &TemplateKey) -> Result<bool> {
        let language = valid_language(&key.language)?;
        self.write(|tx| {
            Ok(tx.exec(
                "DELETE FROM templates
                 WHERE kind = $1 AND COALESCE(mailbox_id, 0) = COALESCE($2::bigint, 0) AND language = $3",
                &[&key.kind.as_str(), &key.mailbox_id, &language],
            )? > 0)
        })
    }

    fn add_contact(&self, contact: &NewContact) -> Result<Contact> {
        let contact = checked_contact(contact)?;
        self.write(|tx| {
            tx.exec(
                "INSERT INTO contacts (email, email_key, name, organisation, source, created_at)
                 VALUES ($1, $2, $3, $4, 'operator', $5)
                 ON CONFLICT (email_key) DO UPDATE SET name = COALESCE(EXCLUDED.name, contacts.name),
                 organisation = COALESCE(EXCLUDED.organisation, contacts.organisation)",
                &[&contact.email, &contact.key, &contact.name, &contact.organisation, &now()],
            )?;
            Ok(())
        })?;
        self.read(|tx| {
            contact_from_row(
                &tx.query_one(&format!("SELECT {CONTACT_COLUMNS} WHERE c.email_key = $1"), &[&contact.key])?,
            )
        })
    }

    fn contacts(&self) -> Result<Vec<Contact>> {
        self.read(|tx| {
            tx.query(&format!("SELECT {CONTACT_COLUMNS} ORDER BY c.email_key COLLATE \"C\""), &[])?
                .iter()
                .map(contact_from_row)
                .collect()
        })
    }

    fn contact(&self, email: &str) -> Result<Option<(Contact, Vec<TicketSummary>)>> {
        let key = folded(email);
        self.read(|tx| {
            let Some(row) = tx.query_opt(&format!("SELECT {CONTACT_COLUMNS} WHERE c.email_key = $1"), &[&key])? else {
                return Ok(None);
            };
            let contact = contact_from_row(&row)?;
            let tickets = tx
                .query(&format!("{TICKET_SUMMARY_SQL} WHERE t.requester_key = $1 ORDER BY t.id DESC"), &[&key])?
                .iter()
                .map(ticket_from_row)
                .collect::<Result<Vec<_>>>()?;
            Ok(Some((contact, tickets)))
        })
    }
}
