require "fileinto";
if address :localpart :is "from" "bob" { fileinto "from-bob"; }
if address :localpart :is "from" "bob@example.org" { fileinto "wrong"; }
