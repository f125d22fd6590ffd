require ["index", "fileinto"];
# Cc: is one field holding two addresses: :index 2 names a second Cc field.
if address :index 2 :is "cc" "dave@example.net" { fileinto "second-cc-field"; }
if address :index 1 :is "cc" "dave@example.net" { fileinto "first-cc-field"; }
