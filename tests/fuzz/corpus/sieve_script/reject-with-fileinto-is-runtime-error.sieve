require ["reject", "fileinto"];
fileinto "Kept";
reject "No.";
