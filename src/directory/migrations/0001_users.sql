-- Users of the local domains. `address` is lower-cased local-part@domain; `password_hash` is an argon2id PHC
-- string, or NULL for an account that receives mail but cannot log in.
CREATE TABLE users (
    address       TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT,
    created_at    INTEGER NOT NULL
);
