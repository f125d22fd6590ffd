//! What a local domain needs in DNS for tern to send and receive its mail, as zone-file records ready to
//! paste (`tern dns`): MX, SPF, DKIM (the active keys), DMARC, TLS-RPT, RFC 6186/8314 SRV records for the
//! listeners clients use, the MTA-STS, autoconfig and autodiscover names the HTTP listeners answer for,
//! and the address and PTR records of the host where they are known.

use crate::config::{Config, ListenerKind};
use crate::outbound::dkim::KeyInfo;
use std::net::IpAddr;

/// One record, or a note (`kind` empty) telling the admin what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub kind: &'static str,
    pub value: String,
    /// Why, or what to change later; printed as a comment above the record.
    pub note: Option<String>,
}

fn rec(name: String, kind: &'static str, value: String, note: Option<&str>) -> Record {
    Record {
        name,
        kind,
        value,
        note: note.map(str::to_string),
    }
}

/// A TXT value as zone text: quoted character-strings of at most 255 octets.
fn txt(value: &str) -> String {
    crate::outbound::dkim::zone_text(value)
}

/// The reverse-lookup name of an address (`4.3.2.1.in-addr.arpa.`, nibbles for IPv6).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa."
        }
    }
}

/// The host's public addresses: `given` (`tern dns --ip`), else the listeners' bind addresses that are
/// neither loopback nor unspecified.
pub fn public_addresses(cfg: &Config, given: &[IpAddr]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if given.is_empty() {
        cfg.listeners
            .iter()
            .flat_map(|l| &l.bind)
            .map(|a| a.ip())
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
            .collect()
    } else {
        given.to_vec()
    };
    ips.sort();
    ips.dedup();
    ips
}

