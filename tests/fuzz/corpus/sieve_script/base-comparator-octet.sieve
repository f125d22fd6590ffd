require "fileinto";
if header :is :comparator "i;octet" "subject" "lunch on friday?" { fileinto "octet-lower"; }
if header :is :comparator "i;octet" "subject" "Lunch on Friday?" { fileinto "octet-exact"; }
if header :is :comparator "i;ascii-casemap" "subject" "LUNCH ON FRIDAY?" { fileinto "casemap"; }
