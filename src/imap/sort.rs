//! SORT (RFC 5256, with RFC 5957's DISPLAYFROM/DISPLAYTO) and THREAD=ORDEREDSUBJECT: the keys of each
//! message, the base subject, and the orderings (THREAD=REFERENCES is in thread.rs). Ties fall back on sequence order as the RFC says.

use super::parse::SortKey;
use crate::mailbox::index::MessageMeta;
use std::cmp::Ordering;

/// What sorting needs of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortData {
    pub seq: u32,
    pub uid: u32,
    pub arrival: i64,
    pub size: u64,
    /// The Date: field in UTC seconds, or the arrival when it is missing or unreadable.
    pub date: i64,
    /// The first address's mailbox (local part), lower-cased.
    pub from: String,
    pub to: String,
    pub cc: String,
    /// The first address's display name, or its address, lower-cased.
    pub display_from: String,
    pub display_to: String,
    pub subject: String,
    /// The subject marked a reply or forward.
    pub reply: bool,
    /// The Message-ID, without its angle brackets.
    pub message_id: Option<String>,
    /// The References (or else the first In-Reply-To) message IDs, oldest first.
    pub references: Vec<String>,
}

impl SortData {
    pub fn of(seq: u32, meta: &MessageMeta, raw: &[u8]) -> SortData {
        let header = super::mime::parse(raw).header;
        let fields = super::mime::fields(header);
        // (mailbox, display): the first address as ENVELOPE has it; DISPLAY* use the decoded display name,
        // or the address when there is none (RFC 5957).
        let first = |name: &str| -> (String, String) {
            let Some((display, mailbox, host)) =
                super::mime::field(&fields, name).and_then(super::mime::first_address)
            else {
                return (String::new(), String::new());
            };
            let mailbox = String::from_utf8_lossy(&mailbox).into_owned();
            let address = match &host {
                Some(h) => format!("{mailbox}@{}", String::from_utf8_lossy(h)),
                None => mailbox.clone(),
            };
            let display = display
                .map(|d| decode_words(&String::from_utf8_lossy(&d)))
                .filter(|d| !d.trim().is_empty())
                .unwrap_or(address);
            (casemap(&mailbox), casemap(display.trim()))
        };
        let (from, display_from) = first("From");
        let (to, display_to) = first("To");
        let (cc, _) = first("Cc");
        let parsed = mail_parser::MessageParser::default().parse_headers(header);
        let subject = parsed
            .as_ref()
            .and_then(|m| m.subject().map(str::to_string))
            .unwrap_or_default();
        let date = parsed
            .as_ref()
            .and_then(|m| m.date())
            .filter(|d| d.is_valid())
            .map(|d| d.to_timestamp())
            .unwrap_or(meta.internal_date);
        let (subject, reply) = base_subject_of(&subject);
        let ids = |name: &str| {
            super::mime::field(&fields, name)
                .map(msg_ids)
                .unwrap_or_default()
        };
        let message_id = ids("Message-ID").into_iter().next();
        let mut references = ids("References");
        if references.is_empty() {
            references = ids("In-Reply-To").into_iter().take(1).collect();
        }
        SortData {
            seq,
            uid: meta.uid,
            arrival: meta.internal_date,
            size: meta.size,
            date,
            from,
            to,
            cc,
            display_from,
            display_to,
            subject,
            reply,
            message_id,
            references,
        }
    }

    fn cmp_by(&self, other: &SortData, key: SortKey) -> Ordering {
        match key {
            SortKey::Arrival => self.arrival.cmp(&other.arrival),
            SortKey::Cc => self.cc.cmp(&other.cc),
            SortKey::Date => self.date.cmp(&other.date),
            SortKey::From => self.from.cmp(&other.from),
            SortKey::Size => self.size.cmp(&other.size),
            SortKey::Subject => self.subject.cmp(&other.subject),
            SortKey::To => self.to.cmp(&other.to),
            SortKey::DisplayFrom => self.display_from.cmp(&other.display_from),
            SortKey::DisplayTo => self.display_to.cmp(&other.display_to),
        }
    }
}

/// Sorts by the keys in order (each possibly reversed), then by sequence number.
pub fn sort(items: &mut [SortData], keys: &[(SortKey, bool)]) {
    items.sort_by(|a, b| {
        for &(key, reverse) in keys {
            let o = a.cmp_by(b, key);
            let o = if reverse { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.seq.cmp(&b.seq)
    });
}

/// The `<id>`s in a field (Message-ID, References, In-Reply-To), brackets removed; at most 1000.
fn msg_ids(value: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(value);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else { break };
        let id: String = after[..close].split_whitespace().collect();
        if !id.is_empty() && out.len() < 1000 {
            out.push(id);
        }
        rest = &after[close + 1..];
    }
    out
}

/// The base subject (RFC 5256 2.1): whitespace collapsed, `Re:`/`Fwd:` leaders, `[blob]`s, `(fwd)` trailers
/// and `[fwd: ...]` wrappers removed, lower-cased for comparison.
pub fn base_subject(subject: &str) -> String {
    base_subject_of(subject).0
}

/// The base subject, and whether the subject marked a reply or forward (a `Re:`/`Fwd:` leader, a `(fwd)`
/// trailer or a `[fwd: ...]` wrapper), which THREAD=REFERENCES uses when it merges threads by subject.
pub fn base_subject_of(subject: &str) -> (String, bool) {
    let mut s: String = subject.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut reply = false;
    for _ in 0..100 {
        // (2) trailers
        loop {
            let t = s.trim_end();
            if t.len() >= 5 && t[t.len() - 5..].eq_ignore_ascii_case("(fwd)") {
                s = t[..t.len() - 5].to_string();
                reply = true;
            } else {
                s = t.to_string();
                break;
            }
        }
        // (3) leaders, repeatedly
        loop {
            let (next, refwd) = strip_leader(&s);
            reply |= refwd;
            if next == s {
                break;
            }
            s = next;
        }
        // (4) a [fwd: ...] wrapper
        let lower = s.to_lowercase();
        if lower.starts_with("[fwd:") && s.ends_with(']') {
            s = s[5..s.len() - 1].trim().to_string();
            reply = true;
            continue;
        }
        break;
    }
    (casemap(&s), reply)
}

/// Comparison form (i;unicode-casemap, RFC 5051, as far as case goes): upper case, so that `[` and `_`
/// sort after the letters as they do for the RFC's comparator.
fn casemap(s: &str) -> String {
    s.to_uppercase()
}

/// A display name with its RFC 2047 encoded words decoded.
fn decode_words(s: &str) -> String {
    let header = format!("Subject: {s}\r\n\r\n");
    mail_parser::MessageParser::default()
        .parse_headers(header.as_bytes())
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| s.to_string())
}

