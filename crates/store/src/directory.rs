//! What the operator configures about mail itself: rules, mail templates,
//! and the sender directory (contacts).

use mailrobot_core::{MailTemplate, OutgoingKind, RuleDefinition, StoredTemplate};
use serde::Serialize;

use crate::{Result, Store, StoreError, TicketSummary};

/// A stored rule.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub id: i64,
    pub name: String,
    /// None: every mailbox.
    pub mailbox_id: Option<i64>,
    pub mailbox: Option<String>,
    pub position: i64,
    pub enabled: bool,
    pub definition: RuleDefinition,
    pub created_at: String,
}

/// A rule to add.
#[derive(Debug, Clone)]
pub struct NewRule {
    pub name: String,
    pub mailbox_id: Option<i64>,
    /// Where it goes in the order (1 = first); None: last.
    pub position: Option<i64>,
    pub definition: RuleDefinition,
}

/// A stored mail template.
#[derive(Debug, Clone, Serialize)]
pub struct Template {
    pub id: i64,
    pub kind: OutgoingKind,
    pub mailbox_id: Option<i64>,
    pub mailbox: Option<String>,
    /// A language tag, or empty for any language.
    pub language: String,
    #[serde(flatten)]
    pub template: MailTemplate,
    pub updated_at: String,
}

/// Which template: its kind, mailbox (None: every mailbox) and language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateKey {
    pub kind: OutgoingKind,
    pub mailbox_id: Option<i64>,
    pub language: String,
}

/// Who made a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContactSource {
    /// A new ticket's requester (the unknown-sender policy `create`).
    Mail,
    /// Added by a person (CLI, API, UI).
    Operator,
}

impl ContactSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ContactSource::Mail => "mail",
            ContactSource::Operator => "operator",
        }
    }
}

/// A person in the sender directory.
#[derive(Debug, Clone, Serialize)]
pub struct Contact {
    pub id: i64,
    /// As first written.
    pub email: String,
    pub name: Option<String>,
    pub organisation: Option<String>,
    pub source: ContactSource,
    /// How many tickets they requested.
    pub tickets: i64,
    pub created_at: String,
}

/// A contact to add (or to update, if the folded address is known).
#[derive(Debug, Clone, Default)]
pub struct NewContact {
    pub email: String,
    pub name: Option<String>,
    pub organisation: Option<String>,
}

pub trait DirectoryStore: Send + Sync {
    // --- rules ---
    fn add_rule(&self, rule: &NewRule) -> Result<Rule>;
    /// Every rule, in the order they apply.
    fn rules(&self) -> Result<Vec<Rule>>;
    /// Returns whether it existed.
    fn remove_rule(&self, id: i64) -> Result<bool>;
    /// What the rules would do to a journaled mail, writing nothing.
    fn test_rules(&self, journal_id: i64, tag: &mailrobot_core::TagFormat) -> Result<mailrobot_core::RulesTest>;

    // --- templates ---
    /// Stores (or replaces) the template at `key`.
    fn set_template(&self, key: &TemplateKey, template: &MailTemplate) -> Result<Template>;
    fn templates(&self) -> Result<Vec<Template>>;
    /// Returns whether it existed.
    fn remove_template(&self, key: &TemplateKey) -> Result<bool>;

    // --- contacts ---
    /// Adds a contact, or updates the name and organisation of the one with
    /// the same folded address.
    fn add_contact(&self, contact: &NewContact) -> Result<Contact>;
    fn contacts(&self) -> Result<Vec<Contact>>;
    /// The contact with this address (folded), and the tickets they requested.
    fn contact(&self, email: &str) -> Result<Option<(Contact, Vec<TicketSummary>)>>;
}

// --- What both backends share: no SQL below. ---

/// A rule as it can be stored: its definition as JSON, checked; or why not.
pub(crate) fn checked_rule(rule: &NewRule) -> Result<String> {
    if rule.name.trim().is_empty() {
        return Err(StoreError::Invalid("a rule needs a name".into()));
    }
    let definition = rule.definition.to_json();
    RuleDefinition::parse(&definition).map_err(|e| StoreError::Invalid(e.to_string()))?;
    Ok(definition)
}

