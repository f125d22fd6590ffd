-- Aliases: 'local@domain' (one address to one or more targets) or '@domain' (the domain's catch-all).
-- targets: comma-separated addresses, local or remote.
CREATE TABLE aliases (
    address    TEXT PRIMARY KEY NOT NULL,
    targets    TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
-- Domain aliases: mail for alias@<alias> is delivered as <local>@<target>.
CREATE TABLE domain_aliases (
    alias  TEXT PRIMARY KEY NOT NULL,
    target TEXT NOT NULL
);
-- Quotas per user; NULL means none.
ALTER TABLE users ADD COLUMN quota_bytes INTEGER;
ALTER TABLE users ADD COLUMN quota_messages INTEGER;
