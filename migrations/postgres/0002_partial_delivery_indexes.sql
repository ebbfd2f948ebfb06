-- Index only the deliveries that are still moving. Finished rows ('sent', 'failed',
-- 'skipped') are most of the table and are never looked up by state or lease, yet with
-- full indexes every "sent" record deleted and re-inserted an entry in two of them. With
-- these, claiming moves an entry from one small index to the other, and recording an
-- outcome only deletes one. Queries that should use them spell out `state = 'queued'` or
-- `state = 'sending'`, which is what lets both databases pick a partial index.
DROP INDEX deliveries_due;
DROP INDEX deliveries_by_lease;
CREATE INDEX deliveries_queued ON deliveries (priority, next_attempt_at) WHERE state = 'queued';
CREATE INDEX deliveries_sending ON deliveries (lease_owner, lease_until) WHERE state = 'sending';
