require ["variables", "fileinto"];
if header :matches "subject" "Lunch *" { set "x" "${1}"; }
if header :matches "subject" "Dinner *" { set "x" "changed"; }
if string :is "${1}" "on Friday?" { fileinto "groups-kept"; }
fileinto "x-${x}";
