require ["mailbox", "fileinto"];
fileinto :create "Projects";
