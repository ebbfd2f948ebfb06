-- Unsubscribe links made under an earlier token key. A key rotation makes each
-- subscriber's `unsub_hash` the hash of their link under the new key and keeps the old
-- hash here, so links in mail already sent keep working (see src/runtime/keys.rs).
CREATE TABLE unsub_links (
    hash                TEXT    PRIMARY KEY,
    subscriber_id       BIGINT  NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE
);
CREATE INDEX unsub_links_by_subscriber ON unsub_links (subscriber_id);
