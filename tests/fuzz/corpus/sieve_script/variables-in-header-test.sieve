require ["variables", "fileinto"];
set "who" "bob";
if address :localpart :is "from" "${who}" { fileinto "from-${who}"; }
