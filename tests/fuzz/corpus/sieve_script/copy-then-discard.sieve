require ["copy", "fileinto"];
fileinto :copy "Archive";
discard;
