//! One JSON view per thing, shared by the CLI's `--json` and the REST API,
//! so both say the same thing in the same shape.

pub mod progress;

use mailrobot_core::TagFormat;
use mailrobot_store::{
    EntryView, Mailbox, MailboxKind, MailboxStatus, MessageKind, TicketDetail, TicketStatus, TicketSummary,
};
use serde::Serialize;

/// A ticket in lists.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TicketJson {
    /// As the CLI prints it and the API takes it: `TKT-000123`.
    pub number: String,
    /// As it appears in subjects: `[TKT-000123]`.
    pub tag: String,
    pub subject: String,
    pub requester: Option<String>,
    pub requester_name: Option<String>,
    pub status: TicketStatus,
    /// How many entries it has.
    pub entries: i64,
    pub created_at: String,
    pub updated_at: String,
    /// Set by rules (`set_category`, …); null when none did.
    pub category: Option<String>,
    pub priority: Option<String>,
    pub queue: Option<String>,
    pub assignee: Option<String>,
    pub tags: Vec<String>,
}

impl TicketJson {
    pub fn of(t: &TicketSummary, tag: &TagFormat) -> Self {
        Self {
            number: tag.number(t.id as u64),
            tag: tag.tag(t.id as u64),
            subject: t.subject.clone(),
            requester: t.requester.clone(),
            requester_name: t.requester_name.clone(),
            status: t.status,
            entries: t.entries,
            created_at: t.created_at.clone(),
            updated_at: t.updated_at.clone(),
            category: t.fields.category.clone(),
            priority: t.fields.priority.clone(),
            queue: t.fields.queue.clone(),
            assignee: t.fields.assignee.clone(),
            tags: t.fields.tags.clone(),
        }
    }
}

