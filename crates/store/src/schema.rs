//! Schema migrations of both backends, applied in order. Never edit a
//! shipped migration: add a new one — to both lists, so the two schemas keep
//! the same tables and columns (a test compares them).
//!
//! SQLite keeps how many have run in `PRAGMA user_version`; PostgreSQL in
//! `schema_version`. PostgreSQL's first migration is the schema SQLite reached
//! after its 14th.

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
    // 15: several nodes: who runs, and which node polls which mailbox.
    r#"
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    stopped_at   TEXT
) WITHOUT ROWID;

-- One row per mailbox ever leased; `token` (the fencing token) grows with
-- every new lease and never goes back, so the row stays when released.
CREATE TABLE mailbox_leases (
    mailbox_id INTEGER PRIMARY KEY REFERENCES mailboxes(id) ON DELETE CASCADE,
    -- NULL: released.
    node_id    TEXT,
    token      INTEGER NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX mailbox_leases_node ON mailbox_leases(node_id);
"#,
    // 16: Graph change-notification subscriptions, one per mailbox at most.
    r#"
CREATE TABLE push_subscriptions (
    mailbox_id          INTEGER PRIMARY KEY REFERENCES mailboxes(id) ON DELETE CASCADE,
    -- Graph's id of the subscription; notifications name it.
    subscription_id     TEXT NOT NULL UNIQUE,
    -- The clientState Graph echoes in every notification, sealed.
    sealed_client_state BLOB NOT NULL,
    notification_url    TEXT NOT NULL,
    -- What it watches (connection, address, folder): a mailbox set to
    -- another folder needs a new subscription.
    watching            TEXT NOT NULL,
    expires_at          TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    renewed_at          TEXT
);

-- A notification for a mailbox that reached a node not holding it: the
-- holder's next heartbeat takes it and polls.
ALTER TABLE mailbox_leases ADD COLUMN announced_at TEXT;
-- With the Graph lifecycle event it came with, if any.
ALTER TABLE mailbox_leases ADD COLUMN announced_event TEXT;
"#,
    // 17: `run-once` passes hold leases too (they are not counted when nodes
    // share mailboxes out); where a process runs, so one on the same machine
    // can tell that it is gone and free its leases at once.
    r#"
-- 'serve' or 'run-once'.
ALTER TABLE nodes ADD COLUMN kind TEXT NOT NULL DEFAULT 'serve';
-- The machine's boot id and the process's pid namespace: pids compare only
-- within one.
ALTER TABLE nodes ADD COLUMN pid_scope TEXT;
"#,
    // 18: raw mails stored compressed (`blob_codec`): NULL, as they are;
    // 'lz4', an LZ4 block with its size ahead. `size` stays the mail's own.
    r#"
ALTER TABLE blobs ADD COLUMN codec TEXT;
"#,
    // 19: entry bodies (text_body, html_body, new_text) may be stored
    // compressed: a BLOB in their TEXT column is an LZ4 block with its size
    // ahead (`blob_codec::pack_text`). No table changes; the version moves so
    // that an older mailrobot, which would read such a body as an error,
    // refuses the file as newer than it knows.
    r#"
-- (no table changes)
"#,
];

