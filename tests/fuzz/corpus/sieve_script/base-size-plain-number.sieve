if size :over 100000 { discard; }
