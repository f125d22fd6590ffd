require "reject";
if header :contains "subject" "lunch" {
    reject "I do not do lunch.";
}
