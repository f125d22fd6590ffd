-- Whether the sender was already told that delivery to this recipient is delayed (one delay DSN at most).
ALTER TABLE recipients ADD COLUMN delay_notified INTEGER NOT NULL DEFAULT 0;
