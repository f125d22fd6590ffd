//! The message as a script sees it: header fields (unfolded, MIME-decoded; changed by editheader),
//! addresses in them, and the body (raw, by content type, or as text).

use super::ast::BodyTransform;
use mail_parser::MimeHeaders;

/// One header field: its name as written and its raw value (after the colon, CRLF folds kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: String,
}

/// Header fields a script may not add or delete (RFC 5293 section 6: trace fields; and the
/// Auto-Submitted field that keeps auto-replies from looping).
pub fn protected(name: &str) -> bool {
    ["received", "auto-submitted"]
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
        // The redirect loop guard (and whatever else tern marks with X-Sieve-) is not the script's.
        || name
            .get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case("x-sieve-"))
}

/// Octets of the body the body test looks at, at most.
pub const BODY_LIMIT: usize = 1024 * 1024;

pub struct MessageView<'a> {
    /// The message with CRLF line endings.
    raw: &'a [u8],
    pub fields: Vec<Field>,
    /// Whether editheader changed the fields.
    pub edited: bool,
    body_at: usize,
    parsed: Option<Option<mail_parser::Message<'a>>>,
    size: u64,
}

impl<'a> MessageView<'a> {
    pub fn new(raw: &'a [u8]) -> Self {
        let fields = crate::message::fields(raw)
            .filter(|(name, _)| !name.is_empty())
            .map(|(name, field)| {
                let colon = field.iter().position(|&b| b == b':').unwrap_or(field.len());
                let value = &field[(colon + 1).min(field.len())..];
                Field {
                    name: String::from_utf8_lossy(name).into_owned(),
                    value: String::from_utf8_lossy(value).into_owned(),
                }
            })
            .collect();
        let header = crate::message::header_block(raw).len();
        MessageView {
            raw,
            fields,
            edited: false,
            body_at: header.min(raw.len()),
            parsed: None,
            size: raw.len() as u64,
        }
    }

    /// Octets of the message as delivered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The view of a message of which `raw` is only the start (a spooled message: its header section
    /// and the first [`BODY_LIMIT`] octets of its body): `size` is the whole message's.
    pub fn with_size(mut self, size: u64) -> Self {
        self.size = size.max(self.raw.len() as u64);
        self
    }

    /// The raw values of the fields named `name`, first to last.
    pub fn raw_values(&self, name: &str) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value.as_str())
    }

    /// The fields named `name` as the header test compares them: unfolded, trimmed, encoded words decoded
    /// (RFC 5228 section 2.7.2).
    pub fn values(&self, name: &str) -> Vec<String> {
        self.raw_values(name).map(decoded).collect()
    }

    pub fn exists(&self, name: &str) -> bool {
        self.raw_values(name).next().is_some()
    }

    /// The addr-specs of the fields named `name`, groups flattened.
    pub fn addresses(&self, name: &str) -> Vec<Vec<String>> {
        self.raw_values(name).map(addresses_of).collect()
    }

    /// The text the body test compares (RFC 5173): one string per part that applies.
    pub fn body(&mut self, transform: &BodyTransform, types: &[String]) -> Vec<String> {
        // The body test reads the first BODY_LIMIT octets of the body: a large attachment costs no more
        // memory or time than that.
        let end = self.raw.len().min(self.body_at + BODY_LIMIT);
        if let BodyTransform::Raw = transform {
            return vec![String::from_utf8_lossy(&self.raw[self.body_at..end]).into_owned()];
        }
        let raw = &self.raw[..end];
        let parsed = self
            .parsed
            .get_or_insert_with(|| mail_parser::MessageParser::default().parse(raw));
        let Some(msg) = parsed else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for part in &msg.parts {
            let (ty, sub) = part
                .content_type()
                .map(|c| {
                    (
                        c.ctype().to_ascii_lowercase(),
                        c.subtype().unwrap_or("").to_ascii_lowercase(),
                    )
                })
                .unwrap_or_else(|| ("text".into(), "plain".into()));
            let wanted = match transform {
                BodyTransform::Text => ty == "text",
                BodyTransform::Content(_) => types.iter().any(|t| {
                    let t = t.to_ascii_lowercase();
                    t.is_empty()
                        || match t.split_once('/') {
                            Some((a, b)) => a == ty && b == sub,
                            None => t == ty,
                        }
                }),
                BodyTransform::Raw => false,
            };
            if !wanted {
                continue;
            }
            match &part.body {
                mail_parser::PartType::Text(t) => out.push(t.to_string()),
                mail_parser::PartType::Html(h) => {
                    out.push(if matches!(transform, BodyTransform::Text) {
                        mail_parser::decoders::html::html_to_text(h)
                    } else {
                        h.to_string()
                    })
                }
                mail_parser::PartType::Binary(b) | mail_parser::PartType::InlineBinary(b)
                    if !matches!(transform, BodyTransform::Text) =>
                {
                    out.push(String::from_utf8_lossy(b).into_owned())
                }
                _ => {}
            }
        }
        out
    }

    /// The message with the script's header changes, CRLF line endings; `None` when nothing changed.
    pub fn edited_message(&self) -> Option<Vec<u8>> {
        if !self.edited {
            return None;
        }
        let mut out = Vec::with_capacity(self.raw.len() + 256);
        for f in &self.fields {
            out.extend_from_slice(f.name.as_bytes());
            out.push(b':');
            out.extend_from_slice(f.value.as_bytes());
            if !f.value.ends_with('\n') {
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
        let body = &self.raw[self.body_at..];
        out.extend_from_slice(body);
        Some(out)
    }
}

/// Unfolded and trimmed, encoded words decoded.
pub fn decoded(raw: &str) -> String {
    let unfolded: String = raw.replace("\r\n", "").replace('\n', "");
    let v = unfolded.trim_matches(|c| c == ' ' || c == '\t');
    if !v.contains("=?") {
        return v.to_string();
    }
    let header = format!("Subject: {v}\r\n\r\n");
    mail_parser::MessageParser::default()
        .parse_headers(header.as_bytes())
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| v.to_string())
}

fn addresses_of(raw: &str) -> Vec<String> {
    let header = format!("To:{raw}\r\n\r\n");
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(header.as_bytes()) else {
        return Vec::new();
    };
    let Some(addr) = msg.to() else {
        return Vec::new();
    };
    addr.iter()
        .filter_map(|a| a.address())
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

/// An address split as the address test's parts see it: (local part, domain).
pub fn split_address(a: &str) -> (&str, &str) {
    match a.rfind('@') {
        Some(i) => (&a[..i], &a[i + 1..]),
        None => (a, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_unfolded_and_decoded() {
        let raw = b"Subject: =?utf-8?q?caf=C3=A9?=\r\n  tout\r\nTo: \"A\" <a@example.com>, b@example.org\r\nX-Empty:\r\n\r\nbody\r\n";
        let v = MessageView::new(raw);
        assert_eq!(v.values("subject"), vec!["café tout".to_string()]);
        assert_eq!(
            v.addresses("to"),
            vec![vec![
                "a@example.com".to_string(),
                "b@example.org".to_string()
            ]]
        );
        assert_eq!(v.values("x-empty"), vec![String::new()]);
        assert!(v.exists("X-EMPTY"));
        assert_eq!(split_address("a+b@c.d"), ("a+b", "c.d"));
    }
}
