require ["imap4flags", "variables", "fileinto"];
set "mine" "";
addflag "mine" "Red Green";
addflag "mine" "blue";
removeflag "mine" "green";
if hasflag "mine" "RED" { fileinto :flags "${mine}" "Colours"; }
