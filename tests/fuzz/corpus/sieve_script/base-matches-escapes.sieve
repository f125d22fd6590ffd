require "fileinto";
if header :matches "subject" "Sale \\*50%\\* off\\?" { fileinto "escaped"; }
if header :matches "subject" "Sale \\**" { fileinto "escaped-star-prefix"; }
if header :matches "subject" "Sale \\?50*" { fileinto "literal-q-fails"; }
