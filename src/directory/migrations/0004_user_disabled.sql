-- A disabled account keeps its mailbox and settings but cannot log in, and mail for it is refused
-- (550 5.2.1) until it is enabled again.
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
