//! The daemon's one DNS resolver (hickory), shared by outbound delivery and the inbound checks.
//!
//! hickory's response cache honours record TTLs and caches negative answers (NXDOMAIN, NODATA) for their SOA
//! minimum, so a name is asked again only when unknown or expired. On top of it this module applies the mail
//! rules: MX preference order with a random choice among equal preferences, the implicit MX (RFC 5321 5.1),
//! the null MX (RFC 7505), and the split between a permanent answer (NXDOMAIN, no usable host) and a
//! temporary one (SERVFAIL, timeouts).

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum DnsError {
    /// NXDOMAIN: the name does not exist. Permanent.
    #[error("{0}: no such domain (NXDOMAIN)")]
    NoSuchDomain(String),
    /// SERVFAIL, REFUSED, a timeout or a network error. Temporary.
    #[error("{name}: temporary DNS failure: {reason}")]
    Temporary { name: String, reason: String },
    #[error("{0:?} is not a valid domain name")]
    BadName(String),
    #[error("cannot set up the resolver: {0}")]
    Setup(String),
}

/// Where mail for a domain goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// MX hosts, in the order to try them.
    Mx(Vec<String>),
    /// No MX records: the domain itself is the host (RFC 5321 5.1).
    Implicit(String),
    /// `MX 0 .`: the domain accepts no mail (RFC 7505).
    Null,
    /// We are among the domain's best MX hosts: no host is left to relay to (RFC 5321 5.1).
    OnlySelf,
}

#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
}

/// The MX records better than our own (RFC 5321 5.1), or all of them when we are not listed.
fn without_self(mx: Vec<(u16, String)>, own_name: &str) -> Vec<(u16, String)> {
    let own = mx
        .iter()
        .filter(|(_, host)| host.eq_ignore_ascii_case(own_name))
        .map(|(pref, _)| *pref)
        .min();
    match own {
        Some(p) => mx.into_iter().filter(|(pref, _)| *pref < p).collect(),
        None => mx,
    }
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

impl Dns {
    /// A resolver on `nameservers` (each `ip:port`, UDP and TCP), or on /etc/resolv.conf when `None`.
    pub fn new(nameservers: Option<&[SocketAddr]>) -> Result<Dns, DnsError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match nameservers {
            Some(list) => {
                let servers = list
                    .iter()
                    .map(|addr| {
                        let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                        for c in &mut ns.connections {
                            c.port = addr.port();
                        }
                        ns
                    })
                    .collect();
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    provider,
                )
            }
            None => TokioResolver::builder(provider).map_err(|e| DnsError::Setup(e.to_string()))?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = Duration::from_secs(5);
        opts.attempts = 2;
        opts.cache_size = 8192;
        opts.ndots = 0;
        // Named servers are all that is asked: /etc/hosts would answer for 127.0.0.1 and friends otherwise.
        if nameservers.is_some() {
            opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        }
        let resolver = builder
            .build()
            .map_err(|e| DnsError::Setup(e.to_string()))?;
        Ok(Dns { resolver })
    }

    /// The resolver itself, for mail-auth's SPF, DKIM and DMARC lookups.
    pub fn resolver(&self) -> &TokioResolver {
        &self.resolver
    }

    /// Where mail for `domain` goes. `own_name` is this server's host name: RFC 5321 5.1 says that if it
    /// is in the MX list, every MX at its preference or worse is dropped (the others are better relays).
    pub async fn route(&self, domain: &str, own_name: &str) -> Result<Route, DnsError> {
        let name = fqdn(domain);
        match self.resolver.mx_lookup(name.as_str()).await {
            Ok(lookup) => {
                let mx: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((
                            mx.preference,
                            mx.exchange.to_ascii().trim_end_matches('.').to_lowercase(),
                        )),
                        _ => None,
                    })
                    .collect();
                if mx.is_empty() {
                    return Ok(Route::Implicit(domain.to_string()));
                }
                // RFC 7505 3: a single MX with an empty exchange (the root) means no mail.
                if mx.iter().any(|(_, host)| host.is_empty()) {
                    return Ok(Route::Null);
                }
                let mx = without_self(mx, own_name);
                if mx.is_empty() {
                    return Ok(Route::OnlySelf);
                }
                Ok(Route::Mx(order(mx, rand::random)))
            }
            Err(e) => match classify(domain, e) {
                Lookup::NoData => Ok(Route::Implicit(domain.to_string())),
                Lookup::Failed(e) => Err(e),
            },
        }
    }

    /// IPv6 and IPv4 addresses of a host (CNAMEs followed); empty when it has none.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(vec![ip]);
        }
        let name = fqdn(host);
        let mut out = Vec::new();
        let (v6, v4) = tokio::join!(
            self.resolver.ipv6_lookup(name.as_str()),
            self.resolver.ipv4_lookup(name.as_str())
        );
        for result in [v6, v4] {
            match result {
                Ok(lookup) => out.extend(lookup.answers().iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })),
                Err(e) => match classify(host, e) {
                    Lookup::NoData => {}
                    Lookup::Failed(DnsError::NoSuchDomain(n)) => {
                        return Err(DnsError::NoSuchDomain(n));
                    }
                    Lookup::Failed(e) => return Err(e),
                },
            }
        }
        Ok(out)
    }
}

