require "fileinto"
fileinto "A";
