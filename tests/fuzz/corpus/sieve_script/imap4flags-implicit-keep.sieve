require "imap4flags";
setflag "\\Seen";
addflag "$Later";
