-- Registration for limited seats, with a waiting list (see ARCHITECTURE.md, "Registration").

-- One row per (session, person). The person is a subscriber row whatever their list
-- status: someone who registers without joining the list is a subscriber that stays
-- 'pending' (never mailed list mail). Forgetting the person sets subscriber_id to NULL and
-- erases the name, organisation and evidence; the row stays, unnamed, for the counts.
CREATE TABLE registrations (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id          TEXT    NOT NULL,             -- the session's stable id: 2027-01-20, or an extra's id
    subscriber_id       BIGINT  REFERENCES subscribers (id) ON DELETE SET NULL,
    name                TEXT,
    organisation        TEXT,
    org_key             TEXT,                         -- the organisation folded, for counting distinct ones
    status              TEXT    NOT NULL CHECK (status IN ('pending', 'registered', 'waitlisted', 'offered', 'cancelled', 'expired', 'attended')),
    source              TEXT    NOT NULL CHECK (source IN ('web', 'link', 'staff')),
    position            BIGINT,                       -- waiting-list order, taken under the seat lock
    offers              INTEGER NOT NULL DEFAULT 0,   -- seats offered so far (part of each offer's mailing key)
    offer_expires_at    BIGINT,
    nonce               TEXT,                         -- the registration's links = HMAC(key, purpose, nonce)
    link_hash           TEXT    UNIQUE,               -- SHA-256 of that link token
    requested_at        BIGINT,
    request_ip          TEXT,
    request_user_agent  TEXT,
    confirmed_at        BIGINT,
    confirm_ip          TEXT,
    confirm_user_agent  TEXT,
    registered_at       BIGINT,                       -- when the seat was taken
    cancelled_at        BIGINT,
    attended_at         BIGINT,
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL,
    UNIQUE (session_id, subscriber_id)
);
CREATE INDEX registrations_by_session ON registrations (session_id, status, position);
CREATE INDEX registrations_by_subscriber ON registrations (subscriber_id, session_id);

-- Registration links made under an earlier token key (as unsub_links for unsubscribe links).
CREATE TABLE registration_links (
    hash                TEXT    PRIMARY KEY,
    registration_id     BIGINT  NOT NULL REFERENCES registrations (id) ON DELETE CASCADE
);

-- The seat lock: every change to a session's seats first writes this row, so changes to one
-- session's seats happen one at a time on both backends, and the waiting-list position is
-- taken in the same transaction as the seat count.
CREATE TABLE seats (
    session_id          TEXT    PRIMARY KEY,
    next_position       BIGINT  NOT NULL DEFAULT 0,
    updated_at          BIGINT  NOT NULL
);

-- What a mailing is about, and who of the list it goes to.
--   training: the session id, for the registration links in it and the audience below;
--   segment:  NULL (active subscribers), 'registered', 'unregistered' (active, neither
--             registered nor waiting), or 'involved' (active, plus everyone registered,
--             waiting or offered a seat: for update and cancellation notices).
ALTER TABLE mailings ADD COLUMN training TEXT;
ALTER TABLE mailings ADD COLUMN segment TEXT CHECK (segment IN ('registered', 'unregistered', 'involved'));
