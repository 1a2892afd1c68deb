-- sallyport broker store, first version. Portable SQL: runs on SQLite and PostgreSQL.
-- Times are unix seconds (BIGINT) unless named *_ms. Booleans are BIGINT 0/1.
-- Lists (logins, groups, networks) are JSON arrays in TEXT.

-- Tenants.
CREATE TABLE customers (
    id          TEXT PRIMARY KEY,          -- short name, e.g. "acme"
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- A customer's set of nodes behind gateways. id is the address part, e.g. "acme-prod".
CREATE TABLE clusters (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    created_at  BIGINT NOT NULL
);

CREATE TABLE nodes (
    cluster_id  TEXT NOT NULL REFERENCES clusters(id),
    name        TEXT NOT NULL,
    address     TEXT NOT NULL,
    port        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (cluster_id, name)
);

-- Engineers' TOTP enrollment. Identity and groups live in LDAP (or the embedded directory).
CREATE TABLE engineers (
    uid          TEXT PRIMARY KEY,
    totp_secret  TEXT NOT NULL,            -- base32
    created_at   BIGINT NOT NULL
);

-- Local accounts: customer approvers and reviewers (argon2 password + TOTP).
CREATE TABLE accounts (
    username      TEXT PRIMARY KEY,
    role          TEXT NOT NULL,           -- 'approver' | 'reviewer'
    customer_id   TEXT REFERENCES customers(id),
    password_hash TEXT NOT NULL,
    totp_secret   TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

-- API tokens, stored as SHA-256 hex; the token itself is shown once.
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,             -- operator | reviewer | approver | ticket_system
    customer_id TEXT REFERENCES customers(id),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

-- Each TOTP time step is accepted at most once per subject: the primary key makes it atomic,
-- across broker replicas too.
CREATE TABLE totp_used (
    subject     TEXT NOT NULL,             -- 'engineer:<uid>' | 'account:<username>'
    step        BIGINT NOT NULL,
    used_at     BIGINT NOT NULL,
    PRIMARY KEY (subject, step)
);

-- Failed logins, for rate limiting and lockout.
CREATE TABLE login_failures (
    subject       TEXT PRIMARY KEY,
    failures      BIGINT NOT NULL,
    last_failure  BIGINT NOT NULL,
    locked_until  BIGINT NOT NULL
);

CREATE TABLE tickets (
    id          TEXT PRIMARY KEY,          -- e.g. "SUP-1234"
    customer_id TEXT NOT NULL REFERENCES customers(id),
    cluster_id  TEXT NOT NULL REFERENCES clusters(id),
    assignee    TEXT NOT NULL,
    status      TEXT NOT NULL,             -- 'open' | 'closed' | other states of the ticket system
    title       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE approvals (
    id                TEXT PRIMARY KEY,
    customer_id       TEXT NOT NULL REFERENCES customers(id),
    cluster_id        TEXT NOT NULL REFERENCES clusters(id),
    access_group      TEXT NOT NULL,
    logins            TEXT NOT NULL,       -- JSON array
    max_session_secs  BIGINT NOT NULL,
    valid_from        BIGINT NOT NULL,
    valid_until       BIGINT NOT NULL,
    just_in_time      BIGINT NOT NULL,
    per_session_mfa   BIGINT NOT NULL,
    port_forwarding   BIGINT NOT NULL,
    source_networks   TEXT NOT NULL,       -- JSON array of CIDRs
    created_by        TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    withdrawn_at      BIGINT,
    withdrawn_by      TEXT
);

CREATE TABLE access_requests (
    id           TEXT PRIMARY KEY,
    engineer     TEXT NOT NULL,
    ticket_id    TEXT NOT NULL REFERENCES tickets(id),
    cluster_id   TEXT NOT NULL REFERENCES clusters(id),
    approval_id  TEXT NOT NULL REFERENCES approvals(id),
    status       TEXT NOT NULL,            -- pending | approved | denied
    created_at   BIGINT NOT NULL,
    decided_by   TEXT,
    decided_at   BIGINT,
    reason       TEXT
);

-- A customer's own forbid policies (Cedar), validated against the schema when saved.
CREATE TABLE customer_policies (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    name        TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (customer_id, name)
);

-- Grants and the certificates issued from them. serial is decimal text (u64).
CREATE TABLE grants (
    id            TEXT PRIMARY KEY,
    engineer      TEXT NOT NULL,
    ticket_id     TEXT NOT NULL,
    customer_id   TEXT NOT NULL,
    cluster_id    TEXT NOT NULL,
    approval_id   TEXT NOT NULL,
    request_id    TEXT,
    logins        TEXT NOT NULL,
    serial        TEXT NOT NULL UNIQUE,
    key_id        TEXT NOT NULL,
    ca_fingerprint TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    certificate   TEXT NOT NULL,
    valid_after   BIGINT NOT NULL,
    valid_before  BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    revoked_reason TEXT
);
CREATE INDEX grants_engineer ON grants (engineer);
CREATE INDEX grants_ticket ON grants (ticket_id);
CREATE INDEX grants_approval ON grants (approval_id);

-- The audit log: one hash chain per source, keyed by (source, seq) so a re-send is idempotent.
CREATE TABLE audit_events (
    source     TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    time_ms    BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    engineer   TEXT,
    ticket     TEXT,
    cluster    TEXT,
    node       TEXT,
    session    TEXT,
    data       TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (source, seq)
);
CREATE INDEX audit_events_time ON audit_events (time_ms);
CREATE INDEX audit_events_engineer ON audit_events (engineer);
CREATE INDEX audit_events_ticket ON audit_events (ticket);
