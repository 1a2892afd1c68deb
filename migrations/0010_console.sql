-- Web console sessions of approvers and reviewers: the cookie holds a random token, the store
-- its SHA-256 (a database reader cannot take over a session). Kept server-side so that logout,
-- disabling an account and the idle timeout end a session at once on every replica.
CREATE TABLE console_sessions (
    token_sha256 TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    role TEXT NOT NULL,
    customer TEXT,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_account ON console_sessions (account);

-- The console lists sessions (session_started, newest first) and reads each one's events.
CREATE INDEX audit_events_session ON audit_events (session, kind);
CREATE INDEX audit_events_kind_time ON audit_events (kind, time_ms);

-- A reviewer or a customer approver ended an engineer's session: the cluster's gateway reads
-- the recent ones (every second) and disconnects the session, naming who ended it and why.
CREATE TABLE session_terminations (
    session TEXT PRIMARY KEY,
    cluster TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_at BIGINT NOT NULL
);
CREATE INDEX session_terminations_cluster ON session_terminations (cluster, requested_at);