enum Lookup {
    /// The name exists but has no records of that type.
    NoData,
    Failed(DnsError),
}

/// A lookup error as tern sees it: None for NODATA (the name exists without records of the type).
pub fn classify_error(name: &str, e: NetError) -> Option<DnsError> {
    match classify(name, e) {
        Lookup::NoData => None,
        Lookup::Failed(e) => Some(e),
    }
}

fn classify(name: &str, e: NetError) -> Lookup {
    match &e {
        NetError::Dns(HickoryDnsError::NoRecordsFound(nr)) => match nr.response_code {
            ResponseCode::NXDomain => Lookup::Failed(DnsError::NoSuchDomain(name.to_string())),
            ResponseCode::NoError => Lookup::NoData,
            _ => Lookup::Failed(DnsError::Temporary {
                name: name.to_string(),
                reason: e.to_string(),
            }),
        },
        _ => Lookup::Failed(DnsError::Temporary {
            name: name.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// MX hosts by preference; hosts of equal preference in random order (RFC 5321 5.1), each once.
fn order(mut mx: Vec<(u16, String)>, mut random: impl FnMut() -> u32) -> Vec<String> {
    let mut keyed: Vec<(u16, u32, String)> = mx.drain(..).map(|(p, h)| (p, random(), h)).collect();
    keyed.sort();
    let mut hosts: Vec<String> = Vec::new();
    for (_, _, h) in keyed {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    hosts
}

#[cfg(test)]
mod tests {

    #[test]
    fn our_own_mx_and_everything_after_it_are_dropped() {
        let mx = vec![
            (10, "mx1.other.test".to_string()),
            (20, "mx.example.test".to_string()),
            (20, "mx2.other.test".to_string()),
            (30, "mx3.other.test".to_string()),
        ];
        let kept = super::without_self(mx.clone(), "MX.example.test");
        assert_eq!(kept, vec![(10, "mx1.other.test".to_string())]);
        assert!(
            super::without_self(vec![(5, "mx.example.test".into())], "mx.example.test").is_empty()
        );
        assert_eq!(super::without_self(mx.clone(), "elsewhere.test"), mx);
    }

    use super::*;

    #[test]
    fn preference_order_with_shuffled_ties() {
        let mx = vec![
            (20, "b".to_string()),
            (10, "a1".to_string()),
            (10, "a2".to_string()),
            (30, "a1".to_string()),
        ];
        let mut n = 0u32;
        let got = order(mx.clone(), || {
            n += 1;
            n
        });
        assert_eq!(got, ["a1", "a2", "b"]);
        let mut n = 10u32;
        let got = order(mx, || {
            n -= 1;
            n
        });
        assert_eq!(
            got,
            ["a2", "a1", "b"],
            "equal preferences follow the random key"
        );
    }
}
