require ["date", "fileinto"];
if date :zone "+0000" "date" "date" "2025-07-02" { fileinto "utc-next-day"; }
if date :originalzone "date" "date" "2025-07-01" { fileinto "original-day"; }
