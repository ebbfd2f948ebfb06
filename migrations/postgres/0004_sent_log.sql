-- Deliveries handed to the relay, waiting to be folded into `deliveries` (PostgreSQL only).
-- A record of "sent" is the one write the sender waits on for every message. As an
-- UPDATE of `deliveries` it replaced a row version and added an entry to each of three
-- indexes, about 35 µs per row of the server's time. Here it is an append to a table with
-- no index. The sender folds the log into `deliveries` a claim at a time, off the path a
-- message waits on, and before anything reads leases (see `Store::settle_sent`).
CREATE TABLE sent_log (
    delivery_id         BIGINT  NOT NULL,
    lease_owner         TEXT    NOT NULL,
    sent_at             BIGINT  NOT NULL
);
