//! Rules: what happens to each mail, decided by the operator's ordered list
//! of conditions → actions (`mailrobot rules add …`, the API and the UI).
//!
//! A rule's definition is JSON (stored as written, shown by `rules list
//! --json`). It is compiled once per batch; regexes use the `regex` crate
//! (linear time, bounded size), and text is matched on a bounded prefix, so
//! no rule can stall ingestion. A rule that cannot be compiled is skipped
//! with its reason recorded on the journal row: it never loses the mail.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::answer::folded;
use crate::classify::MailKind;
use crate::mail::ParsedMail;

/// How much of a body or header a text condition reads (a 25 MB body is
/// matched on its first 256 KiB).
pub const MATCHED_TEXT_LIMIT: usize = 256 * 1024;
/// The compiled size limit of one regex.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// What a mail is, for the `classification` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Classification {
    /// A person's mail that makes a new ticket.
    New,
    /// A person's mail that adds to an existing ticket.
    Reply,
    AutoReply,
    Bounce,
}

impl Classification {
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::New => "new",
            Classification::Reply => "reply",
            Classification::AutoReply => "auto-reply",
            Classification::Bounce => "bounce",
        }
    }

    /// From the mail's kind and whether it adds to a ticket.
    pub fn of(kind: MailKind, has_ticket: bool) -> Self {
        match kind {
            MailKind::AutoReply => Classification::AutoReply,
            MailKind::Bounce => Classification::Bounce,
            MailKind::Mail if has_ticket => Classification::Reply,
            MailKind::Mail => Classification::New,
        }
    }
}

impl std::str::FromStr for Classification {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "new" => Ok(Classification::New),
            "reply" => Ok(Classification::Reply),
            "auto-reply" => Ok(Classification::AutoReply),
            "bounce" => Ok(Classification::Bounce),
            other => Err(format!("{other:?} is not a classification: expected new, reply, auto-reply or bounce")),
        }
    }
}

/// Whether the sender is in the directory (`contact` condition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContactKnown {
    Known,
    Unknown,
}

/// A header condition: present, or equal to a value (case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderCondition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
}

/// One condition; a rule matches when all of its conditions do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// The sender is one of these addresses (`ann@example.com`) or domains
    /// (`example.com`, which also matches its subdomains).
    From(Vec<String>),
    To(Vec<String>),
    Cc(Vec<String>),
    SubjectContains(String),
    SubjectRegex(String),
    BodyContains(String),
    BodyRegex(String),
    Header(HeaderCondition),
    /// An attachment of this content type (`application/pdf`, or `image/*`).
    AttachmentType(String),
    /// The raw mail is larger than this many bytes.
    LargerThan(u64),
    SmallerThan(u64),
    Classification(Classification),
    Contact(ContactKnown),
}

/// One action of a matching rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    SetCategory(String),
    SetPriority(String),
    SetQueue(String),
    SetAssignee(String),
    AddTags(Vec<String>),
    /// No acknowledgement for this mail.
    NoAcknowledgement,
    /// Journal only: no ticket, no entry, no answer.
    Ignore,
    /// No ticket; the sender gets the `rejection` template (loop protection
    /// still applies).
    Reject,
    /// A copy to this address (the original attached), as a notification.
    Forward(String),
    /// No later rule is looked at.
    Stop,
}

/// A rule's definition: what the operator wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDefinition {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    pub actions: Vec<Action>,
}

/// A rule as a form says it (the CLI's flags, the UI's fields): one field
/// per kind of condition and action; empty fields say nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleForm {
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject_contains: Option<String>,
    pub subject_regex: Option<String>,
    pub body_contains: Option<String>,
    pub body_regex: Option<String>,
    /// `NAME` (present) or `NAME=VALUE` (equal, ignoring case).
    pub headers: Vec<String>,
    pub attachment_type: Option<String>,
    pub larger_than: Option<u64>,
    pub smaller_than: Option<u64>,
    /// new, reply, auto-reply or bounce.
    pub classification: Option<String>,
    /// known or unknown.
    pub contact: Option<String>,
    pub set_category: Option<String>,
    pub set_priority: Option<String>,
    pub set_queue: Option<String>,
    pub set_assignee: Option<String>,
    pub add_tags: Vec<String>,
    pub no_acknowledgement: bool,
    pub ignore: bool,
    pub reject: bool,
    pub forward: Option<String>,
    pub stop: bool,
}

