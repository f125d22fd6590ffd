-- The message's size with CRLF line endings (what POP3 and IMAP report), kept so that a listing reads no
-- bodies. NULL for rows written before it existed: computed when read.
ALTER TABLE messages ADD COLUMN vsize INTEGER;
