require ["body", "fileinto"];
if body :raw :contains "Content-Transfer-Encoding: base64" { fileinto "raw-headers"; }
if body :text :contains "confidential" { fileinto "decoded"; }
if body :raw :contains "confidential" { fileinto "raw-decoded"; }
