require ["date", "fileinto"];
if date :originalzone "x-no-date" "year" "2025" { fileinto "found"; }
if not date :originalzone "x-no-date" "year" "2025" { fileinto "not-found"; }
