//! What the operator configures about mail itself: rules, mail templates,
//! and the sender directory (contacts).

use mailrobot_core::{MailTemplate, OutgoingKind, RuleDefinition};
use serde::Serialize;

use crate::{Result, TicketSummary};

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
