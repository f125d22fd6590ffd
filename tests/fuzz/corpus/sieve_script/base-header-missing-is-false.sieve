require "fileinto";
if header :is "x-missing" "" { fileinto "empty-match"; }
if not header :contains "x-missing" "a" { fileinto "negated"; }
