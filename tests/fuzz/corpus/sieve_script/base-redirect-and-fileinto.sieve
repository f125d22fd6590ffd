require "fileinto";
redirect "alice@example.net";
fileinto "Forwarded";
