//! The ticket decision: given a parsed mail and what the store found for it,
//! what happens. Kept apart from the store so the rules are read in one place.

use crate::classify::MailKind;
use crate::mail::ParsedMail;

/// What the store found for one mail before deciding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookups {
    /// An earlier copy of this same mail (same Message-ID and fingerprint):
    /// `Some(ticket)` of that copy, `Some(None)` if it made no ticket.
    pub duplicate_of: Option<Option<u64>>,
    /// The existing ticket whose tag is in the subject.
    pub tagged_ticket: Option<u64>,
    /// The ticket of a mail this one refers to (In-Reply-To, References,
    /// a bounce's original).
    pub thread_ticket: Option<u64>,
}

/// What becomes of a mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A new ticket with the sender as requester, this mail its first entry.
    NewTicket,
    /// A new entry on an existing ticket.
    Append { ticket: u64 },
    /// A copy of a mail already journaled: no new entry.
    Duplicate { ticket: Option<u64> },
    /// An auto-reply or bounce that refers to no known ticket: kept in the
    /// journal, never a ticket of its own (that is how robot loops start).
    Unmatched,
}

pub fn decide(mail: &ParsedMail, found: &Lookups) -> Decision {
    if let Some(ticket) = found.duplicate_of {
        return Decision::Duplicate { ticket };
    }
    // A tag is an explicit statement by a person; threading headers are the
    // fallback (and the only link for clients that strip subjects).
    if let Some(ticket) = found.tagged_ticket.or(found.thread_ticket) {
        return Decision::Append { ticket };
    }
    match mail.kind {
        MailKind::Mail => Decision::NewTicket,
        MailKind::AutoReply | MailKind::Bounce => Decision::Unmatched,
    }
}
