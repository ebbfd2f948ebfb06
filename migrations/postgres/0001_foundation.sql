-- harborlist schema, PostgreSQL flavour. Keep in step with migrations/sqlite.
-- Timestamps are UTC milliseconds since the epoch (BIGINT) on both backends, so the same
-- queries serve both.

CREATE TABLE subscribers (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email               TEXT    NOT NULL,
    email_key           TEXT    NOT NULL UNIQUE,      -- lower-cased: unique regardless of case
    name                TEXT,
    status              TEXT    NOT NULL CHECK (status IN ('pending', 'active', 'unsubscribed', 'bouncing')),
    source              TEXT    NOT NULL CHECK (source IN ('web', 'import')),
    unsub_nonce         TEXT    NOT NULL,             -- unsubscribe link = HMAC(key, nonce)
    unsub_hash          TEXT    NOT NULL UNIQUE,      -- SHA-256 of that link token
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL,
    -- consent evidence
    requested_at        BIGINT,
    request_ip          TEXT,
    request_user_agent  TEXT,
    confirmed_at        BIGINT,
    confirm_ip          TEXT,
    confirm_user_agent  TEXT,
    unsubscribed_at     BIGINT,
    -- list hygiene and abuse control
    bounce_streak       BIGINT  NOT NULL DEFAULT 0,
    window_start        BIGINT  NOT NULL DEFAULT 0,   -- subscribe-request rate window
    window_count        BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX subscribers_by_status ON subscribers (status, id);

CREATE TABLE tokens (
    hash                TEXT    PRIMARY KEY,
    purpose             TEXT    NOT NULL CHECK (purpose IN ('confirm')),
    subscriber_id       BIGINT  NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    created_at          BIGINT  NOT NULL,
    expires_at          BIGINT  NOT NULL,
    used_at             BIGINT
);
CREATE INDEX tokens_by_subscriber ON tokens (subscriber_id);

-- One row per thing sent to an audience; `key` makes planning it twice a no-op.
CREATE TABLE mailings (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key                 TEXT    NOT NULL UNIQUE,
    kind                TEXT    NOT NULL,
    template            TEXT    NOT NULL,
    data                TEXT    NOT NULL,             -- JSON given to the template
    audience            TEXT    NOT NULL CHECK (audience IN ('one', 'list')),
    subscriber_id       BIGINT  REFERENCES subscribers (id) ON DELETE CASCADE,
    priority            BIGINT  NOT NULL,             -- 0 = a person is waiting for it
    due_at              BIGINT  NOT NULL,
    not_after           BIGINT,                       -- never send at or after this instant
    state               TEXT    NOT NULL CHECK (state IN ('planned', 'fanning', 'fanned', 'cancelled', 'skipped')),
    fanout_cursor       BIGINT  NOT NULL DEFAULT 0,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL
);
CREATE INDEX mailings_by_due ON mailings (state, due_at);

-- One row per (mailing, subscriber): the unit of sending, retrying and counting.
CREATE TABLE deliveries (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailing_id          BIGINT  NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    subscriber_id       BIGINT  NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    priority            BIGINT  NOT NULL,
    state               TEXT    NOT NULL CHECK (state IN ('queued', 'sending', 'sent', 'failed', 'skipped')),
    attempts            BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT  NOT NULL,
    lease_owner         TEXT,
    lease_until         BIGINT,
    last_error          TEXT,
    sent_at             BIGINT,
    UNIQUE (mailing_id, subscriber_id)
);
CREATE INDEX deliveries_due ON deliveries (state, priority, next_attempt_at);
CREATE INDEX deliveries_by_lease ON deliveries (lease_owner);
CREATE INDEX deliveries_by_subscriber ON deliveries (subscriber_id);

-- Hashes of forgotten addresses, so an import can't bring them back.
CREATE TABLE suppressions (
    hash                TEXT    PRIMARY KEY,
    created_at          BIGINT  NOT NULL
);

-- The last version of each training that mail went out about, to detect moves and
-- cancellations and to number iCalendar SEQUENCEs.
CREATE TABLE trainings (
    uid                 TEXT    PRIMARY KEY,
    fingerprint         TEXT    NOT NULL,
    sequence            BIGINT  NOT NULL,
    start_at            BIGINT  NOT NULL,
    cancelled           BIGINT  NOT NULL,
    snapshot            TEXT    NOT NULL,             -- JSON of the session as last announced
    updated_at          BIGINT  NOT NULL
);
