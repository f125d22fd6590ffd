require ["editheader", "index", "fileinto"];
deleteheader :index 1 "x-hop";
if header :index 1 :is "x-hop" "two" { fileinto "first-now-two"; }
deleteheader :index 1 :last "x-hop";
if header :is "x-hop" "two" { fileinto "only-two-left"; }
if not header :is "x-hop" ["one", "three"] { fileinto "others-gone"; }
