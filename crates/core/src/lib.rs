//! The robot's pure logic: what a mail says, what kind it is, which ticket it
//! belongs to. No I/O here — everything is a function of bytes and lookups, so
//! it is tested on fixtures alone and can be replayed ("reprocess") after a fix.

pub mod answer;
pub mod classify;
pub mod codepage;
pub mod decide;
pub mod fingerprint;
pub mod html;
pub mod mail;
pub mod parse;
pub mod process;
pub mod quote;
pub mod rtf;
pub mod rules;
pub mod subject;
pub mod tag;
pub mod templates;
pub mod tnef;

pub use answer::{
    AnswerBlock, AnswerContext, AnswerFacts, AnswerLimits, OutgoingAttachment, OutgoingKind, OutgoingMail, may_answer,
};
pub use classify::MailKind;
pub use decide::{Decision, Lookups, decide};
pub use mail::{Address, Attachment, ParsedMail};
pub use parse::{ParseError, parse};
pub use process::{
    BatchLookups, Filed, Ledger, MailboxPolicy, NewTicket, Outcome, ParsedPending, PendingMail, ProcessedAs, RulesTest,
    TicketChange, UnknownSenders, file_batch, parse_batch, parse_raw, test_rules,
};
pub use rules::{RuleDefinition, StoredRule, TicketFields};
pub use tag::TagFormat;
pub use templates::{MailTemplate, StoredTemplate};
