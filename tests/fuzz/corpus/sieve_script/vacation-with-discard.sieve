require "vacation";
vacation :days 5 "Away.";
discard;
