require ["mailbox", "fileinto"];
if mailboxexists "INBOX" { fileinto "inbox-exists"; }
if mailboxexists "No/Such/Folder" { fileinto "weird"; }
if mailboxexists ["INBOX", "Nope"] { fileinto "all-must-exist"; }