fn strip_blob(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('[')?;
    let end = rest.find(']')?;
    if rest[..end].contains('[') {
        return None;
    }
    Some(rest[end + 1..].trim_start())
}

/// One leader off the front: (the rest, whether it was a `Re:`/`Fwd:`).
fn strip_leader(s: &str) -> (String, bool) {
    let s = s.trim_start();
    // subj-refwd: ("re" / "fw" / "fwd") *WSP [subj-blob] ":"
    let lower = s.to_ascii_lowercase();
    for word in ["fwd", "fw", "re"] {
        if let Some(rest) = lower.strip_prefix(word) {
            let mut rest_orig = &s[s.len() - rest.len()..];
            rest_orig = rest_orig.trim_start();
            if let Some(after) = strip_blob(rest_orig) {
                rest_orig = after;
            }
            if let Some(after) = rest_orig.strip_prefix(':') {
                return (after.trim_start().to_string(), true);
            }
        }
    }
    // A leading [blob], unless it is all there is.
    if let Some(after) = strip_blob(s)
        && !after.is_empty()
    {
        return (after.to_string(), false);
    }
    (s.to_string(), false)
}

/// THREAD=ORDEREDSUBJECT (RFC 5256 3): messages grouped by base subject, each group in date order with the
/// first as the parent of the others, groups ordered by their first message's date. `numbers` picks the
/// sequence number or the UID.
pub fn ordered_subject(items: &mut [SortData], uid: bool) -> String {
    sort(items, &[(SortKey::Subject, false), (SortKey::Date, false)]);
    let mut threads: Vec<Vec<&SortData>> = Vec::new();
    for item in items.iter() {
        match threads.last_mut() {
            Some(t) if t[0].subject == item.subject => t.push(item),
            _ => threads.push(vec![item]),
        }
    }
    threads.sort_by(|a, b| a[0].date.cmp(&b[0].date).then(a[0].seq.cmp(&b[0].seq)));
    let n = |d: &SortData| if uid { d.uid } else { d.seq };
    let mut out = String::new();
    for t in threads {
        out.push('(');
        out.push_str(&n(t[0]).to_string());
        match t.len() {
            1 => {}
            2 => out.push_str(&format!(" {}", n(t[1]))),
            _ => {
                out.push(' ');
                for c in &t[1..] {
                    out.push_str(&format!("({})", n(c)));
                }
            }
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_decoded() {
        assert_eq!(decode_words("=?iso-8859-1?q?foo_aar?="), "foo aar");
        assert_eq!(decode_words("plain name"), "plain name");
    }

    #[test]
    fn base_subjects() {
        for (s, b) in [
            ("Re: hello", "hello"),
            ("RE: Fwd: [list] hello (fwd)", "hello"),
            ("[fwd: Re: hello]", "hello"),
            ("Re [x]: hello  world", "hello world"),
            ("[only blob]", "[only blob]"),
            ("", ""),
            ("re:", ""),
        ] {
            assert_eq!(base_subject(s), b.to_uppercase(), "{s:?}");
        }
    }

    fn data(seq: u32, subject: &str, date: i64, from: &str) -> SortData {
        SortData {
            seq,
            uid: seq * 10,
            arrival: 100 - seq as i64,
            size: seq as u64,
            date,
            from: from.into(),
            to: String::new(),
            cc: String::new(),
            display_from: from.into(),
            display_to: String::new(),
            subject: base_subject(subject),
            reply: base_subject_of(subject).1,
            message_id: None,
            references: Vec::new(),
        }
    }

    #[test]
    fn sorting_and_threads() {
        let mut items = vec![
            data(1, "b", 30, "zed"),
            data(2, "Re: a", 20, "amy"),
            data(3, "a", 10, "amy"),
            data(4, "c", 5, "bob"),
        ];
        sort(&mut items, &[(SortKey::From, false), (SortKey::Date, true)]);
        assert_eq!(
            items.iter().map(|d| d.seq).collect::<Vec<_>>(),
            vec![2, 3, 4, 1]
        );
        sort(&mut items, &[(SortKey::Arrival, false)]);
        assert_eq!(
            items.iter().map(|d| d.seq).collect::<Vec<_>>(),
            vec![4, 3, 2, 1]
        );
        items.push(data(5, "fwd: a", 40, "x"));
        assert_eq!(ordered_subject(&mut items, false), "(4)(3 (2)(5))(1)");
        let mut pair = vec![data(2, "Re: a", 20, "amy"), data(3, "a", 10, "amy")];
        assert_eq!(ordered_subject(&mut pair, true), "(30 20)");
    }
}
