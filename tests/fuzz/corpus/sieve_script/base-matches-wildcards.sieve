require "fileinto";
if header :matches "subject" "Lunch ?n *day?" { fileinto "m1"; }
if header :matches "subject" "*friday" { fileinto "m2"; }
if header :matches "subject" "l*" { fileinto "m3"; }
if header :matches "subject" "?????" { fileinto "m4"; }
