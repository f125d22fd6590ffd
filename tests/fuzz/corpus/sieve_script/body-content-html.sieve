require ["body", "fileinto"];
if body :content "text/html" :contains "mango" { fileinto "html-mango"; }
if body :content "text/plain" :contains "mango" { fileinto "plain-mango"; }
if body :content "text" :contains "mango" { fileinto "text-mango"; }
