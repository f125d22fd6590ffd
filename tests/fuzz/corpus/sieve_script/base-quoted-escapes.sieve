require "fileinto";
if header :is "subject" "He said \"hi\" \\ bye" { fileinto "quoted"; }
