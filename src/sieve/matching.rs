//! Comparators (RFC 4790: i;octet, i;ascii-casemap, i;ascii-numeric) and match types (:is, :contains,
//! :matches with its match variables, :regex, relational :value) applied to one value and one key.

use super::ast::{Comparator, MatchType, Matcher, Relation};
use std::cmp::Ordering;
use std::collections::HashMap;

/// Text longer than this is cut before wildcard matching (which is O(text × pattern)).
const MAX_MATCH_TEXT: usize = 64 * 1024;
/// Compiled regular expressions are refused above this size (the regex crate's own limit).
const MAX_REGEX_SIZE: usize = 256 * 1024;

/// A regular expression (draft-ietf-sieve-regex: POSIX extended, read by the regex crate, which runs in
/// linear time so that no pattern can make matching take long).
pub fn regex(pattern: &str, comparator: Comparator) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(comparator != Comparator::Octet)
        .size_limit(MAX_REGEX_SIZE)
        .dfa_size_limit(MAX_REGEX_SIZE)
        .build()
        .map_err(|e| {
            format!(
                "bad regular expression {pattern:?}: {}",
                first_line(&e.to_string())
            )
        })
}

fn first_line(s: &str) -> &str {
    s.lines().last().unwrap_or(s).trim()
}

/// Regular expressions compiled during one run.
#[derive(Default)]
pub struct Regexes(HashMap<(String, bool), regex::Regex>);

impl Regexes {
    fn get(&mut self, pattern: &str, comparator: Comparator) -> Result<&regex::Regex, String> {
        let key = (pattern.to_string(), comparator != Comparator::Octet);
        if !self.0.contains_key(&key) {
            if self.0.len() >= 256 {
                self.0.clear();
            }
            let r = shared(&key, comparator)?;
            self.0.insert(key.clone(), r);
        }
        self.0
            .get(&key)
            .ok_or_else(|| "regular expression cache".to_string())
    }
}

/// Patterns compiled once for every run of the process (scripts repeat theirs for every message); a
/// regex is a shared handle, so a copy costs a reference count.
pub(crate) fn shared(key: &(String, bool), comparator: Comparator) -> Result<regex::Regex, String> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<HashMap<(String, bool), regex::Regex>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Ok(c) = cache.lock()
        && let Some(r) = c.get(key)
    {
        return Ok(r.clone());
    }
    let r = regex(&key.0, comparator)?;
    if let Ok(mut c) = cache.lock() {
        // Bounded: whatever users upload, the cache holds at most 256 patterns of 256 KiB.
        if c.len() >= 256 {
            c.clear();
        }
        c.insert(key.clone(), r.clone());
    }
    Ok(r)
}

/// Whether `value` matches `key`. For :matches and :regex, `captures` gets the match variables when the
/// match succeeds (${0} the whole value).
pub fn matches(
    m: &Matcher,
    value: &str,
    key: &str,
    captures: Option<&mut Vec<String>>,
    regexes: &mut Regexes,
) -> Result<bool, String> {
    Ok(match &m.match_type {
        MatchType::Is => equal(m.comparator, value, key),
        MatchType::Contains => match m.comparator {
            Comparator::Octet => value.contains(key),
            Comparator::AsciiCasemap => value
                .to_ascii_lowercase()
                .contains(&key.to_ascii_lowercase()),
            Comparator::UnicodeCasemap => value.to_lowercase().contains(&key.to_lowercase()),
            Comparator::AsciiNumeric => false,
        },
        MatchType::Matches => match wildcard(m.comparator, value, key)? {
            Some(caps) => {
                if let Some(c) = captures {
                    *c = caps;
                }
                true
            }
            None => false,
        },
        MatchType::Regex => {
            let re = regexes.get(key, m.comparator)?;
            match re.captures(value) {
                Some(caps) => {
                    if let Some(c) = captures {
                        c.clear();
                        for i in 0..caps.len().min(10) {
                            c.push(caps.get(i).map_or("", |g| g.as_str()).to_string());
                        }
                    }
                    true
                }
                None => false,
            }
        }
        MatchType::Value(rel) => relate(*rel, order(m.comparator, value, key)),
        // Counted by the caller: here the count is the value.
        MatchType::Count(rel) => relate(*rel, order(m.comparator, value, key)),
    })
}

