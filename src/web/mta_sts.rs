//! The MTA-STS policy file (RFC 8461 section 3.2) and the id its TXT record carries (section 3.1): the id is
//! a digest of the policy, so that it changes whenever the policy does and senders fetch it again.

use crate::config::MtaStsSettings;

/// The body of https://mta-sts.<domain>/.well-known/mta-sts.txt.
pub fn policy_text(s: &MtaStsSettings) -> String {
    let mut out = format!("version: STSv1\r\nmode: {}\r\n", s.mode.as_str());
    for mx in &s.mx {
        out.push_str(&format!("mx: {mx}\r\n"));
    }
    out.push_str(&format!("max_age: {}\r\n", s.max_age));
    out
}

/// The `id=` of `_mta-sts.<domain> TXT "v=STSv1; id=..."`: 1 to 32 alphanumerics.
pub fn policy_id(s: &MtaStsSettings) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, policy_text(s).as_bytes());
    d.as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The TXT record value announcing the policy.
pub fn txt_record(s: &MtaStsSettings) -> String {
    format!("v=STSv1; id={}", policy_id(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MtaStsMode;

    #[test]
    fn the_id_follows_the_policy() {
        let mut s = MtaStsSettings {
            mode: MtaStsMode::Testing,
            mx: vec!["mx.example.org".into()],
            max_age: 604800,
        };
        assert_eq!(
            policy_text(&s),
            "version: STSv1\r\nmode: testing\r\nmx: mx.example.org\r\nmax_age: 604800\r\n"
        );
        let first = policy_id(&s);
        assert_eq!(first.len(), 20);
        assert!(first.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(policy_id(&s), first);
        s.mode = MtaStsMode::Enforce;
        assert_ne!(policy_id(&s), first);
    }
}
