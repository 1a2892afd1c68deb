-- Recordings kept in the database ([recordings] storage = "database"), so that every broker
-- replica reads every recording, whichever one the gateway uploaded it to. `storage` says where
-- a recording's bytes are: 'data_dir' (the file data_dir/<path>, one broker's disk: every
-- recording stored before this migration) or 'database' (the rows of recording_chunks; path is
-- then ''). A recording's row and its chunks are written in one transaction: a recording is
-- whole or absent. One file per engine for the bytes' type only (BYTEA here).
ALTER TABLE recordings ADD COLUMN storage TEXT NOT NULL DEFAULT 'data_dir';

-- The bytes of a recording, in order: chunk seq 0, 1, ... of at most 1 MiB each (an empty
-- recording has none).
CREATE TABLE recording_chunks (
    session TEXT NOT NULL REFERENCES recordings(session),
    seq BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (session, seq)
);