pub fn relate(rel: Relation, o: Ordering) -> bool {
    match rel {
        Relation::Gt => o == Ordering::Greater,
        Relation::Ge => o != Ordering::Less,
        Relation::Lt => o == Ordering::Less,
        Relation::Le => o != Ordering::Greater,
        Relation::Eq => o == Ordering::Equal,
        Relation::Ne => o != Ordering::Equal,
    }
}

fn equal(c: Comparator, a: &str, b: &str) -> bool {
    match c {
        Comparator::Octet => a == b,
        Comparator::AsciiCasemap => a.eq_ignore_ascii_case(b),
        Comparator::UnicodeCasemap => a.to_lowercase() == b.to_lowercase(),
        Comparator::AsciiNumeric => numeric(a) == numeric(b),
    }
}

/// The ordering of a comparator (for :value).
pub fn order(c: Comparator, a: &str, b: &str) -> Ordering {
    match c {
        Comparator::Octet => a.as_bytes().cmp(b.as_bytes()),
        Comparator::AsciiCasemap => a
            .bytes()
            .map(|x| x.to_ascii_lowercase())
            .cmp(b.bytes().map(|x| x.to_ascii_lowercase())),
        Comparator::UnicodeCasemap => a.to_lowercase().cmp(&b.to_lowercase()),
        Comparator::AsciiNumeric => numeric(a).cmp(&numeric(b)),
    }
}

