-- Moderated sessions: an approval may require that an approver of the customer watches each
-- session before anything runs in it (the gateway holds the session at "waiting for an
-- observer"). Carried to the gateway in the certificate (observer@sallyport.dev).
ALTER TABLE approvals ADD COLUMN observer_required BIGINT NOT NULL DEFAULT 0;