impl RuleForm {
    /// The definition the form describes, checked as a stored one is.
    pub fn definition(&self) -> Result<RuleDefinition, RuleError> {
        let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
        let list = |v: &[String]| -> Vec<String> {
            v.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
        };
        let mut conditions = Vec::new();
        for (values, make) in [
            (list(&self.from), Condition::From as fn(Vec<String>) -> Condition),
            (list(&self.to), Condition::To),
            (list(&self.cc), Condition::Cc),
        ] {
            if !values.is_empty() {
                conditions.push(make(values));
            }
        }
        let mut text = |value: Option<String>, make: fn(String) -> Condition| {
            if let Some(value) = value {
                conditions.push(make(value));
            }
        };
        text(given(&self.subject_contains), Condition::SubjectContains);
        text(given(&self.subject_regex), Condition::SubjectRegex);
        text(given(&self.body_contains), Condition::BodyContains);
        text(given(&self.body_regex), Condition::BodyRegex);
        for header in list(&self.headers) {
            let (name, equals) = match header.split_once('=') {
                Some((name, value)) => (name.trim().to_string(), Some(value.trim().to_string())),
                None => (header, None),
            };
            conditions.push(Condition::Header(HeaderCondition { name, equals }));
        }
        if let Some(t) = given(&self.attachment_type) {
            conditions.push(Condition::AttachmentType(t));
        }
        if let Some(n) = self.larger_than {
            conditions.push(Condition::LargerThan(n));
        }
        if let Some(n) = self.smaller_than {
            conditions.push(Condition::SmallerThan(n));
        }
        if let Some(c) = given(&self.classification) {
            conditions.push(Condition::Classification(c.parse().map_err(RuleError::Invalid)?));
        }
        match given(&self.contact).as_deref() {
            None => {}
            Some("known") => conditions.push(Condition::Contact(ContactKnown::Known)),
            Some("unknown") => conditions.push(Condition::Contact(ContactKnown::Unknown)),
            Some(other) => return Err(RuleError::Invalid(format!("contact is known or unknown, not {other:?}"))),
        }
        let mut actions = Vec::new();
        let mut set = |value: Option<String>, make: fn(String) -> Action| {
            if let Some(value) = value {
                actions.push(make(value));
            }
        };
        set(given(&self.set_category), Action::SetCategory);
        set(given(&self.set_priority), Action::SetPriority);
        set(given(&self.set_queue), Action::SetQueue);
        set(given(&self.set_assignee), Action::SetAssignee);
        let tags = list(&self.add_tags);
        if !tags.is_empty() {
            actions.push(Action::AddTags(tags));
        }
        for (on, action) in [
            (self.no_acknowledgement, Action::NoAcknowledgement),
            (self.ignore, Action::Ignore),
            (self.reject, Action::Reject),
        ] {
            if on {
                actions.push(action);
            }
        }
        if let Some(to) = given(&self.forward) {
            actions.push(Action::Forward(to));
        }
        if self.stop {
            actions.push(Action::Stop);
        }
        let definition = RuleDefinition { conditions, actions };
        definition.compile()?;
        Ok(definition)
    }
}

/// A rule as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRule {
    pub id: i64,
    pub name: String,
    /// None: every mailbox.
    pub mailbox_id: Option<i64>,
    pub definition: String,
}

/// Why a rule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("the rule's definition is not valid: {0}")]
    Definition(String),
    #[error("the regex {pattern:?} is not usable: {reason}")]
    Regex { pattern: String, reason: String },
    #[error("a rule needs at least one action")]
    NoAction,
    #[error("{0}")]
    Invalid(String),
}

impl RuleDefinition {
    /// Parses and checks a definition (the same check as when it is applied).
    pub fn parse(json: &str) -> Result<Self, RuleError> {
        let definition: RuleDefinition =
            serde_json::from_str(json).map_err(|e| RuleError::Definition(e.to_string()))?;
        definition.compile()?;
        Ok(definition)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a rule definition serialises")
    }

    fn compile(&self) -> Result<Vec<Compiled>, RuleError> {
        if self.actions.is_empty() {
            return Err(RuleError::NoAction);
        }
        for action in &self.actions {
            if let Action::Forward(to) = action
                && !is_one_address(to)
            {
                return Err(RuleError::Invalid(format!("forward needs one address (local@domain), not {to:?}")));
            }
        }
        self.conditions.iter().map(Compiled::of).collect()
    }
}