/// RFC 4790 section 9.1.1: the leading digits as a number; a string that does not start with a digit is
/// positive infinity (`None` sorts last here). Leading zeros are ignored; the digits compare as a
/// number of any length.
fn numeric(s: &str) -> NumKey {
    let digits: &str = &s[..s.bytes().take_while(u8::is_ascii_digit).count()];
    if digits.is_empty() {
        return NumKey::Infinity;
    }
    let trimmed = digits.trim_start_matches('0');
    NumKey::Finite(trimmed.len(), trimmed.to_string())
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum NumKey {
    /// (number of significant digits, the digits): orders like the number.
    Finite(usize, String),
    Infinity,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pat {
    Char(char),
    One,
    Any,
}

fn same(c: Comparator, a: char, b: char) -> bool {
    match c {
        Comparator::Octet | Comparator::AsciiNumeric => a == b,
        Comparator::AsciiCasemap => a.eq_ignore_ascii_case(&b),
        Comparator::UnicodeCasemap => a == b || a.to_lowercase().eq(b.to_lowercase()),
    }
}

/// Steps one wildcard comparison may take; past it the comparison is a runtime error (so the message is
/// kept), whatever the pattern and the text.
const MAX_WILDCARD_STEPS: u64 = 4_000_000;

/// `*` and `?` wildcards with `\` escapes (RFC 5228 section 2.7.1). On a match, the match variables:
/// the whole value, then what each wildcard took, each `*` as little as the rest allows (RFC 5229 3.2).
///
/// The matcher keeps only the position of the last `*` to back up to: memory is the pattern's size, and
/// the steps are bounded by `MAX_WILDCARD_STEPS`.
fn wildcard(c: Comparator, value: &str, key: &str) -> Result<Option<Vec<String>>, String> {
    let mut pattern = Vec::new();
    let mut chars = key.chars();
    while let Some(ch) = chars.next() {
        pattern.push(match ch {
            '\\' => Pat::Char(chars.next().unwrap_or('\\')),
            '*' => Pat::Any,
            '?' => Pat::One,
            ch => Pat::Char(ch),
        });
    }
    let text: Vec<char> = if value.len() > MAX_MATCH_TEXT {
        let mut end = MAX_MATCH_TEXT;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value[..end].chars().collect()
    } else {
        value.chars().collect()
    };
    let (m, n) = (pattern.len(), text.len());
    // Where each pattern item starts in the text (for the captures).
    let mut start = vec![0usize; m + 1];
    let (mut p, mut t) = (0usize, 0usize);
    // The last `*` seen and the text position it now ends at.
    let mut star: Option<(usize, usize)> = None;
    let mut steps = 0u64;
    loop {
        steps += 1;
        if steps > MAX_WILDCARD_STEPS {
            return Err(format!(
                "a :matches comparison took more than {MAX_WILDCARD_STEPS} steps"
            ));
        }
        if p < m {
            match pattern[p] {
                Pat::Any => {
                    start[p] = t;
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                Pat::One if t < n => {
                    start[p] = t;
                    p += 1;
                    t += 1;
                    continue;
                }
                Pat::Char(ch) if t < n && same(c, ch, text[t]) => {
                    start[p] = t;
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        } else if t == n {
            break;
        }
        // Mismatch (or pattern done with text left): the last `*` takes one more character.
        match star {
            Some((sp, st)) if st < n => {
                star = Some((sp, st + 1));
                p = sp + 1;
                t = st + 1;
            }
            _ => return Ok(None),
        }
    }
    start[m] = n;
    let mut caps = vec![text.iter().collect::<String>()];
    for i in 0..m {
        match pattern[i] {
            Pat::Char(_) => {}
            Pat::One => caps.push(text[start[i]].to_string()),
            Pat::Any => {
                // A `*` ends where the next item starts (or at the end).
                let end = start[i + 1..=m].first().copied().unwrap_or(n).max(start[i]);
                caps.push(text[start[i]..end].iter().collect());
            }
        }
    }
    Ok(Some(caps))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(mt: MatchType, c: Comparator) -> Matcher {
        Matcher {
            comparator: c,
            match_type: mt,
        }
    }

    #[test]
    fn wildcards_take_as_little_as_possible() {
        let caps = wildcard(
            Comparator::AsciiCasemap,
            "[acme-users] [fwd] version 1.0 is out",
            "[*] *",
        )
        .unwrap()
        .unwrap();
        assert_eq!(caps[1], "acme-users");
        assert_eq!(caps[2], "[fwd] version 1.0 is out");
        let caps = wildcard(Comparator::AsciiCasemap, "<coyote@example.com>", "*<*@*")
            .unwrap()
            .unwrap();
        assert_eq!(&caps[1..], ["", "coyote", "example.com>"]);
        assert!(wildcard(Comparator::Octet, "abc", "a?c").unwrap().is_some());
        assert!(wildcard(Comparator::Octet, "aBc", "abc").unwrap().is_none());
        assert!(
            wildcard(Comparator::AsciiCasemap, "aBc", "abc")
                .unwrap()
                .is_some()
        );
        assert!(
            wildcard(Comparator::Octet, "a*c", "a\\*c")
                .unwrap()
                .is_some()
        );
        assert!(
            wildcard(Comparator::Octet, "abc", "a\\*c")
                .unwrap()
                .is_none()
        );
        assert!(wildcard(Comparator::Octet, "", "*").unwrap().is_some());
        assert!(wildcard(Comparator::Octet, "", "?").unwrap().is_none());
    }

    #[test]
    fn hostile_patterns_stay_polynomial() {
        let text = "a".repeat(5000);
        let key = "*a".repeat(50) + "b";
        assert!(wildcard(Comparator::Octet, &text, &key).unwrap().is_none());
        // Far past the step budget: a runtime error (the message is kept), not hours or gigabytes.
        let text = "a".repeat(60_000);
        let key = "*a".repeat(20_000) + "b";
        assert!(wildcard(Comparator::Octet, &text, &key).unwrap().is_none());
        let key = "*".to_string() + &"a".repeat(30_000) + "b";
        assert!(wildcard(Comparator::Octet, &text, &key).is_err());
    }

    #[test]
    fn numeric_comparator_follows_rfc_4790() {
        let n = Comparator::AsciiNumeric;
        assert_eq!(order(n, "10", "9"), Ordering::Greater);
        assert_eq!(order(n, "007", "7"), Ordering::Equal);
        assert_eq!(order(n, "abc", "99999999999999999999"), Ordering::Greater);
        assert_eq!(order(n, "abc", "x"), Ordering::Equal);
        assert_eq!(order(n, "12abc", "12"), Ordering::Equal);
    }

    #[test]
    fn contains_and_regex() {
        let mut r = Regexes::default();
        let c = m(MatchType::Contains, Comparator::AsciiCasemap);
        assert!(matches(&c, "Hello World", "o w", None, &mut r).unwrap());
        let re = m(MatchType::Regex, Comparator::AsciiCasemap);
        let mut caps = Vec::new();
        assert!(
            matches(
                &re,
                "Subject: [list] hi",
                r"\[([a-z]+)\]",
                Some(&mut caps),
                &mut r
            )
            .unwrap()
        );
        assert_eq!(caps[1], "list");
        assert!(matches(&re, "x", "(", None, &mut r).is_err());
    }
}
