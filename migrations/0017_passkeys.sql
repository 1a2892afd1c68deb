-- Passkeys (WebAuthn) of approver and reviewer accounts, used at console login instead of a
-- TOTP code. `passkey` is the credential as the WebAuthn library keeps it (JSON: its id, public
-- key and signature counter), updated after each use; `credential_id` (base64url) is unique
-- across accounts, so a credential names the one account it belongs to.
CREATE TABLE passkeys (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    credential_id TEXT NOT NULL UNIQUE,
    passkey TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX passkeys_account ON passkeys (account);

-- A registration or login in progress: the challenge and what the library must remember of it
-- between the two requests. Kept in the store, not in one replica's memory, so that any replica
-- can finish it; taken (deleted) by the request that finishes it, so a challenge works once.
-- `nonce_sha256` binds a login to the browser whose login form began it.
CREATE TABLE passkey_ceremonies (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    account TEXT NOT NULL,
    name TEXT,
    nonce_sha256 TEXT,
    state TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX passkey_ceremonies_expires ON passkey_ceremonies (expires_at);
