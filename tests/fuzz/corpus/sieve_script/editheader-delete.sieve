require ["editheader", "relational", "comparator-i;ascii-numeric", "fileinto"];
deleteheader "List-Id";
if not exists "list-id" { fileinto "gone"; }
deleteheader :matches "x-scanner" "*virus*";
if header :count "eq" :comparator "i;ascii-numeric" "x-scanner" "1" { fileinto "one-scanner"; }
if header :is "x-scanner" "spam check ok" { fileinto "spam-line-kept"; }
