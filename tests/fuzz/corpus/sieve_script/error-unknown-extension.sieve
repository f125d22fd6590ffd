require "x-tern-frobnicate";
keep;
