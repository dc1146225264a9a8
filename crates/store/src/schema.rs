//! Schema migrations, applied in order; `PRAGMA user_version` holds how many
//! have run. Never edit a shipped migration: add a new one.

pub const MIGRATIONS: &[&str] = &[
    // 1: the backbone.
    r#"
CREATE TABLE mailboxes (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    kind                 TEXT NOT NULL,
    enabled              INTEGER NOT NULL DEFAULT 1,
    config               TEXT NOT NULL,
    sealed_secret        BLOB,
    poll_seconds         INTEGER NOT NULL,
    max_message_bytes    INTEGER NOT NULL,
    status               TEXT NOT NULL DEFAULT 'new',
    last_error           TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_poll_at         TEXT,
    next_poll_at         TEXT,
    created_at           TEXT NOT NULL
);

-- Content-addressed bytes: raw mails and decoded attachments, stored once.
-- A rowid table on purpose: in a WITHOUT ROWID table every index seek would
-- wade through the large rows.
CREATE TABLE blobs (
    id     INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    size   INTEGER NOT NULL,
    data   BLOB NOT NULL
);

CREATE TABLE tickets (
    id             INTEGER PRIMARY KEY,
    subject        TEXT NOT NULL,
    requester      TEXT,
    requester_name TEXT,
    status         TEXT NOT NULL DEFAULT 'open',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

-- The journal: one row per fetched copy of a mail.
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY,
    mailbox_id   INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    remote_id    TEXT NOT NULL,
    raw_sha256   TEXT REFERENCES blobs(sha256),
    size         INTEGER NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('fetched', 'processed', 'failed')),
    kind         TEXT,
    message_id   TEXT,
    fingerprint  TEXT,
    subject      TEXT,
    from_addr    TEXT,
    ticket_id    INTEGER REFERENCES tickets(id),
    reason       TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    settled      INTEGER NOT NULL DEFAULT 0,
    fetched_at   TEXT NOT NULL,
    processed_at TEXT,
    settled_at   TEXT,
    UNIQUE (mailbox_id, remote_id)
);
CREATE INDEX messages_pending ON messages(state, mailbox_id) WHERE state = 'fetched';
CREATE INDEX messages_unsettled ON messages(mailbox_id) WHERE settled = 0 AND state <> 'fetched';
CREATE INDEX messages_message_id ON messages(message_id);
CREATE INDEX messages_fingerprint ON messages(fingerprint);

CREATE TABLE ticket_entries (
    id           INTEGER PRIMARY KEY,
    ticket_id    INTEGER NOT NULL REFERENCES tickets(id),
    position     INTEGER NOT NULL,
    journal_id   INTEGER NOT NULL UNIQUE REFERENCES messages(id),
    kind         TEXT NOT NULL,
    message_id   TEXT,
    from_addr    TEXT,
    from_name    TEXT,
    subject      TEXT NOT NULL,
    date         TEXT,
    text_body    TEXT NOT NULL,
    html_body    TEXT,
    created_at   TEXT NOT NULL,
    UNIQUE (ticket_id, position)
);

CREATE TABLE entry_attachments (
    entry_id     INTEGER NOT NULL REFERENCES ticket_entries(id),
    position     INTEGER NOT NULL,
    filename     TEXT,
    content_type TEXT NOT NULL,
    content_id   TEXT,
    inline       INTEGER NOT NULL,
    size         INTEGER NOT NULL,
    blob_sha256  TEXT NOT NULL REFERENCES blobs(sha256),
    PRIMARY KEY (entry_id, position)
) WITHOUT ROWID;

-- Mail and webhooks the robot sends, retried until delivered (later issues).
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL,
    ticket_id       INTEGER REFERENCES tickets(id),
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    last_error      TEXT,
    created_at      TEXT NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"#,
    // 2: service connections (OAuth2 app registrations, connections, tokens).
    r#"
