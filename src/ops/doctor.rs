//! `tern doctor`: looks up what `tern dns` says to publish through the configured resolver and says, record
//! by record, OK or what is wrong and how to fix it: MX, SPF (present, single, at most 10 lookups, passing
//! for the host's addresses), DKIM (the active key as published), DMARC, TLS-RPT, MTA-STS (the id of the
//! policy served now), the autoconfig names, PTR (naming the host, forward-confirmed), the certificate
//! (covering the MX and MTA-STS names, not expiring) and port 25 of the host as seen from the host.

use crate::config::{Config, ListenerKind};
use crate::dns::{Dns, DnsError};
use crate::outbound::dkim::KeyInfo;
use hickory_resolver::proto::rr::RData;
use serde::Serialize;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    /// The name looked up (or the address, the file).
    pub name: String,
    pub detail: String,
    /// What to do, when something is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn found(
    check: &'static str,
    status: Status,
    name: &str,
    detail: String,
    fix: Option<String>,
) -> Finding {
    Finding {
        check,
        status,
        name: name.to_string(),
        detail,
        fix,
    }
}

/// SPF terms that cost a DNS lookup (RFC 7208 section 4.6.4), and the limit.
const SPF_LOOKUP_TERMS: [&str; 6] = ["include:", "a", "mx", "ptr", "exists:", "redirect="];
const SPF_MAX_LOOKUPS: usize = 10;

pub struct Doctor<'a> {
    pub cfg: &'a Config,
    pub dns: Dns,
    pub keys: Vec<KeyInfo>,
    /// The host's public addresses (from --ip, the listeners, or the host name's A/AAAA).
    pub ips: Vec<IpAddr>,
    /// Where the port 25 check connects: each host address at the MX port, or what `--probe` names.
    pub probes: Vec<std::net::SocketAddr>,
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

