# Nothing but a comment: implicit keep files into INBOX.
