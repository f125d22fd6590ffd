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
        // Runs of characters that need no escape are written whole.
        let mut clean = 0;
        for (n, (at, c)) in self.0.char_indices().enumerate() {
            if n == MAX_CHARS {
                f.write_str(&self.0[clean..at])?;
                return f.write_str("...");
            }
            let escaped = match c {
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                '\\' => "\\\\",
                c if c.is_control() => "",
                _ => continue,
            };
            f.write_str(&self.0[clean..at])?;
            clean = at + c.len_utf8();
            if escaped.is_empty() {
                write!(f, "\\u{{{:x}}}", c as u32)?;
            } else {
                f.write_str(escaped)?;
            }
        }
        f.write_str(&self.0[clean..])
    }
}

/// A field value as logfmt writes it: bare when it is one word, else in double quotes (`"`, `\\` and
/// control characters escaped), so that no value can look like the start of another field.
pub fn logfmt_value(v: &str) -> std::borrow::Cow<'_, str> {
    if is_bare(v) {
        v.into()
    } else {
        quoted(v).into()
    }
}

/// Whether a field value can be written without quotes: one word that cannot look like another field.
fn is_bare(v: &str) -> bool {
    !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control())
}

/// `v` in double quotes with `"`, `\\` and control characters escaped.
fn quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    let _ = write_quoted(&mut out, v);
    out
}

/// [`quoted`], written straight to `w`.
fn write_quoted(w: &mut impl fmt::Write, v: &str) -> fmt::Result {
    w.write_char('"')?;
    for c in v.chars() {
        match c {
            '"' => w.write_str("\\\"")?,
            '\\' => w.write_str("\\\\")?,
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            '\t' => w.write_str("\\t")?,
            c if c.is_control() => write!(w, "\\u{{{:x}}}", c as u32)?,
            c => w.write_char(c)?,
        }
    }
    w.write_char('"')
}

thread_local! {
    /// Where a field's Debug text is put before it is written, reused from event to event.
    static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
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
    /// Writes one field: the message as it is, a value bare when it may be (and `quote` is not asked),
    /// else quoted; straight to the line, with no allocation.
    fn put(&mut self, field: &tracing::field::Field, value: &str, quote: bool) {
        if self.result.is_err() {
            return;
        }
        let sep = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        let w = &mut self.writer;
        self.result = if field.name() == "message" {
            w.write_str(sep).and_then(|_| w.write_str(value))
        } else {
            write!(w, "{sep}{}=", field.name()).and_then(|_| {
                if !quote && is_bare(value) {
                    w.write_str(value)
                } else {
                    write_quoted(w, value)
                }
            })
        };
    }
}

impl tracing::field::Visit for LogfmtVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field, value, true);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        use fmt::Write;
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut text) => {
                text.clear();
                let _ = write!(text, "{value:?}");
                self.put(field, &text, false);
                // A huge value once does not stay as this thread's buffer.
                if text.capacity() > 4096 {
                    *text = String::new();
                }
            }
            // A Debug impl that logs while it is formatted: this inner event formats on its own.
            Err(_) => self.put(field, &format!("{value:?}"), false),
        });
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

    /// The line a subscriber with this field formatter writes for one event.
    fn line_of(event: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let out = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(super::Logfmt)
            .without_time()
            .with_target(false)
            .with_level(false)
            .with_ansi(false)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, event);
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn fields_are_written_bare_or_quoted_without_a_buffer_of_their_own() {
        struct Chatty;
        impl std::fmt::Display for Chatty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // Logs while it is being formatted: whether or not the inner event is written, the
                // outer line comes out whole.
                tracing::info!(inner = %"x y", "nested");
                f.write_str("chatty value")
            }
        }
        let line = line_of(
            || tracing::info!(size = 1171, word = %"deliver", reply = %"550 5.1.1 no such user", quote = %"say \"hi\"", s = "str", empty = %"", c = %Chatty, "message accepted"),
        );
        assert!(
            line.contains(
                "message accepted size=1171 word=deliver reply=\"550 5.1.1 no such user\" quote=\"say \\\"hi\\\"\" s=\"str\" empty=\"\" c=\"chatty value\""
            ),
            "{line}"
        );
        // A value longer than the reused buffer keeps is written whole.
        let long = "a".repeat(10_000);
        let line = line_of(|| tracing::info!(v = %long, "long"));
        assert!(line.contains(&format!("long v={long}")), "{}", line.len());
    }

    #[test]
    fn control_characters_cannot_break_a_log_line() {
        assert_eq!(
            super::escape("bob\n2026 INFO authenticated user=root\x1b[2J"),
            "bob\\n2026 INFO authenticated user=root\\u{1b}[2J"
        );
        assert_eq!(super::escape("a\\b\u{85}"), "a\\\\b\\u{85}");
        // At most 256 characters, counted as characters; the rest is cut with "...".
        assert_eq!(super::escape(&"é".repeat(256)), "é".repeat(256));
        assert_eq!(
            super::escape(&format!("{}\nxyz", "é".repeat(255))),
            format!("{}\\n...", "é".repeat(255))
        );
        assert_eq!(super::escape(&"x".repeat(300)).len(), 259);
    }
}