impl Doctor<'_> {
    /// TXT strings at `name` (each record's character-strings joined); empty when there are none.
    async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        match self.dns.resolver().txt_lookup(fqdn(name).as_str()).await {
            Ok(l) => Ok(l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|c| String::from_utf8_lossy(c).to_string())
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) => none_or(name, e),
        }
    }

    /// The host name's addresses as the world sees them.
    pub async fn host_addresses(&self) -> Result<Vec<IpAddr>, DnsError> {
        self.dns.addresses(&self.cfg.hostname).await
    }

    /// Every check for `domain`.
    pub async fn domain(&self, domain: &str) -> Vec<Finding> {
        let mut out = Vec::new();
        out.push(self.mx(domain).await);
        out.extend(self.spf(domain).await);
        out.extend(self.dkim(domain).await);
        out.push(self.dmarc(domain).await);
        out.push(self.tls_rpt(domain).await);
        if let Some(f) = self.mta_sts(domain).await {
            out.push(f);
        }
        out.extend(self.autoconfig(domain).await);
        out
    }

    /// The checks of the host itself: PTR for each address, the certificate, port 25.
    pub async fn host(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        if self.ips.is_empty() {
            out.push(found(
                "A/AAAA",
                Status::Fail,
                &self.cfg.hostname,
                format!("{} has no address in DNS", self.cfg.hostname),
                Some(format!(
                    "publish {}. A (and AAAA) with the host's public addresses; tern dns --ip ADDRESS prints them",
                    self.cfg.hostname
                )),
            ));
        }
        for ip in &self.ips {
            out.push(self.ptr(*ip).await);
        }
        out.extend(self.certificate());
        for addr in &self.probes {
            out.push(self.port25(*addr).await);
        }
        out
    }

    async fn mx(&self, domain: &str) -> Finding {
        let host = &self.cfg.hostname;
        let fix = Some(format!("publish {domain}. MX 10 {host}."));
        let lookup = match self.dns.resolver().mx_lookup(fqdn(domain).as_str()).await {
            Ok(l) => l,
            Err(e) => {
                return match none_or::<()>(domain, e) {
                    Ok(_) => found(
                        "MX",
                        Status::Fail,
                        domain,
                        "no MX record: other MTAs deliver to the domain's own address, if any"
                            .into(),
                        fix,
                    ),
                    Err(e) => lookup_failed("MX", domain, e),
                };
            }
        };
        let mut mx: Vec<(u16, String)> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(m) => Some((
                    m.preference,
                    m.exchange.to_ascii().trim_end_matches('.').to_lowercase(),
                )),
                _ => None,
            })
            .collect();
        mx.sort();
        let listed = mx
            .iter()
            .map(|(p, h)| format!("{p} {h}"))
            .collect::<Vec<_>>()
            .join(", ");
        match mx.iter().find(|(_, h)| h == host) {
            Some((p, _)) if *p == mx[0].0 => {
                found("MX", Status::Ok, domain, format!("MX {listed}"), None)
            }
            Some(_) => found(
                "MX",
                Status::Warn,
                domain,
                format!("MX {listed}: {host} is a backup, others are tried first"),
                Some(format!(
                    "make {host} the lowest preference if it is the primary"
                )),
            ),
            None => found(
                "MX",
                Status::Fail,
                domain,
                format!(
                    "MX points elsewhere ({listed}), not to {host}: the domain's mail does not reach this server"
                ),
                fix,
            ),
        }
    }

    async fn spf(&self, domain: &str) -> Vec<Finding> {
        let fix = Some(format!("publish one TXT at {domain}.: \"v=spf1 mx -all\""));
        let records = match self.txt(domain).await {
            Ok(r) => r,
            Err(e) => return vec![lookup_failed("SPF", domain, e)],
        };
        let spf: Vec<&String> = records
            .iter()
            .filter(|t| {
                t.to_ascii_lowercase().starts_with("v=spf1")
                    && (t.len() == 6 || t.as_bytes()[6] == b' ')
            })
            .collect();
        match spf.len() {
            0 => {
                return vec![found(
                    "SPF",
                    Status::Fail,
                    domain,
                    "no SPF record: receivers cannot tell your mail from forgeries".into(),
                    fix,
                )];
            }
            1 => {}
            n => {
                return vec![found(
                    "SPF",
                    Status::Fail,
                    domain,
                    format!(
                        "{n} SPF records ({}): receivers treat that as permerror (RFC 7208 section 4.5)",
                        spf.iter()
                            .map(|s| format!("{s:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some("merge them into one TXT record".into()),
                )];
            }
        }
        let mut out = Vec::new();
        let lookups = self.spf_lookups(domain).await;
        if lookups > SPF_MAX_LOOKUPS {
            out.push(found(
                "SPF",
                Status::Fail,
                domain,
                format!("{:?} needs {lookups} DNS lookups, over the limit of {SPF_MAX_LOOKUPS}: receivers treat it as permerror (RFC 7208 section 4.6.4)", spf[0]),
                Some("replace include: chains with ip4:/ip6: ranges, or flatten them".into()),
            ));
            return out;
        }
        let auth = mail_auth::MessageAuthenticator(self.dns.resolver().clone());
        let sender = format!("postmaster@{domain}");
        let mut all_pass = true;
        for ip in &self.ips {
            let r = auth
                .verify_spf(mail_auth::spf::verify::SpfParameters::verify_mail_from(
                    *ip,
                    &self.cfg.hostname,
                    &self.cfg.hostname,
                    &sender,
                ))
                .await;
            let result = r.result();
            if result != mail_auth::SpfResult::Pass {
                all_pass = false;
                let add = match ip {
                    IpAddr::V4(_) => format!("ip4:{ip}"),
                    IpAddr::V6(_) => format!("ip6:{ip}"),
                };
                out.push(found(
                    "SPF",
                    Status::Fail,
                    domain,
                    format!(
                        "{:?} gives {} for this host's address {ip}: its mail fails SPF",
                        spf[0],
                        result.to_string().to_ascii_lowercase()
                    ),
                    Some(format!(
                        "add {add} (or mx, with the MX naming this host) before the all term"
                    )),
                ));
            }
        }
        if all_pass {
            out.push(found(
                "SPF",
                Status::Ok,
                domain,
                format!(
                    "{:?} ({lookups} lookups) passes for {}",
                    spf[0],
                    self.ips
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None,
            ));
        }
        out
    }

    /// DNS lookups an SPF evaluation of `domain` costs, following include: and redirect= (bounded: it stops
    /// once over the limit or after 30 records).
    async fn spf_lookups(&self, domain: &str) -> usize {
        let mut count = 0;
        let mut queue = vec![domain.to_string()];
        let mut fetched = 0;
        while let Some(d) = queue.pop() {
            if count > SPF_MAX_LOOKUPS || fetched >= 30 {
                break;
            }
            fetched += 1;
            let Ok(records) = self.txt(&d).await else {
                continue;
            };
            let Some(record) = records
                .iter()
                .find(|t| t.to_ascii_lowercase().starts_with("v=spf1"))
            else {
                continue;
            };
            for term in record.split_ascii_whitespace().skip(1) {
                let t = term
                    .trim_start_matches(['+', '-', '~', '?'])
                    .to_ascii_lowercase();
                let costs = SPF_LOOKUP_TERMS.iter().any(|k| {
                    if k.ends_with([':', '=']) {
                        t.starts_with(k)
                    } else {
                        t == *k
                            || t.starts_with(&format!("{k}:"))
                            || t.starts_with(&format!("{k}/"))
                    }
                });
                if costs {
                    count += 1;
                }
                if let Some(target) = t
                    .strip_prefix("include:")
                    .or_else(|| t.strip_prefix("redirect="))
                {
                    queue.push(target.to_string());
                }
            }
        }
        count
    }

    async fn dkim(&self, domain: &str) -> Vec<Finding> {
        let keys: Vec<&KeyInfo> = self
            .keys
            .iter()
            .filter(|k| k.domain == domain && matches!(k.state, "active" | "configured"))
            .collect();
        if keys.is_empty() {
            return vec![found(
                "DKIM",
                Status::Fail,
                domain,
                "no active DKIM key: outgoing mail is unsigned and fails DMARC at receivers that need DKIM".into(),
                Some(format!("tern dkim generate --domain {domain} --selector s1, publish the record tern dns prints, then tern dkim activate --domain {domain} s1")),
            )];
        }
        let mut out = Vec::new();
        for k in keys {
            let name = format!("{}._domainkey.{domain}", k.selector);
            let fix = Some(format!("publish TXT at {name}. as tern dns prints it"));
            let published = match self.txt(&name).await {
                Ok(p) => p,
                Err(e) => {
                    out.push(lookup_failed("DKIM", &name, e));
                    continue;
                }
            };
            let want = dkim_key(&k.record);
            let f = match published.iter().find(|p| p.contains("p=")) {
                None => found(
                    "DKIM",
                    Status::Fail,
                    &name,
                    format!(
                        "the active key {} is not published: receivers cannot verify the signatures",
                        k.selector
                    ),
                    fix,
                ),
                Some(p) if dkim_key(p) == want => found(
                    "DKIM",
                    Status::Ok,
                    &name,
                    format!("the active key {} is published", k.selector),
                    None,
                ),
                Some(_) => found(
                    "DKIM",
                    Status::Fail,
                    &name,
                    format!(
                        "the key published for {} is not the active one: every signature fails",
                        k.selector
                    ),
                    fix,
                ),
            };
            out.push(f);
        }
        out
    }

    async fn dmarc(&self, domain: &str) -> Finding {
        let name = format!("_dmarc.{domain}");
        let fix = Some(format!(
            "publish TXT at {name}.: \"v=DMARC1; p=none; rua=mailto:postmaster@{domain}\""
        ));
        let records = match self.txt(&name).await {
            Ok(r) => r,
            Err(e) => return lookup_failed("DMARC", &name, e),
        };
        let dmarc: Vec<&String> = records
            .iter()
            .filter(|t| t.starts_with("v=DMARC1"))
            .collect();
        match dmarc.as_slice() {
            [] => found(
                "DMARC",
                Status::Fail,
                &name,
                "no DMARC record: receivers apply their own guess, and you get no reports".into(),
                fix,
            ),
            [one] => {
                let p = one
                    .split(';')
                    .find_map(|t| t.trim().strip_prefix("p=").map(str::trim));
                match p {
                    Some("none") => found(
                        "DMARC",
                        Status::Ok,
                        &name,
                        format!(
                            "{one:?}: monitoring only; move to p=quarantine once the reports show only your own mail passing"
                        ),
                        None,
                    ),
                    Some("quarantine" | "reject") => {
                        found("DMARC", Status::Ok, &name, format!("{one:?}"), None)
                    }
                    _ => found(
                        "DMARC",
                        Status::Fail,
                        &name,
                        format!(
                            "{one:?} has no valid p= tag (none, quarantine or reject): receivers ignore it"
                        ),
                        fix,
                    ),
                }
            }
            many => found(
                "DMARC",
                Status::Fail,
                &name,
                format!(
                    "{} DMARC records: receivers ignore them all (RFC 7489 section 6.6.3)",
                    many.len()
                ),
                Some("keep one".into()),
            ),
        }
    }

    async fn tls_rpt(&self, domain: &str) -> Finding {
        let name = format!("_smtp._tls.{domain}");
        match self.txt(&name).await {
            Ok(r) if r.iter().any(|t| t.starts_with("v=TLSRPTv1")) => {
                found("TLS-RPT", Status::Ok, &name, "published".into(), None)
            }
            Ok(_) => found(
                "TLS-RPT",
                Status::Warn,
                &name,
                "no TLS-RPT record: you will not hear of TLS failures delivering to you".into(),
                Some(format!(
                    "publish TXT at {name}.: \"v=TLSRPTv1; rua=mailto:postmaster@{domain}\""
                )),
            ),
            Err(e) => lookup_failed("TLS-RPT", &name, e),
        }
    }

    async fn mta_sts(&self, domain: &str) -> Option<Finding> {
        let policy = self.cfg.mta_sts.as_ref()?;
        let name = format!("_mta-sts.{domain}");
        let want = crate::web::mta_sts::policy_id(policy);
        let fix = Some(format!(
            "publish TXT at {name}.: \"{}\"",
            crate::web::mta_sts::txt_record(policy)
        ));
        if !self
            .cfg
            .listeners
            .iter()
            .any(|l| l.kind == ListenerKind::Https)
        {
            return Some(found(
                "MTA-STS",
                Status::Fail,
                &name,
                "[mta_sts] is set but no https [[listener]] serves the policy".into(),
                Some("add [[listener]] kind = \"https\" on port 443".into()),
            ));
        }
        let records = match self.txt(&name).await {
            Ok(r) => r,
            Err(e) => return Some(lookup_failed("MTA-STS", &name, e)),
        };
        let sts: Vec<&String> = records
            .iter()
            .filter(|t| t.starts_with("v=STSv1"))
            .collect();
        let id = |t: &str| {
            t.split(';')
                .find_map(|x| x.trim().strip_prefix("id=").map(|v| v.trim().to_string()))
        };
        Some(match sts.as_slice() {
            [] => found(
                "MTA-STS",
                Status::Fail,
                &name,
                "no MTA-STS record: senders do not look for the policy".into(),
                fix,
            ),
            [one] if id(one).as_deref() == Some(want.as_str()) => found(
                "MTA-STS",
                Status::Ok,
                &name,
                format!(
                    "id={want} matches the policy served (mode {})",
                    policy.mode.as_str()
                ),
                None,
            ),
            [one] => found(
                "MTA-STS",
                Status::Fail,
                &name,
                format!(
                    "publishes id={} but the policy served now has id={want}: senders keep their cached policy until max_age",
                    id(one).unwrap_or_default()
                ),
                fix,
            ),
            _ => found(
                "MTA-STS",
                Status::Fail,
                &name,
                "several MTA-STS records: senders ignore them (RFC 8461 section 3.1)".into(),
                fix,
            ),
        })
    }

    async fn autoconfig(&self, domain: &str) -> Vec<Finding> {
        let web = self
            .cfg
            .listeners
            .iter()
            .any(|l| matches!(l.kind, ListenerKind::Http | ListenerKind::Https));
        if !web {
            return Vec::new();
        }
        let mut out = Vec::new();
        for label in ["autoconfig", "autodiscover"] {
            let name = format!("{label}.{domain}");
            let f = match self.dns.addresses(&name).await {
                Ok(a)
                    if !a.is_empty()
                        && (self.ips.is_empty() || a.iter().any(|ip| self.ips.contains(ip))) =>
                {
                    found(
                        "AUTOCONFIG",
                        Status::Ok,
                        &name,
                        "points to this host".into(),
                        None,
                    )
                }
                Ok(a) if !a.is_empty() => found(
                    "AUTOCONFIG",
                    Status::Warn,
                    &name,
                    format!(
                        "points to {} (not this host)",
                        a.iter()
                            .map(|i| i.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some(format!("publish {name}. CNAME {}.", self.cfg.hostname)),
                ),
                Ok(_) | Err(DnsError::NoSuchDomain(_)) => found(
                    "AUTOCONFIG",
                    Status::Warn,
                    &name,
                    "not published: mail clients ask users for server names".into(),
                    Some(format!("publish {name}. CNAME {}.", self.cfg.hostname)),
                ),
                Err(e) => lookup_failed("AUTOCONFIG", &name, e),
            };
            out.push(f);
        }
        out
    }

    async fn ptr(&self, ip: IpAddr) -> Finding {
        let host = &self.cfg.hostname;
        let name = ip.to_string();
        let fix = Some(format!(
            "ask whoever owns {ip} (your provider's panel) for PTR {host}"
        ));
        let names: Vec<String> = match self.dns.resolver().reverse_lookup(ip).await {
            Ok(l) => l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::PTR(p) => Some(p.0.to_ascii().trim_end_matches('.').to_lowercase()),
                    _ => None,
                })
                .collect(),
            Err(e) => match none_or::<String>(&name, e) {
                Ok(_) => Vec::new(),
                Err(e) => return lookup_failed("PTR", &name, e),
            },
        };
        if names.is_empty() {
            return found(
                "PTR",
                Status::Fail,
                &name,
                format!("{ip} has no PTR: many receivers refuse or junk mail from it"),
                fix,
            );
        }
        if !names.contains(host) {
            return found(
                "PTR",
                Status::Fail,
                &name,
                format!("PTR of {ip} names {}, not {host}", names.join(", ")),
                fix,
            );
        }
        match self.dns.addresses(host).await {
            Ok(a) if a.contains(&ip) => found(
                "PTR",
                Status::Ok,
                &name,
                format!("{ip} → {host} → {ip}"),
                None,
            ),
            Ok(_) | Err(DnsError::NoSuchDomain(_)) => found(
                "PTR",
                Status::Fail,
                &name,
                format!(
                    "PTR names {host}, but {host} does not resolve back to {ip} (not forward-confirmed)"
                ),
                Some(format!("publish {host}. A/AAAA {ip}")),
            ),
            Err(e) => lookup_failed("PTR", host, e),
        }
    }

    fn certificate(&self) -> Vec<Finding> {
        let acme = crate::acme::Paths::new(&self.cfg.data_dir).cert();
        let path = if self.cfg.acme.is_some() && acme.exists() {
            acme
        } else {
            self.cfg
                .tls_files
                .as_ref()
                .map(|(c, _)| c.clone())
                .unwrap_or_else(|| crate::tls::self_signed_paths(&self.cfg.data_dir).0)
        };
        let shown = path.display().to_string();
        let leaf = match crate::tls::check::leaf_of(&path) {
            Ok(l) => l,
            Err(e) => {
                return vec![found(
                    "TLS",
                    Status::Fail,
                    &shown,
                    format!("cannot read the certificate: {e}"),
                    Some("set [tls] cert and key, or turn [acme] on".into()),
                )];
            }
        };
        let mut out = Vec::new();
        let mut names = vec![self.cfg.hostname.clone()];
        if self.cfg.mta_sts.is_some() {
            names.extend(
                self.cfg
                    .local_domains
                    .iter()
                    .map(|d| format!("mta-sts.{d}")),
            );
        }
        for n in &names {
            if !leaf.names.iter().any(|c| crate::tls::check::covers(c, n)) {
                out.push(found(
                    "TLS",
                    Status::Fail,
                    &shown,
                    format!(
                        "the certificate does not name {n} (it names {})",
                        leaf.names.join(", ")
                    ),
                    Some(format!("add {n} to [acme] names, or to the certificate")),
                ));
            }
        }
        let left = leaf.not_after - crate::clock::unix_now() as i64;
        if left < crate::tls::check::WARN_BEFORE_SECS {
            out.push(found("TLS", Status::Fail, &shown, if left <= 0 { "the certificate has expired".into() } else { format!("the certificate expires in {}", crate::queue::select::human_age(left as u64)) }, Some("renew it (with [acme] on, tern renews 30 days ahead: see the acme lines in the log)".into())));
        }
        if leaf.self_signed {
            out.push(found(
                "TLS",
                Status::Warn,
                &shown,
                "the certificate is self-signed: mail clients warn, and MTA-STS senders refuse it"
                    .into(),
                Some("turn [acme] on, or set [tls] cert and key".into()),
            ));
        }
        if out.is_empty() {
            out.push(found(
                "TLS",
                Status::Ok,
                &shown,
                format!(
                    "names {}; valid for {}",
                    names.join(", "),
                    crate::queue::select::human_age(left as u64)
                ),
                None,
            ));
        }
        out
    }

    async fn port25(&self, addr: std::net::SocketAddr) -> Finding {
        use tokio::io::AsyncBufReadExt;
        let name = addr.to_string();
        let fix = Some(format!(
            "open TCP port {} to the host in its firewall, and check that a relay [[listener]] binds it",
            addr.port()
        ));
        let attempt = tokio::time::timeout(Duration::from_secs(10), async {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(stream).take(512);
            reader.read_line(&mut line).await?;
            Ok::<String, std::io::Error>(line)
        })
        .await;
        match attempt {
            Ok(Ok(line)) if line.starts_with("220") => found(
                "PORT25",
                Status::Ok,
                &name,
                format!("answers {:?}", line.trim_end()),
                None,
            ),
            Ok(Ok(line)) => found(
                "PORT25",
                Status::Fail,
                &name,
                format!("answers {:?}, not an SMTP greeting", line.trim_end()),
                fix,
            ),
            Ok(Err(e)) => found(
                "PORT25",
                Status::Fail,
                &name,
                format!("not reachable from this host: {e}"),
                fix,
            ),
            Err(_) => found(
                "PORT25",
                Status::Fail,
                &name,
                "no greeting within 10 s".into(),
                fix,
            ),
        }
    }
}

use tokio::io::AsyncReadExt as _;

/// The `p=` of a DKIM record, without spaces.
fn dkim_key(record: &str) -> String {
    record
        .split(';')
        .find_map(|t| t.trim().strip_prefix("p="))
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// NXDOMAIN and NODATA are "no records"; anything else is a failure to look.
fn none_or<T>(name: &str, e: hickory_resolver::net::NetError) -> Result<Vec<T>, DnsError> {
    match crate::dns::classify_error(name, e) {
        None => Ok(Vec::new()),
        Some(DnsError::NoSuchDomain(_)) => Ok(Vec::new()),
        Some(e) => Err(e),
    }
}

fn lookup_failed(check: &'static str, name: &str, e: DnsError) -> Finding {
    found(
        check,
        Status::Fail,
        name,
        format!("cannot look it up: {e}"),
        Some("check [dns] nameservers (or /etc/resolv.conf) and the domain's name servers".into()),
    )
}

/// Text for people: one line per finding, fixes indented below.
pub fn report(sections: &[(String, Vec<Finding>)]) -> String {
    let mut out = String::new();
    for (title, findings) in sections {
        out.push_str(&format!("{title}\n"));
        for f in findings {
            let tag = match f.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!(
                "  {tag}  {:<10} {}: {}\n",
                f.check, f.name, f.detail
            ));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("        fix: {fix}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn dkim_keys_compare_without_spaces() {
        assert_eq!(super::dkim_key("v=DKIM1; k=rsa; p=MIIB AQ"), "MIIBAQ");
        assert_eq!(super::dkim_key("v=DKIM1;p=MIIBAQ"), "MIIBAQ");
    }
}