/// One plain address: local@domain, nothing a header could be split at.
fn is_one_address(text: &str) -> bool {
    let bad = |c: char| c.is_whitespace() || c.is_control() || ",;<>\"()[]\\".contains(c);
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !text.chars().any(bad)
        }
        None => false,
    }
}

/// A condition ready to test; text searches are case-insensitive regexes.
#[derive(Debug)]
enum Compiled {
    Addresses(Field, Vec<String>),
    Subject(Regex),
    Body(Regex),
    Header { name: String, equals: Option<String> },
    AttachmentType(String),
    LargerThan(u64),
    SmallerThan(u64),
    Classification(Classification),
    Contact(ContactKnown),
}

#[derive(Debug, Clone, Copy)]
enum Field {
    From,
    To,
    Cc,
}

fn bounded_regex(pattern: &str, literal: bool) -> Result<Regex, RuleError> {
    let source = if literal { regex::escape(pattern) } else { pattern.to_string() };
    RegexBuilder::new(&source)
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(64)
        .build()
        .map_err(|e| RuleError::Regex { pattern: pattern.to_string(), reason: e.to_string() })
}

impl Compiled {
    fn of(condition: &Condition) -> Result<Self, RuleError> {
        let addresses = |list: &Vec<String>| -> Result<Vec<String>, RuleError> {
            if list.is_empty() {
                return Err(RuleError::Invalid("an address condition needs an address or a domain".into()));
            }
            Ok(list.iter().map(|a| folded(a.trim_start_matches('@'))).collect())
        };
        Ok(match condition {
            Condition::From(list) => Compiled::Addresses(Field::From, addresses(list)?),
            Condition::To(list) => Compiled::Addresses(Field::To, addresses(list)?),
            Condition::Cc(list) => Compiled::Addresses(Field::Cc, addresses(list)?),
            Condition::SubjectContains(text) => Compiled::Subject(bounded_regex(text, true)?),
            Condition::SubjectRegex(pattern) => Compiled::Subject(bounded_regex(pattern, false)?),
            Condition::BodyContains(text) => Compiled::Body(bounded_regex(text, true)?),
            Condition::BodyRegex(pattern) => Compiled::Body(bounded_regex(pattern, false)?),
            Condition::Header(h) => {
                if h.name.is_empty() || !h.name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                    return Err(RuleError::Invalid(format!("{:?} is not a header name", h.name)));
                }
                Compiled::Header { name: h.name.to_ascii_lowercase(), equals: h.equals.clone() }
            }
            Condition::AttachmentType(t) => Compiled::AttachmentType(t.to_ascii_lowercase()),
            Condition::LargerThan(n) => Compiled::LargerThan(*n),
            Condition::SmallerThan(n) => Compiled::SmallerThan(*n),
            Condition::Classification(c) => Compiled::Classification(*c),
            Condition::Contact(c) => Compiled::Contact(*c),
        })
    }

    fn matches(&self, mail: &ParsedMail, facts: &MailFacts) -> bool {
        match self {
            Compiled::Addresses(field, wanted) => {
                let list: Vec<&str> = match field {
                    Field::From => mail.from.iter().map(|a| a.email.as_str()).collect(),
                    Field::To => mail.to.iter().map(|a| a.email.as_str()).collect(),
                    Field::Cc => mail.cc.iter().map(|a| a.email.as_str()).collect(),
                };
                list.iter().any(|address| wanted.iter().any(|w| address_matches(address, w)))
            }
            Compiled::Subject(re) => re.is_match(prefix(&mail.subject)),
            Compiled::Body(re) => {
                re.is_match(prefix(&mail.text_body))
                    || mail.html_body.as_deref().is_some_and(|html| re.is_match(prefix(html)))
            }
            Compiled::Header { name, equals } => {
                let mut values = crate::fingerprint::header_fields(mail.header_block.as_bytes())
                    .into_iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                    .map(|(_, v)| String::from_utf8_lossy(&v).trim().to_string());
                match equals {
                    None => values.next().is_some(),
                    Some(wanted) => values.any(|v| v.eq_ignore_ascii_case(wanted.trim())),
                }
            }
            Compiled::AttachmentType(wanted) => mail.attachments.iter().any(|a| {
                let t = a.content_type.to_ascii_lowercase();
                match wanted.strip_suffix("/*") {
                    Some(major) => t.split('/').next() == Some(major),
                    None => t == *wanted,
                }
            }),
            Compiled::LargerThan(n) => mail.raw_size > *n,
            Compiled::SmallerThan(n) => mail.raw_size < *n,
            Compiled::Classification(c) => facts.classification == *c,
            Compiled::Contact(ContactKnown::Known) => facts.contact_known,
            Compiled::Contact(ContactKnown::Unknown) => !facts.contact_known,
        }
    }
}

