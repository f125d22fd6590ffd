//! The receiving server's judgement of mail from other MTAs (relay listener only): blocklists and
//! forward-confirmed reverse DNS at connection time, greylisting at RCPT, and SPF (RFC 7208), DKIM (RFC 6376),
//! ARC (RFC 8617) and DMARC (RFC 7489) at the end of DATA, with mail-auth over the daemon's one resolver.
//!
//! This module decides verdicts and writes the Authentication-Results header (RFC 8601); the replies it may
//! ask for are named in `smtp::reply`, and what is stored is up to `inbound`.

pub mod greylist;
mod headers;

use crate::config::{CheckAction, CheckSettings};
use crate::dns::Dns;
use crate::smtp::Reply;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::Policy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfResult,
};
use std::net::IpAddr;

/// What is known about the client after the connection checks.
#[derive(Debug, Clone)]
pub struct Client {
    pub ip: IpAddr,
    /// The PTR name, when it resolves back to the client's address (forward-confirmed reverse DNS).
    pub rdns: Option<String>,
    /// In `[checks] allow`: reputation checks and greylisting are skipped.
    pub allowed: bool,
    /// In `[checks] skip_networks`: nothing is checked (local tools and content filters).
    pub skipped: bool,
}

/// The verdict on one message.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub action: CheckAction,
    /// The refusal, for Reject and Defer.
    pub reply: Option<Reply>,
    /// `Authentication-Results: ...` with its CRLF.
    pub header: String,
    /// `spf=pass dkim=pass dmarc=pass arc=none`, for the logs.
    pub summary: String,
}

pub struct Checks {
    auth: MessageAuthenticator,
    dns: Dns,
    settings: CheckSettings,
    hostname: String,
    pub greylist: Option<std::sync::Arc<greylist::Greylist>>,
}

