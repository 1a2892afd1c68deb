-- Gateways and the recordings they upload (the data plane's side of the broker).
-- Portable SQL, like 0001: runs on SQLite and PostgreSQL. Times are unix seconds (BIGINT).

-- A gateway of a cluster. The operator creates it and gets a one-time join token (spj_...);
-- the gateway enrolls once with it, sending the public keys of the cluster's node CA and host CA
-- (their private keys never leave the gateway), and receives its credential (spg_...).
-- Both secrets are stored only as SHA-256 hex. enrolled_at is set exactly once: enrollment is a
-- conditional UPDATE ... WHERE enrolled_at IS NULL, so two enrollments with one token cannot
-- both win.
CREATE TABLE gateways (
    id                  TEXT PRIMARY KEY,          -- "gw-<hex>"
    cluster_id          TEXT NOT NULL REFERENCES clusters(id),
    name                TEXT NOT NULL,             -- the operator's name for it, unique per cluster
    join_token_hash     TEXT NOT NULL UNIQUE,      -- SHA-256 hex of the join token
    created_at          BIGINT NOT NULL,
    enrolled_at         BIGINT,                    -- NULL until enrolled
    node_ca_public_key  TEXT,                      -- OpenSSH line, Ed25519, no comment
    host_ca_public_key  TEXT,                      -- OpenSSH line, Ed25519, no comment
    credential_hash     TEXT UNIQUE,               -- SHA-256 hex of the credential; NULL before enrollment
    revoked_at          BIGINT,                    -- set: the credential no longer works
    UNIQUE (cluster_id, name)
);
CREATE INDEX gateways_cluster ON gateways (cluster_id);

-- Session recordings uploaded by gateways. The file lives at
-- <data_dir>/recordings/<cluster>/<session>.cast; path is relative to data_dir. One recording per
-- session: a re-upload must have the same sha256. engineer, ticket and node come from the
-- upload's query or else from the gateway's own audit records of the session (NULL if neither).
CREATE TABLE recordings (
    session     TEXT PRIMARY KEY,                  -- [A-Za-z0-9_-]{1,64}, chosen by the gateway
    gateway_id  TEXT NOT NULL REFERENCES gateways(id),
    cluster_id  TEXT NOT NULL REFERENCES clusters(id),
    engineer    TEXT,
    ticket      TEXT,
    node        TEXT,
    kind        TEXT NOT NULL,                     -- session (default) | pty | exec | sftp ...
    size        BIGINT NOT NULL,                   -- bytes
    sha256      TEXT NOT NULL,                     -- hex of the file's contents
    path        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX recordings_cluster ON recordings (cluster_id);
CREATE INDEX recordings_engineer ON recordings (engineer);
CREATE INDEX recordings_ticket ON recordings (ticket);