/// Migrations on PostgreSQL. Timestamps stay RFC 3339 text (UTC, with
/// milliseconds and `Z`) as on SQLite: they sort as text (byte order:
/// `COLLATE "C"`, whatever the database's locale), the models carry them as
/// strings, and `migrate-store` copies them unchanged.
pub const PG_MIGRATIONS: &[&str] = &[
    // 1: the schema of SQLite's migrations 1 to 14.
    r#"
CREATE TABLE mailboxes (
    id                   BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    kind                 TEXT NOT NULL,
    enabled              BOOLEAN NOT NULL DEFAULT TRUE,
    config               TEXT NOT NULL,
    sealed_secret        BYTEA,
    poll_seconds         BIGINT NOT NULL,
    max_message_bytes    BIGINT NOT NULL,
    status               TEXT NOT NULL DEFAULT 'new',
    last_error           TEXT,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    last_poll_at         TEXT COLLATE "C",
    next_poll_at         TEXT COLLATE "C",
    created_at           TEXT COLLATE "C" NOT NULL,
    connection_id        BIGINT,
    sync_state           TEXT,
    throttled_until      TEXT COLLATE "C",
    sealed_reply_secret  BYTEA
);

CREATE TABLE blobs (
    id     BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    size   BIGINT NOT NULL,
    data   BYTEA NOT NULL
);
-- Mails are compressed already often enough, and read whole: no TOAST compression.
ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE tickets (
    id             BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    subject        TEXT NOT NULL,
    requester      TEXT,
    requester_name TEXT,
    status         TEXT NOT NULL DEFAULT 'open',
    created_at     TEXT COLLATE "C" NOT NULL,
    updated_at     TEXT COLLATE "C" NOT NULL,
    requester_key  TEXT,
    category       TEXT,
    priority       TEXT,
    queue          TEXT,
    assignee       TEXT,
    tags           TEXT
);
CREATE INDEX tickets_requester_key ON tickets(requester_key);

CREATE TABLE messages (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    mailbox_id   BIGINT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    remote_id    TEXT NOT NULL,
    raw_sha256   TEXT REFERENCES blobs(sha256),
    size         BIGINT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('fetched', 'processed', 'failed')),
    kind         TEXT,
    message_id   TEXT,
    fingerprint  TEXT,
    subject      TEXT,
    from_addr    TEXT,
    ticket_id    BIGINT REFERENCES tickets(id),
    reason       TEXT,
    attempts     BIGINT NOT NULL DEFAULT 0,
    settled      BOOLEAN NOT NULL DEFAULT FALSE,
    fetched_at   TEXT COLLATE "C" NOT NULL,
    processed_at TEXT COLLATE "C",
    settled_at   TEXT COLLATE "C",
    answer       TEXT,
    rules        TEXT,
    UNIQUE (mailbox_id, remote_id)
);
CREATE INDEX messages_pending ON messages(state, mailbox_id) WHERE state = 'fetched';
CREATE INDEX messages_unsettled ON messages(mailbox_id) WHERE NOT settled AND state <> 'fetched';
CREATE INDEX messages_message_id ON messages(message_id);
CREATE INDEX messages_fingerprint ON messages(fingerprint);
CREATE INDEX messages_fetched_at ON messages(fetched_at, mailbox_id);
CREATE INDEX messages_failed ON messages(mailbox_id) WHERE state = 'failed';
CREATE INDEX messages_ticket ON messages(ticket_id);

CREATE TABLE ticket_entries (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    ticket_id    BIGINT NOT NULL REFERENCES tickets(id),
    position     BIGINT NOT NULL,
    journal_id   BIGINT NOT NULL UNIQUE REFERENCES messages(id),
    kind         TEXT NOT NULL,
    message_id   TEXT,
    from_addr    TEXT,
    from_name    TEXT,
    subject      TEXT NOT NULL,
    date         TEXT,
    text_body    TEXT NOT NULL,
    html_body    TEXT,
    created_at   TEXT COLLATE "C" NOT NULL,
    new_text     TEXT,
    UNIQUE (ticket_id, position)
);