/// A ticket with its entries (`entries` is the list here, not a count).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TicketDetailJson {
    pub number: String,
    pub tag: String,
    pub subject: String,
    pub requester: Option<String>,
    pub requester_name: Option<String>,
    pub status: TicketStatus,
    pub entries: Vec<EntryJson>,
    pub created_at: String,
    pub updated_at: String,
    /// Set by rules; null when none did (as in [`TicketJson`]).
    pub category: Option<String>,
    pub priority: Option<String>,
    pub queue: Option<String>,
    pub assignee: Option<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EntryJson {
    pub position: i64,
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub from_name: Option<String>,
    pub subject: String,
    pub kind: MessageKind,
    pub date: Option<String>,
    /// The whole text, quoted history included.
    pub text: String,
    /// A reply's new text without the history it quotes, when that could be
    /// told apart; null: all of `text` is new.
    pub new_text: Option<String>,
    /// Sanitized: HTML is stored as received and made safe when shown.
    /// Inline images (`cid:`) point at their attachment's `download_url`
    /// where that is known.
    pub html: Option<String>,
    /// Inline images (`inline`, with a `content_id` the HTML refers to) are
    /// listed too.
    pub attachments: Vec<AttachmentJson>,
    pub created_at: String,
    /// What was decided about answering its mail: `acknowledged to …`, or
    /// why not (`not answered: …`); null when nothing was to decide.
    pub answer: Option<String>,
    /// What rules did to its mail.
    pub rules: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttachmentJson {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: i64,
    pub inline: bool,
    pub content_id: Option<String>,
    pub sha256: String,
    /// Where the API serves it (bearer token), when the public URL is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
}

impl TicketDetailJson {
    pub fn of(t: &TicketDetail, tag: &TagFormat) -> Self {
        let s = TicketJson::of(&t.summary, tag);
        Self {
            number: s.number,
            tag: s.tag,
            subject: s.subject,
            requester: s.requester,
            requester_name: s.requester_name,
            status: s.status,
            entries: t.entries.iter().map(EntryJson::of).collect(),
            created_at: s.created_at,
            updated_at: s.updated_at,
            category: s.category,
            priority: s.priority,
            queue: s.queue,
            assignee: s.assignee,
            tags: s.tags,
        }
    }
}

impl EntryJson {
    pub fn of(e: &EntryView) -> Self {
        Self {
            position: e.position,
            message_id: e.message_id.clone(),
            from: e.from.clone(),
            from_name: e.from_name.clone(),
            subject: e.subject.clone(),
            kind: e.kind,
            date: e.date.clone(),
            text: e.text_body.clone(),
            new_text: e.new_text.clone(),
            answer: e.answer.clone(),
            rules: e.rules.clone(),
            html: e.html_body.as_deref().map(mailrobot_core::html::sanitize),
            attachments: e
                .attachments
                .iter()
                .map(|a| AttachmentJson {
                    filename: a.filename.clone(),
                    content_type: a.content_type.clone(),
                    size: a.size,
                    inline: a.inline,
                    content_id: a.content_id.clone(),
                    sha256: a.sha256.clone(),
                    download_url: None,
                })
                .collect(),
            created_at: e.created_at.clone(),
        }
    }
}

impl EntryJson {
    /// Fills each attachment's `download_url`: the API's address of it under
    /// `public_url` for the ticket `number`.
    pub fn with_download_urls(mut self, public_url: &str, number: &str) -> Self {
        let base = public_url.trim_end_matches('/');
        for (index, a) in self.attachments.iter_mut().enumerate() {
            a.download_url =
                Some(format!("{base}/api/v1/tickets/{number}/entries/{}/attachments/{index}", self.position));
        }
        if let Some(html) = &self.html {
            let attachments = &self.attachments;
            self.html = Some(mailrobot_core::html::rewrite_cids(html, |cid| {
                attachments.iter().find(|a| a.content_id.as_deref() == Some(cid)).and_then(|a| a.download_url.clone())
            }));
        }
        self
    }
}

/// The document a webhook receives: `{"id", "type", "timestamp", "data"}` as
/// the Standard Webhooks specification recommends.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventJson {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: mailrobot_store::WebhookEvent,
    /// When it happened (RFC 3339).
    pub timestamp: String,
    pub data: EventDataJson,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventDataJson {
    /// The ticket, with its status when the event happened.
    pub ticket: TicketJson,
    /// The entry the event is about (ticket.created: the first one;
    /// entry.added: the new one); null for ticket.status_changed.
    pub entry: Option<EntryJson>,
    /// ticket.status_changed: the status before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<TicketStatus>,
}

impl EventJson {
    /// The event `record` describes, about `ticket` as it is stored now.
    /// None when the entry it names is not in `ticket`.
    pub fn of(
        event_id: &str,
        event_type: mailrobot_store::WebhookEvent,
        record: &mailrobot_store::EventRecord,
        ticket: &TicketDetail,
        tag: &TagFormat,
        public_url: &str,
    ) -> Option<Self> {
        let mut summary = TicketJson::of(&ticket.summary, tag);
        summary.status = record.status;
        let entry = match record.entry_position {
            Some(position) => Some(
                EntryJson::of(ticket.entries.iter().find(|e| e.position == position)?)
                    .with_download_urls(public_url, &summary.number),
            ),
            None => None,
        };
        if let Some(entry) = &entry {
            // The ticket as it was then: entries up to this one.
            summary.entries = entry.position;
        }
        Some(Self {
            id: event_id.to_string(),
            event_type,
            timestamp: record.occurred_at.clone(),
            data: EventDataJson { ticket: summary, entry, previous_status: record.previous_status },
        })
    }
}

/// A webhook (never its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookJson {
    pub id: i64,
    pub url: String,
    pub events: Vec<mailrobot_store::WebhookEvent>,
    pub enabled: bool,
    /// Deliveries waiting for their first attempt or a retry.
    pub pending: i64,
    pub created_at: String,
}

impl WebhookJson {
    /// Every webhook with how many deliveries wait for it.
    pub fn all(outbox: &dyn mailrobot_store::OutboxStore) -> Result<Vec<Self>, mailrobot_store::StoreError> {
        let pending = outbox.pending_deliveries()?;
        Ok(outbox
            .webhooks()?
            .iter()
            .map(|w| Self::of(w, pending.iter().find(|(id, _)| *id == w.id).map_or(0, |(_, n)| *n)))
            .collect())
    }

