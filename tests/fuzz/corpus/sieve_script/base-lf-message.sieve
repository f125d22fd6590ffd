require "fileinto";
if header :is "subject" "Plain LF lines" { fileinto "lf"; }
