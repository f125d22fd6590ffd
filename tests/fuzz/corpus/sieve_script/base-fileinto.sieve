require "fileinto";
fileinto "Friends";
