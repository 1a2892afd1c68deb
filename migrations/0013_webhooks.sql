-- Notifications: webhooks that a customer's approvers (customer = their customer) or the
-- operator (customer NULL: vendor-wide, every customer's events) set up, and the deliveries
-- queued for them.
--
-- The URL can itself be a credential (a Slack incoming webhook's path is its secret), so it is
-- kept sealed like the signing secret (the broker's TOTP key, bound to the webhook's id); only
-- a shortened form (`url_shown`: scheme, host and the first part of the path) is in clear.
-- `events` is a JSON list of event kinds, or ["*"] for every kind that is notified.
-- A deleted webhook is kept (deleted_at set) so that its deliveries still name it.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    customer TEXT REFERENCES customers(id),
    url_sealed TEXT NOT NULL,
    url_shown TEXT NOT NULL,
    format TEXT NOT NULL,
    events TEXT NOT NULL,
    secret_sealed TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    enabled BIGINT NOT NULL DEFAULT 1,
    deleted_at BIGINT,
    deleted_by TEXT
);
CREATE INDEX webhooks_customer ON webhooks (customer);

-- One row per (webhook, audit event): queued in the transaction that stores the event, so
-- nothing is lost and nobody waits for a receiver. The body is made then (its signature at each
-- attempt, with the attempt's time). A worker on any replica claims a due row by moving its
-- next_at with a conditional UPDATE (its lease), then records the outcome: delivered, or
-- pending again at the next backoff, or failed after the last attempt (an audit event),
-- or cancelled when the webhook was deleted first.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook TEXT NOT NULL REFERENCES webhooks(id),
    source TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    last_error TEXT,
    last_status BIGINT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT,
    UNIQUE (webhook, source, seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_at);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook, created_at);
