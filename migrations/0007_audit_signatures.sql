-- Signed audit chains. Each gateway and edge signs the head of its chain (source, seq, hash of
-- that record) with an Ed25519 key it made itself, with every batch it ships; signing a head
-- covers every earlier record through the hash chain. The broker checks the signature against
-- the key pinned here before it stores the batch, and keeps the signatures so that
-- `sallyport audit verify` can check them again later, also against keys given from outside
-- this database (`--keys`). The broker's own chain is signed the same way, with a key that lives
-- in its data_dir (never in this database).

-- The key pinned for each chain: a gateway's at its enrollment, an edge's (and that of a gateway
-- enrolled before chains were signed) at its first signed batch. Never replaced by the API.
CREATE TABLE audit_keys (
    source       TEXT PRIMARY KEY,                 -- gateway:<id> | edge:<name>
    public_key   TEXT NOT NULL,                    -- OpenSSH line, ssh-ed25519, no comment
    fingerprint  TEXT NOT NULL,                    -- SHA256:...
    pinned_at    BIGINT NOT NULL,                  -- unix seconds
    pinned_by    TEXT NOT NULL                     -- enrollment | first_batch
);

-- A signed head: record seq of source had hash when it was signed.
CREATE TABLE audit_signatures (
    source     TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    hash       TEXT NOT NULL,
    signature  TEXT NOT NULL,                      -- armored SSHSIG, namespace sallyport-audit
    PRIMARY KEY (source, seq)
);
