require ["relational", "fileinto"];
if header :value "lt" "subject" "M" { fileinto "before-m"; }
if header :value "ge" "subject" "lunch" { fileinto "ge-lunch"; }
