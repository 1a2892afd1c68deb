-- Full-text search over what engineers did: one row per audit event that carries text (the
-- command typed or run, the line on screen at Enter, the paths of file operations; the one
-- definition is sallyport_audit::text::search_text), written in the same transaction as the
-- event. The PostgreSQL file of this migration makes the same table with its own index.
--
-- SQLite: the rows in audit_text (source and seq name the event, audit_events' key; time_ms is
-- the event's, for newest-first order without reading the events), indexed by an FTS5 table
-- with the trigram tokenizer, so that any fragment of three characters or more is found through
-- the index, ignoring case. The FTS5 table holds only the index (its content is audit_text, by
-- id); a trigger keeps it in step, so the portable INSERT serves both engines. Audit events are
-- never deleted or changed, nor is their text.
CREATE TABLE audit_text (
    id      INTEGER PRIMARY KEY,
    source  TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    text    TEXT NOT NULL,
    UNIQUE (source, seq)
);
CREATE VIRTUAL TABLE audit_text_fts USING fts5(
    text,
    content = 'audit_text',
    content_rowid = 'id',
    tokenize = 'trigram'
);
CREATE TRIGGER audit_text_indexed AFTER INSERT ON audit_text BEGIN
    INSERT INTO audit_text_fts (rowid, text) VALUES (new.id, new.text);
END;

-- Events stored before this migration are indexed by the broker when it starts, chain by chain,
-- from seq done_seq + 1 through through_seq (the chain's last record now); it moves done_seq in
-- the transaction that indexes each batch and removes the row when the chain is done. Records
-- stored from now on are indexed as they are stored.
CREATE TABLE audit_text_backfill (
    source      TEXT PRIMARY KEY,
    through_seq BIGINT NOT NULL,
    done_seq    BIGINT NOT NULL
);
INSERT INTO audit_text_backfill (source, through_seq, done_seq)
    SELECT source, MAX(seq), 0 FROM audit_events GROUP BY source;
