//! `[checks] dnsbl`: blocklist zones, and which of their answers mean "listed".

use super::{Cidr, ConfigError, Validator, raw};
use crate::smtp::Domain;

/// A DNS blocklist zone and which A answers mean the client is listed.
#[derive(Debug, Clone)]
pub struct Dnsbl {
    pub zone: String,
    /// `None`: 127.0.0.2 to 127.0.0.255 (what blocklists answer for a listing; 127.255.255.x are errors).
    pub listed: Option<Vec<Cidr>>,
}

impl Dnsbl {
    pub fn lists(&self, answer: std::net::Ipv4Addr) -> bool {
        match &self.listed {
            Some(nets) => nets
                .iter()
                .any(|n| n.contains(std::net::IpAddr::V4(answer))),
            None => {
                let o = answer.octets();
                o[0] == 127 && o[1] == 0 && o[2] == 0 && o[3] >= 2
            }
        }
    }
}

impl Validator {
    pub(super) fn dnsbl(&self, entries: &[raw::RawDnsbl]) -> Result<Vec<Dnsbl>, ConfigError> {
        let mut dnsbl = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let (z, listed) = match entry {
                raw::RawDnsbl::Zone(z) => (z, None),
                raw::RawDnsbl::Table { zone, listed } => (zone, Some(listed)),
            };
            Domain::parse(z, false).map_err(|_| {
                self.err(
                    format!("checks.dnsbl[{i}]"),
                    format!("{z:?} is not a DNS zone name"),
                )
            })?;
            let listed = match listed {
                None => None,
                Some(list) => {
                    let mut nets = Vec::new();
                    for (j, n) in list.iter().enumerate() {
                        nets.push(Cidr::parse(n).filter(|c| c.is_ipv4()).ok_or_else(|| {
                            self.err(
                                format!("checks.dnsbl[{i}].listed[{j}]"),
                                format!("{n:?} is not an IPv4 address or network"),
                            )
                        })?);
                    }
                    Some(nets)
                }
            };
            dnsbl.push(Dnsbl {
                zone: z.trim_end_matches('.').to_lowercase(),
                listed,
            });
        }
        Ok(dnsbl)
    }
}
