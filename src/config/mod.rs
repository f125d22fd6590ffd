//! Configuration: the TOML file (`raw.rs`) checked once into a [`Config`] whose parts each service takes.
//!
//! A bad file is refused with the file, the key and the reason, e.g.
//! `config/tern.toml: listener[0].bind[1]: "127.0.0.1:99999" is not a socket address`.

mod access;
pub mod cidr;
mod dnsbl;
mod filter;
pub mod raw;
mod sieve;
mod transport;
mod warnings;
mod web;

use crate::smtp::{Domain, Mailbox};
pub use access::AccessSettings;
pub use cidr::Cidr;
pub use dnsbl::Dnsbl;
pub use filter::{DefaultAction, FilterAddress, FilterKind, FilterSettings};
pub use raw::{CheckAction, ListenerKind, RawConfig, SenderPolicy, StoreKind, TlsPolicy};
pub use sieve::SieveSettings;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
pub use transport::{LmtpTarget, RelayAuth, TransportRule, rule_for};
pub use warnings::warnings;
pub use web::{AcmeSettings, Challenge, HttpSettings, MtaStsMode, MtaStsSettings};

/// The shipped default configuration (config/tern.toml), parsed in tests so it cannot rot.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/tern.toml");

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {key}: {reason}")]
    Invalid {
        path: String,
        key: String,
        reason: String,
    },
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub kind: ListenerKind,
    pub bind: Vec<SocketAddr>,
    /// Unix socket paths (LMTP only).
    pub unix: Vec<PathBuf>,
}

/// Limits for SMTP sessions and connections.
#[derive(Debug, Clone)]
pub struct Limits {
    pub message_size: usize,
    pub recipients: usize,
    pub command_line: usize,
    pub text_line: usize,
    pub errors: usize,
    pub junk_commands: usize,
    pub session_idle: Duration,
    pub header_section: usize,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub message_timeout: Duration,
    pub connections: usize,
    pub connections_per_ip: usize,
    /// Octets of message content the SMTP sessions may hold together while it arrives.
    pub data_memory: u64,
    /// Octets past which a message arriving goes to a spool file.
    pub spool_threshold: usize,
}

#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Octets to keep free on the data_dir file system.
    pub min_free: u64,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub max_lifetime: Duration,
    /// How long finished messages are kept in the history table.
    pub history: Duration,
    /// Octets of message bodies that jobs may hold at once.
    pub delivery_memory: u64,
    /// Messages in delivery at once.
    pub delivery_jobs: usize,
}

/// What authenticated users may do, and who may relay without authenticating.
#[derive(Debug, Clone)]
pub struct SubmissionSettings {
    pub sender_policy: SenderPolicy,
    pub hide_client_ip: bool,
    pub max_recipients: usize,
    pub max_messages_per_hour: u32,
    pub max_message_size: usize,
    pub trusted_networks: Vec<Cidr>,
    pub relay_auth: bool,
}

/// Throttling of failed logins.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub failures_before_block: u32,
    pub window: Duration,
    pub block: Duration,
    pub failure_delay: Duration,
    pub parallel_checks: usize,
    pub login_cache: Duration,
}

/// The outbound MTA's settings.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub remote_port: u16,
    pub max_connections: usize,
    pub per_destination: usize,
    pub idle: Duration,
    pub connect_timeout: Duration,
    pub max_received: usize,
    pub delay_warning: Duration,
    pub tls_policy: std::collections::BTreeMap<String, TlsPolicy>,
    pub ca_file: Option<PathBuf>,
    pub allow_private_addresses: bool,
    /// `[[transport]]` rules, first match wins.
    pub transports: Vec<TransportRule>,
}

/// Inbound checks (SPF, DKIM, DMARC, ARC, blocklists, greylisting).
#[derive(Debug, Clone)]
pub struct CheckSettings {
    pub enabled: bool,
    pub spf_fail: CheckAction,
    pub dmarc_quarantine: CheckAction,
    pub dmarc_reject: CheckAction,
    pub temperror: CheckAction,
    pub dnsbl: Vec<Dnsbl>,
    /// A listed client: refused at connect (reject) or greeted, its mail delivered to Junk (junk).
    pub dnsbl_action: CheckAction,
    pub max_signatures: usize,
    pub allow: Vec<Cidr>,
    pub skip: Vec<Cidr>,
    pub greylist: Option<GreylistSettings>,
}

