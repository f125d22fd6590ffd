-- Users' Sieve scripts (at most one active per user), and what vacation and duplicate remember.
CREATE TABLE scripts (
    user TEXT NOT NULL,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    -- Bumped by every change, so that cached compiled programs know when they are stale.
    version INTEGER NOT NULL,
    PRIMARY KEY (user, name)
);
CREATE UNIQUE INDEX scripts_one_active ON scripts (user) WHERE active = 1;

CREATE TABLE vacation_sent (
    user TEXT NOT NULL,
    handle TEXT NOT NULL,
    sender TEXT NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (user, handle, sender)
);
CREATE INDEX vacation_sent_expires ON vacation_sent (expires);

CREATE TABLE duplicates (
    user TEXT NOT NULL,
    key TEXT NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (user, key)
);
CREATE INDEX duplicates_expires ON duplicates (expires);
