require "fileinto";
if header :contains ["X-Nothing", "Cc"] ["zed", "carol"] { fileinto "cc-carol"; }
