-- Every certificate issuance reads the approvals of one cluster and counts the engineer's open
-- requests for one ticket and cluster (broker/src/store/issuance.rs, and `latest_request` in
-- store/requests.rs): without these two indexes both scan their whole table, which only grows.
CREATE INDEX approvals_cluster ON approvals (cluster_id, created_at);
CREATE INDEX access_requests_engineer_ticket_cluster
    ON access_requests (engineer, ticket_id, cluster_id, created_at);
