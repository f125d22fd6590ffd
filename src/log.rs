//! What reaches a log line from a peer: HELO names, AUTH user names, addresses, verbs. Control characters
//! are escaped so that a client cannot end a line or forge one (`\n2026-... INFO authenticated user=root`),
//! and the length is capped so that one field cannot flood the log.

use std::fmt;

/// Longest peer string put into a log field, in characters.
const MAX_CHARS: usize = 256;

/// `s` with control characters as `\n`, `\r`, `\t`, `\x1b`, `\u{85}`..., and at most 256 characters.
pub fn escape(s: &str) -> String {
    Escaped(s).to_string()
}

/// Display wrapper that escapes as it writes (no allocation for clean strings beyond the formatter's).
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for (n, c) in self.0.chars().enumerate() {
            if n == MAX_CHARS {
                return f.write_str("...");
            }
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A field value as logfmt writes it: bare when it is one word, else in double quotes (`"`, `\\` and
/// control characters escaped), so that no value can look like the start of another field.
pub fn logfmt_value(v: &str) -> std::borrow::Cow<'_, str> {
    let bare = !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
    if bare { v.into() } else { quoted(v).into() }
}

/// `v` in double quotes with `"`, `\\` and control characters escaped.
fn quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The text log's field formatter: the message first and bare, then `key=value` pairs in logfmt. String
/// fields are always quoted (`status="sent"`, as the log always read); other values are bare when they are
/// one word and quoted when not (`reply="550 5.1.1 no such user"`), so that grep, fail2ban and logfmt
/// parsers read the same fields and a peer's text cannot forge one.
pub struct Logfmt;

impl<'a> tracing_subscriber::field::MakeVisitor<tracing_subscriber::fmt::format::Writer<'a>>
    for Logfmt
{
    type Visitor = LogfmtVisitor<'a>;

    fn make_visitor(&self, target: tracing_subscriber::fmt::format::Writer<'a>) -> Self::Visitor {
        LogfmtVisitor {
            writer: target,
            first: true,
            result: Ok(()),
        }
    }
}

pub struct LogfmtVisitor<'a> {
    writer: tracing_subscriber::fmt::format::Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl LogfmtVisitor<'_> {
    fn put(&mut self, field: &tracing::field::Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{value}")
        } else {
            write!(self.writer, "{sep}{}={value}", field.name())
        };
    }
}

impl tracing::field::Visit for LogfmtVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.put(field, value);
        } else {
            self.put(field, &quoted(value));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        let v = format!("{value:?}");
        if field.name() == "message" {
            self.put(field, &v);
        } else {
            self.put(field, &logfmt_value(&v));
        }
    }
}

impl tracing_subscriber::field::VisitOutput<fmt::Result> for LogfmtVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl tracing_subscriber::field::VisitFmt for LogfmtVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_with_spaces_are_quoted() {
        use super::logfmt_value as q;
        assert_eq!(q("bob"), "bob");
        assert_eq!(q("550 5.1.1 no such user"), "\"550 5.1.1 no such user\"");
        assert_eq!(
            q("\"a\" user=root \"b\""),
            "\"\\\"a\\\" user=root \\\"b\\\"\""
        );
        assert_eq!(q(""), "\"\"");
        assert_eq!(q("a=b"), "\"a=b\"");
        assert_eq!(q("say \"hi\" \\o/"), "\"say \\\"hi\\\" \\\\o/\"");
        assert_eq!(q("x\ny"), "\"x\\ny\"");
    }

    #[test]
    fn control_characters_cannot_break_a_log_line() {
        assert_eq!(
            super::escape("bob\n2026 INFO authenticated user=root\x1b[2J"),
            "bob\\n2026 INFO authenticated user=root\\u{1b}[2J"
        );
        assert_eq!(super::escape("a\\b\u{85}"), "a\\\\b\\u{85}");
        assert_eq!(super::escape(&"x".repeat(300)).len(), 259);
    }
}
