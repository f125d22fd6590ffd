require ["include", "fileinto"];
fileinto "Included";
return;
fileinto "NotReached";
