require ["variables", "fileinto"];
if header :matches "subject" "L?nch on *" {
    fileinto "${1}-${2}";
    fileinto "whole-${0}";
}
