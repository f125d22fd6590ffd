-- A message past the spool threshold keeps only its header section in `body`; the rest is in
-- data_dir/spool/<id>, from octet spool_offset, spool_len octets with spool_lines line ends.
ALTER TABLE messages ADD COLUMN spool_offset INTEGER;
ALTER TABLE messages ADD COLUMN spool_len INTEGER;
ALTER TABLE messages ADD COLUMN spool_lines INTEGER;
