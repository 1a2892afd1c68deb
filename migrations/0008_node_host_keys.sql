-- The gateway verifies each node's SSH host key against what the operator registered, instead
-- of trusting whatever key a node shows first.
--   nodes.host_keys: the node's host public keys, OpenSSH lines ("ssh-ed25519 AAAA..."), as a
--     JSON array; the gateway accepts only these when there is at least one.
--   nodes.trust_on_first_use: 1 when the gateway may pin the first key a node without registered
--     keys shows (audited as node_key_pinned); 0 refuses such a node. Off for new nodes; nodes
--     that existed before this migration were trusted on first use, and keep it until the
--     operator registers their keys.
ALTER TABLE nodes ADD COLUMN host_keys TEXT NOT NULL DEFAULT '[]';
ALTER TABLE nodes ADD COLUMN trust_on_first_use BIGINT NOT NULL DEFAULT 0;
UPDATE nodes SET trust_on_first_use = 1;
