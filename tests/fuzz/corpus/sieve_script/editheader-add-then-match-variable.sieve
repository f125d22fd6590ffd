require ["editheader", "variables", "fileinto"];
if header :matches "subject" "Lunch *" { addheader "X-Topic" "${1}"; }
if header :matches "x-topic" "on *" { fileinto "topic-${1}"; }
