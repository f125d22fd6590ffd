//! The receiving server's judgement of mail from other MTAs (relay listener only): blocklists and
//! forward-confirmed reverse DNS at connection time, greylisting at RCPT, and SPF (RFC 7208), DKIM (RFC 6376),
//! ARC (RFC 8617) and DMARC (RFC 7489) at the end of DATA, with mail-auth over the daemon's one resolver.
//!
//! This module decides verdicts and writes the Authentication-Results header (RFC 8601); the replies it may
//! ask for are named in `smtp::reply`, and what is stored is up to `inbound`.

pub mod fate;
pub mod greylist;
pub mod headers;

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
    /// The blocklist zone that lists it, with `[checks] dnsbl_action = "junk"` (its mail goes to Junk).
    pub listed: Option<String>,
}

/// The verdict on one message.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub action: CheckAction,
    /// The refusal, for Reject and Defer.
    pub reply: Option<Reply>,
    /// What asked for an action other than deliver, for the fate's reasons: "dmarc:p=reject",
    /// "spf:fail", "checks:temperror"; empty otherwise.
    pub reason: &'static str,
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
    /// Message checks running at once, each on a thread of the blocking pool (hashing and RSA there,
    /// never on the async workers that serve every other connection).
    running: std::sync::Arc<tokio::sync::Semaphore>,
}

