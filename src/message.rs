//! Reading an RFC 5322 message as SMTP carries it (CRLF line endings): where the header section ends and
//! which fields it has. One place for this, so that every stage agrees on what the header section is.

/// Octets of the header section: up to and including the CRLF of its last field line, without the empty
/// line that ends it. 0 for a message that starts with the empty line; all of it for one without a body.
pub fn header_len(message: &[u8]) -> usize {
    if message.starts_with(b"\r\n") {
        return 0;
    }
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |i| i + 2)
}

/// The header section and the empty line after it (what a header parser is given).
pub fn header_block(message: &[u8]) -> &[u8] {
    let n = header_len(message);
    let end = if message[n..].starts_with(b"\r\n") {
        n + 2
    } else {
        n
    };
    &message[..end]
}

/// The header fields, each with its continuation lines (CRLF included): (name, whole field).
pub fn fields(message: &[u8]) -> Fields<'_> {
    Fields {
        rest: &message[..header_len(message)],
    }
}

pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let mut end = 0;
        loop {
            match self.rest[end..].iter().position(|&b| b == b'\n') {
                Some(i) => end += i + 1,
                None => end = self.rest.len(),
            }
            let continued = self
                .rest
                .get(end)
                .is_some_and(|b| *b == b' ' || *b == b'\t');
            if end >= self.rest.len() || !continued {
                break;
            }
        }
        let (field, rest) = self.rest.split_at(end);
        self.rest = rest;
        let name = field
            .iter()
            .position(|&b| b == b':')
            .map_or(&field[..0], |i| trim(&field[..i]));
        Some((name, field))
    }
}

/// Without leading and trailing ASCII whitespace.
pub fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end]
}

/// How many fields named `name` (case-insensitively) the header section has.
pub fn count(message: &[u8], name: &str) -> usize {
    fields(message)
        .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_section_and_fields_with_continuations() {
        let m = b"From: a@b\r\nSubject: one\r\n two\r\nfrom : c@d\r\n\r\nFrom: body\r\n";
        assert_eq!(header_len(m), 43);
        assert_eq!(header_block(m).len(), 45);
        let names: Vec<&[u8]> = fields(m).map(|(n, _)| n).collect();
        assert_eq!(names, [&b"From"[..], b"Subject", b"from"]);
        assert_eq!(fields(m).nth(1).unwrap().1, b"Subject: one\r\n two\r\n");
        assert_eq!(count(m, "FROM"), 2);
        assert_eq!(header_len(b"\r\nbody"), 0);
        assert_eq!(header_len(b"A: b\r\n"), 6);
    }
}
