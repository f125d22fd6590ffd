-- The durable queue. A message row and its recipient rows are written in one transaction before the
-- 250 reply to DATA/BDAT; a message is deleted once every recipient is delivered.
CREATE TABLE messages (
    id           TEXT PRIMARY KEY NOT NULL,   -- queue ID: fixed-width hex, sorts by arrival
    received_at  INTEGER NOT NULL,            -- Unix seconds
    reverse_path TEXT NOT NULL,               -- '' for the null reverse-path
    body_type    TEXT NOT NULL,               -- 7BIT | 8BITMIME
    smtputf8     INTEGER NOT NULL,
    ret          TEXT,                        -- DSN RET: FULL | HDRS
    envid        TEXT,                        -- DSN ENVID (xtext)
    trace        TEXT NOT NULL,               -- our Received: header up to the recipient clause
    body         BLOB NOT NULL                -- the message as received (CRLF line endings)
);

CREATE TABLE recipients (
    message_id   TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    idx          INTEGER NOT NULL,
    forward_path TEXT NOT NULL,               -- as given in RCPT TO
    mailbox      TEXT NOT NULL,               -- where it is delivered
    notify       TEXT,                        -- DSN NOTIFY
    orcpt        TEXT,                        -- DSN ORCPT
    state        TEXT NOT NULL,               -- queued | delivered | failed
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,            -- Unix seconds
    last_reply   TEXT,
    PRIMARY KEY (message_id, idx)
);

CREATE INDEX recipients_due ON recipients (state, next_attempt);
