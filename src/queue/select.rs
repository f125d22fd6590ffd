//! Picking queued messages for `tern queue` bulk operations (`--domain`, `--sender`, `--older`), the
//! qshape-like summary, and ages as people read them. Pure functions over [`Listed`] rows.

use super::Listed;
use std::collections::BTreeMap;
use std::fmt;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("{0:?} is not an age: write a number and a unit, as 90s, 30m, 4h, 2d or 1w")]
    Age(String),
    #[error("{0:?} is not a domain")]
    Domain(String),
    #[error("{0:?} is not a sender: write an address, @domain, or <> for the null sender")]
    Sender(String),
}

/// Which sender a selection matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderMatch {
    /// `<>`: DSNs and other mail with the null reverse-path.
    Null,
    /// `@example.com`: any sender at that domain.
    Domain(String),
    /// One address, compared without case.
    Address(String),
}

/// Messages selected by every given criterion (all of them must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// A recipient still queued at this domain (lower case).
    pub domain: Option<String>,
    pub sender: Option<SenderMatch>,
    /// Received at least this many seconds ago.
    pub older: Option<u64>,
}

impl Selection {
    pub fn parse(
        domain: Option<&str>,
        sender: Option<&str>,
        older: Option<&str>,
    ) -> Result<Selection, SelectError> {
        let domain = domain
            .map(|d| {
                let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
                let ok = !d.is_empty()
                    && d.len() <= 253
                    && d.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b >= 0x80);
                if ok {
                    Ok(d)
                } else {
                    Err(SelectError::Domain(d))
                }
            })
            .transpose()?;
        let sender = sender
            .map(|s| {
                let s = s.trim();
                if s == "<>" || s.is_empty() {
                    Ok(SenderMatch::Null)
                } else if let Some(d) = s.strip_prefix('@') {
                    if d.is_empty() || d.contains('@') {
                        Err(SelectError::Sender(s.into()))
                    } else {
                        Ok(SenderMatch::Domain(d.to_ascii_lowercase()))
                    }
                } else {
                    let a = s.trim_start_matches('<').trim_end_matches('>');
                    if a.contains('@') && !a.chars().any(char::is_control) {
                        Ok(SenderMatch::Address(a.to_ascii_lowercase()))
                    } else {
                        Err(SelectError::Sender(s.into()))
                    }
                }
            })
            .transpose()?;
        let older = older.map(parse_age).transpose()?;
        Ok(Selection {
            domain,
            sender,
            older,
        })
    }

    /// No criterion given: a bulk operation would take the whole queue.
    pub fn is_empty(&self) -> bool {
        self.domain.is_none() && self.sender.is_none() && self.older.is_none()
    }

    pub fn matches(&self, m: &Listed, now: u64) -> bool {
        let domain_ok = self.domain.as_deref().is_none_or(|d| {
            m.recipients
                .iter()
                .any(|r| r.state == "queued" && domain_of(&r.forward_path).eq_ignore_ascii_case(d))
        });
        let sender_ok = self.sender.as_ref().is_none_or(|s| match s {
            SenderMatch::Null => m.reverse_path.is_empty(),
            SenderMatch::Domain(d) => {
                !m.reverse_path.is_empty() && domain_of(&m.reverse_path).eq_ignore_ascii_case(d)
            }
            SenderMatch::Address(a) => m.reverse_path.eq_ignore_ascii_case(a),
        });
        let older_ok = self
            .older
            .is_none_or(|o| now.saturating_sub(m.received_at.max(0) as u64) >= o);
        domain_ok && sender_ok && older_ok
    }
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// `90s`, `30m`, `4h`, `2d`, `1w` (a bare number is seconds) as seconds.
pub fn parse_age(s: &str) -> Result<u64, SelectError> {
    let t = s.trim();
    let bad = || SelectError::Age(s.to_string());
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

/// Seconds as the two largest units: `45s`, `12m5s`, `3h12m`, `2d4h`.
pub fn human_age(secs: u64) -> String {
    let units = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let Some(first) = units.iter().position(|(u, _)| secs >= *u) else {
        return "0s".into();
    };
    let (u1, n1) = units[first];
    let mut out = format!("{}{n1}", secs / u1);
    if let Some((u2, n2)) = units.get(first + 1) {
        let rest = (secs % u1) / u2;
        if rest > 0 {
            out.push_str(&format!("{rest}{n2}"));
        }
    }
    out
}

/// qshape's age buckets, in minutes: a message falls in the first bucket its age is below.
pub const BUCKETS_MIN: [u64; 10] = [5, 10, 20, 40, 80, 160, 320, 640, 1280, u64::MAX];

/// Messages per destination domain and age bucket (a message counts once in each domain it still has a
/// queued recipient at), with the totals in the first row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub rows: Vec<(String, [u64; BUCKETS_MIN.len()])>,
}

