//! End-to-end tests: the real `tern` binary on loopback, driven over TCP like a remote MTA would.

mod dns;
mod harness;

mod abuse;
mod acme;
mod addresses;
mod checks;
mod cli;
mod delivery;
mod doctor;
mod durability;
mod fail2ban;
mod imap;
mod limits;
mod lmtp;
mod mailbox;
mod managesieve;
mod milter;
mod ops;
mod outbound;
mod pop3;
mod protocol;
mod queue_tools;
mod safety;
mod scanners;
mod sendmail;
mod sieve;
mod sieve_corpus;
mod sink;
mod spool;
mod submission;
mod tls;
mod web;
