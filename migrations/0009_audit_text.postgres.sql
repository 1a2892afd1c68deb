-- Full-text search over what engineers did: one row per audit event that carries text (the
-- command typed or run, the line on screen at Enter, the paths of file operations; the one
-- definition is sallyport_audit::text::search_text), written in the same transaction as the
-- event. The SQLite file of this migration makes the same table with its own index.
--
-- PostgreSQL: a trigram GIN index (pg_trgm, shipped with PostgreSQL; a trusted extension, so the
-- database's owner may create it), so that ILIKE '%fragment%' is answered through the index,
-- ignoring case. source and seq name the event (audit_events' key); time_ms is the event's, for
-- newest-first order without reading the events.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE TABLE audit_text (
    source  TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    time_ms BIGINT NOT NULL,
    text    TEXT NOT NULL,
    PRIMARY KEY (source, seq)
);
CREATE INDEX audit_text_trgm ON audit_text USING gin (text gin_trgm_ops);

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
