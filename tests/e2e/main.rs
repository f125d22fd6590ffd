//! End-to-end tests: the real `tern` binary on loopback, driven over TCP like a remote MTA would.

mod dns;
mod harness;

mod cli;
mod delivery;
mod durability;
mod limits;
mod protocol;
mod submission;
mod tls;
