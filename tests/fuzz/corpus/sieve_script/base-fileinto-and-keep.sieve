require "fileinto";
fileinto "Friends";
keep;
