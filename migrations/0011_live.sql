-- Watching a live session: a reviewer or a customer approver has the session's watch view open
-- (each look refreshes `seen_at`); the cluster's gateway reads which of its sessions are
-- watched (every second) and sends their recordings as they grow, in order, into live_chunks.
-- Kept in the store, not in one broker's memory, so a watcher on any replica sees the session.
CREATE TABLE session_watches (
    session TEXT NOT NULL,
    viewer TEXT NOT NULL,
    cluster TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (session, viewer)
);
CREATE INDEX session_watches_cluster ON session_watches (cluster, seen_at);

-- The recording of a watched session as it grows: byte ranges of the asciicast file, whole
-- lines only, each starting where the previous one ended. Removed once nobody watches.
CREATE TABLE live_chunks (
    recording TEXT NOT NULL,
    at_byte BIGINT NOT NULL,
    session TEXT NOT NULL,
    data TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (recording, at_byte)
);
CREATE INDEX live_chunks_session ON live_chunks (session);

-- One row per recording being sent live: its asciicast header line, and where the next chunk
-- must start (chunks arrive in order; a gap or an overlap is refused and the gateway resumes).
CREATE TABLE live_recordings (
    recording TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    header TEXT NOT NULL,
    next_byte BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX live_recordings_session ON live_recordings (session);