    pub fn of(w: &mailrobot_store::Webhook, pending: i64) -> Self {
        Self {
            id: w.id,
            url: w.url.clone(),
            events: w.events.clone(),
            enabled: w.enabled,
            pending,
            created_at: w.created_at.clone(),
        }
    }
}

/// One delivery of an event to a webhook, with its last answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryJson {
    pub id: i64,
    pub webhook: i64,
    pub url: String,
    /// The `webhook-id` header: the same on every attempt.
    pub event_id: String,
    pub event: mailrobot_store::WebhookEvent,
    pub ticket: Option<String>,
    pub state: mailrobot_store::DeliveryState,
    pub attempts: i64,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<u16>,
    /// Its last answer (shortened), or why there was none.
    pub last_answer: Option<String>,
    pub last_attempt_at: Option<String>,
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
    pub created_at: String,
}

impl DeliveryJson {
    pub fn of(d: &mailrobot_store::DeliveryView, tag: &TagFormat) -> Self {
        Self {
            id: d.id,
            webhook: d.webhook_id,
            url: d.url.clone(),
            event_id: d.event_id.clone(),
            event: d.event_type,
            ticket: d.ticket_id.map(|t| tag.number(t as u64)),
            state: d.state,
            attempts: d.attempts,
            last_status: d.last_status,
            last_answer: d.last_answer.clone(),
            last_attempt_at: d.last_attempt_at.clone(),
            next_attempt_at: d.next_attempt_at.clone(),
            delivered_at: d.delivered_at.clone(),
            created_at: d.created_at.clone(),
        }
    }
}

/// One outbound mail, as `outbox list --json` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OutboxMailJson {
    pub id: i64,
    /// The ticket's number, as the CLI prints it.
    pub ticket: Option<String>,
    pub to: Option<String>,
    pub subject: Option<String>,
    /// `acknowledgement`, `notification`, `reply` or `rejection`.
    pub kind: Option<String>,
    /// `queued`, `sent` or `failed`.
    pub state: mailrobot_store::DeliveryState,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub sent_at: Option<String>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
}

impl OutboxMailJson {
    pub fn of(m: &mailrobot_store::MailView, tag: &TagFormat) -> Self {
        Self {
            id: m.id,
            ticket: m.ticket_id.map(|t| tag.number(t as u64)),
            to: m.to.clone(),
            subject: m.subject.clone(),
            kind: m.kind.clone(),
            state: m.state,
            attempts: m.attempts,
            last_error: m.last_error.clone().filter(|e| e != "sent"),
            sent_at: m.sent_at.clone(),
            next_attempt_at: m.next_attempt_at.clone().filter(|_| m.state == mailrobot_store::DeliveryState::Queued),
            created_at: m.created_at.clone(),
        }
    }
}

/// A mailbox (never its password: only whether one is set).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MailboxJson {
    /// What the operator should know about its settings, if anything.
    #[schema(value_type = Option<String>)]
    pub warning: Option<&'static str>,
    /// What metrics label it by (unless names are allowed).
    pub id: i64,
    pub name: String,
    pub kind: MailboxKind,
    pub enabled: bool,
    /// The kind's own settings (folders, host, address…), as `mailbox add` took them.
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    /// `set` or `none`.
    #[schema(value_type = String)]
    pub password: &'static str,
    pub poll_seconds: i64,
    pub max_message_bytes: i64,
    pub status: MailboxStatus,
    pub last_error: Option<String>,
    pub consecutive_failures: i64,
    pub last_poll_at: Option<String>,
    pub next_poll_at: Option<String>,
    pub created_at: String,
}

