//! Response building blocks: strings as quoted strings or literals, NIL, flag lists, dates.

use crate::mailbox::index::{Flags, flag};

/// A quoted string when the bytes allow it (printable ASCII, no `"` `\` CR LF, not too long), else a literal.
pub fn quoted_or_literal(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() < 1024 && s.iter().all(|&c| (0x20..0x7f).contains(&c));
    if quotable {
        out.push(b'"');
        for &c in s {
            if c == b'"' || c == b'\\' {
                out.push(b'\\');
            }
            out.push(c);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

/// A string or NIL.
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => quoted_or_literal(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// A mailbox name: an atom-safe quoted string.
pub fn mailbox_name(out: &mut Vec<u8>, name: &str) {
    quoted_or_literal(out, name.as_bytes());
}

/// `(\Seen $Junk)`, with `\Recent` when asked.
pub fn flag_list(out: &mut Vec<u8>, flags: &Flags, recent: bool) {
    out.push(b'(');
    let mut first = true;
    let mut put = |out: &mut Vec<u8>, s: &str| {
        if !first {
            out.push(b' ');
        }
        first = false;
        out.extend_from_slice(s.as_bytes());
    };
    for (bit, name) in flag::NAMES {
        if flags.system & bit != 0 {
            put(out, name);
        }
    }
    if recent {
        put(out, "\\Recent");
    }
    for k in &flags.keywords {
        put(out, k);
    }
    out.push(b')');
}

/// Flag names from a client into flags; `\Recent` is ignored, an unknown `\Name` is an error.
pub fn parse_flags(names: &[String]) -> Result<Flags, String> {
    let mut f = Flags::default();
    for n in names {
        if let Some(system) = n.strip_prefix('\\') {
            match flag::NAMES
                .iter()
                .find(|(_, name)| name[1..].eq_ignore_ascii_case(system))
            {
                Some((bit, _)) => f.system |= bit,
                None if system.eq_ignore_ascii_case("Recent") => {}
                None => return Err(format!("{n} is not a system flag")),
            }
        } else if !f.has_keyword(n) {
            f.keywords.push(n.clone());
        }
    }
    Ok(f)
}

/// `"17-Jul-1996 02:44:25 +0000"`.
pub fn internal_date(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    const M: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "\"{d:02}-{}-{y:04} {:02}:{:02}:{:02} +0000\"",
        M[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (year, month, day) of days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        let mut o = Vec::new();
        quoted_or_literal(&mut o, b"a \"b\" \\");
        assert_eq!(o, b"\"a \\\"b\\\" \\\\\"");
        let mut o = Vec::new();
        quoted_or_literal(&mut o, "é\r\n".as_bytes());
        assert_eq!(o, b"{4}\r\n\xc3\xa9\r\n");
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(internal_date(760686745), "\"08-Feb-1994 05:52:25 +0000\"");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }
}