-- An app registration at an identity provider: Microsoft 365 (client id +
-- directory tenant) or a generic OAuth2 server. Secrets are sealed.
CREATE TABLE tenants (
    id                  INTEGER PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    provider            TEXT NOT NULL CHECK (provider IN ('microsoft365', 'oauth2')),
    client_id           TEXT NOT NULL,
    directory           TEXT,
    authority_url       TEXT,
    graph_url           TEXT,
    ews_url             TEXT,
    authorize_url       TEXT,
    token_url           TEXT,
    sealed_secret       BLOB,
    secret_set_at       TEXT,
    secret_expires_at   TEXT,
    sealed_certificate  BLOB,
    certificate_info    TEXT,
    created_at          TEXT NOT NULL
);

CREATE TABLE connections (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    tenant_id            INTEGER NOT NULL REFERENCES tenants(id),
    capability           TEXT NOT NULL,
    mode                 TEXT NOT NULL CHECK (mode IN ('delegated', 'application')),
    scopes               TEXT NOT NULL,
    state                TEXT NOT NULL DEFAULT 'not_authenticated',
    last_error           TEXT,
    sealed_refresh_token BLOB,
    authenticated_name   TEXT,
    authenticated_upn    TEXT,
    authenticated_oid    TEXT,
    granted_scopes       TEXT,
    authenticated_at     TEXT,
    refreshed_at         TEXT,
    -- Cross-process single flight for refreshes: who holds it, until when.
    refresh_lock_owner   TEXT,
    refresh_lock_until   TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);

CREATE TABLE access_tokens (
    connection_id INTEGER NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    resource      TEXT NOT NULL,
    sealed_token  BLOB NOT NULL,
    expires_at    TEXT NOT NULL,
    PRIMARY KEY (connection_id, resource)
) WITHOUT ROWID;

-- Pending Setup Authentication flows: state is single-use and expires.
CREATE TABLE auth_flows (
    state           TEXT PRIMARY KEY,
    connection_id   INTEGER NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    sealed_verifier BLOB NOT NULL,
    nonce           TEXT NOT NULL,
    redirect_uri    TEXT NOT NULL,
    initiator       TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL
) WITHOUT ROWID;

ALTER TABLE mailboxes ADD COLUMN connection_id INTEGER REFERENCES connections(id);
"#,
    // 3: where incremental sources stand (Graph deltaLink, EWS SyncState).
    r#"
ALTER TABLE mailboxes ADD COLUMN sync_state TEXT;
-- A server asked for quiet (429 Retry-After): no process polls before this.
ALTER TABLE mailboxes ADD COLUMN throttled_until TEXT;
"#,
    // 4: credentials may cross a network in clear only where the operator
    // allowed it (`tenant add --allow-plaintext`).
    r#"
ALTER TABLE tenants ADD COLUMN allow_plaintext INTEGER NOT NULL DEFAULT 0;
"#,
    // 5: administrators of the web UI and their browser sessions.
    r#"
CREATE TABLE admins (
    id              INTEGER PRIMARY KEY,
    email           TEXT NOT NULL UNIQUE COLLATE NOCASE,
    -- Argon2id, as a PHC string (algorithm, parameters, salt, hash).
    password_hash   TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    last_sign_in_at TEXT
);

-- A signed-in browser. The cookie carries a random token; only its SHA-256
-- is kept, so the database alone signs no one in.
CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,
    admin_id     INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
) WITHOUT ROWID;
"#,
    // 6: API tokens for the REST API (only their SHA-256 is kept).
    r#"
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE,
    read_only    INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL
);
"#,
    // 7: the default scopes of each Microsoft 365 capability and mode, editable
    // (the Services page); the built-in defaults are seeded when missing.
    r#"
CREATE TABLE service_scopes (
    capability TEXT NOT NULL,
    mode       TEXT NOT NULL CHECK (mode IN ('delegated', 'application')),
    scopes     TEXT NOT NULL,
    PRIMARY KEY (capability, mode)
) WITHOUT ROWID;
"#,
    // 8: webhooks, and the outbox grows what their deliveries need.
    r#"
-- A receiver of ticket events. The secret (whsec_...) is sealed: it signs
-- every delivery, so it must be readable by the robot, never by a reader of
-- the database.
CREATE TABLE webhooks (
    id            INTEGER PRIMARY KEY,
    url           TEXT NOT NULL,
    -- The event types it receives, space separated.
    events        TEXT NOT NULL,
    sealed_secret BLOB NOT NULL,
    enabled       INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT NOT NULL
);

