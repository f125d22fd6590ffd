require "fileinto";
# :all is the default; display names and angle brackets are not part of it
if address :all :is "cc" "carol@example.com" { fileinto "carol"; }
if address :is "from" "Bob Smith" { fileinto "display-name"; }
if header :contains "from" "Bob Smith" { fileinto "header-has-name"; }
