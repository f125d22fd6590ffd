require ["fileinto", "variables"];
set "note" text:
..leading dot is unstuffed
second line
.
;
if string :matches "${note}" ".leading dot*second line*" { fileinto "text-literal"; }
if string :contains "${note}" "..leading" { fileinto "not-unstuffed"; }
