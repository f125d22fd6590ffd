//! Failed-login throttling per client IP and per account: each failure is answered after a growing delay;
//! `failures_before_block` failures within the window block the IP or account (421 4.7.0) for a while.

use crate::config::AuthSettings;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Entries kept at most; past this, expired ones are dropped first and then the oldest.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Account(String),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

/// What to do after a failed login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Answer 535 after this delay.
    Delay(Duration),
    /// The IP or account is now blocked: answer 421 and close.
    Block,
}

pub struct AuthThrottle {
    settings: AuthSettings,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl AuthThrottle {
    pub fn new(settings: AuthSettings) -> AuthThrottle {
        AuthThrottle {
            settings,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn keys(ip: IpAddr, account: &str) -> [Key; 2] {
        [Key::Ip(ip), Key::Account(account.to_lowercase())]
    }

    /// Whether the IP or the account is blocked now.
    pub fn blocked(&self, ip: IpAddr, account: &str) -> bool {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(ip, account).iter().any(|k| {
            entries
                .get(k)
                .and_then(|e| e.blocked_until)
                .is_some_and(|until| until > now)
        })
    }

    pub fn failed(&self, ip: IpAddr, account: &str) -> AfterFailure {
        let now = Instant::now();
        let s = &self.settings;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| {
                now.duration_since(e.since) < s.window || e.blocked_until.is_some_and(|u| u > now)
            });
        }
        let mut worst = 0;
        let mut block = false;
        for key in Self::keys(ip, account) {
            let e = entries.entry(key).or_insert(Entry {
                failures: 0,
                since: now,
                blocked_until: None,
            });
            if now.duration_since(e.since) >= s.window && e.blocked_until.is_none_or(|u| u <= now) {
                *e = Entry {
                    failures: 0,
                    since: now,
                    blocked_until: None,
                };
            }
            e.failures += 1;
            if e.failures >= s.failures_before_block {
                e.blocked_until = Some(now + s.block);
                block = true;
            }
            worst = worst.max(e.failures);
        }
        if block {
            AfterFailure::Block
        } else {
            AfterFailure::Delay(s.failure_delay * worst.min(8))
        }
    }

    /// A good login clears the account's failures (not the IP's: one right password must not hide a scan).
    pub fn succeeded(&self, account: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(&Key::Account(account.to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> AuthThrottle {
        AuthThrottle::new(AuthSettings {
            failures_before_block: 3,
            window: Duration::from_secs(900),
            block: Duration::from_secs(600),
            failure_delay: Duration::from_secs(1),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn delay_grows_then_blocks_then_expires() {
        let t = throttle();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            t.failed(ip, "alice@example.test"),
            AfterFailure::Delay(Duration::from_secs(1))
        );
        assert_eq!(
            t.failed(ip, "bob@example.test"),
            AfterFailure::Delay(Duration::from_secs(2)),
            "same IP"
        );
        assert!(!t.blocked(ip, "carol@example.test"));
        assert_eq!(t.failed(ip, "carol@example.test"), AfterFailure::Block);
        assert!(
            t.blocked(ip, "dave@example.test"),
            "the IP is blocked for every account"
        );
        assert!(!t.blocked("192.0.2.2".parse().unwrap(), "dave@example.test"));
        tokio::time::advance(Duration::from_secs(601)).await;
        assert!(!t.blocked(ip, "dave@example.test"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_account_is_blocked_across_ips_and_success_clears_it() {
        let t = throttle();
        for i in 1..=2u8 {
            t.failed(IpAddr::from([198, 51, 100, i]), "alice@example.test");
        }
        t.succeeded("Alice@example.test");
        assert_eq!(
            t.failed("203.0.113.9".parse().unwrap(), "alice@example.test"),
            AfterFailure::Delay(Duration::from_secs(1))
        );
        t.failed("203.0.113.10".parse().unwrap(), "alice@example.test");
        assert_eq!(
            t.failed("203.0.113.11".parse().unwrap(), "alice@example.test"),
            AfterFailure::Block
        );
        assert!(t.blocked("203.0.113.12".parse().unwrap(), "ALICE@example.test"));
    }
}
