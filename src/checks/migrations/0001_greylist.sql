-- Greylisting triplets: client network (/24 or /64), envelope sender, recipient; Unix seconds.
CREATE TABLE triplets (
    network    TEXT NOT NULL,
    sender     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (network, sender, recipient)
);
CREATE INDEX triplets_last_seen ON triplets (last_seen);
