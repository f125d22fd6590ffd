require ["imap4flags", "fileinto"];
addflag "A";
fileinto "X";
addflag "B";
fileinto "Y";
removeflag "A";
keep;
