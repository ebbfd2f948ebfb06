-- Facts about the installation itself, one row each, read by every instance and the CLI:
--   'token_key_fingerprint': a one-way fingerprint of the token key, pinned at first start;
--   'relay': the mail relay's last known state (ok or failing, since when, the last error).
CREATE TABLE service_state (
    name                TEXT    PRIMARY KEY,
    value               TEXT    NOT NULL,
    updated_at          BIGINT  NOT NULL
);

-- Why a mailing was closed without sending (skipped or cancelled), in staff's words.
ALTER TABLE mailings ADD COLUMN reason TEXT;