/// Every record `domain` needs.
pub fn records(cfg: &Config, domain: &str, keys: &[KeyInfo], ips: &[IpAddr]) -> Vec<Record> {
    let host = format!("{}.", cfg.hostname.trim_end_matches('.'));
    let d = format!("{}.", domain.trim_end_matches('.'));
    let postmaster = format!("postmaster@{domain}");
    let mut out = vec![rec(
        d.clone(),
        "MX",
        format!("10 {host}"),
        Some("mail for the domain goes to this host"),
    )];
    // Mail through a smarthost reaches other domains from the smarthost's address, not ours.
    let relayed = cfg.delivery.transports.iter().any(|t| t.relay.is_some());
    out.push(rec(
        d.clone(),
        "TXT",
        txt("v=spf1 mx -all"),
        Some(if relayed {
            "SPF: the MX host sends. Mail leaves through a [[transport]] relay: add its include: or ip4: before -all"
        } else {
            "SPF: only the MX host sends the domain's mail"
        }),
    ));
    let active: Vec<&KeyInfo> = keys
        .iter()
        .filter(|k| k.domain == domain && !k.record.is_empty())
        .collect();
    if active.is_empty() {
        out.push(rec(
            String::new(),
            "",
            String::new(),
            Some(&format!(
                "no DKIM key for {domain}: tern dkim generate --domain {domain} --selector s1, then run tern dns again"
            )),
        ));
    }
    for k in active {
        let note = match k.state {
            "active" | "configured" => "DKIM: the key that signs now".to_string(),
            _ => format!(
                "DKIM: key {} is pending; publish it, then tern dkim activate --domain {domain} {}",
                k.selector, k.selector
            ),
        };
        out.push(rec(
            format!("{}._domainkey.{d}", k.selector),
            "TXT",
            txt(&k.record),
            Some(&note),
        ));
    }
    out.push(rec(
        format!("_dmarc.{d}"),
        "TXT",
        txt(&format!("v=DMARC1; p=none; rua=mailto:{postmaster}")),
        Some("DMARC: p=none first, to read the reports; move to p=quarantine, then p=reject, once they show only your own mail passing"),
    ));
    out.push(rec(
        format!("_smtp._tls.{d}"),
        "TXT",
        txt(&format!("v=TLSRPTv1; rua=mailto:{postmaster}")),
        Some("TLS-RPT (RFC 8460): other MTAs report TLS failures delivering to you"),
    ));
    let has = |kind: ListenerKind| cfg.listeners.iter().any(|l| l.kind == kind);
    if let Some(policy) = &cfg.mta_sts {
        out.push(rec(
            format!("_mta-sts.{d}"),
            "TXT",
            txt(&crate::web::mta_sts::txt_record(policy)),
            Some(&format!(
                "MTA-STS (RFC 8461): mode {}; the id follows the policy, so publish this again after changing [mta_sts]",
                policy.mode.as_str()
            )),
        ));
        out.push(rec(
            format!("mta-sts.{d}"),
            "CNAME",
            host.clone(),
            Some(if has(ListenerKind::Https) {
                "the policy is served at https://mta-sts.<domain>/.well-known/mta-sts.txt; the certificate must name it ([acme] does by default)"
            } else {
                "the policy is served by an https [[listener]], and there is none yet: add one on port 443"
            }),
        ));
    }
    if has(ListenerKind::Http) || has(ListenerKind::Https) {
        out.push(rec(
            format!("autoconfig.{d}"),
            "CNAME",
            host.clone(),
            Some("Thunderbird and others fetch their settings from autoconfig.<domain>"),
        ));
        out.push(rec(
            format!("autodiscover.{d}"),
            "CNAME",
            host.clone(),
            Some("Outlook's Autodiscover (POST /autodiscover/autodiscover.xml)"),
        ));
    }
    // RFC 6186 and RFC 8314 7: where mail clients find submission, IMAP and POP3.
    let services = [
        (ListenerKind::Submissions, "_submissions._tcp"),
        (ListenerKind::Submission, "_submission._tcp"),
        (ListenerKind::Imaps, "_imaps._tcp"),
        (ListenerKind::Imap, "_imap._tcp"),
        (ListenerKind::Pop3s, "_pop3s._tcp"),
        (ListenerKind::Pop3, "_pop3._tcp"),
    ];
    for (kind, label) in services {
        let port = cfg
            .listeners
            .iter()
            .filter(|l| l.kind == kind)
            .flat_map(|l| &l.bind)
            .map(|a| a.port())
            .next();
        let Some(port) = port else { continue };
        // Implicit TLS first (RFC 8314 5.1): a lower priority number wins.
        let priority = if matches!(
            kind,
            ListenerKind::Submissions | ListenerKind::Imaps | ListenerKind::Pop3s
        ) {
            0
        } else {
            10
        };
        out.push(rec(
            format!("{label}.{d}"),
            "SRV",
            format!("{priority} 1 {port} {host}"),
            None,
        ));
    }
    for ip in ips {
        let (kind, what) = match ip {
            IpAddr::V4(_) => ("A", "IPv4"),
            IpAddr::V6(_) => ("AAAA", "IPv6"),
        };
        out.push(rec(
            host.clone(),
            kind,
            ip.to_string(),
            Some(&format!("the host's {what} address")),
        ));
        out.push(rec(
            reverse_name(*ip),
            "PTR",
            host.clone(),
            Some("PTR: set by whoever owns the address (your provider's panel); it must name the host, whose A/AAAA names the address back"),
        ));
    }
    if ips.is_empty() {
        out.push(rec(
            String::new(),
            "",
            String::new(),
            Some(&format!(
                "the host's public address is not known (listeners bind 0.0.0.0 or loopback): tern dns --ip ADDRESS prints its {host} A/AAAA and PTR"
            )),
        ));
    }
    out
}

/// Zone-file text for `records`: each note as a `;` comment, then the record.
pub fn zone_text(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        if let Some(n) = &r.note {
            out.push_str(&format!("; {n}\n"));
        }
        if !r.kind.is_empty() {
            out.push_str(&format!("{}\t3600\tIN\t{}\t{}\n", r.name, r.kind, r.value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reverse_names() {
        assert_eq!(
            super::reverse_name("192.0.2.10".parse().unwrap()),
            "10.2.0.192.in-addr.arpa."
        );
        let v6 = super::reverse_name("2001:db8::1".parse().unwrap());
        assert!(
            v6.starts_with("1.0.0.0.0.0.0.0.") && v6.ends_with("8.b.d.0.1.0.0.2.ip6.arpa."),
            "{v6}"
        );
    }
}
