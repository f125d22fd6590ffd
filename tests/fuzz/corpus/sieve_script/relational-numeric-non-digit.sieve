require ["relational", "comparator-i;ascii-numeric", "fileinto"];
if header :value "gt" :comparator "i;ascii-numeric" "x-spam-score" "99999" { fileinto "infinity"; }
if header :value "eq" :comparator "i;ascii-numeric" "x-priority" "3" { fileinto "leading-digits"; }
