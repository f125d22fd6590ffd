require "fileinto";
if size :over 2K { fileinto "over-2k"; }
if size :under 4K { fileinto "under-4k"; }
if size :over 1M { fileinto "over-1m"; }
if size :under 100 { fileinto "under-100"; }
