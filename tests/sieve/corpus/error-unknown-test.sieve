if spamish "subject" { discard; }