CREATE TABLE entry_attachments (
    entry_id     BIGINT NOT NULL REFERENCES ticket_entries(id),
    position     BIGINT NOT NULL,
    filename     TEXT,
    content_type TEXT NOT NULL,
    content_id   TEXT,
    inline       BOOLEAN NOT NULL,
    size         BIGINT NOT NULL,
    blob_sha256  TEXT NOT NULL REFERENCES blobs(sha256),
    PRIMARY KEY (entry_id, position)
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE tenants (
    id                  BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    provider            TEXT NOT NULL CHECK (provider IN ('microsoft365', 'oauth2')),
    client_id           TEXT NOT NULL,
    directory           TEXT,
    authority_url       TEXT,
    graph_url           TEXT,
    ews_url             TEXT,
    authorize_url       TEXT,
    token_url           TEXT,
    sealed_secret       BYTEA,
    secret_set_at       TEXT COLLATE "C",
    secret_expires_at   TEXT COLLATE "C",
    sealed_certificate  BYTEA,
    certificate_info    TEXT,
    created_at          TEXT COLLATE "C" NOT NULL,
    allow_plaintext     BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE connections (
    id                   BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    tenant_id            BIGINT NOT NULL REFERENCES tenants(id),
    capability           TEXT NOT NULL,
    mode                 TEXT NOT NULL CHECK (mode IN ('delegated', 'application')),
    scopes               TEXT NOT NULL,
    state                TEXT NOT NULL DEFAULT 'not_authenticated',
    last_error           TEXT,
    sealed_refresh_token BYTEA,
    authenticated_name   TEXT,
    authenticated_upn    TEXT,
    authenticated_oid    TEXT,
    granted_scopes       TEXT,
    authenticated_at     TEXT COLLATE "C",
    refreshed_at         TEXT COLLATE "C",
    refresh_lock_owner   TEXT,
    refresh_lock_until   TEXT COLLATE "C",
    created_at           TEXT COLLATE "C" NOT NULL,
    updated_at           TEXT COLLATE "C" NOT NULL
);
ALTER TABLE mailboxes ADD FOREIGN KEY (connection_id) REFERENCES connections(id);

CREATE TABLE access_tokens (
    connection_id BIGINT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    resource      TEXT NOT NULL,
    sealed_token  BYTEA NOT NULL,
    expires_at    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (connection_id, resource)
);

CREATE TABLE auth_flows (
    state           TEXT PRIMARY KEY,
    connection_id   BIGINT NOT NULL REFERENCES connections(id) ON DELETE CASCADE,
    sealed_verifier BYTEA NOT NULL,
    nonce           TEXT NOT NULL,
    redirect_uri    TEXT NOT NULL,
    initiator       TEXT NOT NULL,
    created_at      TEXT COLLATE "C" NOT NULL,
    expires_at      TEXT COLLATE "C" NOT NULL
);

-- SQLite compares e-mail addresses of administrators without case (COLLATE
-- NOCASE); here queries compare lower(email), which this index makes unique.
CREATE TABLE admins (
    id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    email           TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    created_at      TEXT COLLATE "C" NOT NULL,
    last_sign_in_at TEXT COLLATE "C"
);
CREATE UNIQUE INDEX admins_email ON admins (lower(email));

CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,
    admin_id     BIGINT NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   TEXT COLLATE "C" NOT NULL,
    expires_at   TEXT COLLATE "C" NOT NULL
);

CREATE TABLE api_tokens (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE,
    read_only    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   TEXT COLLATE "C" NOT NULL
);

CREATE TABLE service_scopes (
    capability TEXT NOT NULL,
    mode       TEXT NOT NULL CHECK (mode IN ('delegated', 'application')),
    scopes     TEXT NOT NULL,
    PRIMARY KEY (capability, mode)
);

CREATE TABLE webhooks (
    id            BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    url           TEXT NOT NULL,
    events        TEXT NOT NULL,
    sealed_secret BYTEA NOT NULL,
    enabled       BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    TEXT COLLATE "C" NOT NULL
);

CREATE TABLE outbox (
    id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    kind            TEXT NOT NULL,
    ticket_id       BIGINT REFERENCES tickets(id),
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'queued',
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT COLLATE "C",
    last_error      TEXT,
    created_at      TEXT COLLATE "C" NOT NULL,
    webhook_id      BIGINT REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id        TEXT,
    event_type      TEXT,
    body            TEXT,
    last_status     BIGINT,
    last_attempt_at TEXT COLLATE "C",
    delivered_at    TEXT COLLATE "C",
    lease_until     TEXT COLLATE "C",
    mailbox_id      BIGINT REFERENCES mailboxes(id) ON DELETE CASCADE,
    mail_kind       TEXT,
    recipient       TEXT,
    recipient_key   TEXT,
    subject         TEXT
);
CREATE INDEX outbox_queued ON outbox(webhook_id, ticket_id, id) WHERE state = 'queued';
CREATE INDEX outbox_recipient ON outbox(recipient_key, created_at, mail_kind) WHERE kind = 'mail';
CREATE INDEX outbox_mail_ticket ON outbox(ticket_id, created_at, mail_kind) WHERE kind = 'mail';
CREATE INDEX outbox_mail_queued ON outbox(next_attempt_at) WHERE kind = 'mail' AND state = 'queued';
CREATE INDEX outbox_message_id ON outbox(event_id) WHERE kind = 'mail';

CREATE TABLE rules (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name       TEXT NOT NULL,
    mailbox_id BIGINT REFERENCES mailboxes(id) ON DELETE CASCADE,
    position   BIGINT NOT NULL,
    enabled    BOOLEAN NOT NULL DEFAULT TRUE,
    definition TEXT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX rules_order ON rules(position, id);

CREATE TABLE templates (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('acknowledgement', 'notification', 'reply', 'rejection')),
    mailbox_id BIGINT REFERENCES mailboxes(id) ON DELETE CASCADE,
    language   TEXT NOT NULL DEFAULT '',
    subject    TEXT NOT NULL,
    text       TEXT NOT NULL,
    html       TEXT,
    updated_at TEXT COLLATE "C" NOT NULL
);
CREATE UNIQUE INDEX templates_key ON templates(kind, COALESCE(mailbox_id, 0), language);

CREATE TABLE contacts (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    email        TEXT NOT NULL,
    email_key    TEXT NOT NULL UNIQUE,
    name         TEXT,
    organisation TEXT,
    source       TEXT NOT NULL,
    created_at   TEXT COLLATE "C" NOT NULL
);
"#,
    // 2: several nodes (SQLite's 15).
    r#"
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   TEXT COLLATE "C" NOT NULL,
    heartbeat_at TEXT COLLATE "C" NOT NULL,
    stopped_at   TEXT COLLATE "C"
);

