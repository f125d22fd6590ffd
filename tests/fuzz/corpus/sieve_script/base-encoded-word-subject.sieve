require "fileinto";
if header :contains "subject" "Grüße aus Köln" { fileinto "decoded"; }
if header :contains "subject" "=?ISO-8859-1?" { fileinto "raw"; }
