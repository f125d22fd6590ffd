require "vacation-seconds";
vacation :seconds 172800 "Away for two days.";