impl MailboxJson {
    pub fn of(m: &Mailbox) -> Self {
        let online_ews = m.kind == MailboxKind::Ews
            && m.config["url"].as_str().is_some_and(mailrobot_sources::ews::is_exchange_online);
        let graph_mark_read = m.kind == MailboxKind::Graph && m.config["settle"] == "mark-read";
        let warning = if online_ews {
            Some(mailrobot_sources::ews::EXCHANGE_ONLINE_WARNING)
        } else {
            graph_mark_read.then_some(mailrobot_sources::graph::MARK_READ_WARNING)
        };
        Self {
            warning,
            id: m.id,
            name: m.name.clone(),
            kind: m.kind,
            enabled: m.enabled,
            settings: m.config.clone(),
            password: if m.has_secret { "set" } else { "none" },
            poll_seconds: m.poll_seconds,
            max_message_bytes: m.max_message_bytes,
            status: m.status,
            last_error: m.last_error.clone(),
            consecutive_failures: m.consecutive_failures,
            last_poll_at: m.last_poll_at.clone(),
            next_poll_at: m.next_poll_at.clone(),
            created_at: m.created_at.clone(),
        }
    }
}

/// An app registration (the secret only as when it was set).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantJson {
    pub name: String,
    pub provider: String,
    pub client_id: String,
    pub tenant: Option<String>,
    pub authority_url: Option<String>,
    pub graph_url: Option<String>,
    pub ews_url: Option<String>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    /// `set on <time>`, or null: the secret itself is write-only.
    pub client_secret: Option<String>,
    pub secret_expires_at: Option<String>,
    pub certificate: Option<String>,
    pub allow_plaintext: bool,
    pub created_at: String,
}

impl TenantJson {
    pub fn of(t: &mailrobot_store::Tenant) -> Self {
        Self {
            name: t.name.clone(),
            provider: t.provider.clone(),
            client_id: t.client_id.clone(),
            tenant: t.directory.clone(),
            authority_url: t.authority_url.clone(),
            graph_url: t.graph_url.clone(),
            ews_url: t.ews_url.clone(),
            authorize_url: t.authorize_url.clone(),
            token_url: t.token_url.clone(),
            client_secret: t.secret_set_at.as_ref().map(|at| format!("set on {at}")),
            secret_expires_at: t.secret_expires_at.clone(),
            certificate: t.certificate_info.clone(),
            allow_plaintext: t.allow_plaintext,
            created_at: t.created_at.clone(),
        }
    }
}

/// A service connection (never a token).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConnectionJson {
    /// What metrics label it by (unless names are allowed).
    pub id: i64,
    pub name: String,
    pub tenant: Option<String>,
    pub capability: mailrobot_store::Capability,
    #[schema(value_type = String)]
    pub capability_label: &'static str,
    pub mode: mailrobot_store::Mode,
    pub scopes: Vec<String>,
    pub state: mailrobot_store::ConnectionState,
    pub last_error: Option<String>,
    pub authenticated_as: Option<AuthenticatedAs>,
    pub granted_scopes: Option<String>,
    pub authenticated_at: Option<String>,
    pub refreshed_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuthenticatedAs {
    pub name: Option<String>,
    pub username: Option<String>,
    pub oid: Option<String>,
}

impl ConnectionJson {
    /// `tenant` is the name of the connection's tenant.
    pub fn of(c: &mailrobot_store::Connection, tenant: Option<String>) -> Self {
        Self {
            id: c.id,
            name: c.name.clone(),
            tenant,
            capability: c.capability,
            capability_label: c.capability.label(),
            mode: c.mode,
            scopes: c.scopes.clone(),
            state: c.state,
            last_error: c.last_error.clone(),
            authenticated_as: c.authenticated_at.as_ref().map(|_| AuthenticatedAs {
                name: c.authenticated_name.clone(),
                username: c.authenticated_upn.clone(),
                oid: c.authenticated_oid.clone(),
            }),
            granted_scopes: c.granted_scopes.clone(),
            authenticated_at: c.authenticated_at.clone(),
            refreshed_at: c.refreshed_at.clone(),
            created_at: c.created_at.clone(),
        }
    }
}