/// The first [`MATCHED_TEXT_LIMIT`] bytes, cut at a character boundary.
fn prefix(text: &str) -> &str {
    if text.len() <= MATCHED_TEXT_LIMIT {
        return text;
    }
    let mut end = MATCHED_TEXT_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `wanted` is folded: an address, or a domain that also matches subdomains.
fn address_matches(address: &str, wanted: &str) -> bool {
    if wanted.contains('@') {
        return folded(address) == wanted;
    }
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    domain == wanted || domain.strip_suffix(wanted).is_some_and(|rest| rest.ends_with('.'))
}

/// What the rules know about a mail beyond its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailFacts {
    pub classification: Classification,
    pub contact_known: bool,
}

/// A stored rule with its compiled conditions, or why it cannot be used.
type CompiledRule = (StoredRule, Result<(RuleDefinition, Vec<Compiled>), RuleError>);

/// The rules that apply to a mailbox, compiled, in order.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
}

impl RuleSet {
    /// `stored` in the order they apply; each is compiled once here.
    pub fn compile(stored: Vec<StoredRule>) -> Self {
        let rules = stored
            .into_iter()
            .map(|rule| {
                let compiled = serde_json::from_str::<RuleDefinition>(&rule.definition)
                    .map_err(|e| RuleError::Definition(e.to_string()))
                    .and_then(|d| d.compile().map(|c| (d, c)));
                (rule, compiled)
            })
            .collect();
        Self { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// What the rules of `mailbox_id` do to `mail`.
    pub fn evaluate(&self, mailbox_id: i64, mail: &ParsedMail, facts: &MailFacts) -> Verdict {
        let mut verdict = Verdict::default();
        for (rule, compiled) in &self.rules {
            if rule.mailbox_id.is_some_and(|m| m != mailbox_id) {
                continue;
            }
            let (definition, conditions) = match compiled {
                Ok(c) => c,
                Err(e) => {
                    verdict.skipped.push(format!("rule {} ({}) skipped: {e}", rule.id, rule.name));
                    continue;
                }
            };
            if !conditions.iter().all(|c| c.matches(mail, facts)) {
                continue;
            }
            verdict.matched.push(MatchedRule {
                id: rule.id,
                name: rule.name.clone(),
                actions: definition.actions.clone(),
            });
            let mut stop = false;
            for action in &definition.actions {
                match action {
                    Action::SetCategory(v) => verdict.fields.category = Some(v.clone()),
                    Action::SetPriority(v) => verdict.fields.priority = Some(v.clone()),
                    Action::SetQueue(v) => verdict.fields.queue = Some(v.clone()),
                    Action::SetAssignee(v) => verdict.fields.assignee = Some(v.clone()),
                    Action::AddTags(tags) => {
                        for tag in tags {
                            if !verdict.fields.tags.contains(tag) {
                                verdict.fields.tags.push(tag.clone());
                            }
                        }
                    }
                    Action::NoAcknowledgement => verdict.acknowledge = false,
                    // The first of ignore / reject wins.
                    Action::Ignore if verdict.disposition == Disposition::File => {
                        verdict.disposition = Disposition::Ignore { rule: rule.name.clone() }
                    }
                    Action::Reject if verdict.disposition == Disposition::File => {
                        verdict.disposition = Disposition::Reject { rule: rule.name.clone() }
                    }
                    Action::Ignore | Action::Reject => {}
                    Action::Forward(to) => verdict.forwards.push((to.clone(), rule.name.clone())),
                    Action::Stop => stop = true,
                }
            }
            if stop {
                break;
            }
        }
        verdict
    }
}

/// Fields rules set on the ticket a mail is filed to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TicketFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl TicketFields {
    pub fn is_empty(&self) -> bool {
        *self == TicketFields::default()
    }

    /// The ticket's tags after this change: tags add up across mails (the
    /// other fields take the latest value, which the store does with
    /// COALESCE).
    pub fn merged_tags(&self, stored: &[String]) -> Vec<String> {
        let mut all = stored.to_vec();
        for tag in &self.tags {
            if !all.contains(tag) {
                all.push(tag.clone());
            }
        }
        all
    }
}

/// What becomes of the mail itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "disposition")]
pub enum Disposition {
    /// Filed as usual: a new ticket or an entry.
    #[default]
    File,
    /// Journal only.
    Ignore { rule: String },
    /// No ticket; the sender is told.
    Reject { rule: String },
}

/// A rule that matched, with what it does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchedRule {
    pub id: i64,
    pub name: String,
    pub actions: Vec<Action>,
}

