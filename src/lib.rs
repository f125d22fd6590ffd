//! tern: a mail server daemon. One async binary that receives mail for its own domains (MX), accepts mail from
//! users' clients (submission), relays to other domains, checks what arrives and delivers it into mailboxes.
//!
//! The modules follow the mail flow; docs/architecture.md draws the map:
//! `inbound` → `queue` → `local` → `mailbox`, with `smtp` (sans-IO protocol core), `config`, `directory`,
//! `tls`, `db`, `clock` and `shutdown` beside them, and `app` wiring them together.

pub mod access;
pub mod acme;
pub mod app;
pub mod checks;
pub mod clock;
pub mod config;
pub mod db;
pub mod directory;
pub mod dns;
pub mod filter;
pub mod imap;
pub mod inbound;
pub mod intake;
pub mod local;
pub mod log;
pub mod mailbox;
pub mod managesieve;
pub mod message;
pub mod milter;
pub mod ops;
pub mod outbound;
pub mod pop3;
pub mod queue;
pub mod sasl;
pub mod sendmail;
pub mod shutdown;
pub mod sieve;
pub mod smtp;
pub mod tls;
pub mod web;