/// One row of the mail journal.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageJson {
    pub id: i64,
    pub mailbox: String,
    pub remote_id: String,
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub from: Option<String>,
    pub state: mailrobot_store::JournalState,
    pub kind: Option<MessageKind>,
    /// The ticket's number, as the CLI prints it.
    pub ticket: Option<String>,
    pub reason: Option<String>,
    pub size: i64,
    pub sha256: Option<String>,
    pub settled: bool,
    pub fetched_at: String,
    pub processed_at: Option<String>,
    /// What was decided about answering it by itself: `acknowledged to …`,
    /// or why not (`not answered: …`); null when nothing was to decide.
    pub answer: Option<String>,
    /// What rules did: `rule 3 (billing) matched; ignored by rule "spam"`.
    pub rules: Option<String>,
}

impl MessageJson {
    pub fn of(m: &mailrobot_store::MessageView, tag: &TagFormat) -> Self {
        Self {
            id: m.journal_id,
            mailbox: m.mailbox.clone(),
            remote_id: m.remote_id.clone(),
            message_id: m.message_id.clone(),
            subject: m.subject.clone(),
            from: m.from.clone(),
            state: m.state,
            kind: m.kind,
            ticket: m.ticket_id.map(|t| tag.number(t as u64)),
            reason: m.reason.clone(),
            size: m.size,
            sha256: m.raw_sha256.clone(),
            settled: m.settled,
            fetched_at: m.fetched_at.clone(),
            processed_at: m.processed_at.clone(),
            answer: m.answer.clone(),
            rules: m.rules.clone(),
        }
    }
}

/// A rule: when all its conditions match a mail, its actions apply.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleJson {
    pub id: i64,
    pub name: String,
    /// The mailbox it is for; null: every mailbox.
    pub mailbox: Option<String>,
    /// Its place in the order (1 applies first).
    pub position: i64,
    pub enabled: bool,
    /// e.g. `[{"from": ["example.com"]}, {"subject_contains": "invoice"}]`.
    #[schema(value_type = Vec<Object>)]
    pub conditions: serde_json::Value,
    /// e.g. `[{"set_queue": "billing"}, "no_acknowledgement", "stop"]`.
    #[schema(value_type = Vec<Object>)]
    pub actions: serde_json::Value,
    pub created_at: String,
}

impl RuleJson {
    pub fn of(r: &mailrobot_store::Rule) -> Self {
        Self {
            id: r.id,
            name: r.name.clone(),
            mailbox: r.mailbox.clone(),
            position: r.position,
            enabled: r.enabled,
            conditions: serde_json::to_value(&r.definition.conditions).unwrap_or_default(),
            actions: serde_json::to_value(&r.definition.actions).unwrap_or_default(),
            created_at: r.created_at.clone(),
        }
    }
}

/// A mail template (minijinja): subject, text and an optional HTML part.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TemplateJson {
    pub id: i64,
    /// acknowledgement, notification, reply or rejection.
    pub kind: String,
    /// Null: every mailbox.
    pub mailbox: Option<String>,
    /// A language tag, or empty for any language.
    pub language: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub updated_at: String,
}

impl TemplateJson {
    pub fn of(t: &mailrobot_store::Template) -> Self {
        Self {
            id: t.id,
            kind: t.kind.as_str().to_string(),
            mailbox: t.mailbox.clone(),
            language: t.language.clone(),
            subject: t.template.subject.clone(),
            text: t.template.text.clone(),
            html: t.template.html.clone(),
            updated_at: t.updated_at.clone(),
        }
    }
}

/// A person in the sender directory.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ContactJson {
    pub id: i64,
    /// As first written (matching folds case and +tags).
    pub email: String,
    pub name: Option<String>,
    pub organisation: Option<String>,
    /// `mail` (a new ticket's requester) or `operator`.
    pub source: String,
    /// How many tickets they requested.
    pub tickets: i64,
    pub created_at: String,
}

impl ContactJson {
    pub fn of(c: &mailrobot_store::Contact) -> Self {
        Self {
            id: c.id,
            email: c.email.clone(),
            name: c.name.clone(),
            organisation: c.organisation.clone(),
            source: c.source.as_str().to_string(),
            tickets: c.tickets,
            created_at: c.created_at.clone(),
        }
    }
}

