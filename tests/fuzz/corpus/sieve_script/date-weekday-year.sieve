require ["date", "fileinto"];
if date :originalzone "date" "weekday" "2" { fileinto "tuesday"; }
if date :zone "+0000" "date" "weekday" "3" { fileinto "wednesday-utc"; }
if date :originalzone "date" "year" "2025" { fileinto "y2025"; }
