-- Edges register themselves with their API token (role edge): the SSH host key engineers pin
-- for the jump hop and the address they dial. The broker hands them out at each login beside
-- `edge_address` / `edge_host_keys` of its config, so an edge started after the broker needs no
-- broker restart. Only edges whose token is not revoked count.
CREATE TABLE edge_registrations (
    name TEXT PRIMARY KEY,
    host_key TEXT NOT NULL,
    address TEXT,
    updated_at BIGINT NOT NULL
);
