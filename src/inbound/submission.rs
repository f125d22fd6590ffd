//! What an authenticated user may send (RFC 6409): own sender addresses in MAIL FROM and From:, per-user
//! limits (recipients, size, messages per hour), and the fix-ups of RFC 6409 section 8 (Message-ID, Date).

use crate::config::{SenderPolicy, SubmissionSettings};
use crate::directory::{Directory, DirectoryError};
use crate::smtp::{Mailbox, Reply, ReversePath};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);

/// The limits and sender rule of one authenticated user, resolved at AUTH time.
#[derive(Debug, Clone)]
pub struct UserPolicy {
    pub address: String,
    pub sender_policy: SenderPolicy,
    pub max_recipients: usize,
    pub max_messages_per_hour: u32,
    pub max_message_size: usize,
}

pub struct SubmissionPolicy {
    pub settings: SubmissionSettings,
    directory: Directory,
    /// Times of messages accepted per user in the last hour.
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
    message_ids: AtomicU64,
}

/// Whether `user` owns `address`: the address itself, or a subaddress of it (`user+tag@domain`).
pub fn owns(user: &str, address: &str) -> bool {
    let address = address.to_lowercase();
    if address == user.to_lowercase() {
        return true;
    }
    let (Some((local, domain)), Some((ulocal, udomain))) =
        (address.rsplit_once('@'), user.rsplit_once('@'))
    else {
        return false;
    };
    domain.eq_ignore_ascii_case(udomain)
        && local
            .split_once('+')
            .is_some_and(|(base, _)| base.eq_ignore_ascii_case(ulocal))
}

impl SubmissionPolicy {
    pub fn new(settings: SubmissionSettings, directory: Directory) -> SubmissionPolicy {
        SubmissionPolicy {
            settings,
            directory,
            sent: Mutex::new(HashMap::new()),
            message_ids: AtomicU64::new(0),
        }
    }

    /// The user's policy: per-user overrides from the directory, else the [submission] values.
    pub async fn user(&self, address: &str) -> Result<UserPolicy, DirectoryError> {
        let o = self.directory.settings(address).await?.unwrap_or_default();
        let s = &self.settings;
        Ok(UserPolicy {
            address: address.to_lowercase(),
            sender_policy: o.sender_policy.unwrap_or(s.sender_policy),
            max_recipients: o.max_recipients.unwrap_or(s.max_recipients),
            max_messages_per_hour: o.max_messages_per_hour.unwrap_or(s.max_messages_per_hour),
            max_message_size: o.max_message_size.unwrap_or(s.max_message_size),
        })
    }

    /// MAIL FROM of an authenticated user: owned address, size within the user's limit, rate not exceeded.
    pub fn check_mail(
        &self,
        user: &UserPolicy,
        reverse_path: &ReversePath,
        size: Option<usize>,
    ) -> Option<Reply> {
        if let (SenderPolicy::Own, ReversePath::Mailbox(m)) = (user.sender_policy, reverse_path)
            && !owns(&user.address, &m.to_string())
        {
            return Some(Reply::sender_not_owned(
                "MAIL FROM",
                &m.to_string(),
                &user.address,
            ));
        }
        if size.is_some_and(|s| s > user.max_message_size) {
            return Some(Reply::user_message_too_big(user.max_message_size));
        }
        if self.sent_last_hour(&user.address) >= user.max_messages_per_hour as usize {
            return Some(Reply::user_rate_limited(user.max_messages_per_hour));
        }
        None
    }

    fn sent_last_hour(&self, user: &str) -> usize {
        let now = Instant::now();
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let Some(times) = sent.get_mut(user) else {
            return 0;
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            times.pop_front();
        }
        times.len()
    }

    /// Counts an accepted message against the user's hourly limit.
    pub fn record_sent(&self, user: &UserPolicy) {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.entry(user.address.clone())
            .or_default()
            .push_back(Instant::now());
    }

    /// Checks the message itself and applies the RFC 6409 fix-ups; returns the message to queue.
    pub fn check_content(
        &self,
        user: &UserPolicy,
        hostname: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, Reply> {
        if body.len() > user.max_message_size {
            return Err(Reply::user_message_too_big(user.max_message_size));
        }
        if user.sender_policy == SenderPolicy::Own {
            let headers = &body[..find_headers_end(&body)];
            if let Some(msg) = mail_parser::MessageParser::new().parse_headers(headers) {
                for addr in msg
                    .from()
                    .map(|a| a.iter().collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    let Some(address) = addr.address() else {
                        continue;
                    };
                    if !owns(&user.address, address) {
                        return Err(Reply::sender_not_owned("From:", address, &user.address));
                    }
                }
            }
        }
        Ok(self.fix_up(hostname, body))
    }

    /// RFC 6409 8.2 and 8.3: adds Date: and Message-ID: when the message has none.
    pub fn fix_up(&self, hostname: &str, body: Vec<u8>) -> Vec<u8> {
        let headers = &body[..find_headers_end(&body)];
        let (has_id, has_date) = match mail_parser::MessageParser::new().parse_headers(headers) {
            Some(msg) => (msg.message_id().is_some(), msg.date().is_some()),
            None => (false, false),
        };
        if has_id && has_date {
            return body;
        }
        let mut fixed = Vec::with_capacity(body.len() + 128);
        if !has_date {
            fixed.extend_from_slice(
                format!(
                    "Date: {}\r\n",
                    crate::clock::rfc5322_date(crate::clock::unix_now())
                )
                .as_bytes(),
            );
        }
        if !has_id {
            let n = self.message_ids.fetch_add(1, Ordering::Relaxed);
            let id = format!(
                "<{:x}.{n:x}.{:x}@{hostname}>",
                crate::clock::unix_micros(),
                std::process::id()
            );
            fixed.extend_from_slice(format!("Message-ID: {id}\r\n").as_bytes());
        }
        fixed.extend_from_slice(&body);
        fixed
    }
}

/// Octets up to and including the blank line that ends the header section (all of it if there is none).
fn find_headers_end(body: &[u8]) -> usize {
    if body.starts_with(b"\r\n") {
        return 2;
    }
    body.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(body.len(), |i| i + 4)
}

/// Whether the mailbox is in one of our domains (delivered locally rather than relayed).
pub fn is_local(mailbox: &Mailbox, local_domains: &[crate::smtp::Domain]) -> bool {
    local_domains.contains(mailbox.domain())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_includes_subaddresses_only_of_the_same_user() {
        assert!(owns("alice@example.test", "Alice@Example.TEST"));
        assert!(owns("alice@example.test", "alice+lists@example.test"));
        assert!(!owns("alice@example.test", "alicex@example.test"));
        assert!(!owns("alice@example.test", "alice@example.org"));
        assert!(!owns("alice@example.test", "bob+alice@example.test"));
    }

    #[test]
    fn header_section_end() {
        assert_eq!(find_headers_end(b"A: b\r\n\r\nbody"), 8);
        assert_eq!(find_headers_end(b"\r\nbody"), 2);
        assert_eq!(find_headers_end(b"A: b\r\n"), 6);
    }
}