#[derive(Debug, Clone, Copy)]
pub struct GreylistSettings {
    pub delay: Duration,
    pub expire: Duration,
}

/// A DKIM key named in the configuration.
#[derive(Debug, Clone)]
pub struct DkimKeyFile {
    pub domain: String,
    pub selector: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, for messages.
    pub path: PathBuf,
    pub hostname: String,
    pub data_dir: PathBuf,
    pub log_level: String,
    pub log_json: bool,
    pub user: Option<String>,
    pub group: Option<String>,
    pub allow_root: bool,
    pub shutdown_timeout: Duration,
    /// The admin HTTP listener, if on.
    pub admin: Option<SocketAddr>,
    pub listeners: Vec<Listener>,
    /// Certificate and key files; `None` means a self-signed pair in data_dir/tls/.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub local_domains: Vec<Domain>,
    /// Bare local names become `name@origin` (sendmail recipients, Unix users, /etc/aliases).
    pub origin: Domain,
    pub postmaster: Mailbox,
    pub store: StoreKind,
    pub blob_threshold: usize,
    pub limits: Limits,
    pub queue: QueueSettings,
    pub local_workers: usize,
    /// `[delivery] deliver_in_session`.
    pub deliver_in_session: bool,
    pub submission: SubmissionSettings,
    pub auth: AuthSettings,
    /// Where `tern sendmail` reaches the daemon.
    pub sendmail_socket: PathBuf,
    /// Unix users who may send as anyone through it (besides root and the service user).
    pub sendmail_trusted_users: Vec<String>,
    /// Sessions on the sendmail socket: in total, per Unix user.
    pub sendmail_connections: (usize, usize),
    pub delivery: DeliverySettings,
    /// Name servers instead of /etc/resolv.conf.
    pub nameservers: Option<Vec<SocketAddr>>,
    pub dkim_keys: Vec<DkimKeyFile>,
    pub dkim_headers: Vec<String>,
    pub checks: CheckSettings,
    pub http: HttpSettings,
    /// Content filters (milters), in the order messages pass through them.
    pub filters: Vec<FilterSettings>,
    /// The MTA-STS policy to serve, if any.
    pub mta_sts: Option<MtaStsSettings>,
    /// Certificates ordered from an ACME CA, if on.
    pub acme: Option<AcmeSettings>,
    /// Subaddress separator ("+"), if subaddressing is on.
    pub subaddress_separator: Option<String>,
    pub access: AccessSettings,
    pub sieve: SieveSettings,
    /// The effective configuration, defaults filled in and paths resolved, for `tern check-config`.
    pub effective: RawConfig,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text` as if read from `path`; relative paths resolve against `path`'s folder.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: shown.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        Validator { path: shown, base }.validate(raw, path)
    }

    pub fn is_local_domain(&self, d: &Domain) -> bool {
        self.local_domains.contains(d)
    }
}

struct Validator {
    path: String,
    base: PathBuf,
}

impl Validator {
    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        };
        // Absolute and without `..`, so that the daemon's working directory never matters.
        let abs = std::path::absolute(&joined).unwrap_or(joined);
        let mut out = PathBuf::new();
        for c in abs.components() {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                c => out.push(c),
            }
        }
        out
    }

    fn validate(&self, mut raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
        Domain::parse(&raw.server.hostname, false)
            .ok()
            .filter(|d| !d.as_str().starts_with('['))
            .ok_or_else(|| {
                self.err(
                    "server.hostname",
                    format!("{:?} is not a domain name", raw.server.hostname),
                )
            })?;
        if raw.server.data_dir.is_empty() {
            return Err(self.err("server.data_dir", "must not be empty"));
        }
        let data_dir = self.resolve(&raw.server.data_dir);
        tracing_subscriber::EnvFilter::try_new(&raw.log.level).map_err(|e| {
            self.err(
                "log.level",
                format!("{:?} is not a log filter: {e}", raw.log.level),
            )
        })?;

        if raw.listeners.is_empty() {
            return Err(self.err("listener", "at least one [[listener]] is needed"));
        }
        let mut listeners = Vec::new();
        for (i, l) in raw.listeners.iter().enumerate() {
            if l.kind == ListenerKind::Local {
                return Err(self.err(
                    format!("listener[{i}].kind"),
                    "\"local\" is not a listener kind",
                ));
            }
            if l.bind.is_empty() {
                return Err(self.err(format!("listener[{i}].bind"), "needs at least one address"));
            }
            let mut bind = Vec::new();
            let mut unix = Vec::new();
            for (j, b) in l.bind.iter().enumerate() {
                if let Some(path) = b.strip_prefix("unix:") {
                    if l.kind != ListenerKind::Lmtp {
                        return Err(self.err(
                            format!("listener[{i}].bind[{j}]"),
                            "Unix sockets are for lmtp listeners only",
                        ));
                    }
                    unix.push(self.resolve(path));
                    continue;
                }
                let addr: SocketAddr = b.parse().map_err(|_| {
                    self.err(
                        format!("listener[{i}].bind[{j}]"),
                        format!("{b:?} is not a socket address"),
                    )
                })?;
                bind.push(addr);
            }
            listeners.push(Listener {
                kind: l.kind,
                bind,
                unix,
            });
        }

        let tls_files = match (&raw.tls.cert, &raw.tls.key) {
            (Some(c), Some(k)) => Some((self.resolve(c), self.resolve(k))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(self.err("tls.key", "tls.cert is set, so tls.key is needed too"));
            }
            (None, Some(_)) => {
                return Err(self.err("tls.cert", "tls.key is set, so tls.cert is needed too"));
            }
        };

        if raw.domains.local.is_empty() {
            return Err(self.err("domains.local", "at least one local domain is needed"));
        }
        let mut local_domains = Vec::new();
        for (i, d) in raw.domains.local.iter().enumerate() {
            let domain = Domain::parse(d, true).map_err(|_| {
                self.err(
                    format!("domains.local[{i}]"),
                    format!("{d:?} is not a domain name"),
                )
            })?;
            local_domains.push(domain);
        }
        let origin = match &raw.domains.origin {
            None => local_domains[0].clone(),
            Some(o) => Domain::parse(&o.to_lowercase(), false)
                .ok()
                .filter(|d| !d.as_str().starts_with('['))
                .ok_or_else(|| self.err("domains.origin", format!("{o:?} is not a domain name")))?,
        };
        raw.domains.origin = Some(origin.to_string());
        let postmaster = Mailbox::parse(&raw.domains.postmaster, true).map_err(|_| {
            self.err(
                "domains.postmaster",
                format!("{:?} is not an address", raw.domains.postmaster),
            )
        })?;

        let l = &raw.limits;
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(self.err(format!("limits.{key}"), "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        positive("message_size", l.message_size as u64)?;
        positive("recipients", l.recipients as u64)?;
        positive("errors", l.errors as u64)?;
        positive("junk_commands", l.junk_commands as u64)?;
        positive("session_idle_secs", l.session_idle_secs)?;
        if l.header_section < 998 {
            return Err(self.err(
                "limits.header_section",
                format!("{} is below one RFC 5322 line (998)", l.header_section),
            ));
        }
        positive("text_line", l.text_line as u64)?;
        positive("command_timeout_secs", l.command_timeout_secs)?;
        positive("data_timeout_secs", l.data_timeout_secs)?;
        positive("connections", l.connections as u64)?;
        positive("connections_per_ip", l.connections_per_ip as u64)?;
        if !(64..=16384).contains(&l.spool_threshold_kib) {
            return Err(self.err(
                "limits.spool_threshold_kib",
                format!("{} is outside 64 to 16384", l.spool_threshold_kib),
            ));
        }
        if l.command_line < 512 {
            return Err(self.err(
                "limits.command_line",
                format!("{} is below RFC 5321's minimum of 512", l.command_line),
            ));
        }
        if l.text_line < 998 {
            return Err(self.err(
                "limits.text_line",
                format!("{} is below RFC 5321's 998", l.text_line),
            ));
        }
        let limits = Limits {
            message_size: l.message_size,
            recipients: l.recipients,
            command_line: l.command_line,
            text_line: l.text_line,
            errors: l.errors,
            junk_commands: l.junk_commands,
            session_idle: Duration::from_secs(l.session_idle_secs),
            header_section: l.header_section,
            command_timeout: Duration::from_secs(l.command_timeout_secs),
            data_timeout: Duration::from_secs(l.data_timeout_secs),
            message_timeout: Duration::from_secs(l.message_timeout_secs.max(1)),
            connections: l.connections,
            connections_per_ip: l.connections_per_ip,
            data_memory: l.data_memory_mb.clamp(1, 1 << 20) << 20,
            spool_threshold: l.spool_threshold_kib << 10,
        };
        let q = &raw.queue;
        if q.retry_base_secs == 0 {
            return Err(self.err("queue.retry_base_secs", "must be greater than 0"));
        }
        if q.retry_max_secs < q.retry_base_secs {
            return Err(self.err(
                "queue.retry_max_secs",
                "must not be below queue.retry_base_secs",
            ));
        }
        let queue = QueueSettings {
            min_free: q.min_free,
            retry_base: Duration::from_secs(q.retry_base_secs),
            retry_max: Duration::from_secs(q.retry_max_secs),
            max_lifetime: Duration::from_secs(q.max_lifetime_secs),
            history: Duration::from_secs(q.history_secs),
            delivery_memory: q.delivery_memory_mb.clamp(1, 1 << 20) << 20,
            delivery_jobs: q.delivery_jobs.clamp(1, 1 << 20),
        };
        if raw.delivery.local_workers == 0 || raw.delivery.local_workers > 256 {
            return Err(self.err("delivery.local_workers", "must be between 1 and 256"));
        }

        let sub = &raw.submission;
        let mut trusted_networks = Vec::new();
        for (i, n) in sub.trusted_networks.iter().enumerate() {
            let cidr = Cidr::parse(n).ok_or_else(|| {
                self.err(
                    format!("submission.trusted_networks[{i}]"),
                    format!("{n:?} is not an address or CIDR network"),
                )
            })?;
            trusted_networks.push(cidr);
        }
        if sub.max_recipients == 0 {
            return Err(self.err("submission.max_recipients", "must be greater than 0"));
        }
        let submission = SubmissionSettings {
            sender_policy: sub.sender_policy,
            hide_client_ip: sub.hide_client_ip,
            max_recipients: sub.max_recipients.min(limits.recipients),
            max_messages_per_hour: sub.max_messages_per_hour,
            max_message_size: if sub.max_message_size == 0 {
                limits.message_size
            } else {
                sub.max_message_size.min(limits.message_size)
            },
            trusted_networks,
            relay_auth: sub.relay_auth,
        };
        let a = &raw.auth;
        if a.failures_before_block == 0 {
            return Err(self.err("auth.failures_before_block", "must be greater than 0"));
        }
        let auth = AuthSettings {
            failures_before_block: a.failures_before_block,
            window: Duration::from_secs(a.window_secs),
            block: Duration::from_secs(a.block_secs),
            failure_delay: Duration::from_millis(a.failure_delay_ms),
            parallel_checks: a.parallel_checks,
            login_cache: Duration::from_secs(a.login_cache_secs),
        };
        if a.parallel_checks == 0 {
            return Err(self.err("auth.parallel_checks", "must be greater than 0"));
        }
        let sendmail_socket = match &raw.sendmail.socket {
            Some(p) => self.resolve(p),
            None => data_dir.join("sendmail.sock"),
        };

        let d = &raw.delivery;
        if d.max_connections == 0 {
            return Err(self.err("delivery.max_connections", "must be greater than 0"));
        }
        if d.per_destination == 0 {
            return Err(self.err("delivery.per_destination", "must be greater than 0"));
        }
        if d.remote_port == 0 {
            return Err(self.err("delivery.remote_port", "must not be 0"));
        }
        let mut tls_policy = std::collections::BTreeMap::new();
        for (domain, policy) in &d.tls_policy {
            let parsed = Domain::parse(domain, true).map_err(|_| {
                self.err(
                    format!("delivery.tls_policy.{domain:?}"),
                    format!("{domain:?} is not a domain name"),
                )
            })?;
            tls_policy.insert(parsed.to_string(), *policy);
        }
        let delivery = DeliverySettings {
            remote_port: d.remote_port,
            max_connections: d.max_connections,
            per_destination: d.per_destination,
            idle: Duration::from_secs(d.idle_secs),
            connect_timeout: Duration::from_secs(d.connect_timeout_secs.max(1)),
            max_received: d.max_received,
            delay_warning: Duration::from_secs(d.delay_warning_secs),
            tls_policy,
            ca_file: d.ca_file.as_deref().map(|p| self.resolve(p)),
            allow_private_addresses: d.allow_private_addresses,
            transports: self.transports(&raw.transports)?,
        };
        let nameservers = match &raw.dns.nameservers {
            None => None,
            Some(list) => {
                let mut out = Vec::new();
                for (i, n) in list.iter().enumerate() {
                    let addr: SocketAddr = n
                        .parse()
                        .or_else(|_| {
                            n.parse::<std::net::IpAddr>()
                                .map(|ip| SocketAddr::new(ip, 53))
                        })
                        .map_err(|_| {
                            self.err(
                                format!("dns.nameservers[{i}]"),
                                format!("{n:?} is not an address (ip or ip:port)"),
                            )
                        })?;
                    out.push(addr);
                }
                if out.is_empty() {
                    return Err(self.err(
                        "dns.nameservers",
                        "must not be empty (leave it out to use /etc/resolv.conf)",
                    ));
                }
                Some(out)
            }
        };
        let mut dkim_keys = Vec::new();
        for (i, k) in raw.dkim.keys.iter().enumerate() {
            let domain = Domain::parse(&k.domain, true).map_err(|_| {
                self.err(
                    format!("dkim.keys[{i}].domain"),
                    format!("{:?} is not a domain name", k.domain),
                )
            })?;
            if k.selector.is_empty()
                || !k
                    .selector
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
            {
                return Err(self.err(
                    format!("dkim.keys[{i}].selector"),
                    format!("{:?} is not a DKIM selector", k.selector),
                ));
            }
            dkim_keys.push(DkimKeyFile {
                domain: domain.to_string(),
                selector: k.selector.clone(),
                path: self.resolve(&k.key),
            });
        }

        let c = &raw.checks;
        let mut allow = Vec::new();
        for (i, n) in c.allow.iter().enumerate() {
            allow.push(Cidr::parse(n).ok_or_else(|| {
                self.err(
                    format!("checks.allow[{i}]"),
                    format!("{n:?} is not an address or CIDR network"),
                )
            })?);
        }
        let mut skip = Vec::new();
        for (i, n) in c.skip_networks.iter().enumerate() {
            skip.push(Cidr::parse(n).ok_or_else(|| {
                self.err(
                    format!("checks.skip_networks[{i}]"),
                    format!("{n:?} is not an address or CIDR network"),
                )
            })?);
        }
        let dnsbl = self.dnsbl(&c.dnsbl)?;
        let junk_or = |key: &str, a: CheckAction, allowed: &[CheckAction]| {
            if allowed.contains(&a) {
                Ok(a)
            } else {
                Err(self.err(
                    format!("checks.{key}"),
                    format!("{a:?} is not allowed here").to_lowercase(),
                ))
            }
        };
        use CheckAction::*;
        let checks = CheckSettings {
            enabled: c.enabled,
            spf_fail: junk_or("spf_fail", c.spf_fail, &[Deliver, Junk, Reject])?,
            dmarc_quarantine: junk_or("dmarc_quarantine", c.dmarc_quarantine, &[Deliver, Junk])?,
            dmarc_reject: junk_or("dmarc_reject", c.dmarc_reject, &[Deliver, Junk, Reject])?,
            temperror: junk_or("temperror", c.temperror, &[Deliver, Defer])?,
            dnsbl,
            dnsbl_action: junk_or("dnsbl_action", c.dnsbl_action, &[Reject, Junk])?,
            max_signatures: c.max_signatures.max(1),
            allow,
            skip,
            greylist: raw.greylist.enabled.then(|| GreylistSettings {
                delay: Duration::from_secs(raw.greylist.delay_secs),
                expire: Duration::from_secs(raw.greylist.expire_secs),
            }),
        };
        let sep = &raw.domains.subaddress_separator;
        if sep.chars().count() > 1 || sep.contains(['@', '.', '"']) {
            return Err(self.err(
                "domains.subaddress_separator",
                format!("{sep:?} must be one character other than @ . \""),
            ));
        }
        let subaddress_separator = (!sep.is_empty()).then(|| sep.clone());

        let log_json = match raw.log.format.as_str() {
            "text" => false,
            "json" => true,
            other => {
                return Err(self.err(
                    "log.format",
                    format!("{other:?} is not \"text\" or \"json\""),
                ));
            }
        };
        let admin =
            match raw.admin.bind.as_str() {
                "" => None,
                b => Some(b.parse::<SocketAddr>().map_err(|_| {
                    self.err("admin.bind", format!("{b:?} is not a socket address"))
                })?),
            };

        let access = self.access(&raw.access)?;
        let http = self.http(&raw.http)?;
        let filters = self.filters(&raw.filters)?;
        let hostname = raw.server.hostname.to_ascii_lowercase();
        let mta_sts = match &raw.mta_sts {
            Some(m) => Some(self.mta_sts(m, &hostname)?),
            None => None,
        };
        let acme = self.acme(&raw.acme, &hostname, &local_domains, &postmaster)?;
        if let Some(a) = &acme {
            let (kind, name) = match a.challenge {
                Challenge::Http01 => (ListenerKind::Http, "http-01"),
                Challenge::TlsAlpn01 => (ListenerKind::Https, "tls-alpn-01"),
            };
            if !listeners.iter().any(|l| l.kind == kind) {
                return Err(self.err(
                    "acme.challenge",
                    format!(
                        "{name} is answered on a [[listener]] of kind {:?}, and there is none",
                        kind.as_str()
                    ),
                ));
            }
        }
        let sieve = self.sieve(&raw.sieve, subaddress_separator.as_deref())?;

        raw.server.data_dir = data_dir.display().to_string();
        raw.sendmail.socket = Some(sendmail_socket.display().to_string());
        if let Some((c, k)) = &tls_files {
            raw.tls.cert = Some(c.display().to_string());
            raw.tls.key = Some(k.display().to_string());
        }
        Ok(Config {
            path: path.to_path_buf(),
            hostname: raw.server.hostname.to_ascii_lowercase(),
            data_dir,
            log_level: raw.log.level.clone(),
            log_json,
            user: raw.server.user.clone(),
            group: raw.server.group.clone(),
            allow_root: raw.server.allow_root,
            shutdown_timeout: Duration::from_secs(raw.server.shutdown_timeout_secs),
            admin,
            listeners,
            tls_files,
            local_domains,
            origin,
            postmaster,
            store: raw.store.kind,
            blob_threshold: raw.store.blob_threshold,
            limits,
            queue,
            local_workers: raw.delivery.local_workers,
            deliver_in_session: raw.delivery.deliver_in_session,
            submission,
            auth,
            sendmail_socket,
            sendmail_trusted_users: raw.sendmail.trusted_users.clone(),
            sendmail_connections: (
                raw.sendmail.max_connections.max(1),
                raw.sendmail.max_connections_per_user.max(1),
            ),
            delivery,
            nameservers,
            dkim_keys,
            dkim_headers: raw.dkim.headers.clone(),
            checks,
            subaddress_separator,
            access,
            sieve,
            http,
            mta_sts,
            acme,
            filters,
            effective: raw,
        })
    }
}

impl Config {
    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.effective).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
