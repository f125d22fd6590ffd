require "fileinto"; # hash comment to end of line
/* bracket comment
   spanning lines, with * and / inside ** */
if /* inline */ header :contains "subject" "Lunch" {
    fileinto /* here too */ "Commented";
}
