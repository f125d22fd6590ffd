require "fileinto";
keep;
fileinto "INBOX";
fileinto "Work";
fileinto "Work";
