require ["subaddress", "envelope", "variables", "fileinto"];
if envelope :detail :matches "to" "*" { fileinto "plus/${1}"; }
if envelope :user "to" "user" { fileinto "user"; }
