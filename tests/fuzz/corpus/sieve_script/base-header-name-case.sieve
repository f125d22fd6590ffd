require "fileinto";
if header :is "SUBJECT" "lunch on friday?" { fileinto "caseless"; }
