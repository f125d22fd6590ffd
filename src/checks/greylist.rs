//! Greylisting (optional): the first message for a (client network, sender, recipient) triplet gets 451 4.7.1;
//! a retry after `delay` is accepted and the triplet remembered until `expire` after it was last seen.
//! Triplets live in data_dir/greylist.db (SQLite). The decision is a pure function of the times.

use crate::config::GreylistSettings;
use sqlx::SqlitePool;
use std::net::IpAddr;
use std::path::Path;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/checks/migrations");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Seen before, long enough ago: accept.
    Pass,
    /// New, or retried too soon: 451 and try later.
    Defer,
}

/// The decision for a triplet first seen at `first_seen` (if ever and not expired), at `now`.
pub fn decide(
    first_seen: Option<u64>,
    last_seen: Option<u64>,
    now: u64,
    s: &GreylistSettings,
) -> Decision {
    match (first_seen, last_seen) {
        (Some(first), Some(last)) if now.saturating_sub(last) < s.expire.as_secs() => {
            if now.saturating_sub(first) >= s.delay.as_secs() {
                Decision::Pass
            } else {
                Decision::Defer
            }
        }
        _ => Decision::Defer,
    }
}

/// The client network greylisting keys on: /24 for IPv4, /64 for IPv6 (senders with several addresses).
pub fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

pub struct Greylist {
    pool: SqlitePool,
    settings: GreylistSettings,
}

impl Greylist {
    pub async fn open(
        data_dir: &Path,
        settings: GreylistSettings,
    ) -> Result<Greylist, sqlx::Error> {
        let pool = crate::db::open(&data_dir.join("greylist.db"), &MIGRATOR, 2).await?;
        Ok(Greylist { pool, settings })
    }

    /// Looks at (and records) a triplet at `now`.
    pub async fn check(
        &self,
        ip: IpAddr,
        sender: &str,
        recipient: &str,
        now: u64,
    ) -> Result<Decision, sqlx::Error> {
        let net = network(ip);
        let (sender, recipient) = (sender.to_lowercase(), recipient.to_lowercase());
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT first_seen, last_seen FROM triplets WHERE network = ? AND sender = ? AND recipient = ?")
                .bind(&net)
                .bind(&sender)
                .bind(&recipient)
                .fetch_optional(&self.pool)
                .await?;
        let decision = decide(
            row.map(|r| r.0 as u64),
            row.map(|r| r.1 as u64),
            now,
            &self.settings,
        );
        let expired = row.is_some_and(|(_, last)| {
            now.saturating_sub(last as u64) >= self.settings.expire.as_secs()
        });
        if row.is_none() || expired {
            sqlx::query("INSERT OR REPLACE INTO triplets (network, sender, recipient, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)")
                .bind(&net)
                .bind(&sender)
                .bind(&recipient)
                .bind(now as i64)
                .bind(now as i64)
                .execute(&self.pool)
                .await?;
        } else if decision == Decision::Pass {
            sqlx::query("UPDATE triplets SET last_seen = ? WHERE network = ? AND sender = ? AND recipient = ?")
                .bind(now as i64)
                .bind(&net)
                .bind(&sender)
                .bind(&recipient)
                .execute(&self.pool)
                .await?;
        }
        Ok(decision)
    }

    /// Forgets triplets not seen for `expire`.
    pub async fn expire(&self, now: u64) -> Result<u64, sqlx::Error> {
        let cutoff = now.saturating_sub(self.settings.expire.as_secs()) as i64;
        let r = sqlx::query("DELETE FROM triplets WHERE last_seen < ?")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings() -> GreylistSettings {
        GreylistSettings {
            delay: Duration::from_secs(300),
            expire: Duration::from_secs(86400),
        }
    }

    #[test]
    fn new_triplets_wait_the_delay_and_expire() {
        let s = settings();
        assert_eq!(decide(None, None, 1000, &s), Decision::Defer);
        assert_eq!(decide(Some(1000), Some(1000), 1299, &s), Decision::Defer);
        assert_eq!(decide(Some(1000), Some(1000), 1300, &s), Decision::Pass);
        assert_eq!(
            decide(Some(1000), Some(1300), 1300 + 86400, &s),
            Decision::Defer,
            "expired"
        );
    }

    #[tokio::test]
    async fn a_retry_after_the_delay_passes_with_an_injected_clock() {
        let dir = tempfile::tempdir().unwrap();
        let g = Greylist::open(dir.path(), settings()).await.unwrap();
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        assert_eq!(
            g.check(ip, "a@x.test", "b@y.test", 1000).await.unwrap(),
            Decision::Defer
        );
        assert_eq!(
            g.check(ip, "a@x.test", "b@y.test", 1100).await.unwrap(),
            Decision::Defer
        );
        // Another address of the same /24 retries: same triplet.
        let other: IpAddr = "192.0.2.99".parse().unwrap();
        assert_eq!(
            g.check(other, "A@x.test", "b@y.test", 1301).await.unwrap(),
            Decision::Pass
        );
        assert_eq!(
            g.check(ip, "a@x.test", "c@y.test", 1301).await.unwrap(),
            Decision::Defer,
            "new recipient"
        );
        assert_eq!(g.expire(1301 + 86400 * 2).await.unwrap(), 2);
    }
}