/// A contact with the tickets they requested, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ContactDetailJson {
    #[serde(flatten)]
    pub contact: ContactJson,
    pub requested_tickets: Vec<TicketJson>,
}

impl ContactDetailJson {
    pub fn of(c: &mailrobot_store::Contact, tickets: &[TicketSummary], tag: &TagFormat) -> Self {
        Self {
            contact: ContactJson::of(c),
            requested_tickets: tickets.iter().map(|t| TicketJson::of(t, tag)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailrobot_store::AttachmentView;

    fn entry() -> EntryView {
        EntryView {
            position: 2,
            journal_id: 7,
            message_id: Some("m@x".into()),
            from: Some("lars@example.net".into()),
            from_name: None,
            subject: "Re: SAP".into(),
            kind: MessageKind::Mail,
            date: None,
            text_body: "Fixed.\n\nOn Mon, IT wrote:\n> Try again.\n".into(),
            new_text: Some("Fixed.".into()),
            html_body: Some(r#"<p>Fixed. <img src="cid:image001.png@01DB"></p><script>x</script>"#.into()),
            attachments: vec![
                AttachmentView {
                    filename: Some("report.pdf".into()),
                    content_type: "application/pdf".into(),
                    size: 10,
                    content_id: None,
                    inline: false,
                    sha256: "a".into(),
                },
                AttachmentView {
                    filename: Some("image001.png".into()),
                    content_type: "image/png".into(),
                    size: 99,
                    content_id: Some("image001.png@01DB".into()),
                    inline: true,
                    sha256: "b".into(),
                },
            ],
            created_at: "2025-04-07T07:41:08Z".into(),
            answer: Some("acknowledged to lars@example.net".into()),
            rules: None,
        }
    }

    #[test]
    fn an_entry_has_its_full_and_new_text_and_inline_images_point_at_their_download() {
        let json = EntryJson::of(&entry()).with_download_urls("https://desk.contoso.com/", "TKT-000231");
        assert_eq!(json.text, entry().text_body);
        assert_eq!(json.new_text.as_deref(), Some("Fixed."));
        let image = &json.attachments[1];
        assert!(image.inline);
        assert_eq!(image.content_id.as_deref(), Some("image001.png@01DB"));
        let url = "https://desk.contoso.com/api/v1/tickets/TKT-000231/entries/2/attachments/1";
        assert_eq!(image.download_url.as_deref(), Some(url));
        let html = json.html.unwrap();
        assert!(html.contains(&format!(r#"<img src="{url}">"#)), "{html}");
        assert!(!html.contains("script"), "{html}");
        let value = serde_json::to_value(EntryJson::of(&entry())).unwrap();
        assert_eq!(value["new_text"], "Fixed.");
    }
}

/// A template as rendered with sample values.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RenderedJson {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// The template that applies at one place (kind, mailbox, language): the
/// stored one there, else the built-in one, and its preview.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TemplatePreviewJson {
    pub kind: String,
    pub mailbox: Option<String>,
    pub language: String,
    /// `stored` or `built-in`.
    pub source: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// Rendered with sample values (ticket #123, Ann Example…).
    pub preview: RenderedJson,
}

impl TemplatePreviewJson {
    pub fn of(
        stored: &[mailrobot_store::Template],
        key: &mailrobot_store::TemplateKey,
        mailbox: Option<String>,
    ) -> Result<Self, mailrobot_core::templates::TemplateError> {
        use mailrobot_core::templates;
        let exact =
            stored.iter().find(|t| t.kind == key.kind && t.mailbox_id == key.mailbox_id && t.language == key.language);
        let (source, template) = match exact {
            Some(t) => ("stored", t.template.clone()),
            None => ("built-in", templates::builtin(key.kind)),
        };
        let preview = templates::render(&template, &templates::sample_vars(key.kind))?;
        Ok(Self {
            kind: key.kind.as_str().to_string(),
            mailbox,
            language: key.language.clone(),
            source: source.to_string(),
            subject: template.subject,
            text: template.text,
            html: template.html,
            preview: RenderedJson { subject: preview.subject, text: preview.text, html: preview.html },
        })
    }
}
