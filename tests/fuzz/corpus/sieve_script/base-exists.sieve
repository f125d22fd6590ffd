require "fileinto";
if exists ["From", "Date", "Message-ID"] { fileinto "has-all"; }
if exists ["From", "X-Missing"] { fileinto "has-missing"; }
if not exists "List-Id" { fileinto "not-a-list"; }
