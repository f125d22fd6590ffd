require "fileinto";
if address :domain "from" "example.org" {
    if header :contains "subject" "friday" {
        fileinto "org-friday";
    } else {
        fileinto "org-other";
    }
}
