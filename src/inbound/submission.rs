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
    /// Messages per user in the last hour: accepted ones, and ones reserved at MAIL and not yet stored.
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
    message_ids: AtomicU64,
    /// `[domains] subaddress_separator`: `alice+tag@` belongs to alice.
    separator: Option<String>,
}

/// Whether `user` owns `address`: the address itself, or a subaddress of it (`user<sep>tag@domain`, with
/// the configured separator; none when subaddressing is off).
pub fn owns(user: &str, address: &str, separator: Option<&str>) -> bool {
    let address = address.to_lowercase();
    if address == user.to_lowercase() {
        return true;
    }
    let (Some((local, domain)), Some((ulocal, udomain)), Some(sep)) =
        (address.rsplit_once('@'), user.rsplit_once('@'), separator)
    else {
        return false;
    };
    domain.eq_ignore_ascii_case(udomain)
        && local
            .split_once(sep)
            .is_some_and(|(base, _)| base.eq_ignore_ascii_case(ulocal))
}

/// A message counted against a user's hourly limit from MAIL on, so that parallel sessions cannot all pass
/// the check before any of them is counted. Dropped without [`Reservation::keep`] (RSET, a refusal, a
/// dropped connection) it is given back.
pub struct Reservation {
    policy: std::sync::Arc<SubmissionPolicy>,
    user: String,
    at: Instant,
    kept: bool,
}

impl Reservation {
    /// The message was stored: it stays counted.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut sent = self.policy.sent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(times) = sent.get_mut(&self.user) {
            if let Some(i) = times.iter().rposition(|t| *t == self.at) {
                times.remove(i);
            }
            if times.is_empty() {
                sent.remove(&self.user);
            }
        }
    }
}

impl SubmissionPolicy {
    pub fn new(
        settings: SubmissionSettings,
        directory: Directory,
        separator: Option<String>,
    ) -> SubmissionPolicy {
        SubmissionPolicy {
            settings,
            directory,
            sent: Mutex::new(HashMap::new()),
            message_ids: AtomicU64::new(0),
            separator,
        }
    }

    pub fn owns(&self, user: &str, address: &str) -> bool {
        owns(user, address, self.separator.as_deref())
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

    /// MAIL FROM of an authenticated user: owned address, size within the user's limit, rate not exceeded;
    /// the message is reserved against the hourly limit at once.
    pub fn check_mail(
        self: &std::sync::Arc<Self>,
        user: &UserPolicy,
        reverse_path: &ReversePath,
        size: Option<usize>,
    ) -> Result<Reservation, Reply> {
        if let (SenderPolicy::Own, ReversePath::Mailbox(m)) = (user.sender_policy, reverse_path)
            && !self.owns(&user.address, &m.to_string())
        {
            return Err(Reply::sender_not_owned(
                "MAIL FROM",
                &m.to_string(),
                &user.address,
            ));
        }
        if size.is_some_and(|s| s > user.max_message_size) {
            return Err(Reply::user_message_too_big(user.max_message_size));
        }
        self.reserve(user)
            .ok_or_else(|| Reply::user_rate_limited(user.max_messages_per_hour))
    }

    /// Checks the hourly limit and counts one more message, in one step under the lock.
    fn reserve(self: &std::sync::Arc<Self>, user: &UserPolicy) -> Option<Reservation> {
        let now = Instant::now();
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        // Users who sent nothing for an hour are forgotten, so the map holds only recent senders.
        if sent.len() > 1024 {
            sent.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < HOUR));
        }
        let times = sent.entry(user.address.clone()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            times.pop_front();
        }
        if times.len() >= user.max_messages_per_hour as usize {
            return None;
        }
        times.push_back(now);
        Some(Reservation {
            policy: self.clone(),
            user: user.address.clone(),
            at: now,
            kept: false,
        })
    }

    /// Checks the message itself and applies the RFC 6409 fix-ups; returns the message to queue. `body`
    /// holds at least the header section (a spooled message's head); `size` is the whole message's.
    pub fn check_content(
        &self,
        user: &UserPolicy,
        hostname: &str,
        body: Vec<u8>,
        size: usize,
    ) -> Result<Vec<u8>, Reply> {
        if size > user.max_message_size {
            return Err(Reply::user_message_too_big(user.max_message_size));
        }
        // RFC 5322 3.6: one From: and at most one Sender:. Mail clients show the first From:, and a parser
        // may read the last one: two of them would let the sender check look at one and the reader at another.
        for name in ["From", "Sender"] {
            if crate::message::count(&body, name) > 1 {
                return Err(Reply::duplicate_header(name));
            }
        }
        if user.sender_policy == SenderPolicy::Own {
            let headers = crate::message::header_block(&body);
            if let Some(msg) = mail_parser::MessageParser::new().parse_headers(headers) {
                let mut addresses: Vec<(&str, String)> = Vec::new();
                for (what, list) in [("From:", msg.from()), ("Sender:", msg.sender())] {
                    for addr in list
                        .map(|a| a.iter().collect::<Vec<_>>())
                        .unwrap_or_default()
                    {
                        if let Some(a) = addr.address() {
                            addresses.push((what, a.to_string()));
                        }
                    }
                }
                // Resent-From: (RFC 5322 3.6.6) names whoever resends: it must be the user too.
                for field in msg.header_values(mail_parser::HeaderName::ResentFrom) {
                    if let mail_parser::HeaderValue::Address(a) = field {
                        for addr in a.iter() {
                            if let Some(a) = addr.address() {
                                addresses.push(("Resent-From:", a.to_string()));
                            }
                        }
                    }
                }
                for (what, address) in addresses {
                    if !self.owns(&user.address, &address) {
                        return Err(Reply::sender_not_owned(what, &address, &user.address));
                    }
                }
            }
        }
        Ok(self.fix_up(hostname, body))
    }

    /// RFC 6409 8.2 and 8.3: adds Date: and Message-ID: when the message has none.
    pub fn fix_up(&self, hostname: &str, body: Vec<u8>) -> Vec<u8> {
        let headers = crate::message::header_block(&body);
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

/// Whether the mailbox is in one of our domains (delivered locally rather than relayed).
pub fn is_local(mailbox: &Mailbox, local_domains: &[crate::smtp::Domain]) -> bool {
    local_domains.contains(mailbox.domain())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_includes_subaddresses_only_of_the_same_user() {
        let plus = Some("+");
        assert!(owns("alice@example.test", "Alice@Example.TEST", plus));
        assert!(owns("alice@example.test", "alice+lists@example.test", plus));
        assert!(!owns("alice@example.test", "alicex@example.test", plus));
        assert!(!owns("alice@example.test", "alice@example.org", plus));
        assert!(!owns("alice@example.test", "bob+alice@example.test", plus));
        // The configured separator, not a hard-coded '+'.
        assert!(owns(
            "alice@example.test",
            "alice-lists@example.test",
            Some("-")
        ));
        assert!(!owns(
            "alice@example.test",
            "alice+lists@example.test",
            Some("-")
        ));
        assert!(!owns(
            "alice@example.test",
            "alice+lists@example.test",
            None
        ));
    }
}
