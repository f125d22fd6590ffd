require ["variables", "fileinto"];
set :upperfirst :lower "name" "hELLO wORLD";
fileinto "${name}";
set :length :upper "n" "abc";
fileinto "len-${n}";
