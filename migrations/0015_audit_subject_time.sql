-- A filter on a subject (engineer, ticket, cluster), newest first, reads its index in time order
-- and stops at a page, instead of sorting every event that matches: one index per subject with
-- the time after it (they also serve every lookup the single-column ones did).
DROP INDEX audit_events_engineer;
CREATE INDEX audit_events_engineer_time ON audit_events (engineer, time_ms);
DROP INDEX audit_events_ticket;
CREATE INDEX audit_events_ticket_time ON audit_events (ticket, time_ms);
CREATE INDEX audit_events_cluster_time ON audit_events (cluster, time_ms);