/// Puts one `dkim=` clause per signature (RFC 8601 2.7.1: header.d, header.i, header.s, header.b) right after
/// the authserv-id; `dkim=none` when the message has no signature.
fn with_dkim_clauses(header: String, hostname: &str, dkim: &[mail_auth::DkimOutput<'_>]) -> String {
    use base64::Engine;
    let mut clauses = String::new();
    for d in dkim {
        clauses.push_str(&format!(";\r\n\tdkim={}", dkim_word(d.result())));
        if let Some(sig) = d.signature() {
            let clean = |v: &str| {
                v.chars()
                    .filter(|c| !c.is_whitespace() && *c != ';' && *c != '"')
                    .collect::<String>()
            };
            clauses.push_str(&format!(" header.d={}", clean(&sig.d)));
            if !sig.i.is_empty() {
                clauses.push_str(&format!(" header.i={}", clean(&sig.i)));
            }
            clauses.push_str(&format!(" header.s={}", clean(&sig.s)));
            if let Some(prefix) = sig.b.get(..6) {
                clauses.push_str(&format!(
                    " header.b={}",
                    base64::engine::general_purpose::STANDARD.encode(prefix)
                ));
            }
        }
    }
    if dkim.is_empty() {
        clauses.push_str(";\r\n\tdkim=none");
    }
    let anchor = format!("Authentication-Results: {hostname}");
    match header.find(&anchor) {
        Some(i) => {
            let at = i + anchor.len();
            format!("{}{clauses}{}", &header[..at], &header[at..])
        }
        None => header,
    }
}

fn spf_word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_word(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_word(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

impl Checks {
    pub fn new(
        dns: Dns,
        settings: CheckSettings,
        hostname: String,
        greylist: Option<std::sync::Arc<greylist::Greylist>>,
    ) -> Checks {
        Checks {
            auth: MessageAuthenticator(dns.resolver().clone()),
            dns,
            settings,
            hostname,
            greylist,
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Connection time: the allow list, DNS blocklists and forward-confirmed reverse DNS.
    pub async fn connect(&self, ip: IpAddr) -> Result<Client, Reply> {
        if self.settings.skip.iter().any(|n| n.contains(ip)) {
            return Ok(Client {
                ip,
                rdns: None,
                allowed: true,
                skipped: true,
            });
        }
        let allowed = self.settings.allow.iter().any(|n| n.contains(ip));
        if !allowed {
            for zone in &self.settings.dnsbl {
                if self.listed(ip, zone).await {
                    return Err(Reply::blocklisted(&ip.to_string(), zone));
                }
            }
        }
        Ok(Client {
            ip,
            rdns: self.confirmed_ptr(ip).await,
            allowed,
            skipped: false,
        })
    }

    /// Whether `ip` is listed in the DNSBL `zone` (an A record in 127.0.0.0/8 under the reversed address).
    async fn listed(&self, ip: IpAddr, zone: &str) -> bool {
        let reversed = match ip {
            IpAddr::V4(v4) => v4
                .octets()
                .iter()
                .rev()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join("."),
            IpAddr::V6(v6) => {
                let hex: String = v6.octets().iter().map(|b| format!("{b:02x}")).collect();
                hex.chars()
                    .rev()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(".")
            }
        };
        let name = format!("{reversed}.{zone}.");
        match self.dns.resolver().ipv4_lookup(name.as_str()).await {
            Ok(lookup) => lookup.answers().iter().any(|r| match &r.data {
                hickory_resolver::proto::rr::RData::A(a) => a.0.octets()[0] == 127,
                _ => false,
            }),
            Err(_) => false,
        }
    }

    async fn confirmed_ptr(&self, ip: IpAddr) -> Option<String> {
        let lookup = self.dns.resolver().reverse_lookup(ip).await.ok()?;
        let names: Vec<String> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::PTR(p) => {
                    Some(p.0.to_ascii().trim_end_matches('.').to_lowercase())
                }
                _ => None,
            })
            .take(10)
            .collect();
        for name in names {
            if self
                .dns
                .addresses(&name)
                .await
                .is_ok_and(|a| a.contains(&ip))
            {
                return Some(name);
            }
        }
        None
    }

    /// End of DATA: SPF (HELO and MAIL FROM), DKIM, ARC and DMARC, the header, and what to do.
    pub async fn message(
        &self,
        client: &Client,
        helo: &str,
        mail_from: &str,
        body: &[u8],
    ) -> Verdict {
        let ip = client.ip;
        let sender = if mail_from.is_empty() {
            format!("postmaster@{helo}")
        } else {
            mail_from.to_string()
        };
        let spf_helo = self
            .auth
            .verify_spf(SpfParameters::verify_ehlo(ip, helo, &self.hostname))
            .await;
        let spf = self
            .auth
            .verify_spf(SpfParameters::verify_mail_from(
                ip,
                helo,
                &self.hostname,
                &sender,
            ))
            .await;
        let mut ar = AuthenticationResults::new(&self.hostname);
        let mail_from_domain = sender
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        let Some(msg) = AuthenticatedMessage::parse(body) else {
            let header = ar
                .with_spf_ehlo_result(&spf_helo, ip, helo)
                .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
                .to_header();
            return Verdict {
                action: CheckAction::Deliver,
                reply: None,
                header,
                summary: format!(
                    "spf={} dkim=none dmarc=none (unparsable message)",
                    spf_word(spf.result())
                ),
            };
        };
        let dkim = self.auth.verify_dkim(&msg).await;
        let arc = self.auth.verify_arc(&msg).await;
        let dmarc = self
            .auth
            .verify_dmarc(mail_auth::dmarc::verify::DmarcParameters::new(
                &msg,
                &dkim,
                &mail_from_domain,
                &spf,
            ))
            .await;
        let from_domain = dmarc.domain().to_string();
        ar = ar
            .with_spf_ehlo_result(&spf_helo, ip, helo)
            .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
            .with_arc_result(&arc, ip)
            .with_dmarc_result(&dmarc);
        let dkim_summary = match dkim
            .iter()
            .map(|d| dkim_word(d.result()))
            .find(|w| *w == "pass")
        {
            Some(p) => p,
            None => dkim.first().map_or("none", |d| dkim_word(d.result())),
        };
        let dmarc_result = dmarc.result();
        let summary = format!(
            "spf={} dkim={} dmarc={} arc={} header.from={}",
            spf_word(spf.result()),
            dkim_summary,
            dmarc_word(&dmarc_result),
            dkim_word(arc.result()),
            if from_domain.is_empty() {
                "-"
            } else {
                &from_domain
            }
        );
        let (action, reply) = self.decide(&dmarc, spf.result(), &dkim, &from_domain).await;
        let header = with_dkim_clauses(ar.to_header(), &self.hostname, &dkim);
        Verdict {
            action,
            reply,
            header,
            summary,
        }
    }

    async fn decide(
        &self,
        dmarc: &mail_auth::DmarcOutput,
        spf: SpfResult,
        dkim: &[mail_auth::DkimOutput<'_>],
        from_domain: &str,
    ) -> (CheckAction, Option<Reply>) {
        let s = &self.settings;
        let temporary = matches!(dmarc.result(), DmarcResult::TempError(_))
            || spf == SpfResult::TempError
            || dkim
                .iter()
                .any(|d| matches!(d.result(), DkimResult::TempError(_)));
        if temporary && s.temperror == CheckAction::Defer {
            return (CheckAction::Defer, Some(Reply::checks_temporary_failure()));
        }
        let failed = matches!(dmarc.result(), DmarcResult::Fail(_));
        if failed {
            // DMARCbis t=y (testing): apply one level less.
            let testing = dmarc.dmarc_record().is_some_and(|r| r.t);
            let policy = match (dmarc.policy(), testing) {
                (Policy::Reject, true) => Policy::Quarantine,
                (Policy::Quarantine, true) => Policy::None,
                (p, _) => p,
            };
            let sampled = match self.pct(from_domain).await {
                Some(pct) if pct < 100 => rand::random::<u32>() % 100 < pct,
                _ => true,
            };
            if sampled {
                match policy {
                    Policy::Reject => {
                        let action = s.dmarc_reject;
                        let reply = (action == CheckAction::Reject)
                            .then(|| Reply::dmarc_rejected(from_domain, "reject"));
                        return (action, reply);
                    }
                    Policy::Quarantine => return (s.dmarc_quarantine, None),
                    Policy::None | Policy::Unspecified => {}
                }
            }
            return (CheckAction::Deliver, None);
        }
        let no_dmarc_record = dmarc.dmarc_record().is_none();
        if spf == SpfResult::Fail && no_dmarc_record {
            let reply = (s.spf_fail == CheckAction::Reject).then(Reply::spf_failed);
            return (s.spf_fail, reply);
        }
        (CheckAction::Deliver, None)
    }

    /// The `pct=` of the domain's DMARC record (RFC 7489 6.3), which the DMARCbis parser does not keep.
    async fn pct(&self, domain: &str) -> Option<u32> {
        let labels: Vec<&str> = domain.split('.').collect();
        let candidates = [
            domain.to_string(),
            labels[labels.len().saturating_sub(2)..].join("."),
        ];
        for d in candidates {
            let Ok(lookup) = self
                .dns
                .resolver()
                .txt_lookup(format!("_dmarc.{d}.").as_str())
                .await
            else {
                continue;
            };
            for r in lookup.answers() {
                if let hickory_resolver::proto::rr::RData::TXT(txt) = &r.data {
                    let text: String = txt
                        .txt_data
                        .iter()
                        .map(|c| String::from_utf8_lossy(c).to_string())
                        .collect();
                    if text.starts_with("v=DMARC1") {
                        return text
                            .split(';')
                            .find_map(|t| t.trim().strip_prefix("pct=")?.trim().parse().ok());
                    }
                }
            }
        }
        None
    }

    /// Removes Authentication-Results headers that claim to be ours (RFC 8601 5) and prepends the new one.
    pub fn rewrite(&self, body: Vec<u8>, header: &str) -> Vec<u8> {
        headers::replace_auth_results(body, &self.hostname, header)
    }
}
