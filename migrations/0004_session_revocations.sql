-- Revoking an engineer (or disabling an engineer or an account) revokes their session tokens too:
-- a session JWT of `principal` issued at or before `revoked_at` (unix seconds) is refused, so a
-- token obtained before the revocation cannot mint new certificates. Logging in again issues a token after it (and is itself checked
-- against the directory and the revocation of certificates as always).
CREATE TABLE session_revocations (
    principal   TEXT PRIMARY KEY,                  -- engineer:<uid> | account:<name>
    revoked_at  BIGINT NOT NULL
);
