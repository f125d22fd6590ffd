-- Where a message came from (what its DSNs may return, RET=FULL only for our own senders) and the domain it
-- may be DKIM-signed as, both decided at intake.
ALTER TABLE messages ADD COLUMN origin TEXT NOT NULL DEFAULT 'outside';
ALTER TABLE messages ADD COLUMN dkim_domain TEXT;
-- Recipients of messages that are gone from the queue (every recipient delivered or failed): a bounded
-- record for `tern queue show` and the logs, pruned after [queue] history_secs.
CREATE TABLE history (
    message_id   TEXT NOT NULL,
    idx          INTEGER NOT NULL,
    reverse_path TEXT NOT NULL,
    forward_path TEXT NOT NULL,
    state        TEXT NOT NULL,               -- delivered | failed
    last_reply   TEXT,
    finished_at  INTEGER NOT NULL,            -- Unix seconds
    PRIMARY KEY (message_id, idx)
);
CREATE INDEX history_finished ON history (finished_at);
-- Messages whose recipients all failed stayed forever before: they are final too.
DELETE FROM messages WHERE NOT EXISTS
    (SELECT 1 FROM recipients WHERE message_id = messages.id AND state = 'queued');
