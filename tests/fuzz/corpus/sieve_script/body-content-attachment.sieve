require ["body", "fileinto"];
if body :content "application/pdf" :contains "" { fileinto "has-pdf"; }
if body :content "image" :contains "" { fileinto "has-image"; }
