require ["body", "fileinto"];
if body :text :contains "banana" { fileinto "banana"; }
if body :contains "weekly build is green" { fileinto "default-is-text"; }
