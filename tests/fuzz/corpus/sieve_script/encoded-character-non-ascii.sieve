require ["encoded-character", "fileinto"];
if header :contains "subject" "Gr${unicode:FC DF}e" { fileinto "umlaut"; }
if header :contains "subject" "${bogus:41}" { fileinto "bogus-literal"; }
