require ["variables", "include"];
global "dest";
if header :contains "subject" "lunch" { set "dest" "Food"; }
