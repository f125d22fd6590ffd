require "fileinto";
if header :matches "from" "Jörg Müller *" { fileinto "decoded-name"; }
if address :is "from" "joerg+news@example.org" { fileinto "address"; }
