//! Mailbox stores: where final delivery writes. Maildir now; the store is chosen by `[store] kind`.
//!
//! Calls are blocking (file I/O and fsync) and are made from the blocking pool by `local/`. A store must make
//! a delivery durable before it reports success, and must be idempotent for deliveries marked `check_existing`
//! (a retry after a crash must not leave a second copy).

pub mod maildir;

use crate::smtp::Mailbox;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
#[error("{path}: {op}: {source}")]
pub struct MailboxError {
    pub path: String,
    pub op: &'static str,
    pub source: std::io::Error,
}

/// One copy of a message for one mailbox.
#[derive(Debug)]
pub struct Delivery {
    pub mailbox: Mailbox,
    /// A folder of the mailbox (`Junk`), or `None` for the inbox.
    pub folder: Option<String>,
    /// Unique and stable across attempts for this (message, recipient): the basis of the file name.
    pub unique: String,
    /// Headers written before the message (Return-Path:, Received:), LF line endings.
    pub prefix: Vec<u8>,
    /// The message, LF line endings, shared by all recipients of a message.
    pub body: Arc<Vec<u8>>,
    /// An earlier attempt may have completed: look for it before writing.
    pub check_existing: bool,
}

/// What a mailbox holds, for quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub messages: u64,
}

impl Usage {
    /// Whether one more message of `size` octets would pass `quota` (bytes, messages).
    pub fn exceeds(&self, quota: (Option<u64>, Option<u64>), size: u64) -> bool {
        quota.0.is_some_and(|b| self.bytes + size > b)
            || quota.1.is_some_and(|m| self.messages + 1 > m)
    }
}

pub trait MailboxStore: Send + Sync {
    /// Delivers each item; the result at index i belongs to item i. Successes are durable.
    fn deliver(&self, items: &[Delivery]) -> Vec<Result<(), MailboxError>>;

    /// Octets and messages in a mailbox, all folders together.
    fn usage(&self, mailbox: &Mailbox) -> Result<Usage, MailboxError>;
}
