require "fileinto";
if header :contains "subject" "invoice" {
    fileinto "Invoices";
} elsif exists "X-No-Such-Header" {
    fileinto "Weird";
} else {
    fileinto "Other";
}
