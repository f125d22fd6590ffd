require ["editheader", "index", "fileinto"];
addheader "X-Stamp" "second";
addheader "X-Stamp" "first";
addheader :last "X-Stamp" "third";
if header :index 1 :is "x-stamp" "first" { fileinto "first"; }
if header :index 1 :last :is "x-stamp" "third" { fileinto "third-last"; }
