require ["subaddress", "envelope", "fileinto"];
if envelope :detail :matches "to" "*" { fileinto "detail-matched"; }
if envelope :user :is "to" "user" { fileinto "user"; }
