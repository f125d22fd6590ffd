-- Which delivery path a recipient takes: 'local' (our mailboxes) or 'remote' (the outbound MTA).
ALTER TABLE recipients ADD COLUMN transport TEXT NOT NULL DEFAULT 'local';
DROP INDEX recipients_due;
CREATE INDEX recipients_due ON recipients (transport, state, next_attempt);
