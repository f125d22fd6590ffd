//! Header surgery for the checks: remove forged Authentication-Results (RFC 8601 section 5).

/// Drops every Authentication-Results header whose authserv-id is `authserv_id` and puts `new` (a full header
/// with its CRLF) at the top.
pub fn replace_auth_results(body: Vec<u8>, authserv_id: &str, new: &str) -> Vec<u8> {
    let end = if body.starts_with(b"\r\n") {
        0
    } else {
        body.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(body.len(), |i| i + 2)
    };
    let mut out = Vec::with_capacity(body.len() + new.len());
    out.extend_from_slice(new.as_bytes());
    let mut dropping = false;
    for line in body[..end].split_inclusive(|b| *b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            dropping = claims(line, authserv_id);
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(&body[end..]);
    out
}

/// Whether a header line is `Authentication-Results: <authserv_id>...`.
fn claims(line: &[u8], authserv_id: &str) -> bool {
    const NAME: &[u8] = b"authentication-results:";
    if line.len() < NAME.len() || !line[..NAME.len()].eq_ignore_ascii_case(NAME) {
        return false;
    }
    let value = String::from_utf8_lossy(&line[NAME.len()..]);
    let id = value
        .trim_start()
        .split([';', ' ', '\t', '\r', '\n'])
        .next()
        .unwrap_or("");
    id.eq_ignore_ascii_case(authserv_id)
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
}
