if header :is "subject" "never closed { keep; }
