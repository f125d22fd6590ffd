require ["subaddress", "fileinto"];
if address :user "cc" "user" { fileinto "user"; }
if address :detail "cc" "tern" { fileinto "detail-tern"; }
if address :detail :matches "from" "*" { fileinto "from-has-detail"; }
