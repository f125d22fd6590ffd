require "vacation";
vacation :days 1 :subject "Out of office" :from "user@example.test"
    "Back on the 14th.";
