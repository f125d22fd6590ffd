require ["include", "variables", "fileinto"];
global "dest";
set "dest" "Default";
include "inc-set-dest";
fileinto "${dest}";
