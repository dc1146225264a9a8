//! States the database keeps as text, as Rust enums: one place names each
//! value, and the same enum travels from the row to the CLI's `--json` (as
//! the same lowercase string), so no layer compares string literals.

/// Defines an enum stored as text: `as_str`, `FromStr`, `Display`, serde as
/// the same strings, SQLite's and PostgreSQL's `ToSql`/`FromSql`, and (feature `clap`) clap's
/// `ValueEnum`, so a CLI flag takes exactly the stored values.
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "{other:?} is not a {} (expected one of {})",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // `pad`, so `{:<9}` in a table lines up.
                f.pad(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "clap")]
        impl clap::ValueEnum for $name {
            fn value_variants<'a>() -> &'a [Self] {
                Self::ALL
            }

            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(clap::builder::PossibleValue::new(self.as_str()))
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let text = value.as_str()?;
                text.parse().map_err(|e: String| rusqlite::types::FromSqlError::Other(e.into()))
            }
        }

        impl postgres_types::ToSql for $name {
            fn to_sql(
                &self,
                ty: &postgres_types::Type,
                out: &mut bytes::BytesMut,
            ) -> Result<postgres_types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }

            fn accepts(ty: &postgres_types::Type) -> bool {
                <&str as postgres_types::ToSql>::accepts(ty)
            }

            postgres_types::to_sql_checked!();
        }

        impl<'a> postgres_types::FromSql<'a> for $name {
            fn from_sql(
                ty: &postgres_types::Type,
                raw: &'a [u8],
            ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
                Ok(<&str as postgres_types::FromSql>::from_sql(ty, raw)?.parse::<$name>()?)
            }

            fn accepts(ty: &postgres_types::Type) -> bool {
                <&str as postgres_types::FromSql>::accepts(ty)
            }
        }
    };
}

text_enum! {
    /// What a process holding leases is.
    pub enum NodeKind {
        /// `mailrobot serve`: it shares the mailboxes out with the other
        /// nodes and polls its share until it stops.
        Serve => "serve",
        /// One `mailrobot run-once` pass: it takes only leases nobody holds,
        /// for as long as the pass runs, and counts for no share.
        RunOnce => "run-once",
    }
}

text_enum! {
    /// How a mailbox's last poll went.
    pub enum MailboxStatus {
        /// Added, not polled yet.
        New => "new",
        Ok => "ok",
        /// The last poll failed; the robot retries with a growing backoff.
        Error => "error",
        /// Waits for a person (its connection needs Setup Authentication
        /// again, or a new client secret): no network until then.
        Paused => "paused",
        /// The server asked for quiet (429 Retry-After, EWS ErrorServerBusy):
        /// not a failure; polled again once the wait is over.
        Throttled => "throttled",
    }
}

text_enum! {
    /// Where a journaled mail stands.
    pub enum JournalState {
        /// Stored, waiting for processing.
        Fetched => "fetched",
        /// Made a ticket, an entry, or was filed as a duplicate or unmatched.
        Processed => "processed",
        /// Kept with its reason; `messages retry` puts it back to fetched.
        Failed => "failed",
    }
}

text_enum! {
    /// What a processed mail was, as the journal and ticket entries record it.
    pub enum MessageKind {
        Mail => "mail",
        AutoReply => "auto-reply",
        Bounce => "bounce",
        /// A copy of a mail already processed.
        Duplicate => "duplicate",
    }
}

text_enum! {
    /// What a service connection is for: the Microsoft 365 capabilities.
    pub enum Capability {
        /// Exchange / Microsoft Graph.
        Graph => "graph",
        /// Exchange / Office 365 (EWS).
        Ews => "ews",
        Imap => "imap",
        Pop => "pop",
        Smtp => "smtp",
    }
}

impl Capability {
    /// The name the seed document uses.
    pub fn label(self) -> &'static str {
        match self {
            Capability::Graph => "Exchange / Microsoft Graph",
            Capability::Ews => "Exchange / Office 365 (EWS)",
            Capability::Imap => "IMAP",
            Capability::Pop => "POP",
            Capability::Smtp => "SMTP",
        }
    }
}

