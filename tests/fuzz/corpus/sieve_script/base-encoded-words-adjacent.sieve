require "fileinto";
if header :is "subject" "Über alles" { fileinto "joined"; }
