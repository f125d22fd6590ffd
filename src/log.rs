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

#[cfg(test)]
mod tests {
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
