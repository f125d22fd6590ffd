require ["encoded-character", "fileinto"];
if header :contains "subject" "${hex:4C 75 6e 63 68}" { fileinto "hex"; }
if header :contains "subject" "${unicode:46 72 69}" { fileinto "unicode"; }
if header :contains "subject" "${HEX: 46}riday" { fileinto "upper-hex"; }
