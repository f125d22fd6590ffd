require ["regex", "fileinto"];
if header :regex "subject" "^Lunch (on|at) [A-Z][a-z]+day\\?$" { fileinto "regex"; }
if header :regex "subject" "^lunch" { fileinto "caseless-default"; }
if header :regex :comparator "i;octet" "subject" "^lunch" { fileinto "octet-fails"; }