/// What the rules decided about one mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub matched: Vec<MatchedRule>,
    #[serde(flatten)]
    pub disposition: Disposition,
    pub acknowledge: bool,
    pub fields: TicketFields,
    /// (address, rule name).
    pub forwards: Vec<(String, String)>,
    /// Rules that could not be used, with why.
    pub skipped: Vec<String>,
}

impl Default for Verdict {
    fn default() -> Self {
        Self {
            matched: Vec::new(),
            disposition: Disposition::File,
            acknowledge: true,
            fields: TicketFields::default(),
            forwards: Vec::new(),
            skipped: Vec::new(),
        }
    }
}

impl Verdict {
    /// One line for the journal row; None when no rule did anything.
    pub fn summary(&self) -> Option<String> {
        if self.matched.is_empty() && self.skipped.is_empty() && self.disposition == Disposition::File {
            return None;
        }
        let mut parts: Vec<String> =
            self.matched.iter().map(|m| format!("rule {} ({}) matched", m.id, m.name)).collect();
        match &self.disposition {
            Disposition::File => {}
            Disposition::Ignore { rule } => parts.push(format!("ignored by rule {rule:?}")),
            Disposition::Reject { rule } => parts.push(format!("rejected by rule {rule:?}")),
        }
        parts.extend(self.skipped.iter().cloned());
        Some(parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn mail(raw: &str) -> ParsedMail {
        parse(raw.as_bytes()).unwrap()
    }

    fn rule(id: i64, mailbox: Option<i64>, json: &str) -> StoredRule {
        StoredRule { id, name: format!("r{id}"), mailbox_id: mailbox, definition: json.to_string() }
    }

    const NEW: MailFacts = MailFacts { classification: Classification::New, contact_known: false };

    #[test]
    fn conditions_must_all_match_and_actions_add_up_in_order() {
        let m = mail(
            "From: Ann <Ann+x@Billing.Example.com>\r\nTo: desk@example.org\r\nSubject: Invoice 42 overdue\r\n\
             X-Priority: 1\r\n\r\nPlease pay.\r\n",
        );
        let rules = RuleSet::compile(vec![
            rule(
                1,
                None,
                r#"{"conditions":[{"from":["example.com"]},{"subject_contains":"INVOICE"}],"actions":[{"set_queue":"billing"},{"add_tags":["money"]}]}"#,
            ),
            rule(
                2,
                None,
                r#"{"conditions":[{"header":{"name":"x-priority","equals":"1"}}],"actions":[{"set_priority":"high"},"no_acknowledgement"]}"#,
            ),
            rule(3, None, r#"{"conditions":[{"body_regex":"^nothing$"}],"actions":["ignore"]}"#),
            rule(4, Some(9), r#"{"conditions":[],"actions":["reject"]}"#),
        ]);
        let v = rules.evaluate(1, &m, &NEW);
        assert_eq!(v.matched.iter().map(|m| m.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(v.fields.queue.as_deref(), Some("billing"));
        assert_eq!(v.fields.priority.as_deref(), Some("high"));
        assert_eq!(v.fields.tags, ["money"]);
        assert!(!v.acknowledge);
        assert_eq!(v.disposition, Disposition::File);
        // Rule 4 is for mailbox 9 only.
        assert_eq!(rules.evaluate(9, &m, &NEW).disposition, Disposition::Reject { rule: "r4".into() });
    }

    #[test]
    fn stop_ends_the_list_and_the_first_ignore_or_reject_wins() {
        let m = mail("From: a@example.com\r\nSubject: x\r\n\r\nx\r\n");
        let rules = RuleSet::compile(vec![
            rule(1, None, r#"{"actions":["ignore"]}"#),
            rule(2, None, r#"{"actions":["reject","stop"]}"#),
            rule(3, None, r#"{"actions":[{"forward":"boss@example.com"}]}"#),
        ]);
        let v = rules.evaluate(1, &m, &NEW);
        assert_eq!(v.disposition, Disposition::Ignore { rule: "r1".into() });
        assert!(v.forwards.is_empty(), "rule 3 comes after stop");
        assert_eq!(v.summary().unwrap(), "rule 1 (r1) matched; rule 2 (r2) matched; ignored by rule \"r1\"");
    }

    #[test]
    fn addresses_match_folded_and_domains_match_subdomains() {
        assert!(address_matches("ann+x@example.com", "ann@example.com"));
        assert!(address_matches("ann@mail.example.com", "example.com"));
        assert!(!address_matches("ann@badexample.com", "example.com"));
        assert!(!address_matches("ann@example.com", "bob@example.com"));
    }

    #[test]
    fn classification_contact_size_and_attachment_conditions() {
        let m = mail(
            "From: a@example.com\r\nSubject: scan\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
             --b\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\n\
             %PDF\r\n--b--\r\n",
        );
        let check = |json: &str, facts: MailFacts| {
            !RuleSet::compile(vec![rule(1, None, json)]).evaluate(1, &m, &facts).matched.is_empty()
        };
        assert!(check(r#"{"conditions":[{"attachment_type":"application/pdf"}],"actions":["stop"]}"#, NEW));
        assert!(check(r#"{"conditions":[{"attachment_type":"application/*"}],"actions":["stop"]}"#, NEW));
        assert!(!check(r#"{"conditions":[{"attachment_type":"image/*"}],"actions":["stop"]}"#, NEW));
        assert!(check(r#"{"conditions":[{"larger_than":10},{"smaller_than":100000}],"actions":["stop"]}"#, NEW));
        assert!(!check(r#"{"conditions":[{"larger_than":100000}],"actions":["stop"]}"#, NEW));
        assert!(check(r#"{"conditions":[{"classification":"new"},{"contact":"unknown"}],"actions":["stop"]}"#, NEW));
        let known_reply = MailFacts { classification: Classification::Reply, contact_known: true };
        assert!(!check(r#"{"conditions":[{"classification":"new"}],"actions":["stop"]}"#, known_reply));
        assert!(check(r#"{"conditions":[{"contact":"known"}],"actions":["stop"]}"#, known_reply));
    }

    #[test]
    fn a_broken_rule_is_skipped_with_its_reason_and_bad_definitions_are_refused() {
        let m = mail("From: a@example.com\r\nSubject: x\r\n\r\nx\r\n");
        let rules = RuleSet::compile(vec![
            rule(1, None, r#"{"conditions":[{"subject_regex":"("}],"actions":["ignore"]}"#),
            rule(2, None, "not json"),
        ]);
        let v = rules.evaluate(1, &m, &NEW);
        assert_eq!(v.disposition, Disposition::File);
        assert_eq!(v.skipped.len(), 2);
        assert!(v.skipped[0].starts_with("rule 1 (r1) skipped: the regex \"(\" is not usable"), "{}", v.skipped[0]);
        assert!(matches!(RuleDefinition::parse(r#"{"actions":[]}"#), Err(RuleError::NoAction)));
        assert!(matches!(RuleDefinition::parse(r#"{"actions":["explode"]}"#), Err(RuleError::Definition(_))));
        assert!(matches!(RuleDefinition::parse(r#"{"actions":[{"forward":"nobody"}]}"#), Err(RuleError::Invalid(_))));
        for header_trick in [r#""a@x\r\nBcc: y@z""#, r#""a@x, b@y""#, r#""A <a@x>""#] {
            let json = format!(r#"{{"actions":[{{"forward":{header_trick}}}]}}"#);
            assert!(matches!(RuleDefinition::parse(&json), Err(RuleError::Invalid(_))), "{json}");
        }
        // A regex that would compile to a huge program is refused, not run.
        let huge = r#"{"conditions":[{"body_regex":"(\\w{100}){100}"}],"actions":["ignore"]}"#;
        assert!(matches!(RuleDefinition::parse(huge), Err(RuleError::Regex { .. })));
    }

    #[test]
    fn text_is_matched_on_a_bounded_prefix() {
        let body = format!("{}needle", "a".repeat(MATCHED_TEXT_LIMIT));
        let m = mail(&format!("From: a@example.com\r\nSubject: x\r\n\r\n{body}\r\n"));
        let rules = RuleSet::compile(vec![rule(
            1,
            None,
            r#"{"conditions":[{"body_contains":"needle"}],"actions":["ignore"]}"#,
        )]);
        assert!(rules.evaluate(1, &m, &NEW).matched.is_empty());
        assert_eq!(prefix("é".repeat(MATCHED_TEXT_LIMIT).as_str()).len(), MATCHED_TEXT_LIMIT);
    }
}
