//! Failed-login throttling per client IP and per account: each failure is answered after a growing delay;
//! `failures_before_block` failures within the window block the IP or account (421 4.7.0) for a while.
//!
//! An attempt counts as a failure from the moment it starts ([`AuthThrottle::begin`]) and is taken back
//! only when the password was right, so that attempts made in parallel cannot all slip under the limit.
//! Clients are keyed by IPv4 address or IPv6 /64 ([`client_key`]): one host owns a whole /64.

use crate::config::AuthSettings;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Entries kept at most; past this, expired ones are dropped first and then the oldest.
const MAX_ENTRIES: usize = 100_000;

/// Expired entries are swept at most this often (not on every failure).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The address a client is counted by: an IPv4 address (IPv4-mapped IPv6 included) or an IPv6 /64.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Account(String),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// Attempts begun and not yet decided: they count against the limit until they are.
    pending: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

/// Whether an attempt may go on to the password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    Go,
    /// Failures plus attempts in progress reach the limit: refused for now (454), nothing checked.
    Busy,
    /// The client or account is blocked (421).
    Blocked,
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
    entries: Mutex<Entries>,
}

struct Entries {
    map: HashMap<Key, Entry>,
    swept: Instant,
}

impl AuthThrottle {
    pub fn new(settings: AuthSettings) -> AuthThrottle {
        AuthThrottle {
            settings,
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    fn keys(ip: IpAddr, account: &str) -> [Key; 2] {
        [
            Key::Ip(client_key(ip)),
            Key::Account(account.to_lowercase()),
        ]
    }

    /// Whether the IP or the account is blocked now.
    pub fn blocked(&self, ip: IpAddr, account: &str) -> bool {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Self::keys(ip, account).iter().any(|k| {
            entries
                .map
                .get(k)
                .and_then(|e| e.blocked_until)
                .is_some_and(|until| until > now)
        })
    }

    /// Counts an attempt before its password is checked: while it is in progress it weighs like a failure,
    /// so parallel attempts cannot all pass the limit. [`Self::failed`] or [`Self::succeeded`] decide it.
    pub fn begin(&self, ip: IpAddr, account: &str) -> Begin {
        let now = Instant::now();
        let s = &self.settings;
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Self::sweep(&mut guard, now, s);
        let mut keys = Vec::with_capacity(2);
        for key in Self::keys(ip, account) {
            let e = Self::entry(&mut guard.map, key.clone(), now, s);
            if e.blocked_until.is_some_and(|u| u > now) {
                return Begin::Blocked;
            }
            if e.failures + e.pending >= s.failures_before_block {
                return Begin::Busy;
            }
            keys.push(key);
        }
        for key in keys {
            if let Some(e) = guard.map.get_mut(&key) {
                e.pending += 1;
            }
        }
        Begin::Go
    }

    fn entry<'a>(
        map: &'a mut HashMap<Key, Entry>,
        key: Key,
        now: Instant,
        s: &AuthSettings,
    ) -> &'a mut Entry {
        let e = map.entry(key).or_insert(Entry {
            failures: 0,
            pending: 0,
            since: now,
            blocked_until: None,
        });
        if now.duration_since(e.since) >= s.window && e.blocked_until.is_none_or(|u| u <= now) {
            e.failures = 0;
            e.since = now;
            e.blocked_until = None;
        }
        e
    }

    fn sweep(entries: &mut Entries, now: Instant, s: &AuthSettings) {
        if now.duration_since(entries.swept) < SWEEP_EVERY && entries.map.len() < MAX_ENTRIES {
            return;
        }
        entries.swept = now;
        entries.map.retain(|_, e| {
            e.pending > 0
                || now.duration_since(e.since) < s.window
                || e.blocked_until.is_some_and(|u| u > now)
        });
        // Still full of live entries (a flood of fresh addresses): the oldest go first.
        if entries.map.len() >= MAX_ENTRIES {
            let mut since: Vec<Instant> = entries.map.values().map(|e| e.since).collect();
            since.sort();
            let cut = since[since.len() - MAX_ENTRIES / 2];
            entries.map.retain(|_, e| e.since >= cut || e.pending > 0);
        }
    }

    /// A failed attempt (begun or not): the delay to answer it after, or the block it causes.
    pub fn failed(&self, ip: IpAddr, account: &str) -> AfterFailure {
        let now = Instant::now();
        let s = &self.settings;
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Self::sweep(&mut guard, now, s);
        let entries = &mut *guard;
        let entries = &mut entries.map;
        let mut worst = 0;
        let mut block = false;
        for key in Self::keys(ip, account) {
            let e = Self::entry(entries, key, now, s);
            e.pending = e.pending.saturating_sub(1);
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

    /// A good login clears the account's failures and takes back the IP's count for this attempt (not its
    /// earlier failures: one right password must not hide a scan).
    pub fn succeeded(&self, ip: IpAddr, account: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.map.get_mut(&Key::Account(account.to_lowercase())) {
            e.failures = 0;
            e.pending = e.pending.saturating_sub(1);
        }
        if let Some(e) = entries.map.get_mut(&Key::Ip(client_key(ip))) {
            e.pending = e.pending.saturating_sub(1);
        }
    }

    /// An attempt that was begun but decided nothing (a server-side error).
    pub fn abandoned(&self, ip: IpAddr, account: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for key in Self::keys(ip, account) {
            if let Some(e) = entries.map.get_mut(&key) {
                e.pending = e.pending.saturating_sub(1);
            }
        }
    }

    /// Entries held now (for tests of the bound).
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
            parallel_checks: 4,
            login_cache: Duration::ZERO,
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
        t.succeeded("198.51.100.2".parse().unwrap(), "Alice@example.test");
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

    #[test]
    fn an_ipv6_64_is_one_client() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(
            client_key(a),
            client_key("2001:db8:1:3::1".parse().unwrap())
        );
        assert_eq!(
            client_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_attempts_are_counted_before_they_are_checked() {
        let t = throttle();
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        // Attempts begun together (same /64): the fourth waits for the first three to be decided.
        for _ in 0..3 {
            assert_eq!(t.begin(ip, "alice@example.test"), Begin::Go);
        }
        assert_eq!(
            t.begin("2001:db8::2".parse().unwrap(), "bob@example.test"),
            Begin::Busy
        );
        t.failed(ip, "alice@example.test");
        t.failed(ip, "alice@example.test");
        assert_eq!(t.failed(ip, "alice@example.test"), AfterFailure::Block);
        assert_eq!(
            t.begin("2001:db8::ffff".parse().unwrap(), "carol@example.test"),
            Begin::Blocked
        );
        // A good login gives its place back and clears the account.
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(t.begin(other, "dave@example.test"), Begin::Go);
        t.succeeded(other, "dave@example.test");
        for _ in 0..3 {
            assert_eq!(t.begin(other, "dave@example.test"), Begin::Go);
            t.succeeded(other, "dave@example.test");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept() {
        let t = throttle();
        for i in 0..50u8 {
            t.failed(IpAddr::from([192, 0, 2, i]), &format!("u{i}@example.test"));
        }
        assert_eq!(t.len(), 100);
        tokio::time::advance(Duration::from_secs(901)).await;
        t.failed("198.51.100.1".parse().unwrap(), "x@example.test");
        assert_eq!(t.len(), 2);
    }
}
