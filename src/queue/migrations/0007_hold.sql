-- A held message (tern queue hold) is left alone by the scheduler until it is released.
ALTER TABLE messages ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