text_enum! {
    /// How a connection gets its tokens.
    pub enum Mode {
        /// A person runs Setup Authentication once; the robot refreshes.
        Delegated => "delegated",
        /// Client credentials: the app acts on its own (admin-consented roles).
        Application => "application",
    }
}

text_enum! {
    /// Where a connection stands.
    pub enum ConnectionState {
        NotAuthenticated => "not_authenticated",
        Ready => "ready",
        /// A person must run Setup Authentication again (refresh token
        /// expired, revoked, consent or MFA missing). No token requests until then.
        ReauthRequired => "reauth_required",
        SecretInvalid => "secret_invalid",
        SecretExpired => "secret_expired",
    }
}

impl ConnectionState {
    /// States in which asking the token endpoint again cannot help until a
    /// person acts.
    pub fn blocks_token_requests(self) -> bool {
        matches!(
            self,
            ConnectionState::ReauthRequired | ConnectionState::SecretInvalid | ConnectionState::SecretExpired
        )
    }
}

text_enum! {
    /// Kinds of mailbox the robot reads.
    pub enum MailboxKind {
        Imap => "imap",
        Pop3 => "pop3",
        DropFolder => "drop-folder",
        /// Microsoft Graph (Exchange Online), through a connection.
        Graph => "graph",
        /// Exchange Web Services (Exchange Online or on-premises).
        Ews => "ews",
    }
}

text_enum! {
    /// Where a ticket stands for the people working on it.
    pub enum TicketStatus {
        Open => "open",
        /// Waiting for the requester (or someone else).
        Pending => "pending",
        Closed => "closed",
    }
}

impl From<mailrobot_core::MailKind> for MessageKind {
    fn from(kind: mailrobot_core::MailKind) -> Self {
        match kind {
            mailrobot_core::MailKind::Mail => MessageKind::Mail,
            mailrobot_core::MailKind::AutoReply => MessageKind::AutoReply,
            mailrobot_core::MailKind::Bounce => MessageKind::Bounce,
        }
    }
}

impl From<mailrobot_core::Filed> for MessageKind {
    fn from(filed: mailrobot_core::Filed) -> Self {
        match filed {
            mailrobot_core::Filed::Duplicate { .. } => MessageKind::Duplicate,
            mailrobot_core::Filed::Mail { kind, .. } => kind.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for status in MailboxStatus::ALL {
            assert_eq!(status.as_str().parse::<MailboxStatus>().unwrap(), *status);
            assert_eq!(serde_json::to_string(status).unwrap(), format!("\"{status}\""));
        }
        assert!("failing".parse::<MailboxStatus>().unwrap_err().contains("expected one of new, ok"));
        assert_eq!(format!("[{:<8}]", MailboxStatus::Ok), "[ok      ]");
        for state in JournalState::ALL {
            assert_eq!(state.as_str().parse::<JournalState>().unwrap(), *state);
        }
        // The journal's kinds of mail are core's, plus duplicates.
        for kind in
            [mailrobot_core::MailKind::Mail, mailrobot_core::MailKind::AutoReply, mailrobot_core::MailKind::Bounce]
        {
            assert_eq!(MessageKind::from(kind).as_str(), kind.as_str());
        }
    }
}

text_enum! {
    /// What a webhook is told about (the event's `type`).
    pub enum WebhookEvent {
        /// A mail made a new ticket; the event carries its first entry.
        TicketCreated => "ticket.created",
        /// A mail was added to an existing ticket.
        EntryAdded => "entry.added",
        /// Someone changed the ticket's status (UI, API).
        TicketStatusChanged => "ticket.status_changed",
    }
}

text_enum! {
    /// Where one outbox row (a webhook delivery; outbound mail later) stands.
    pub enum DeliveryState {
        /// Waiting for its first attempt or its next retry.
        Queued => "queued",
        /// The receiver took it (a webhook: answered 2xx).
        Sent => "sent",
        /// Retried for the whole retry window without success; kept, and
        /// resendable by hand.
        Failed => "failed",
    }
}
