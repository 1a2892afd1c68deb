-- Just-in-time requests are bound to what the approver saw, and an approval may need more than
-- one approver (a quorum) for each request.
--   access_requests.logins / ttl_secs: the logins and the certificate lifetime asked for when the
--     request was made; the one certificate the request yields can carry no more.
--   approvals.approvers_required / access_requests.approvers_required: how many distinct
--     approvers must approve (the request keeps the number its approval had when it was made).
--   request_decisions: each approver's vote; a request is approved when enough approvers said
--     yes, denied as soon as one said no.
-- Requests made before this migration have no logins: they yield no certificate (ask again).
ALTER TABLE approvals ADD COLUMN approvers_required BIGINT NOT NULL DEFAULT 1;
ALTER TABLE access_requests ADD COLUMN logins TEXT NOT NULL DEFAULT '[]';
ALTER TABLE access_requests ADD COLUMN ttl_secs BIGINT NOT NULL DEFAULT 0;
ALTER TABLE access_requests ADD COLUMN approvers_required BIGINT NOT NULL DEFAULT 1;
CREATE TABLE request_decisions (
    request_id  TEXT NOT NULL REFERENCES access_requests(id),
    approver    TEXT NOT NULL,
    approve     BIGINT NOT NULL,
    reason      TEXT,
    decided_at  BIGINT NOT NULL,
    PRIMARY KEY (request_id, approver)
);
