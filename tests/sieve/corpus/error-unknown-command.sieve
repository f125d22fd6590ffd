require "fileinto";
frobnicate "now";
