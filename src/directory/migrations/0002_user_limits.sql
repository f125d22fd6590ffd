-- Per-user overrides of [submission] settings; NULL means the global value.
ALTER TABLE users ADD COLUMN sender_policy TEXT;           -- own | any
ALTER TABLE users ADD COLUMN max_messages_per_hour INTEGER;
ALTER TABLE users ADD COLUMN max_recipients INTEGER;
ALTER TABLE users ADD COLUMN max_message_size INTEGER;