-- One outbox row per (event, webhook). `payload` is what happened (written
-- in the ticket change's transaction); `body` is the document as first sent,
-- so every retry sends the same bytes (signed afresh).
ALTER TABLE outbox ADD COLUMN webhook_id INTEGER REFERENCES webhooks(id) ON DELETE CASCADE;
ALTER TABLE outbox ADD COLUMN event_id TEXT;
ALTER TABLE outbox ADD COLUMN event_type TEXT;
ALTER TABLE outbox ADD COLUMN body TEXT;
ALTER TABLE outbox ADD COLUMN last_status INTEGER;
ALTER TABLE outbox ADD COLUMN last_attempt_at TEXT;
ALTER TABLE outbox ADD COLUMN delivered_at TEXT;
-- A delivery being attempted: no other process takes it before this.
ALTER TABLE outbox ADD COLUMN lease_until TEXT;
CREATE INDEX outbox_pending ON outbox(webhook_id, ticket_id, id) WHERE state = 'pending';
"#,
    // 9: counts the dashboard and /metrics ask for read small indexes, not
    // the whole journal (a million rows took 250 ms).
    r#"
CREATE INDEX messages_fetched_at ON messages(fetched_at, mailbox_id);
CREATE INDEX messages_failed ON messages(mailbox_id) WHERE state = 'failed';
"#,
    // 10: outbox states are queued|sent|failed for every kind of row (the
    // words outbound mail uses too); the index of what waits follows.
    r#"
UPDATE outbox SET state = 'queued' WHERE state = 'pending';
UPDATE outbox SET state = 'sent' WHERE state = 'delivered';
DROP INDEX outbox_pending;
CREATE INDEX outbox_queued ON outbox(webhook_id, ticket_id, id) WHERE state = 'queued';
"#,
    // 11: mail the robot sends (acknowledgements first): the reply
    // transport's sealed password, what was decided about answering each
    // mail, and the outbox columns a mail row needs.
    r#"
ALTER TABLE mailboxes ADD COLUMN sealed_reply_secret BLOB;
-- 'acknowledged to …', or why the robot did not answer.
ALTER TABLE messages ADD COLUMN answer TEXT;
ALTER TABLE outbox ADD COLUMN mailbox_id INTEGER REFERENCES mailboxes(id) ON DELETE CASCADE;
ALTER TABLE outbox ADD COLUMN mail_kind TEXT;
-- As written (where it goes), and folded (what rate limits count by).
ALTER TABLE outbox ADD COLUMN recipient TEXT;
ALTER TABLE outbox ADD COLUMN recipient_key TEXT;
ALTER TABLE outbox ADD COLUMN subject TEXT;
CREATE INDEX outbox_recipient ON outbox(recipient_key, created_at) WHERE kind = 'mail';
CREATE INDEX outbox_mail_ticket ON outbox(ticket_id, created_at) WHERE kind = 'mail';
CREATE INDEX outbox_mail_queued ON outbox(next_attempt_at) WHERE kind = 'mail' AND state = 'queued';
-- A requester's reply names the robot's mail in In-Reply-To: its ticket.
CREATE INDEX outbox_message_id ON outbox(event_id) WHERE kind = 'mail';
"#,
    // 12: rules, mail templates and the sender directory; what rules set
    // on a ticket; what they did to each mail.
    r#"
CREATE TABLE rules (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    -- NULL: every mailbox.
    mailbox_id INTEGER REFERENCES mailboxes(id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    enabled    INTEGER NOT NULL DEFAULT 1,
    -- core's RuleDefinition as JSON: conditions and actions.
    definition TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX rules_order ON rules(position, id);

CREATE TABLE templates (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('acknowledgement', 'notification', 'reply', 'rejection')),
    mailbox_id INTEGER REFERENCES mailboxes(id) ON DELETE CASCADE,
    -- A language tag, or '' for any language.
    language   TEXT NOT NULL DEFAULT '',
    subject    TEXT NOT NULL,
    text       TEXT NOT NULL,
    html       TEXT,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX templates_key ON templates(kind, IFNULL(mailbox_id, 0), language);

-- The sender directory. `email_key` is the address folded (lower case, no
-- +tag): what matching goes by; `email` is as first written.
CREATE TABLE contacts (
    id           INTEGER PRIMARY KEY,
    email        TEXT NOT NULL,
    email_key    TEXT NOT NULL UNIQUE,
    name         TEXT,
    organisation TEXT,
    -- 'mail' (a new ticket's requester) or 'operator'.
    source       TEXT NOT NULL,
    created_at   TEXT NOT NULL
);

ALTER TABLE tickets ADD COLUMN requester_key TEXT;
ALTER TABLE tickets ADD COLUMN category TEXT;
ALTER TABLE tickets ADD COLUMN priority TEXT;
ALTER TABLE tickets ADD COLUMN queue TEXT;
ALTER TABLE tickets ADD COLUMN assignee TEXT;
-- A JSON array of strings.
ALTER TABLE tickets ADD COLUMN tags TEXT;
-- Folded as core's `folded` does: lower case, the +tag of the local part cut.
UPDATE tickets SET requester_key = (
    WITH a(e) AS (SELECT lower(trim(requester)))
    SELECT CASE
        WHEN instr(e, '@') = 0 THEN e
        WHEN instr(substr(e, 1, instr(e, '@') - 1), '+') > 0
            THEN substr(e, 1, instr(e, '+') - 1) || substr(e, instr(e, '@'))
        ELSE e END
    FROM a)
WHERE requester IS NOT NULL;
CREATE INDEX tickets_requester_key ON tickets(requester_key);
-- Every requester so far is a contact.
INSERT OR IGNORE INTO contacts (email, email_key, name, source, created_at)
    SELECT requester, requester_key, requester_name, 'mail', MIN(created_at) FROM tickets
    WHERE requester_key IS NOT NULL AND requester_key <> '' GROUP BY requester_key;

-- What rules did to the mail ('rule 3 (billing) matched; …').
ALTER TABLE messages ADD COLUMN rules TEXT;
"#,
    // 13: the new text of a reply without the history it quotes (NULL: the
    // whole text is new, or the entry is older than this).
    r#"
ALTER TABLE ticket_entries ADD COLUMN new_text TEXT;
"#,
    // 14: the loop protection's counts read their indexes only: outbox rows
    // are large (the mail and its message), and counting a busy sender's
    // rows through the table made each acknowledgement slower than the last.
    r#"
DROP INDEX outbox_recipient;
DROP INDEX outbox_mail_ticket;
CREATE INDEX outbox_recipient ON outbox(recipient_key, created_at, mail_kind) WHERE kind = 'mail';
CREATE INDEX outbox_mail_ticket ON outbox(ticket_id, created_at, mail_kind) WHERE kind = 'mail';
"#,
];

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// Migration 12 folds the requesters already stored as core's `folded`
    /// does, and makes each of them a contact.
    #[test]
    fn requesters_before_migration_12_are_folded_and_become_contacts() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for migration in &MIGRATIONS[..11] {
            conn.execute_batch(migration).unwrap();
        }
        let requesters = ["Ann.Desk+Tickets@Example.COM", "ann.desk@example.com", "bob@example.com", "no-at-sign"];
        for (i, r) in requesters.iter().enumerate() {
            conn.execute(
                "INSERT INTO tickets (subject, requester, requester_name, created_at, updated_at)
                 VALUES ('s', ?1, NULL, ?2, ?2)",
                rusqlite::params![r, format!("2026-01-0{}T00:00:00Z", i + 1)],
            )
            .unwrap();
        }
        conn.execute_batch(MIGRATIONS[11]).unwrap();
        let keys: Vec<String> = conn
            .prepare("SELECT requester_key FROM tickets ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected: Vec<String> = requesters.iter().map(|r| mailrobot_core::answer::folded(r)).collect();
        assert_eq!(keys, expected);
        let contacts: Vec<(String, String)> = conn
            .prepare("SELECT email, email_key FROM contacts ORDER BY email_key")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(contacts.len(), 3, "one per folded address: {contacts:?}");
        assert_eq!(contacts[0].1, "ann.desk@example.com");
    }
}
