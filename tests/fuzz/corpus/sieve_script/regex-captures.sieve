require ["regex", "variables", "fileinto"];
if header :regex "list-id" "<([a-z-]+)\\.lists\\.example\\.org>" {
    fileinto "lists/${1}";
}
if address :regex :domain "from" "^(.*)\\.(org|com)$" { fileinto "dom-${1}-${2}"; }
