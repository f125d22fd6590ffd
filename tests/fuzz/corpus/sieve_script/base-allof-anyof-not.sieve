require "fileinto";
if allof (address :domain "from" "example.org",
          anyof (header :contains "subject" "invoice", not exists "List-Id")) {
    fileinto "match";
}
if allof (true, false) { fileinto "never"; }
if anyof (false, not true) { fileinto "never2"; }
