require ["index", "fileinto"];
if header :index 1 :contains "received" "lists.example.org" { fileinto "first-is-list-hop"; }
if header :index 2 :contains "received" "laptop" { fileinto "second-is-laptop"; }
if header :index 1 :last :contains "received" "laptop" { fileinto "last-is-laptop"; }
if header :index 3 :contains "received" "" { fileinto "no-third"; }
