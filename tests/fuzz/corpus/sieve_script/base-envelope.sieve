require ["envelope", "fileinto"];
if envelope :is "from" "bob@example.org" { fileinto "env-from"; }
if envelope :domain :is "to" "example.test" { fileinto "env-to-domain"; }
if envelope :localpart :is "to" "user" { fileinto "env-to-local"; }
