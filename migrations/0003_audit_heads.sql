-- The head each gateway and edge reports of its own audit chain (the highest sequence number in
-- its spool), with every batch it ships and when shipping fails. A stored chain that ends before
-- its source's reported head is incomplete: records exist at the source that the broker does not
-- hold yet (or never will). `audit verify` reports it as such instead of "intact".
CREATE TABLE audit_heads (
    source       TEXT PRIMARY KEY,                 -- gateway:<id> | edge:<name>
    reported     BIGINT NOT NULL,                  -- highest seq the source says it wrote
    reported_at  BIGINT NOT NULL                   -- unix seconds of the report
);
