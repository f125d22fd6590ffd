-- The SQLite mailbox store: folders per user with IMAP's UIDVALIDITY/UIDNEXT, and messages with their bytes
-- (or, when large, the name of a content-addressed file under data_dir/blobs/), flags and internal date.
CREATE TABLE folders (
    id          INTEGER PRIMARY KEY,
    user        TEXT NOT NULL,
    name        TEXT NOT NULL,          -- INBOX, Junk, ...
    uidvalidity INTEGER NOT NULL,
    uidnext     INTEGER NOT NULL,
    UNIQUE (user, name)
);
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    folder_id     INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uid           INTEGER NOT NULL,
    unique_key    TEXT NOT NULL UNIQUE,  -- per delivery: a retry after a crash finds it and stops
    internal_date INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    flags         TEXT NOT NULL DEFAULT '',
    recent        INTEGER NOT NULL DEFAULT 1,
    body          BLOB,                  -- the message, unless it is in a blob file
    blob          TEXT,                  -- sha256 hex of the blob file
    UNIQUE (folder_id, uid)
);
