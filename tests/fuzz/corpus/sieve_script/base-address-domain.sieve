require "fileinto";
if address :domain :is "to" "EXAMPLE.TEST" { fileinto "to-domain"; }
if address :domain :is "cc" "example.net" { fileinto "cc-domain"; }