impl Summary {
    pub fn of(messages: &[Listed], now: u64) -> Summary {
        let mut by_domain: BTreeMap<String, [u64; BUCKETS_MIN.len()]> = BTreeMap::new();
        let mut total = [0u64; BUCKETS_MIN.len()];
        for m in messages {
            let minutes = now.saturating_sub(m.received_at.max(0) as u64) / 60;
            let b = BUCKETS_MIN.iter().position(|&l| minutes < l).unwrap_or(0);
            let mut domains: Vec<String> = m
                .recipients
                .iter()
                .filter(|r| r.state == "queued")
                .map(|r| domain_of(&r.forward_path).to_ascii_lowercase())
                .collect();
            domains.sort();
            domains.dedup();
            if domains.is_empty() {
                continue;
            }
            total[b] += 1;
            for d in domains {
                by_domain.entry(d).or_default()[b] += 1;
            }
        }
        let mut rows: Vec<(String, [u64; BUCKETS_MIN.len()])> = by_domain.into_iter().collect();
        // The busiest destinations first, as qshape lists them.
        rows.sort_by(|a, b| {
            b.1.iter()
                .sum::<u64>()
                .cmp(&a.1.iter().sum::<u64>())
                .then(a.0.cmp(&b.0))
        });
        rows.insert(0, ("TOTAL".into(), total));
        Summary { rows }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let labels = bucket_labels();
        serde_json::Value::Array(
            self.rows
                .iter()
                .map(|(d, counts)| {
                    let buckets: serde_json::Map<String, serde_json::Value> = labels
                        .iter()
                        .zip(counts)
                        .map(|(l, n)| (l.clone(), (*n).into()))
                        .collect();
                    serde_json::json!({
                        "domain": d, "total": counts.iter().sum::<u64>(), "minutes": buckets,
                    })
                })
                .collect(),
        )
    }
}

