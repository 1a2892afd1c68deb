-- PostgreSQL only: SQLite checks a short word on each text row within its budget (see
-- docs/performance.md). Nothing to change here.
SELECT 1;
