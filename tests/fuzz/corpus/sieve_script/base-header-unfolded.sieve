require "fileinto";
if header :is "Subject" "Meeting notes for the release planning call" { fileinto "unfolded"; }
