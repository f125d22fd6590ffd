require ["vacation", "fileinto"];
if header :contains "subject" "lunch" {
    vacation :days 1 :subject "Re: lunch" "Not this week.";
    fileinto "Social";
}
