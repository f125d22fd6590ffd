//! `[[transport]]`: outbound routing rules (a relayhost, or TLS and AUTH for some destinations), checked
//! here: domain patterns, the relay's address, and a password file only the service user can read.

use super::{ConfigError, Validator, raw};
use crate::config::raw::TlsPolicy;

/// Credentials for AUTH at a relay. The password is never printed (`Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct RelayAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for RelayAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RelayAuth {{ user: {:?}, password: <hidden> }}",
            self.user
        )
    }
}

/// Where an LMTP transport delivers (RFC 2033).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpTarget {
    Tcp(String, u16),
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for LmtpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LmtpTarget::Tcp(h, p) => write!(f, "lmtp:{h}:{p}"),
            LmtpTarget::Unix(p) => write!(f, "lmtp:unix:{}", p.display()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportRule {
    /// Lower-cased: `example.com`, `*.example.com`, `*`.
    pub domains: Vec<String>,
    /// (host, port) of the relay; `None`: MX delivery (or LMTP).
    pub relay: Option<(String, u16)>,
    /// An LMTP server instead of SMTP (`relay = "lmtp:unix:/path"` or `"lmtp:host:port"`).
    pub lmtp: Option<LmtpTarget>,
    pub tls: Option<TlsPolicy>,
    pub auth: Option<RelayAuth>,
    /// Source addresses, by family.
    pub bind_v4: Option<std::net::Ipv4Addr>,
    pub bind_v6: Option<std::net::Ipv6Addr>,
    /// Connections at once under this rule.
    pub concurrency: Option<usize>,
}

impl TransportRule {
    /// The source address for a connection to `to`, if the rule names one of its family.
    pub fn source_for(&self, to: std::net::IpAddr) -> Option<std::net::IpAddr> {
        match to {
            std::net::IpAddr::V4(_) => self.bind_v4.map(std::net::IpAddr::V4),
            std::net::IpAddr::V6(_) => self.bind_v6.map(std::net::IpAddr::V6),
        }
    }

    pub fn matches(&self, domain: &str) -> bool {
        let d = domain.to_ascii_lowercase();
        self.domains.iter().any(|p| {
            p == "*"
                || *p == d
                || p.strip_prefix("*.").is_some_and(|base| {
                    d.len() > base.len() + 1 && d.ends_with(&format!(".{base}"))
                })
        })
    }
}

/// The first rule for `domain`.
pub fn rule_for<'a>(rules: &'a [TransportRule], domain: &str) -> Option<&'a TransportRule> {
    rules.iter().find(|r| r.matches(domain))
}

