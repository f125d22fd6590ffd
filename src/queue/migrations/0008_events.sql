-- What happened to each message, for `tern trace`: received (from whom, checks), each delivery attempt
-- (relay and reply), DSNs sent, admin actions. Written in the same transaction as the change it records;
-- pruned with the history ([queue] history_secs) and capped in rows.
CREATE TABLE events (
    message_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    -- The Message-ID header (without <>), on the received event.
    header_id TEXT
);
CREATE INDEX events_message ON events (message_id);
CREATE INDEX events_header ON events (header_id) WHERE header_id IS NOT NULL;
CREATE INDEX events_at ON events (at);
