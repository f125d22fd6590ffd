require "vacation";
vacation :days 2 :addresses ["alias@example.test", "user@example.org"] "Away.";
