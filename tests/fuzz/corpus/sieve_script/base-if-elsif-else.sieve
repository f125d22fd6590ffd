require "fileinto";
if header :contains "subject" "invoice" {
    fileinto "Invoices";
} elsif header :contains "subject" "lunch" {
    fileinto "Social";
} else {
    fileinto "Other";
}
