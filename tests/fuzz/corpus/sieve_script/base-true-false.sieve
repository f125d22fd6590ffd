require "fileinto";
if false { discard; }
if true { fileinto "True"; }
