-- The mailbox folder a local recipient's copy goes to ('' = the inbox, 'Junk' = quarantine), and the inbound
-- checks' verdict for the delivery log.
ALTER TABLE recipients ADD COLUMN folder TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN checks TEXT NOT NULL DEFAULT '';
