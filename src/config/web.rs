//! `[http]`, `[mta_sts]` and `[acme]`: the limits of the HTTP listeners, the MTA-STS policy they serve, and
//! the certificates tern orders for itself.

use super::{ConfigError, Validator, raw};
use crate::smtp::{Domain, Mailbox};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub header_timeout: Duration,
    pub connection_time: Duration,
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtaStsMode {
    Testing,
    Enforce,
    None,
}

impl MtaStsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtaStsMode::Testing => "testing",
            MtaStsMode::Enforce => "enforce",
            MtaStsMode::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtaStsSettings {
    pub mode: MtaStsMode,
    pub mx: Vec<String>,
    pub max_age: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    Http01,
    TlsAlpn01,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    pub directory_url: String,
    pub contact: Vec<String>,
    pub names: Vec<String>,
    pub challenge: Challenge,
    pub ca_file: Option<PathBuf>,
    pub renew_before: Duration,
    pub retry: Duration,
}

/// A DNS name as a certificate or an MX pattern may hold it: LDH labels, `*.` leading only when allowed.
fn valid_name(name: &str, wildcard: bool) -> bool {
    let rest = match name.strip_prefix("*.") {
        Some(r) if wildcard => r,
        Some(_) => return false,
        None => name,
    };
    rest.len() <= 253
        && rest.contains('.')
        && rest.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Validator {
    pub(super) fn http(&self, h: &raw::RawHttp) -> Result<HttpSettings, ConfigError> {
        if h.max_header_bytes < 8192 {
            return Err(self.err(
                "http.max_header_bytes",
                format!("{} is too small (8192 at least)", h.max_header_bytes),
            ));
        }
        Ok(HttpSettings {
            header_timeout: Duration::from_secs(h.header_timeout_secs.max(1)),
            connection_time: Duration::from_secs(h.connection_secs.max(1)),
            max_header_bytes: h.max_header_bytes,
            max_body_bytes: h.max_body_bytes,
            max_connections: h.max_connections.max(1),
            max_connections_per_ip: h.max_connections_per_ip.max(1),
        })
    }

    pub(super) fn mta_sts(
        &self,
        m: &raw::RawMtaSts,
        hostname: &str,
    ) -> Result<MtaStsSettings, ConfigError> {
        let mode = match m.mode.as_str() {
            "testing" => MtaStsMode::Testing,
            "enforce" => MtaStsMode::Enforce,
            "none" => MtaStsMode::None,
            other => {
                return Err(self.err(
                    "mta_sts.mode",
                    format!("{other:?} is not \"testing\", \"enforce\" or \"none\""),
                ));
            }
        };
        let mut mx = Vec::new();
        for (i, p) in m.mx.iter().enumerate() {
            let p = p.trim().to_ascii_lowercase();
            if !valid_name(&p, true) {
                return Err(self.err(
                    format!("mta_sts.mx[{i}]"),
                    format!("{p:?} is not a host name or *.domain pattern"),
                ));
            }
            mx.push(p);
        }
        if mx.is_empty() {
            mx.push(hostname.to_string());
        }
        // RFC 8461 section 3.2: at most 31557600 (about a year).
        if m.max_age_secs == 0 || m.max_age_secs > 31_557_600 {
            return Err(self.err(
                "mta_sts.max_age_secs",
                format!("{} is not between 1 and 31557600", m.max_age_secs),
            ));
        }
        Ok(MtaStsSettings {
            mode,
            mx,
            max_age: m.max_age_secs,
        })
    }

    pub(super) fn acme(
        &self,
        a: &raw::RawAcme,
        hostname: &str,
        local: &[Domain],
        postmaster: &Mailbox,
    ) -> Result<Option<AcmeSettings>, ConfigError> {
        if !a.enabled {
            return Ok(None);
        }
        if !a.directory_url.starts_with("https://") {
            return Err(self.err(
                "acme.directory_url",
                format!("{:?} is not an https:// URL", a.directory_url),
            ));
        }
        let challenge = match a.challenge.as_str() {
            "http-01" => Challenge::Http01,
            "tls-alpn-01" => Challenge::TlsAlpn01,
            other => {
                return Err(self.err(
                    "acme.challenge",
                    format!("{other:?} is not \"http-01\" or \"tls-alpn-01\""),
                ));
            }
        };
        let mut names = Vec::new();
        if a.names.is_empty() {
            names.push(hostname.to_string());
            for d in local {
                names.push(format!("mta-sts.{d}"));
                names.push(format!("autoconfig.{d}"));
            }
        }
        for (i, n) in a.names.iter().enumerate() {
            let n = n.trim().to_ascii_lowercase();
            // Wildcards need dns-01, which tern does not answer.
            if !valid_name(&n, false) {
                return Err(self.err(
                    format!("acme.names[{i}]"),
                    format!("{n:?} is not a host name (wildcards need a dns-01 challenge, which tern does not answer)"),
                ));
            }
            names.push(n);
        }
        names.dedup();
        let mut contact = Vec::new();
        for (i, c) in a.contact.iter().enumerate() {
            if !c.starts_with("mailto:") || c.contains(|ch: char| ch.is_control() || ch == ' ') {
                return Err(self.err(
                    format!("acme.contact[{i}]"),
                    format!("{c:?} is not a mailto: URL"),
                ));
            }
            contact.push(c.clone());
        }
        if contact.is_empty() {
            contact.push(format!("mailto:{postmaster}"));
        }
        Ok(Some(AcmeSettings {
            directory_url: a.directory_url.clone(),
            contact,
            names,
            challenge,
            ca_file: a.ca_file.as_deref().map(|f| self.resolve(f)),
            renew_before: Duration::from_secs(a.renew_before_secs),
            retry: Duration::from_secs(a.retry_secs.max(1)),
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_host_names() {
        assert!(super::valid_name("mx.example.org", false));
        assert!(super::valid_name("*.example.org", true));
        assert!(!super::valid_name("*.example.org", false));
        assert!(!super::valid_name("example", false));
        assert!(!super::valid_name("a..b", false));
        assert!(!super::valid_name("mx.example.org\nmode: none", true));
        assert!(!super::valid_name("-a.example.org", false));
    }
}
