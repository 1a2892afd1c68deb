-- Engineers and accounts the operator disabled: no login (password, TOTP, per-session MFA)
-- succeeds for them until they are enabled again. Disabling also revokes their session tokens
-- (session_revocations) and, for an engineer, their certificates.
CREATE TABLE disabled_principals (
    principal    TEXT PRIMARY KEY,                 -- engineer:<uid> | account:<name>
    disabled_at  BIGINT NOT NULL,
    disabled_by  TEXT NOT NULL,
    reason       TEXT NOT NULL
);
