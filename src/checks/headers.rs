//! Header surgery for the checks: remove forged Authentication-Results (RFC 8601 section 5).
//!
//! Whether a field claims to be ours is decided by its authserv-id parsed as RFC 8601 2.2 says: after
//! optional comments and folding white space, a `value` (RFC 2045: a token or a quoted-string). A literal
//! prefix match would keep `mx.example.test(c);` and `"mx.example.test";`, which mail clients show as ours.

/// Drops every Authentication-Results header whose authserv-id is `authserv_id` and puts `new` (a full header
/// with its CRLF) at the top.
pub fn replace_auth_results(body: Vec<u8>, authserv_id: &str, new: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + new.len());
    out.extend_from_slice(new.as_bytes());
    strip_into(&body, authserv_id, &mut out);
    out
}

/// Removes every Authentication-Results header that claims our authserv-id, whoever sent the message
/// (submission, the sendmail socket, trusted networks, or with checks off). Returns the message unchanged
/// (without copying) when there is none.
pub fn strip_auth_results(body: Vec<u8>, authserv_id: &str) -> Vec<u8> {
    let forged = crate::message::fields(&body)
        .any(|(name, field)| is_auth_results(name) && claims(field, authserv_id));
    if !forged {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    strip_into(&body, authserv_id, &mut out);
    out
}

fn is_auth_results(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"authentication-results")
}

fn strip_into(body: &[u8], authserv_id: &str, out: &mut Vec<u8>) {
    let end = crate::message::header_len(body);
    for (name, field) in crate::message::fields(body) {
        if !(is_auth_results(name) && claims(field, authserv_id)) {
            out.extend_from_slice(field);
        }
    }
    out.extend_from_slice(&body[end..]);
}

/// Whether an Authentication-Results field (name, colon and value) names `authserv_id`.
fn claims(field: &[u8], authserv_id: &str) -> bool {
    let Some(colon) = field.iter().position(|&b| b == b':') else {
        return false;
    };
    authserv_id_of(&field[colon + 1..]).is_some_and(|id| id.eq_ignore_ascii_case(authserv_id))
}

/// The authserv-id at the start of an Authentication-Results value, unquoted.
pub fn authserv_id_of(value: &[u8]) -> Option<String> {
    let mut i = skip_cfws(value, 0)?;
    let mut id = Vec::new();
    if value.get(i) == Some(&b'"') {
        i += 1;
        loop {
            match *value.get(i)? {
                b'"' => break,
                b'\\' => {
                    id.push(*value.get(i + 1)?);
                    i += 2;
                }
                b'\r' | b'\n' => i += 1,
                c => {
                    id.push(c);
                    i += 1;
                }
            }
        }
    } else {
        // RFC 2045 token: any CHAR except SPACE, CTLs and tspecials.
        while let Some(&c) = value.get(i) {
            if c <= b' ' || c >= 0x7f || b"()<>@,;:\\\"/[]?=".contains(&c) {
                break;
            }
            id.push(c);
            i += 1;
        }
    }
    (!id.is_empty()).then(|| String::from_utf8_lossy(&id).into_owned())
}

/// Skips white space, line folds and (nested) comments; `None` for an unterminated comment.
fn skip_cfws(v: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match v.get(i) {
            Some(b' ' | b'\t' | b'\r' | b'\n') => i += 1,
            Some(b'(') => {
                let mut depth = 0usize;
                loop {
                    match *v.get(i)? {
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        b'\\' => i += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => return Some(i),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn forged_results_for_our_id_are_removed_and_others_kept() {
        let body = b"Authentication-Results: MX.example.test; spf=pass\r\n\tdkim=pass\r\n\
                     Authentication-Results: other.test; spf=fail\r\nSubject: x\r\n\r\nAuthentication-Results: mx.example.test; body\r\n"
            .to_vec();
        let out = super::replace_auth_results(
            body,
            "mx.example.test",
            "Authentication-Results: mx.example.test; spf=none\r\n",
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "Authentication-Results: mx.example.test; spf=none\r\nAuthentication-Results: other.test; spf=fail\r\nSubject: x\r\n\r\n\
             Authentication-Results: mx.example.test; body\r\n"
        );
    }

    #[test]
    fn authserv_id_is_parsed_not_prefix_matched() {
        use super::authserv_id_of as id;
        assert_eq!(
            id(b" mx.example.test(c); spf=pass").as_deref(),
            Some("mx.example.test")
        );
        assert_eq!(
            id(b" \"mx.example.test\"; spf=pass").as_deref(),
            Some("mx.example.test")
        );
        assert_eq!(
            id(b" (a (nested) comment)\r\n mx.example.test 1; none").as_deref(),
            Some("mx.example.test")
        );
        assert_eq!(
            id(b" mx.example.test.evil; spf=pass").as_deref(),
            Some("mx.example.test.evil")
        );
        assert_eq!(id(b" (unterminated mx.example.test;"), None);
        for forged in [
            &b"Authentication-Results: mx.example.test(c); dkim=pass\r\n"[..],
            b"Authentication-Results: \"mx.example.test\"; dkim=pass\r\n",
            b"authentication-results:(x)MX.EXAMPLE.TEST;dkim=pass\r\n",
        ] {
            let mut m = forged.to_vec();
            m.extend_from_slice(b"Subject: s\r\n\r\nbody\r\n");
            let out = super::strip_auth_results(m, "mx.example.test");
            assert_eq!(
                out,
                b"Subject: s\r\n\r\nbody\r\n",
                "{}",
                String::from_utf8_lossy(forged)
            );
        }
        let kept = b"Authentication-Results: mx.example.test.evil; x\r\n\r\n".to_vec();
        assert_eq!(
            super::strip_auth_results(kept.clone(), "mx.example.test"),
            kept
        );
    }
}