/// The copy of a message the DKIM and ARC verifiers see: at most `max` DKIM-Signature fields (the first
/// ones), and no ARC fields when there are more than `max` ARC sets. The stored message is not changed;
/// this only bounds the work one message can cause (each signature is a DNS lookup and a body hash).
fn verification_view(body: &[u8], max: usize) -> std::borrow::Cow<'_, [u8]> {
    let is = |name: &[u8], n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    let dkim = crate::message::count(body, "DKIM-Signature");
    let arc = crate::message::count(body, "ARC-Seal");
    if dkim <= max && arc <= max {
        return std::borrow::Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut kept = 0;
    for (name, field) in crate::message::fields(body) {
        if is(name, "DKIM-Signature") {
            kept += 1;
            if kept > max {
                continue;
            }
        }
        if arc > max
            && (is(name, "ARC-Seal")
                || is(name, "ARC-Message-Signature")
                || is(name, "ARC-Authentication-Results"))
        {
            continue;
        }
        out.extend_from_slice(field);
    }
    out.extend_from_slice(&body[crate::message::header_len(body)..]);
    std::borrow::Cow::Owned(out)
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

/// The From: domain as the summary shows it: the sender chose it, so nothing but a domain's characters
/// (a crafted "x virus=1" must not read as tern's own record of a verdict, which Sieve's spamtest and
/// virustest trust).
fn summary_domain(domain: &str) -> String {
    if domain.is_empty() {
        return "-".into();
    }
    domain
        .chars()
        .take(255)
        .map(|c| {
            if c.is_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '?'
            }
        })
        .collect()
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
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        Checks {
            auth: MessageAuthenticator(dns.resolver().clone()),
            dns,
            settings,
            hostname,
            greylist,
            running: std::sync::Arc::new(tokio::sync::Semaphore::new(parallel)),
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
                listed: None,
            });
        }
        let allowed = self.settings.allow.iter().any(|n| n.contains(ip));
        let mut listed = None;
        if !allowed {
            for list in &self.settings.dnsbl {
                if self.listed(ip, list).await {
                    if self.settings.dnsbl_action == CheckAction::Junk {
                        tracing::info!(zone = %list.zone, "client blocklisted: its mail goes to Junk (dnsbl_action = \"junk\")");
                        listed = Some(list.zone.clone());
                        break;
                    }
                    return Err(Reply::blocklisted(&ip.to_string(), &list.zone));
                }
            }
        }
        Ok(Client {
            ip,
            rdns: self.confirmed_ptr(ip).await,
            allowed,
            skipped: false,
            listed,
        })
    }

    /// Whether `ip` is listed in the DNSBL: an A record under the reversed address that the list's
    /// `listed` answers include (by default 127.0.0.2-127.0.0.255). Other answers, such as Spamhaus's
    /// 127.255.255.252-255 for "query refused", are errors of the list, not verdicts: logged, not listed.
    async fn listed(&self, ip: IpAddr, list: &crate::config::Dnsbl) -> bool {
        let zone = &list.zone;
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
        let Ok(lookup) = self.dns.resolver().ipv4_lookup(name.as_str()).await else {
            return false;
        };
        let answers: Vec<std::net::Ipv4Addr> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        if answers.iter().any(|a| list.lists(*a)) {
            return true;
        }
        if let Some(a) = answers.first() {
            tracing::warn!(zone = %zone, client_ip = %ip, answer = %a,
                "blocklist answered with a code that is not a listing (an error of the list, e.g. a refused query); not counted");
        }
        false
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

    /// End of DATA: SPF (HELO and MAIL FROM), DKIM, ARC and DMARC, the header, and what to do. The work
    /// (parsing, body hashes, signature checks) runs on the blocking pool, a few messages at a time; the
    /// DNS lookups it makes are still driven by the runtime. The message is handed back unchanged.
    pub async fn message(
        self: std::sync::Arc<Self>,
        client: &Client,
        helo: &str,
        mail_from: &str,
        body: crate::queue::Body,
    ) -> (Verdict, crate::queue::Body) {
        let Ok(_permit) = self.running.clone().acquire_owned().await else {
            return (self.unchecked("checks shutting down"), body);
        };
        let handle = tokio::runtime::Handle::current();
        let (client, helo, mail_from) = (client.clone(), helo.to_string(), mail_from.to_string());
        let me = self.clone();
        let body = std::sync::Arc::new(body);
        let shared = body.clone();
        let verdict = tokio::task::spawn_blocking(move || {
            // A spooled message is read through a mapping of its file (pages of the page cache, only
            // those the verifiers touch; a few messages at a time, see `running`).
            let mapped;
            let bytes: &[u8] = match &shared.tail {
                None => &shared.head,
                Some(tail) => {
                    mapped = tail.map_whole().map_err(|e| e.to_string())?;
                    &mapped
                }
            };
            Ok::<_, String>(handle.block_on(me.evaluate(&client, &helo, &mail_from, bytes)))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        let body = std::sync::Arc::try_unwrap(body).unwrap_or_else(|b| (*b).clone());
        match verdict {
            Ok(v) => (v, body),
            Err(e) => {
                tracing::error!(error = %e, "message checks failed; delivering without a verdict");
                (self.unchecked("checks failed"), body)
            }
        }
    }

    /// A verdict for a message that could not be checked: delivered, with no claims.
    fn unchecked(&self, why: &str) -> Verdict {
        Verdict {
            action: CheckAction::Deliver,
            reply: None,
            reason: "",
            header: format!(
                "Authentication-Results: {}; none ({why})\r\n",
                self.hostname
            ),
            summary: format!("none ({why})"),
        }
    }

    async fn evaluate(&self, client: &Client, helo: &str, mail_from: &str, body: &[u8]) -> Verdict {
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
        let view = verification_view(body, self.settings.max_signatures);
        let Some(msg) = AuthenticatedMessage::parse(&view) else {
            let header = ar
                .with_spf_ehlo_result(&spf_helo, ip, helo)
                .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
                .to_header();
            return Verdict {
                action: CheckAction::Deliver,
                reply: None,
                reason: "",
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
            summary_domain(&from_domain)
        );
        let (action, reply, reason) = self.decide(&dmarc, spf.result(), &dkim, &from_domain).await;
        let header = with_dkim_clauses(ar.to_header(), &self.hostname, &dkim);
        Verdict {
            action,
            reply,
            reason,
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
    ) -> (CheckAction, Option<Reply>, &'static str) {
        let s = &self.settings;
        let temporary = matches!(dmarc.result(), DmarcResult::TempError(_))
            || spf == SpfResult::TempError
            || dkim
                .iter()
                .any(|d| matches!(d.result(), DkimResult::TempError(_)));
        if temporary && s.temperror == CheckAction::Defer {
            return (
                CheckAction::Defer,
                Some(Reply::checks_temporary_failure()),
                "checks:temperror",
            );
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
                        return (action, reply, "dmarc:p=reject");
                    }
                    Policy::Quarantine => {
                        return (s.dmarc_quarantine, None, "dmarc:p=quarantine");
                    }
                    Policy::None | Policy::Unspecified => {}
                }
            }
            return (CheckAction::Deliver, None, "");
        }
        let no_dmarc_record = dmarc.dmarc_record().is_none();
        if spf == SpfResult::Fail && no_dmarc_record {
            let reply = (s.spf_fail == CheckAction::Reject).then(Reply::spf_failed);
            return (s.spf_fail, reply, "spf:fail");
        }
        (CheckAction::Deliver, None, "")
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
}

#[cfg(test)]
mod tests {
    #[test]
    fn verification_sees_at_most_max_signatures() {
        let mut m = Vec::new();
        for i in 0..50 {
            m.extend_from_slice(
                format!("DKIM-Signature: v=1; d=d{i}.test; s=s; b=x\r\n").as_bytes(),
            );
        }
        m.extend_from_slice(b"From: a@b.test\r\n\r\nbody\r\n");
        let view = super::verification_view(&m, 10);
        assert_eq!(crate::message::count(&view, "DKIM-Signature"), 10);
        assert!(view.ends_with(b"From: a@b.test\r\n\r\nbody\r\n"));
        assert!(
            String::from_utf8_lossy(&view).contains("d=d9.test")
                && !String::from_utf8_lossy(&view).contains("d=d10.test")
        );
        let small = b"DKIM-Signature: v=1\r\n\r\nx".to_vec();
        assert!(matches!(
            super::verification_view(&small, 10),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_crafted_from_domain_cannot_forge_a_verdict_in_the_summary() {
        assert_eq!(
            super::summary_domain("a.test x virus=1,score=0/1"),
            "a.test?x?virus?1?score?0?1"
        );
        assert_eq!(super::summary_domain(""), "-");
        assert_eq!(super::summary_domain("bücher.test"), "bücher.test");
    }

    #[test]
    fn only_listing_answers_count() {
        let default = crate::config::Dnsbl {
            zone: "zen.test".into(),
            listed: None,
        };
        assert!(default.lists("127.0.0.2".parse().unwrap()));
        assert!(default.lists("127.0.0.11".parse().unwrap()));
        assert!(!default.lists("127.255.255.254".parse().unwrap()));
        assert!(!default.lists("127.0.0.1".parse().unwrap()));
        let only = crate::config::Dnsbl {
            zone: "z.test".into(),
            listed: Some(vec![crate::config::Cidr::parse("127.0.0.4/30").unwrap()]),
        };
        assert!(
            only.lists("127.0.0.6".parse().unwrap()) && !only.lists("127.0.0.2".parse().unwrap())
        );
    }
}
