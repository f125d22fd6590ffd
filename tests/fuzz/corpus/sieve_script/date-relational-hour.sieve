require ["date", "relational", "fileinto"];
if date :value "ge" :originalzone "date" "hour" "12" { fileinto "afternoon"; }
if date :zone "-0500" "date" "time" "05:14:58" { fileinto "eastern"; }
if date :zone "+0000" "date" "zone" "+0000" { fileinto "zone-utc"; }
