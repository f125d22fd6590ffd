require ["include", "fileinto"];
include :personal "inc-lists";
if header :contains "subject" "report" { fileinto "after-include"; }
