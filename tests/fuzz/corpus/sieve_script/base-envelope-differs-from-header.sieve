require ["envelope", "fileinto"];
if envelope :is "from" "tern-dev-bounces@lists.example.org" { fileinto "bounces"; }
if address :is "from" "tern-dev-bounces@lists.example.org" { fileinto "header-is-not"; }
