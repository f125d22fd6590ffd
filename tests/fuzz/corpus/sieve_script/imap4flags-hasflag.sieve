require ["imap4flags", "fileinto"];
addflag ["\\Answered", "Foo", "Bar"];
removeflag "foo";
if hasflag "\\answered" { fileinto "answered"; }
if hasflag :contains "oo" { fileinto "foo-still-there"; }
if hasflag :contains "ar" { fileinto "bar"; }
