//! Every sealed value in the database, for re-sealing them all under a new
//! master key (`mailrobot secrets reseal`). The store does not know how
//! values are sealed; it says where each one lives and what its sealing
//! context is made of, and swaps them all in one transaction.

use crate::Result;

/// Where a sealed value lives, with what its sealing context is made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SealedRef {
    MailboxPassword {
        mailbox_id: i64,
        mailbox_name: String,
    },
    TenantSecret {
        tenant_id: i64,
    },
    TenantCertificate {
        tenant_id: i64,
    },
    RefreshToken {
        connection_id: i64,
    },
    AccessToken {
        connection_id: i64,
        resource: String,
    },
    AuthFlowVerifier {
        state: String,
    },
    WebhookSecret {
        webhook_id: i64,
    },
    /// The password of a mailbox's SMTP reply transport.
    MailboxReplyPassword {
        mailbox_id: i64,
        mailbox_name: String,
    },
    /// The `clientState` of a mailbox's Graph subscription.
    PushClientState {
        mailbox_id: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedValue {
    pub at: SealedRef,
    pub sealed: Vec<u8>,
}

/// A value re-sealed: `old` is what was read, `new` takes its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resealed {
    pub old: SealedValue,
    pub new: Vec<u8>,
}

pub trait SealedStore: Send + Sync {
    /// Every sealed value in the database.
    fn sealed_values(&self) -> Result<Vec<SealedValue>>;
    /// Puts new sealed values in place, all in one transaction: a key
    /// rotation happens wholly or not at all. A value is replaced only where
    /// it is still the one read: one changed meanwhile (a refresh token
    /// `serve` rotated, sealed with the current key) is newer and stays.
    /// Returns how many were replaced.
    fn replace_sealed(&self, values: &[Resealed]) -> Result<usize>;
}
