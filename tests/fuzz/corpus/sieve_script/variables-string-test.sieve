require ["variables", "relational", "comparator-i;ascii-numeric", "fileinto"];
set "empty" "";
if string :is "${empty}" "" { fileinto "empty"; }
if string :is "${never_set}" "" { fileinto "unset-is-empty"; }
if string :contains ["a", "hello"] "ell" { fileinto "list"; }
if string :count "eq" :comparator "i;ascii-numeric" ["a", "", "b"] "2" { fileinto "count-skips-empty"; }