CREATE TABLE mailbox_leases (
    mailbox_id BIGINT PRIMARY KEY REFERENCES mailboxes(id) ON DELETE CASCADE,
    node_id    TEXT,
    token      BIGINT NOT NULL,
    expires_at TEXT COLLATE "C" NOT NULL
);
CREATE INDEX mailbox_leases_node ON mailbox_leases(node_id);
"#,
    // 3: Graph change-notification subscriptions (SQLite's 16).
    r#"
CREATE TABLE push_subscriptions (
    mailbox_id          BIGINT PRIMARY KEY REFERENCES mailboxes(id) ON DELETE CASCADE,
    subscription_id     TEXT NOT NULL UNIQUE,
    sealed_client_state BYTEA NOT NULL,
    notification_url    TEXT NOT NULL,
    watching            TEXT NOT NULL,
    expires_at          TEXT COLLATE "C" NOT NULL,
    created_at          TEXT COLLATE "C" NOT NULL,
    renewed_at          TEXT COLLATE "C"
);

ALTER TABLE mailbox_leases ADD COLUMN announced_at TEXT COLLATE "C";
ALTER TABLE mailbox_leases ADD COLUMN announced_event TEXT;
"#,
    // 4: entry bodies compressed with LZ4 where the server has it (PostgreSQL
    // 14 and later, built with lz4, as Debian's is): pglz took about 100 µs
    // of the server's time per 10 KB mail, LZ4 a fraction of it. Elsewhere
    // bodies stay with pglz; values already stored keep theirs.
    r#"
DO $$
BEGIN
    EXECUTE 'ALTER TABLE ticket_entries ALTER COLUMN text_body SET COMPRESSION lz4,
                                        ALTER COLUMN html_body SET COMPRESSION lz4,
                                        ALTER COLUMN new_text SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE NOTICE 'LZ4 is not available: entry bodies stay compressed with pglz';
END $$;
"#,
    // 5: `run-once` passes among the nodes, and where a process runs (SQLite's 17).
    r#"
ALTER TABLE nodes ADD COLUMN kind TEXT NOT NULL DEFAULT 'serve';
ALTER TABLE nodes ADD COLUMN pid_scope TEXT;
"#,
    // 6: blobs compressed with LZ4 where the server has it (see 4): a
    // 10 KB mail went out of line whole, in five TOAST pieces and as much
    // WAL; compressed it is a third of that. PostgreSQL keeps a value
    // uncompressed when LZ4 saves nothing (an attachment already packed).
    r#"
DO $$
BEGIN
    EXECUTE 'ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTENDED,
                               ALTER COLUMN data SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    RAISE NOTICE 'LZ4 is not available: blobs stay uncompressed';
END $$;
"#,
    // 7: the codec column of SQLite's 18. This backend writes NULL (the
    // server compresses with TOAST); rows copied from SQLite by
    // `migrate-store` keep theirs and are read through it.
    r#"
ALTER TABLE blobs ADD COLUMN codec TEXT;
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

    /// Both backends end with the same tables and the same columns (the
    /// copy in `migrate-store` and every query rely on it).
    #[test]
    fn both_backends_have_the_same_tables_and_columns() {
        use std::collections::BTreeSet;
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for migration in MIGRATIONS {
            conn.execute_batch(migration).unwrap();
        }
        let mut sqlite = BTreeSet::new();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for table in tables {
            let columns: Vec<String> = conn
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for column in columns {
                sqlite.insert(format!("{table}.{column}"));
            }
        }

        let db = crate::testing::TestDatabase::create();
        let store = crate::PgStore::connect(&db.url).unwrap();
        let postgres: BTreeSet<String> = store
            .read(|tx| {
                tx.query(
                    "SELECT table_name || '.' || column_name FROM information_schema.columns
                     WHERE table_schema = 'public' AND table_name <> 'schema_version'",
                    &[],
                )?
                .iter()
                .map(|r| Ok(r.try_get::<_, String>(0)?))
                .collect()
            })
            .unwrap();
        assert!(sqlite.len() > 100, "{sqlite:?}");
        let only_sqlite: Vec<_> = sqlite.difference(&postgres).collect();
        let only_postgres: Vec<_> = postgres.difference(&sqlite).collect();
        assert!(
            only_sqlite.is_empty() && only_postgres.is_empty(),
            "only on SQLite: {only_sqlite:?}; only on PostgreSQL: {only_postgres:?}"
        );
    }
}
