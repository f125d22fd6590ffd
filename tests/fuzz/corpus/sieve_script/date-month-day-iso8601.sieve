require ["date", "variables", "fileinto"];
if date :matches :zone "+0000" "date" "month" "*" { set "m" "${1}"; }
if date :matches :zone "+0000" "date" "day" "*" { set "d" "${1}"; }
fileinto "m${m}-d${d}";
if date :matches :zone "+0000" "date" "iso8601" "2025-07-01T10:14:58*" { fileinto "iso"; }
