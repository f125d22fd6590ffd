require "fileinto";
if address :is "to" "user@example.test" { fileinto "in-group"; }
if address :domain :is "to" "example.net" { fileinto "other-domain"; }
