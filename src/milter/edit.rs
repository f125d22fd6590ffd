//! A header section as milters see it and change it: fields with their names and values (folding kept),
//! the headers sent one by one, and SMFIR_ADDHEADER / INSHEADER / CHGHEADER applied in order. Values a filter
//! sends are cleaned of CR, LF and NUL outside proper folding, so that no filter can inject a header or
//! end the header section early.

/// One field: name and value as written (without the colon, the space after it, and the final CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: String,
}

/// Splits a header section (up to, not including, the empty line) into fields. Lines that are not
/// `name: value` or continuations are kept as their own nameless field and re-emitted unchanged.
pub fn fields(section: &[u8]) -> Vec<Field> {
    let text = String::from_utf8_lossy(section);
    let mut out: Vec<Field> = Vec::new();
    for line in text.split_inclusive('\n') {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t'])
            && let Some(last) = out.last_mut()
        {
            last.value.push_str("\r\n");
            last.value.push_str(line);
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) if !name.is_empty() && !name.contains([' ', '\t']) => {
                out.push(Field {
                    name: name.to_string(),
                    value: value.strip_prefix(' ').unwrap_or(value).to_string(),
                })
            }
            _ => out.push(Field {
                name: String::new(),
                value: line.to_string(),
            }),
        }
    }
    out
}

/// The section back as bytes, each field ending in CRLF (no empty line).
pub fn render(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        if f.name.is_empty() {
            out.extend_from_slice(f.value.as_bytes());
        } else {
            out.extend_from_slice(f.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(f.value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A header name a filter may set: printable ASCII without colon or space (RFC 5322 field-name).
fn good_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// A value a filter sends, made safe: line breaks are kept only as folding (CRLF before a space or tab),
/// other CR, LF and NUL become spaces.
fn clean_value(value: &str) -> String {
    let normalized = value.replace("\r\n", "\n");
    let mut out = String::with_capacity(value.len());
    let mut chars = normalized.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' if chars.peek().is_some_and(|n| *n == ' ' || *n == '\t') => out.push_str("\r\n"),
            '\n' | '\r' | '\0' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// One change a filter asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Add(String, String),
    Insert(u32, String, String),
    /// index from 1 among fields of that name; an empty value deletes.
    Change(u32, String, String),
}

/// Applies `change`; a change with a bad name is refused (false) and logged by the caller.
pub fn apply(fields: &mut Vec<Field>, change: &Change) -> bool {
    match change {
        Change::Add(name, value) => {
            if !good_name(name) {
                return false;
            }
            fields.push(Field {
                name: name.clone(),
                value: clean_value(value),
            });
        }
        Change::Insert(index, name, value) => {
            if !good_name(name) {
                return false;
            }
            let at = (*index as usize).min(fields.len());
            fields.insert(
                at,
                Field {
                    name: name.clone(),
                    value: clean_value(value),
                },
            );
        }
        Change::Change(index, name, value) => {
            if !good_name(name) {
                return false;
            }
            let position = fields
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name.eq_ignore_ascii_case(name))
                .nth((*index).max(1) as usize - 1)
                .map(|(i, _)| i);
            match (position, value.is_empty()) {
                (Some(i), true) => {
                    fields.remove(i);
                }
                (Some(i), false) => fields[i].value = clean_value(value),
                // libmilter: changing a field that is not there adds it.
                (None, false) => fields.push(Field {
                    name: name.clone(),
                    value: clean_value(value),
                }),
                (None, true) => {}
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_survives_and_changes_apply_in_order() {
        let section =
            b"Subject: hello\r\n world\r\nX-Spam: no\r\nFrom: a@b.test\r\nX-Spam: again\r\n";
        let mut f = fields(section);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].value, "hello\r\n world");
        assert_eq!(render(&f), section.to_vec());
        assert!(apply(
            &mut f,
            &Change::Change(2, "x-spam".into(), "".into())
        ));
        assert!(apply(
            &mut f,
            &Change::Change(1, "X-Spam".into(), "yes".into())
        ));
        assert!(apply(
            &mut f,
            &Change::Insert(0, "X-First".into(), "1".into())
        ));
        assert!(apply(&mut f, &Change::Add("X-Last".into(), "2".into())));
        assert_eq!(
            String::from_utf8(render(&f)).unwrap(),
            "X-First: 1\r\nSubject: hello\r\n world\r\nX-Spam: yes\r\nFrom: a@b.test\r\nX-Last: 2\r\n"
        );
    }

    #[test]
    fn a_filter_cannot_inject_fields_or_end_the_section() {
        let mut f = fields(b"Subject: x\r\n");
        assert!(apply(
            &mut f,
            &Change::Add("X-A".into(), "v\r\nBcc: evil@x.test\r\n\r\nbody".into())
        ));
        assert!(!apply(&mut f, &Change::Add("Bad Name".into(), "v".into())));
        assert!(!apply(&mut f, &Change::Add("X:Y".into(), "v".into())));
        assert!(apply(
            &mut f,
            &Change::Add("X-B".into(), "folded\n\tfine".into())
        ));
        let out = String::from_utf8(render(&f)).unwrap();
        assert_eq!(
            out,
            "Subject: x\r\nX-A: v Bcc: evil@x.test  body\r\nX-B: folded\r\n\tfine\r\n"
        );
    }
}