impl Validator {
    pub(super) fn transports(
        &self,
        list: &[raw::RawTransport],
    ) -> Result<Vec<TransportRule>, ConfigError> {
        let mut out = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let key = |k: &str| format!("transport[{i}].{k}");
            if t.domains.is_empty() {
                return Err(self.err(key("domains"), "names no domain"));
            }
            let mut domains = Vec::new();
            for d in &t.domains {
                let bare = d.strip_prefix("*.").unwrap_or(d);
                if d != "*" && crate::smtp::Domain::parse(bare, true).is_err() {
                    return Err(self.err(
                        key("domains"),
                        format!("{d:?} is not a domain, *.domain or *"),
                    ));
                }
                domains.push(d.to_ascii_lowercase());
            }
            let mut lmtp = None;
            let relay = match &t.relay {
                None => None,
                Some(r) if r.starts_with("lmtp:") => {
                    let rest = &r["lmtp:".len()..];
                    lmtp = Some(match rest.strip_prefix("unix:") {
                        Some(path) if path.starts_with('/') => {
                            LmtpTarget::Unix(std::path::PathBuf::from(path))
                        }
                        Some(_) => {
                            return Err(self.err(
                                key("relay"),
                                format!("{r:?}: the socket path must be absolute (lmtp:unix:/run/dovecot/lmtp)"),
                            ));
                        }
                        None => {
                            let (h, p) = parse_host_port(rest).ok_or_else(|| {
                                self.err(
                                    key("relay"),
                                    format!("{r:?} is not lmtp:host:port or lmtp:unix:/path"),
                                )
                            })?;
                            LmtpTarget::Tcp(h, p)
                        }
                    });
                    if t.auth_user.is_some() || t.tls.is_some_and(|p| p != TlsPolicy::May) {
                        return Err(self.err(
                            key("relay"),
                            "an LMTP transport takes no auth_user and no tls (LMTP is for a delivery agent on this host or network)",
                        ));
                    }
                    None
                }
                Some(r) => Some(parse_host_port(r).ok_or_else(|| {
                    self.err(
                        key("relay"),
                        format!("{r:?} is not host:port (a name, an IPv4 address, or [IPv6]:port)"),
                    )
                })?),
            };
            let auth = match (&t.auth_user, &t.auth_password_file) {
                (None, None) => None,
                (Some(_), None) | (None, Some(_)) => {
                    return Err(self.err(
                        key("auth_user"),
                        "auth_user and auth_password_file go together",
                    ));
                }
                (Some(user), Some(file)) => {
                    if relay.is_none() && lmtp.is_none() {
                        return Err(self.err(key("auth_user"), "AUTH needs a relay"));
                    }
                    let path = self.resolve(file);
                    let meta = std::fs::metadata(&path).map_err(|e| {
                        self.err(
                            key("auth_password_file"),
                            format!("{}: {e}", path.display()),
                        )
                    })?;
                    use std::os::unix::fs::PermissionsExt;
                    if meta.permissions().mode() & 0o077 != 0 {
                        return Err(self.err(
                            key("auth_password_file"),
                            format!(
                                "{} is readable by others (mode {:o}): chmod 0600 it",
                                path.display(),
                                meta.permissions().mode() & 0o777
                            ),
                        ));
                    }
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        self.err(
                            key("auth_password_file"),
                            format!("{}: {e}", path.display()),
                        )
                    })?;
                    let password = text.lines().next().unwrap_or("").to_string();
                    if password.is_empty() {
                        return Err(self.err(
                            key("auth_password_file"),
                            format!("{} holds no password", path.display()),
                        ));
                    }
                    Some(RelayAuth {
                        user: user.clone(),
                        password,
                    })
                }
            };
            let (mut bind_v4, mut bind_v6) = (None, None);
            for b in &t.bind {
                let ip: std::net::IpAddr = b
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .map_err(|_| {
                        self.err(key("bind"), format!("{b:?} is not an IPv4 or IPv6 address"))
                    })?;
                // An address this host does not have would fail every connection: said now, not at 3 a.m.
                if let Err(e) = std::net::UdpSocket::bind((ip, 0)) {
                    return Err(self.err(
                        key("bind"),
                        format!("{ip} is not an address of this host: {e}"),
                    ));
                }
                let dup = match ip {
                    std::net::IpAddr::V4(a) => bind_v4.replace(a).is_some(),
                    std::net::IpAddr::V6(a) => bind_v6.replace(a).is_some(),
                };
                if dup {
                    return Err(self.err(key("bind"), "names two addresses of one family"));
                }
            }
            if let Some(c) = t.concurrency
                && !(1..=10_000).contains(&c)
            {
                return Err(self.err(key("concurrency"), "must be between 1 and 10000"));
            }
            out.push(TransportRule {
                domains,
                relay,
                lmtp,
                tls: t.tls,
                auth,
                bind_v4,
                bind_v6,
                concurrency: t.concurrency,
            });
        }
        Ok(out)
    }
}

/// `host:port`, `1.2.3.4:port`, `[::1]:port`.
fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        h.parse::<std::net::Ipv6Addr>().ok()?;
        (h.to_string(), p)
    } else {
        let (h, p) = s.rsplit_once(':')?;
        (h.to_string(), p)
    };
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let ok = host.parse::<std::net::IpAddr>().is_ok()
        || crate::smtp::Domain::parse(&host, false).is_ok();
    ok.then(|| (host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_addresses() {
        let r = TransportRule {
            domains: vec!["*.example.com".into(), "example.net".into()],
            relay: None,
            lmtp: None,
            tls: None,
            auth: None,
            bind_v4: None,
            bind_v6: None,
            concurrency: None,
        };
        assert!(
            r.matches("mx.example.com") && r.matches("A.Example.COM") && r.matches("example.net")
        );
        assert!(
            !r.matches("example.com")
                && !r.matches("badexample.com")
                && !r.matches("sub.example.net")
        );
        assert_eq!(
            parse_host_port("smtp.example.net:587"),
            Some(("smtp.example.net".into(), 587))
        );
        assert_eq!(parse_host_port("[::1]:25"), Some(("::1".into(), 25)));
        assert_eq!(
            parse_host_port("127.0.0.1:2525"),
            Some(("127.0.0.1".into(), 2525))
        );
        assert_eq!(parse_host_port("smtp.example.net"), None);
        assert_eq!(parse_host_port("smtp.example.net:0"), None);
        let a = RelayAuth {
            user: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{a:?}").contains("secret"));
    }
}
