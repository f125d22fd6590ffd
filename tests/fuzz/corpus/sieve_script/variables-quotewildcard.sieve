require ["variables", "fileinto"];
set :quotewildcard "pat" "Sale *50%* off?";
if header :matches "subject" "${pat}" { fileinto "literal-match"; }
if string :matches "Sale X50%X offY" "${pat}" { fileinto "wildcards-leaked"; }
