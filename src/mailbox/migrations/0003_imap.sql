-- The mailbox index for IMAP: MODSEQ per message and HIGHESTMODSEQ per folder (RFC 7162), keywords beside
-- the system flags, expunges remembered for QRESYNC, subscriptions, and the size with CRLF line endings
-- (RFC822.SIZE; NULL for rows written before it existed: computed when read).
ALTER TABLE folders ADD COLUMN highestmodseq INTEGER NOT NULL DEFAULT 1;
ALTER TABLE messages ADD COLUMN modseq INTEGER NOT NULL DEFAULT 1;
ALTER TABLE messages ADD COLUMN keywords TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN isize INTEGER;
CREATE TABLE expunged (
    folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uid       INTEGER NOT NULL,
    modseq    INTEGER NOT NULL
);
CREATE INDEX expunged_by_modseq ON expunged (folder_id, modseq);
CREATE TABLE subscriptions (
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (user, name)
);
