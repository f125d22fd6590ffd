require ["variables", "fileinto"];
if header :matches "List-Id" "*<*.lists.example.org>" {
    fileinto "lists/${2}";
}
if header :matches "subject" "*[*]*" {
    set "tag" "${2}";
}
fileinto "tag-${tag}";
