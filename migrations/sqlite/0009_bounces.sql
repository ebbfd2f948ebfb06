-- Bounces and complaints read back from the receiving side (see ARCHITECTURE.md, "The path
-- of a bounce"). Keep in step with migrations/postgres.

-- The bounce score replaces the streak: a hard bounce adds 1, a soft one
-- bounces.soft_weight; a score not raised for bounces.stale_after starts again.
ALTER TABLE subscribers ADD COLUMN bounce_score REAL NOT NULL DEFAULT 0;
ALTER TABLE subscribers ADD COLUMN bounce_raised_at BIGINT;    -- when the score last rose
ALTER TABLE subscribers ADD COLUMN bounce_scored_day BIGINT;   -- the list's local day of the last report scored
ALTER TABLE subscribers ADD COLUMN unsubscribe_reason TEXT;    -- NULL (their own link or staff), 'complaint'
UPDATE subscribers SET bounce_score = bounce_streak WHERE bounce_streak <> 0;
ALTER TABLE subscribers DROP COLUMN bounce_streak;

-- One row per report (and recipient) that came back, recorded before it changes anyone;
-- `report_key` makes reading the same report twice a no-op.
CREATE TABLE bounce_events (
    id                  INTEGER PRIMARY KEY,
    report_key          TEXT    NOT NULL UNIQUE,
    received_at         BIGINT  NOT NULL,
    source              TEXT    NOT NULL CHECK (source IN ('imap', 'listener', 'send')),
    kind                TEXT    NOT NULL CHECK (kind IN ('hard', 'soft', 'delayed', 'complaint', 'auto-reply', 'not-a-report')),
    effect              TEXT    NOT NULL CHECK (effect IN ('pending', 'scored', 'bouncing', 'once-a-day', 'policy', 'unsubscribed', 'unmatched', 'ignored')),
    status              TEXT,                         -- RFC 3463, e.g. 5.1.1
    diagnostic          TEXT,                         -- the receiver's words, addresses shortened
    recipient_domain    TEXT,                         -- where it failed (policy rejections are counted by it)
    subscriber_id       BIGINT  REFERENCES subscribers (id) ON DELETE SET NULL,
    delivery_id         BIGINT,                       -- the delivery it matched (VERP tag or Message-ID)
    score               REAL                          -- the subscriber's score after it
);
CREATE INDEX bounce_events_by_time ON bounce_events (received_at);
CREATE INDEX bounce_events_by_subscriber ON bounce_events (subscriber_id, received_at);
