//! The SMTP protocol core, free of I/O: parsers for commands and addresses, content decoders, replies with
//! enhanced status codes, and the server session state machine. Tokio code in `inbound/` drives it.

pub mod address;
pub mod client;
pub mod command;
pub mod data;
#[cfg(test)]
mod proptests;
pub mod reply;
pub mod server;

pub use address::{Domain, ForwardPath, Mailbox, ReversePath};
pub use reply::{EnhancedCode, Reply};