/// Column heads: the upper bound of each bucket in minutes (`1280+` for the last).
fn bucket_labels() -> Vec<String> {
    BUCKETS_MIN
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            if l == u64::MAX {
                format!("{}+", BUCKETS_MIN[i - 1])
            } else {
                l.to_string()
            }
        })
        .collect()
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .rows
            .iter()
            .map(|(d, _)| d.len())
            .max()
            .unwrap_or(5)
            .max(6);
        write!(f, "{:>width$} {:>6}", "", "T")?;
        for l in bucket_labels() {
            write!(f, " {l:>6}")?;
        }
        writeln!(f)?;
        for (d, counts) in &self.rows {
            write!(f, "{d:>width$} {:>6}", counts.iter().sum::<u64>())?;
            for n in counts {
                write!(f, " {n:>6}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::ListedRecipient;

    fn listed(id: &str, sender: &str, age: u64, rcpts: &[(&str, &str)]) -> Listed {
        Listed {
            id: id.into(),
            received_at: (1_000_000 - age) as i64,
            reverse_path: sender.into(),
            size: 10,
            held: false,
            recipients: rcpts
                .iter()
                .map(|(a, s)| ListedRecipient {
                    forward_path: (*a).into(),
                    transport: "remote".into(),
                    state: (*s).into(),
                    attempts: 1,
                    next_attempt: 0,
                    last_reply: None,
                })
                .collect(),
        }
    }

    #[test]
    fn ages_read_and_print_as_people_write_them() {
        assert_eq!(parse_age("90s"), Ok(90));
        assert_eq!(parse_age("30m"), Ok(1800));
        assert_eq!(parse_age("2d"), Ok(172_800));
        assert_eq!(parse_age("1w"), Ok(604_800));
        assert_eq!(parse_age("15"), Ok(15));
        for bad in ["", "m", "3x", "-1h", "1.5h", "99999999999999999999w", "4 h"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        assert_eq!(human_age(0), "0s");
        assert_eq!(human_age(45), "45s");
        assert_eq!(human_age(725), "12m5s");
        assert_eq!(human_age(3600), "1h");
        assert_eq!(human_age(11_520), "3h12m");
        assert_eq!(human_age(187_200), "2d4h");
    }

    #[test]
    fn a_selection_needs_every_criterion() {
        let now = 1_000_000;
        let a = listed("A", "bob@client.test", 7200, &[("x@slow.test", "queued")]);
        let b = listed(
            "B",
            "",
            60,
            &[("y@slow.test", "queued"), ("z@ok.test", "delivered")],
        );
        let c = listed("C", "Eve@Client.TEST", 10, &[("w@slow.test", "failed")]);
        let sel = |d, s, o| Selection::parse(d, s, o).unwrap();
        let pick = |s: &Selection| -> Vec<String> {
            [&a, &b, &c]
                .iter()
                .filter(|m| s.matches(m, now))
                .map(|m| m.id.clone())
                .collect()
        };
        assert_eq!(pick(&sel(Some("SLOW.test."), None, None)), ["A", "B"]);
        // Only recipients still queued count: C's is final, B's ok.test one is delivered.
        assert!(pick(&sel(Some("ok.test"), None, None)).is_empty());
        assert_eq!(pick(&sel(None, Some("<>"), None)), ["B"]);
        assert_eq!(pick(&sel(None, Some("@client.test"), None)), ["A", "C"]);
        assert_eq!(pick(&sel(None, Some("<eve@client.test>"), None)), ["C"]);
        assert_eq!(pick(&sel(None, None, Some("1h"))), ["A"]);
        assert_eq!(pick(&sel(Some("slow.test"), None, Some("30s"))), ["A", "B"]);
        assert!(sel(None, None, None).is_empty());
        assert!(Selection::parse(Some("a/b"), None, None).is_err());
        assert!(Selection::parse(None, Some("nobody"), None).is_err());
        assert!(Selection::parse(None, Some("@"), None).is_err());
    }

    #[test]
    fn the_summary_counts_messages_per_destination_and_age() {
        let now = 1_000_000;
        let ms = [
            listed(
                "A",
                "s@c.test",
                60,
                &[("a@one.test", "queued"), ("b@two.test", "queued")],
            ),
            listed(
                "B",
                "s@c.test",
                3 * 3600,
                &[("a@one.test", "queued"), ("c@one.test", "queued")],
            ),
            listed("C", "s@c.test", 30 * 3600, &[("a@two.test", "delivered")]),
        ];
        let s = Summary::of(&ms, now);
        let row = |d: &str| s.rows.iter().find(|(n, _)| n == d).unwrap().1;
        assert_eq!(s.rows[0].0, "TOTAL");
        assert_eq!(row("TOTAL").iter().sum::<u64>(), 2);
        assert_eq!(row("one.test")[0], 1);
        assert_eq!(row("one.test")[6], 1, "3 h falls below 320 minutes");
        assert_eq!(row("two.test").iter().sum::<u64>(), 1);
        assert_eq!(s.rows[1].0, "one.test", "busiest first");
        let text = s.to_string();
        assert!(text.lines().next().unwrap().contains("1280+"), "{text}");
        assert_eq!(s.to_json()[1]["minutes"]["320"], 1);
    }
}
