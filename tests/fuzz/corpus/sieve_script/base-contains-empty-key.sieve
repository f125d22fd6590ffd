require "fileinto";
if header :contains "subject" "" { fileinto "has-subject"; }
if header :contains "x-missing" "" { fileinto "missing"; }
