//! What an admin should hear about a certificate before a client complains: expired or expiring within
//! 14 days, not naming server.hostname, or self-signed on a public listener. Read by `tern check-config` and
//! logged at start and reload; none of it stops the daemon (an expired certificate still encrypts, and
//! MTAs fall back to it under opportunistic TLS), but check-config says so.

use std::path::Path;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Certificates this close to their end are reported.
pub const WARN_BEFORE_SECS: i64 = 14 * 86_400;

/// The facts read off the leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// notBefore and notAfter, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// DNS names of the subjectAltName extension (lower case), or the subject CN when there is none.
    pub names: Vec<String>,
    pub self_signed: bool,
}

/// Reads the first certificate of a PEM file.
pub fn leaf_of(cert: &Path) -> Result<Leaf, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .next()
        .ok_or_else(|| format!("{}: no certificate in the file", cert.display()))?
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    leaf_from_der(&der).map_err(|e| format!("{}: {e}", cert.display()))
}

pub fn leaf_from_der(der: &[u8]) -> Result<Leaf, String> {
    let (_, c) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut names: Vec<String> = c
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names = c
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_ascii_lowercase))
            .collect();
    }
    Ok(Leaf {
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
        names,
        self_signed: c.issuer() == c.subject(),
    })
}

/// Whether `name` matches `host`: exactly, or as a wildcard for one leftmost label (RFC 6125 6.4.3).
pub fn covers(name: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match name.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(label, parent)| !label.is_empty() && parent == rest),
        None => name == host,
    }
}

/// What to tell the admin about `leaf` (from `path`) for a server called `hostname`, at `now`.
pub fn warnings(
    leaf: &Leaf,
    path: &Path,
    hostname: &str,
    public_listeners: bool,
    now: i64,
) -> Vec<String> {
    let mut out = Vec::new();
    let date = crate::clock::rfc5322_date(leaf.not_after.max(0) as u64);
    let left = leaf.not_after - now;
    if left <= 0 {
        out.push(format!(
            "TLS certificate {} expired on {date}: clients that verify refuse it; renew it",
            path.display()
        ));
    } else if left < WARN_BEFORE_SECS {
        out.push(format!(
            "TLS certificate {} expires in {} ({date}); renew it",
            path.display(),
            crate::queue::select::human_age(left as u64)
        ));
    }
    if !leaf.names.iter().any(|n| covers(n, hostname)) {
        out.push(format!(
            "TLS certificate {} does not name server.hostname {hostname:?} (it names {}): clients that verify refuse it",
            path.display(),
            if leaf.names.is_empty() {
                "nothing".to_string()
            } else {
                leaf.names.join(", ")
            }
        ));
    }
    if leaf.self_signed && public_listeners {
        out.push(format!(
            "TLS certificate {} is self-signed: mail clients warn, and MTAs checking MTA-STS or DANE refuse it",
            path.display()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str], days: i64) -> Vec<u8> {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let day = |offset: i64| {
            let today = (crate::clock::unix_now() / 86_400) as i64;
            let (y, m, d) = crate::clock::civil_from_days(today + offset);
            rcgen::date_time_ymd(y as i32, m as u8, d as u8)
        };
        p.not_before = day(-2);
        p.not_after = day(days);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(covers("mx.example.org", "MX.example.org."));
        assert!(covers("*.example.org", "mx.example.org"));
        assert!(!covers("*.example.org", "a.mx.example.org"));
        assert!(!covers("*.example.org", "example.org"));
        assert!(!covers("mx.example.org", "mail.example.org"));
    }

    #[test]
    fn expiry_names_and_self_signed_are_reported() {
        let now = crate::clock::unix_now() as i64;
        let p = Path::new("/etc/tern/cert.pem");
        let fine = leaf_from_der(&self_signed(&["mx.example.org"], 90)).unwrap();
        assert!(fine.self_signed);
        assert!(warnings(&fine, p, "mx.example.org", false, now).is_empty());
        let w = warnings(&fine, p, "mx.example.org", true, now);
        assert!(w.len() == 1 && w[0].contains("self-signed"), "{w:?}");
        let soon = leaf_from_der(&self_signed(&["mx.example.org"], 5)).unwrap();
        let w = warnings(&soon, p, "mx.example.org", false, now);
        assert!(w.len() == 1 && w[0].contains("expires in 4d"), "{w:?}");
        let gone = leaf_from_der(&self_signed(&["mx.example.org"], -1)).unwrap();
        let w = warnings(&gone, p, "mx.example.org", false, now);
        assert!(w.len() == 1 && w[0].contains("expired on"), "{w:?}");
        let other = leaf_from_der(&self_signed(&["*.example.net"], 90)).unwrap();
        let w = warnings(&other, p, "mx.example.org", false, now);
        assert!(
            w.len() == 1 && w[0].contains("names *.example.net"),
            "{w:?}"
        );
    }
}
