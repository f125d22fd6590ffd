require ["relational", "comparator-i;ascii-numeric", "fileinto"];
if header :value "gt" :comparator "i;ascii-numeric" "x-spam-score" "5" { fileinto "spammy"; }
if header :value "lt" :comparator "i;ascii-numeric" "x-spam-score" "10" { fileinto "below-10"; }
if header :value "gt" "x-spam-score" "10" { fileinto "casemap-7-gt-10"; }