/// Where a new rule goes when `last` is the highest position: the position
/// asked for, when there is one — the rules from there on move down one
/// (true) —, else after the last.
pub(crate) fn rule_position(asked: Option<i64>, last: i64) -> (i64, bool) {
    match asked {
        Some(p) if p >= 1 && p <= last => (p, true),
        _ => (last + 1, false),
    }
}

/// Rule `id`'s stored definition. Stored definitions were checked when
/// added; one that no longer reads is shown as the error it is, not hidden.
pub(crate) fn rule_definition(id: i64, stored: &str) -> Result<RuleDefinition> {
    serde_json::from_str(stored)
        .map_err(|e| StoreError::Corrupt(format!("rule {id} has a definition that does not read: {e}")))
}

/// The error of a rule that is not there right after it was added.
pub(crate) fn rule_vanished() -> StoreError {
    StoreError::Corrupt("the rule vanished".into())
}

impl From<Template> for StoredTemplate {
    fn from(t: Template) -> Self {
        StoredTemplate { kind: t.kind, mailbox_id: t.mailbox_id, language: t.language, template: t.template }
    }
}

/// A template key's language, normalised (trimmed, lower case), or why it is
/// not a language tag.
pub(crate) fn valid_language(language: &str) -> Result<String> {
    let language = language.trim().to_ascii_lowercase();
    if language.len() > 35 || !language.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(StoreError::Invalid(format!("{language:?} is not a language tag like de or en-gb")));
    }
    Ok(language)
}

/// A template as it can be stored at `key`: its key's normalised language,
/// or why not.
pub(crate) fn checked_template(key: &TemplateKey, template: &MailTemplate) -> Result<String> {
    let language = valid_language(&key.language)?;
    mailrobot_core::templates::check(key.kind, template).map_err(|e| StoreError::Invalid(e.to_string()))?;
    Ok(language)
}

impl ContactSource {
    /// As stored (`contacts.source`).
    pub(crate) fn from_stored(text: &str) -> Self {
        if text == "operator" { ContactSource::Operator } else { ContactSource::Mail }
    }
}

/// A contact as stored: the address as written and folded, and the name and
/// organisation with blanks left out.
pub(crate) struct CheckedContact {
    pub(crate) email: String,
    pub(crate) key: String,
    pub(crate) name: Option<String>,
    pub(crate) organisation: Option<String>,
}

/// `contact` as it can be stored, or why not (an address that is none).
pub(crate) fn checked_contact(contact: &NewContact) -> Result<CheckedContact> {
    let email = contact.email.trim();
    let well_formed = email.rsplit_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !domain.starts_with('.')
    });
    if !well_formed || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(StoreError::Invalid(format!("{email:?} is not an e-mail address")));
    }
    let blank = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
    Ok(CheckedContact {
        email: email.to_string(),
        key: mailrobot_core::answer::folded(email),
        name: blank(&contact.name),
        organisation: blank(&contact.organisation),
    })
}

/// [`DirectoryStore::test_rules`] once the store found the mail's mailbox
/// (None: no such mail in the journal).
pub(crate) fn test_rules<S: Store + ?Sized>(
    store: &S,
    journal_id: i64,
    mailbox_id: Option<i64>,
    tag: &mailrobot_core::TagFormat,
) -> Result<mailrobot_core::RulesTest> {
    let mailbox_id = mailbox_id.ok_or_else(|| StoreError::NotFound(format!("no mail {journal_id} in the journal")))?;
    let raw = store
        .message_raw(journal_id)?
        .ok_or_else(|| StoreError::NotFound(format!("mail {journal_id}'s raw bytes were not kept")))?;
    let mail = mailrobot_core::parse(&raw)
        .map_err(|e| StoreError::Invalid(format!("mail {journal_id} cannot be read as an e-mail: {e}")))?;
    let mut result = None;
    // Only lookups: the transaction commits nothing.
    store.with_ledger(&mut |ledger| {
        result = Some(mailrobot_core::test_rules(ledger, mailbox_id, journal_id, &mail, tag)?);
        Ok(())
    })?;
    result.ok_or_else(|| StoreError::Corrupt("rules test gave no result".into()))
}
