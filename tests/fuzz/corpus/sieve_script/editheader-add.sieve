require ["editheader", "fileinto"];
addheader "X-Tern-Filtered" "yes";
if header :is "x-tern-filtered" "yes" { fileinto "seen-added"; }
