//! SEARCH matching (RFC 9051 6.4.4): flags, sizes, dates, UIDs and sequence sets from the index; header and
//! body text, case-insensitive and MIME-decoded, from the message when a key needs it.

use super::parse::{SearchKey, SeqSet};
use crate::mailbox::index::{MessageMeta, flag};

/// What SEARCH knows of one message without reading it.
pub struct Candidate<'a> {
    pub seq: u32,
    pub meta: &'a MessageMeta,
    pub recent: bool,
}

/// The folder around the candidates.
pub struct Context<'a> {
    pub max_seq: u32,
    pub max_uid: u32,
    /// UIDs of the last SEARCH ... RETURN (SAVE).
    pub saved: &'a [u32],
}

/// A message's text, decoded once for all the keys that need it.
pub struct Text {
    /// (lower-cased field name, raw value, decoded value), lower-cased values.
    pub headers: Vec<(String, String, String)>,
    /// Decoded text of the body parts, lower-cased.
    pub body: String,
    /// The Date: field as days since 1970, in its own time zone.
    pub sent_day: Option<i64>,
}

impl Text {
    pub fn of(raw: &[u8]) -> Text {
        let entity = super::mime::parse(raw);
        let parsed = mail_parser::MessageParser::default().parse(raw);
        let mut headers = Vec::new();
        for (name, value) in super::mime::fields(entity.header) {
            let raw_v = String::from_utf8_lossy(&value).to_lowercase();
            headers.push((name.to_ascii_lowercase(), raw_v, String::new()));
        }
        let mut body = String::new();
        let mut sent_day = None;
        if let Some(m) = &parsed {
            for h in m.headers() {
                let decoded = header_text(h.value());
                let name = h.name().to_ascii_lowercase();
                if let Some(slot) = headers
                    .iter_mut()
                    .find(|(n, _, d)| *n == name && d.is_empty())
                {
                    slot.2 = decoded.to_lowercase();
                }
            }
            for i in 0..m.text_body_count().max(m.html_body_count()) {
                if let Some(t) = m.body_text(i) {
                    body.push_str(&t.to_lowercase());
                    body.push('\n');
                }
            }
            for part in m.attachments() {
                if let Some(t) = part.text_contents() {
                    body.push_str(&t.to_lowercase());
                }
            }
            if let Some(d) = m.date() {
                sent_day = Some(super::parse::days_from_civil(
                    d.year as i64,
                    d.month as i64,
                    d.day as i64,
                ));
            }
        }
        if parsed.is_none() || body.is_empty() {
            body = String::from_utf8_lossy(entity.body).to_lowercase();
        }
        Text {
            headers,
            body,
            sent_day,
        }
    }

    fn header_has(&self, name: &str, needle: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.headers.iter().any(|(n, raw, dec)| {
            *n == name && (needle.is_empty() || raw.contains(needle) || dec.contains(needle))
        })
    }
}

fn header_text(v: &mail_parser::HeaderValue) -> String {
    use mail_parser::HeaderValue as H;
    match v {
        H::Text(t) => t.to_string(),
        H::TextList(l) => l.join(" "),
        H::Address(a) => a
            .iter()
            .map(|x| {
                format!(
                    "{} <{}>",
                    x.name.as_deref().unwrap_or(""),
                    x.address.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        H::DateTime(d) => d.to_rfc822(),
        H::ContentType(c) => c.ctype().to_string(),
        _ => String::new(),
    }
}

/// Whether any key needs the message's text.
pub fn needs_text(key: &SearchKey) -> bool {
    match key {
        SearchKey::Header(..)
        | SearchKey::Body(_)
        | SearchKey::Text(_)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_) => true,
        SearchKey::And(keys) => keys.iter().any(needs_text),
        SearchKey::Or(a, b) => needs_text(a) || needs_text(b),
        SearchKey::Not(a) => needs_text(a),
        _ => false,
    }
}

/// Whether a MODSEQ key is used (the result then carries `(MODSEQ n)`).
pub fn uses_modseq(key: &SearchKey) -> bool {
    match key {
        SearchKey::ModSeq(_) => true,
        SearchKey::And(keys) => keys.iter().any(uses_modseq),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::Not(a) => uses_modseq(a),
        _ => false,
    }
}

fn in_set(set: &SeqSet, n: u32, largest: u32, saved: &[u32], by_uid: bool, uid: u32) -> bool {
    match set {
        SeqSet::Ranges(r) => SeqSet::contains(r, n, largest),
        SeqSet::Saved => {
            by_uid && saved.binary_search(&uid).is_ok()
                || !by_uid && saved.binary_search(&uid).is_ok()
        }
    }
}

/// Whether a message matches; `now` is Unix seconds (OLDER/YOUNGER).
pub fn matches(
    key: &SearchKey,
    c: &Candidate,
    ctx: &Context,
    text: Option<&Text>,
    now: i64,
) -> bool {
    let m = c.meta;
    let day = m.internal_date.div_euclid(86400);
    let has_flag = |name: &str| match flag::NAMES
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
    {
        Some((bit, _)) => m.flags.system & bit != 0,
        None if name.eq_ignore_ascii_case("\\Recent") => c.recent,
        None => m.flags.has_keyword(name),
    };
    let needle = |s: &str| s.to_lowercase();
    match key {
        SearchKey::All => true,
        SearchKey::And(keys) => keys.iter().all(|k| matches(k, c, ctx, text, now)),
        SearchKey::Or(a, b) => matches(a, c, ctx, text, now) || matches(b, c, ctx, text, now),
        SearchKey::Not(a) => !matches(a, c, ctx, text, now),
        SearchKey::Seq(set) => in_set(set, c.seq, ctx.max_seq, ctx.saved, false, m.uid),
        SearchKey::Uid(set) => match set {
            SeqSet::Ranges(r) => SeqSet::contains(r, m.uid, ctx.max_uid),
            SeqSet::Saved => ctx.saved.binary_search(&m.uid).is_ok(),
        },
        SearchKey::Flag(name, set) => has_flag(name) == *set,
        SearchKey::New => c.recent && m.flags.system & flag::SEEN == 0,
        SearchKey::Old => !c.recent,
        SearchKey::Recent => c.recent,
        SearchKey::Larger(n) => m.size > *n,
        SearchKey::Smaller(n) => m.size < *n,
        SearchKey::Before(d) => day < *d,
        SearchKey::On(d) => day == *d,
        SearchKey::Since(d) => day >= *d,
        SearchKey::SentBefore(d) => text.and_then(|t| t.sent_day).is_some_and(|s| s < *d),
        SearchKey::SentOn(d) => text.and_then(|t| t.sent_day).is_some_and(|s| s == *d),
        SearchKey::SentSince(d) => text.and_then(|t| t.sent_day).is_some_and(|s| s >= *d),
        SearchKey::Header(name, v) => text.is_some_and(|t| t.header_has(name, &needle(v))),
        SearchKey::Body(v) => text.is_some_and(|t| t.body.contains(&needle(v))),
        SearchKey::Text(v) => text.is_some_and(|t| {
            let n = needle(v);
            t.body.contains(&n)
                || t.headers.iter().any(|(name, raw, dec)| {
                    name.contains(&n) || raw.contains(&n) || dec.contains(&n)
                })
        }),
        SearchKey::ModSeq(n) => m.modseq >= *n,
        SearchKey::Older(s) => now - m.internal_date >= *s as i64,
        SearchKey::Younger(s) => now - m.internal_date <= *s as i64,
    }
}
