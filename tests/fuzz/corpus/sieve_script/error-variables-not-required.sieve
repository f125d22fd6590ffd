require "fileinto";
set "a" "b";
