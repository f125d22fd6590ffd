//! ManageSieve (RFC 5804) as a sans-IO session: users upload, list, activate, download, rename and delete
//! their Sieve scripts. Fed bytes, the [`Session`] yields [`Action`]s for the I/O driver
//! (`access::managesieve`): send these bytes, check these credentials, run this script operation against the
//! store, start TLS, close.
//!
//! `frame` collects commands with their literals under a line limit and a script limit (oversized input is
//! counted off, not buffered); `parse` is the command grammar and the script-name rules of section 1.6;
//! `response` writes OK/NO/BYE with their response codes and holds the one mapping of refusals to them;
//! `session` is the state machine (non-authenticated, SASL exchange, authenticated).

pub mod frame;
pub mod parse;
pub mod response;
pub mod session;
#[cfg(test)]
mod tests;

pub use parse::{Command, NameError, ParseError, check_name};
pub use response::{BUSY, Code, Refusal, Response, Status, bye_idle, bye_shutdown};
pub use session::{Action, Done, LoginRefusal, ManageSieveConfig, ScriptOp, Session};

/// Longest command line in octets, literals apart (and the largest literal that is not a script).
pub const MAX_LINE: usize = 8192;
