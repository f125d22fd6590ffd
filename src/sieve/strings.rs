//! Sieve strings after lexing: encoded characters (RFC 5228 section 2.4.2.4), variable references and
//! their expansion (RFC 5229), and `set`'s modifiers.

use super::ast::{Modifier, Piece, Str};

/// Longest variable name accepted.
pub const MAX_VARIABLE_NAME: usize = 64;
/// A variable's value is cut at this many octets (at a character boundary).
pub const MAX_VARIABLE_SIZE: usize = 4096;

/// `${hex:41 42}` and `${unicode:263A}` decoded; other `${` text left alone.
pub fn decode_encoded(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return Ok(out);
        };
        let inner = &after[..end];
        let decoded = match inner.split_once(':') {
            Some((kind, seq)) if kind.eq_ignore_ascii_case("hex") => hex_seq(seq),
            Some((kind, seq)) if kind.eq_ignore_ascii_case("unicode") => unicode_seq(seq)?,
            _ => None,
        };
        match decoded {
            Some(d) => {
                out.push_str(&d);
                rest = &after[end + 1..];
            }
            None => {
                out.push('$');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn blank_split(seq: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = seq
        .split([' ', '\t', '\r', '\n'])
        .filter(|p| !p.is_empty())
        .collect();
    (!parts.is_empty()).then_some(parts)
}

fn hex_seq(seq: &str) -> Option<String> {
    let mut bytes = Vec::new();
    for p in blank_split(seq)? {
        if p.len() % 2 != 0 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        for i in (0..p.len()).step_by(2) {
            bytes.push(u8::from_str_radix(&p[i..i + 2], 16).ok()?);
        }
    }
    String::from_utf8(bytes).ok()
}

fn unicode_seq(seq: &str) -> Result<Option<String>, String> {
    let Some(parts) = blank_split(seq) else {
        return Ok(None);
    };
    let mut out = String::new();
    for p in parts {
        if p.is_empty() || p.len() > 8 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let v = u32::from_str_radix(p, 16).map_err(|e| e.to_string())?;
        // It is an error to name a code point that is not a Unicode scalar value.
        let c = char::from_u32(v)
            .ok_or_else(|| format!("${{unicode:{p}}} is not a Unicode character"))?;
        out.push(c);
    }
    Ok(Some(out))
}

/// Splits out `${name}` and `${N}` references; anything else stays text (RFC 5229 section 3).
pub fn template(s: &str) -> Str {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        text.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let reference = after.find('}').and_then(|end| {
            let inner = &after[..end];
            let piece = if !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_digit()) {
                Some(Piece::Match(inner.parse().unwrap_or(usize::MAX)))
            } else if is_name(inner) {
                Some(Piece::Var(inner.to_ascii_lowercase()))
            } else {
                None
            };
            piece.map(|p| (p, end))
        });
        match reference {
            Some((piece, end)) => {
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(piece);
                rest = &after[end + 1..];
            }
            None => {
                text.push('$');
                rest = &rest[i + 1..];
            }
        }
    }
    text.push_str(rest);
    if !text.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Str(pieces)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_VARIABLE_NAME
        && s.split('.').all(|p| {
            p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// A value cut to `MAX_VARIABLE_SIZE` octets at a character boundary.
pub fn bounded(mut s: String) -> String {
    if s.len() > MAX_VARIABLE_SIZE {
        let mut end = MAX_VARIABLE_SIZE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// `set`'s modifiers, already in the order they apply (RFC 5229 section 4.1).
pub fn apply(modifiers: &[Modifier], mut v: String) -> String {
    for m in modifiers {
        v = match m {
            Modifier::Lower => v.to_lowercase(),
            Modifier::Upper => v.to_uppercase(),
            Modifier::LowerFirst => first(&v, |c| c.to_lowercase().collect()),
            Modifier::UpperFirst => first(&v, |c| c.to_uppercase().collect()),
            Modifier::QuoteWildcard => {
                let mut o = String::with_capacity(v.len());
                for c in v.chars() {
                    if matches!(c, '*' | '?' | '\\') {
                        o.push('\\');
                    }
                    o.push(c);
                }
                o
            }
            Modifier::QuoteRegex => regex_syntax_escape(&v),
            Modifier::Length => v.chars().count().to_string(),
            Modifier::EncodeUrl => v,
        };
    }
    bounded(v)
}

fn first(v: &str, f: impl Fn(char) -> String) -> String {
    let mut chars = v.chars();
    match chars.next() {
        Some(c) => f(c) + chars.as_str(),
        None => String::new(),
    }
}

fn regex_syntax_escape(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_characters_from_rfc_5228() {
        assert_eq!(decode_encoded("${hex:40}").unwrap(), "@");
        assert_eq!(decode_encoded("${hex: 40 }").unwrap(), "@");
        assert_eq!(decode_encoded("${HEX:40}").unwrap(), "@");
        assert_eq!(decode_encoded("${hex:4040}").unwrap(), "@@");
        assert_eq!(decode_encoded("${hex:40 40}").unwrap(), "@@");
        // Malformed sequences stay as they are.
        assert_eq!(decode_encoded("${hex:400}").unwrap(), "${hex:400}");
        assert_eq!(decode_encoded("${hex:4${hex:30}}").unwrap(), "${hex:40}");
        assert_eq!(decode_encoded("${unicode:40}").unwrap(), "@");
        assert_eq!(decode_encoded("${ unicode:40}").unwrap(), "${ unicode:40}");
        assert_eq!(decode_encoded("${UNICODE:0040}").unwrap(), "@");
        assert_eq!(decode_encoded("${Unicode:40}").unwrap(), "@");
        assert!(decode_encoded("${Unicode:D800}").is_err());
    }

    #[test]
    fn references_from_rfc_5229() {
        let t = template("${a}x${1}${b.c}${}$${d}${4b}");
        assert_eq!(
            t.0,
            vec![
                Piece::Var("a".into()),
                Piece::Text("x".into()),
                Piece::Match(1),
                Piece::Var("b.c".into()),
                Piece::Text("${}$".into()),
                Piece::Var("d".into()),
                Piece::Text("${4b}".into()),
            ]
        );
        assert_eq!(template("${${a}}").0[1], Piece::Var("a".into()));
    }

    #[test]
    fn modifiers_apply_in_rfc_order() {
        assert_eq!(apply(&[Modifier::Upper], "Juliet".into()), "JULIET");
        assert_eq!(
            apply(&[Modifier::Lower, Modifier::UpperFirst], "JuLiEt".into()),
            "Juliet"
        );
        assert_eq!(
            apply(&[Modifier::QuoteWildcard], "a*b?c\\".into()),
            "a\\*b\\?c\\\\"
        );
        assert_eq!(apply(&[Modifier::Length], "Juliet".into()), "6");
    }
}
