//! The configuration file as written: serde structs with documented defaults. Validation into
//! [`super::Config`] happens in `mod.rs`; nothing here opens a socket or a file.
//!
//! Every key, its unit and default is documented in docs/configuration.md.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: RawServer,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<RawListener>,
    #[serde(default, rename = "transport", skip_serializing_if = "Vec::is_empty")]
    pub transports: Vec<RawTransport>,
    #[serde(default, rename = "filter", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<RawFilter>,
    #[serde(default)]
    pub tls: RawTls,
    pub domains: RawDomains,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub queue: RawQueue,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub submission: RawSubmission,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub sendmail: RawSendmail,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub dkim: RawDkim,
    #[serde(default)]
    pub checks: RawChecks,
    #[serde(default)]
    pub greylist: RawGreylist,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub access: RawAccess,
    #[serde(default)]
    pub sieve: RawSieve,
    /// Absent: no MTA-STS policy is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mta_sts: Option<RawMtaSts>,
    #[serde(default)]
    pub acme: RawAcme,
    #[serde(default)]
    pub http: RawHttp,
}

/// A content filter messages pass through while the SMTP session is open.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    /// "milter" (the Sendmail milter protocol, version 6) or "rspamd" (rspamd's HTTP protocol, /checkv2).
    pub kind: String,
    /// Where a milter listens: "127.0.0.1:11332" or "unix:/run/rspamd/milter.sock".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Where rspamd's normal worker listens (kind = "rspamd"): "http://127.0.0.1:11333".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// rspamd's controller, for training from users' Junk moves: "http://127.0.0.1:11334". Absent: no training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_url: Option<String>,
    /// The controller's enable_password, when it is not reached from a secure_ip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_password: Option<String>,
    /// rspamd: refuse at this score or above, whatever rspamd's own action (absent: rspamd's "reject").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_score: Option<f64>,
    /// rspamd: deliver to Junk at this score or above (absent: rspamd's "add header"/"rewrite subject").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub junk_score: Option<f64>,
    /// A milter that scans for viruses (clamav-milter): what it says of a message at its end is Sieve's
    /// virustest (RFC 5235): 1 when it passed the message, 5 when it quarantined it or added
    /// `X-Virus-Status: Infected`; 0 for mail no scanner saw whole. Default: false.
    #[serde(default)]
    pub virus: bool,
    /// The listeners whose mail passes through it. Default: ["relay"].
    #[serde(default = "default_filter_listeners")]
    pub listeners: Vec<ListenerKind>,
    /// What a message gets when the filter is down, slow or speaks nonsense: "tempfail" (451, the sender
    /// retries), "accept" (the filter is skipped, and the log says so) or "reject" (550). Default: "tempfail".
    #[serde(default = "default_filter_action")]
    pub default_action: String,
    /// Longest wait to connect and negotiate. Default: 10.
    #[serde(default = "default_filter_connect")]
    pub connect_timeout_secs: u64,
    /// Longest wait for each answer. Default: 30.
    #[serde(default = "default_filter_command")]
    pub command_timeout_secs: u64,
    /// Longest the end of a message (headers, body, the verdict) may take. Default: 300.
    #[serde(default = "default_filter_content")]
    pub content_timeout_secs: u64,
}

fn default_filter_listeners() -> Vec<ListenerKind> {
    vec![ListenerKind::Relay]
}
fn default_filter_action() -> String {
    "tempfail".into()
}
fn default_filter_connect() -> u64 {
    10
}
fn default_filter_command() -> u64 {
    30
}
fn default_filter_content() -> u64 {
    300
}

/// The MTA-STS policy (RFC 8461) served at https://mta-sts.<domain>/.well-known/mta-sts.txt for every local
/// domain.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMtaSts {
    /// "testing" (senders report failures but deliver anyway), "enforce" (senders deliver only over
    /// verified TLS to a matching MX) or "none" (tells senders to forget an earlier policy). Default: "testing".
    pub mode: String,
    /// MX host patterns senders may deliver to ("mx.example.org", "*.example.org"). Default: [server.hostname].
    pub mx: Vec<String>,
    /// How long senders cache the policy. Default: 604800 (one week).
    pub max_age_secs: u64,
}

impl Default for RawMtaSts {
    fn default() -> Self {
        RawMtaSts {
            mode: "testing".into(),
            mx: Vec::new(),
            max_age_secs: 604_800,
        }
    }
}

/// Certificates from an ACME CA (RFC 8555) instead of `[tls]` files.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAcme {
    /// Off by default: on, tern orders certificates for `names` and renews them.
    pub enabled: bool,
    /// The CA's directory. Default: Let's Encrypt's production directory.
    pub directory_url: String,
    /// Contact addresses for the account ("mailto:admin@example.org"). Default: mailto:<domains.postmaster>.
    pub contact: Vec<String>,
    /// Names to cover. Default: server.hostname, and mta-sts.<d> and autoconfig.<d> for each local domain.
    pub names: Vec<String>,
    /// "http-01" (answered on the http listener, port 80) or "tls-alpn-01" (on the https listener, 443).
    pub challenge: String,
    /// Extra PEM roots trusted for the CA's own HTTPS (private CAs, tests). Default: the system's roots.
    pub ca_file: Option<String>,
    /// Renew this long before expiry (or at a third of the lifetime left, if sooner). Default: 2592000 (30 days).
    pub renew_before_secs: u64,
    /// First wait after a failed order; doubles up to six hours. Default: 60.
    pub retry_secs: u64,
}

impl Default for RawAcme {
    fn default() -> Self {
        RawAcme {
            enabled: false,
            directory_url: "https://acme-v02.api.letsencrypt.org/directory".into(),
            contact: Vec::new(),
            names: Vec::new(),
            challenge: "http-01".into(),
            ca_file: None,
            renew_before_secs: 30 * 86_400,
            retry_secs: 60,
        }
    }
}

/// Limits of the http and https listeners (and the admin one).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    /// Longest a client may take to send a request's header. Default: 10.
    pub header_timeout_secs: u64,
    /// Longest a connection stays open, whatever it does. Default: 60.
    pub connection_secs: u64,
    /// Largest request header section (8192 at least). Default: 16384.
    pub max_header_bytes: usize,
    /// Largest request body (Autodiscover's POST). Default: 65536.
    pub max_body_bytes: usize,
    /// Connections at once on the HTTP listeners, in total and per client address. Default: 256, 16.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            header_timeout_secs: 10,
            connection_secs: 60,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            max_connections: 256,
            max_connections_per_ip: 16,
        }
    }
}

/// Users' Sieve filters at delivery, the admin's scripts around them, and the limits of a run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSieve {
    /// Run scripts at delivery. false: every message is kept in INBOX (or Junk) as without Sieve.
    /// Default: true.
    pub enabled: bool,
    /// Admin scripts (files) run before each user's script, in order (Pigeonhole's sieve_before).
    /// Default: [].
    pub before: Vec<String>,
    /// Admin scripts run after each user's script (sieve_after). Default: [].
    pub after: Vec<String>,
    /// Folder of scripts that `include :global "NAME"` finds as NAME.sieve; "" means none. Default: "".
    pub global_dir: String,
    /// Largest script a user may store, in octets. Default: 65536.
    pub max_script_bytes: usize,
    /// Scripts one user may store. Default: 16.
    pub max_scripts: usize,
    /// Redirects one run may make (Pigeonhole's default too). Default: 4.
    pub max_redirects: usize,
    /// Actions one run may take (stores, redirects, replies). Default: 32.
    pub max_actions: usize,
    /// How deep includes may nest. Default: 5.
    pub max_include_depth: usize,
    /// Milliseconds one run may take. Default: 1000.
    pub max_run_ms: u64,
    /// Days between two vacation replies to one sender when the script does not say. Default: 7.
    pub vacation_default_days: u64,
    /// Shortest period a script may ask for (:days, :seconds), in seconds. Default: 86400.
    pub vacation_min_secs: u64,
    /// Longest period, in days. Default: 90.
    pub vacation_max_days: u64,
}

impl Default for RawSieve {
    fn default() -> Self {
        RawSieve {
            enabled: true,
            before: Vec::new(),
            after: Vec::new(),
            global_dir: String::new(),
            max_script_bytes: 65536,
            max_scripts: 16,
            max_redirects: 4,
            max_actions: 32,
            max_include_depth: 5,
            max_run_ms: 1000,
            vacation_default_days: 7,
            vacation_min_secs: 86_400,
            vacation_max_days: 90,
        }
    }
}

/// Mail access (POP3, IMAP, ManageSieve): who may log in without TLS, and the limits of a session.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAccess {
    /// Client networks (CIDR) whose passwords may cross without TLS (as loopback does in Dovecot). Others must
    /// use STLS or the implicit-TLS port first. Default: ["127.0.0.0/8", "::1"].
    pub secure_networks: Vec<String>,
    /// Mail access connections at once, in total. Default: 10000.
    pub max_connections: usize,
    /// Mail access connections at once from one client (IPv4 address or IPv6 /64). Default: 50.
    pub max_connections_per_ip: usize,
    /// Logged-in sessions of one user at once. Default: 20.
    pub max_connections_per_user: usize,
    /// Seconds a POP3 session may wait for a command (RFC 1939 asks for at least 600). Default: 600.
    pub pop3_idle_secs: u64,
    /// Erroneous commands before a session is closed. Default: 10.
    pub bad_commands: usize,
    /// Seconds a logged-in IMAP session may be silent, IDLE included (RFC 9051 5.4: at least 30 minutes).
    /// Default: 1800.
    pub imap_idle_secs: u64,
    /// Seconds an IMAP client has to log in. Default: 60.
    pub imap_login_timeout_secs: u64,
    /// Longest IMAP command line in octets, literals apart. Default: 65536.
    pub imap_command_line: usize,
    /// Largest IMAP literal in octets (APPENDLIMIT). Default: 26214400 (25 MiB).
    pub imap_literal_size: usize,
    /// Memory for the parsed structure (ENVELOPE, BODYSTRUCTURE) of messages IMAP clients fetched, in
    /// MiB, shared by all sessions. 0 turns it off. Default: 16.
    pub imap_structure_cache_mb: usize,
    /// Seconds a ManageSieve session may wait for a command. Default: 600.
    pub managesieve_idle_secs: u64,
}

impl Default for RawAccess {
    fn default() -> Self {
        RawAccess {
            secure_networks: vec!["127.0.0.0/8".into(), "::1".into()],
            max_connections: 10000,
            max_connections_per_ip: 50,
            max_connections_per_user: 20,
            pop3_idle_secs: 600,
            bad_commands: 10,
            imap_idle_secs: 1800,
            imap_login_timeout_secs: 60,
            imap_command_line: 65536,
            imap_literal_size: 25 * 1024 * 1024,
            imap_structure_cache_mb: 16,
            managesieve_idle_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Address of the admin HTTP listener (GET /metrics, GET /healthz); "" turns it off. Default: "127.0.0.1:8025".
    pub bind: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            bind: "127.0.0.1:8025".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Name in the greeting, EHLO reply and Received: headers.
    pub hostname: String,
    /// Queue, databases, mailboxes and the generated TLS key live here. Default: "data".
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    /// Started as root: the account to become once the listeners are bound. Default: none.
    #[serde(default)]
    pub user: Option<String>,
    /// The group to become; default: the user's primary group.
    #[serde(default)]
    pub group: Option<String>,
    /// Keep running as root when no user is set. Default: false (refuse to start).
    #[serde(default)]
    pub allow_root: bool,
    /// Seconds sessions in the middle of a message may take to finish after SIGTERM. Default: 30.
    #[serde(default = "default_shutdown")]
    pub shutdown_timeout_secs: u64,
}

fn default_shutdown() -> u64 {
    30
}

fn default_data_dir() -> String {
    "data".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// tracing filter (error, warn, info, debug, trace or a directive list); RUST_LOG overrides it. Default: "info".
    #[serde(default = "default_log_level")]
    pub level: String,
    /// "text" (one line per event) or "json" (one JSON object per line). Default: "text".
    #[serde(default = "default_log_format")]
    pub format: String,
}

fn default_log_format() -> String {
    "text".into()
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: default_log_level(),
            format: default_log_format(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Mail from other MTAs for the local domains (MX role, port 25).
    Relay,
    /// Message submission with STARTTLS (RFC 6409, port 587).
    Submission,
    /// Message submission over implicit TLS (RFC 8314, port 465).
    Submissions,
    /// Final delivery from another MTA (RFC 2033).
    Lmtp,
    /// POP3 with STLS (RFC 1939, RFC 2595; port 110).
    Pop3,
    /// POP3 over implicit TLS (RFC 8314; port 995).
    Pop3s,
    /// IMAP with STARTTLS (RFC 9051; port 143).
    Imap,
    /// IMAP over implicit TLS (RFC 8314; port 993).
    Imaps,
    /// ManageSieve with STARTTLS: users manage their Sieve scripts (RFC 5804; port 4190).
    ManageSieve,
    /// HTTP (port 80): ACME http-01 challenges and mail client autoconfiguration.
    Http,
    /// HTTPS (port 443): MTA-STS policies and mail client autoconfiguration.
    Https,
    /// The sendmail socket for local programs (internal; not configurable as a listener).
    #[serde(skip)]
    Local,
}

impl ListenerKind {
    /// Mail access (POP3, IMAP, ManageSieve) rather than SMTP.
    pub fn is_access(self) -> bool {
        matches!(
            self,
            ListenerKind::Pop3
                | ListenerKind::Pop3s
                | ListenerKind::Imap
                | ListenerKind::Imaps
                | ListenerKind::ManageSieve
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Relay => "relay",
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
            ListenerKind::Lmtp => "lmtp",
            ListenerKind::Pop3 => "pop3",
            ListenerKind::Pop3s => "pop3s",
            ListenerKind::Imap => "imap",
            ListenerKind::Imaps => "imaps",
            ListenerKind::ManageSieve => "managesieve",
            ListenerKind::Http => "http",
            ListenerKind::Https => "https",
            ListenerKind::Local => "local",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub kind: ListenerKind,
    /// Socket addresses to listen on, e.g. ["0.0.0.0:25", "[::]:25"]. Port 0 picks a free port (tests).
    /// LMTP listeners may also name Unix sockets: "unix:/run/tern/lmtp.sock".
    pub bind: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain. With `key` absent too, a self-signed certificate is made in data_dir/tls/.
    pub cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDomains {
    /// Domains whose mail is delivered here.
    pub local: Vec<String>,
    /// Where postmaster@ every local domain (and bare <postmaster>) goes.
    pub postmaster: String,
    /// alice+tag@ is delivered to alice@; empty turns subaddressing off. Default: "+".
    #[serde(default = "default_separator")]
    pub subaddress_separator: String,
    /// The domain bare local names (`root`, a Unix login) are qualified with, as Postfix's myorigin.
    /// Default: the first local domain.
    #[serde(default)]
    pub origin: Option<String>,
}

fn default_separator() -> String {
    "+".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// data_dir/mail/<domain>/<local-part>/{tmp,new,cur}.
    #[default]
    Maildir,
    /// data_dir/mailboxes.db, large bodies as content-addressed files in data_dir/blobs/.
    Sqlite,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub kind: StoreKind,
    /// sqlite store: bodies larger than this many octets are kept as files. Default: 1048576 (1 MiB).
    pub blob_threshold: usize,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            kind: StoreKind::Maildir,
            blob_threshold: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Largest message in octets, advertised as SIZE. Default: 26214400 (25 MiB).
    pub message_size: usize,
    /// Recipients per message. Default: 1000.
    pub recipients: usize,
    /// Longest command line in octets, CRLF included. Default: 2048 (RFC 5321 asks for at least 512).
    pub command_line: usize,
    /// Longest line of message text in octets, CRLF excluded. Default: 65536.
    pub text_line: usize,
    /// 5xx replies in one session before it is closed with 421. Default: 20.
    pub errors: usize,
    /// Commands that move no mail (NOOP, RSET, VRFY, HELP, HELO/EHLO, unknown or refused ones) allowed
    /// between two accepted messages before the session is closed with 421 4.7.0. Default: 100.
    pub junk_commands: usize,
    /// Seconds a session may go on without completing a message (from its start or its last message)
    /// before it is closed with 421 4.4.2. Default: 600.
    pub session_idle_secs: u64,
    /// Longest header section of a message in octets; longer ones get 552 5.3.4. Default: 1048576 (1 MiB).
    pub header_section: usize,
    /// Seconds to wait for the next command (RFC 5321 4.5.3.2.7 asks for at least 300). Default: 300.
    pub command_timeout_secs: u64,
    /// Seconds to wait for each block of message data (RFC 5321 4.5.3.2.5). Default: 180.
    pub data_timeout_secs: u64,
    /// Seconds one message's whole DATA or BDAT may take, however steadily it trickles in. Default: 1800.
    pub message_timeout_secs: u64,
    /// Concurrent SMTP connections in total. Default: 4000.
    pub connections: usize,
    /// Concurrent SMTP connections from one client IP address. Default: 50.
    pub connections_per_ip: usize,
    /// MiB of message content all SMTP sessions together may hold in memory while it arrives: messages
    /// below `spool_threshold_kib` whole, larger ones the piece not yet written to their spool file
    /// (data_dir/spool). A message that does not fit gets 452 4.3.1 at the end of its data (the client
    /// tries again). Default: 512.
    pub data_memory_mb: u64,
    /// KiB past which a message's content goes to a spool file as it arrives (and every later stage reads
    /// it from there) instead of staying in memory and in queue.db; 64 to 16384. A session holds at most
    /// this much content in memory. Smaller means less memory per session and a file (and fsync) more
    /// per message past it. Default: 256.
    pub spool_threshold_kib: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            message_size: 25 * 1024 * 1024,
            recipients: 1000,
            command_line: 2048,
            text_line: 65536,
            errors: 20,
            junk_commands: 100,
            session_idle_secs: 600,
            header_section: 1 << 20,
            command_timeout_secs: 300,
            data_timeout_secs: 180,
            message_timeout_secs: 1800,
            connections: 4000,
            connections_per_ip: 50,
            data_memory_mb: 512,
            spool_threshold_kib: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawQueue {
    /// Delay before the first retry of a temporary failure, in seconds; doubles each time. Default: 300.
    pub retry_base_secs: u64,
    /// Longest delay between retries, in seconds. Default: 14400 (4 h).
    pub retry_max_secs: u64,
    /// A message still undelivered after this many seconds fails permanently. Default: 432000 (5 days).
    pub max_lifetime_secs: u64,
    /// Octets that must stay free on the data_dir file system; below it MAIL gets 452 4.3.1. Default: 104857600.
    pub min_free: u64,
    /// Seconds a finished message's recipients (delivered or failed) are kept in the history. Default: 604800.
    pub history_secs: u64,
    /// MiB of message bodies that deliveries waiting or under way may hold in memory, all together; past
    /// it, due messages stay on disk until deliveries finish. Default: 256.
    pub delivery_memory_mb: u64,
    /// Messages handed to delivery (local and remote) at once, waiting for a connection or under way;
    /// past it, due messages stay on disk until deliveries finish. Each costs its bookkeeping (a task,
    /// the envelope, the header section) whatever its body. Default: 2000.
    pub delivery_jobs: usize,
}

impl Default for RawQueue {
    fn default() -> Self {
        RawQueue {
            retry_base_secs: 300,
            retry_max_secs: 4 * 3600,
            max_lifetime_secs: 5 * 86400,
            min_free: 100 << 20,
            history_secs: 7 * 86400,
            delivery_memory_mb: 256,
            delivery_jobs: 2000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsPolicy {
    /// STARTTLS whenever offered, certificate not checked (RFC 7435 opportunistic TLS).
    May,
    /// STARTTLS must be offered and succeed, certificate not checked; else the delivery is deferred.
    /// Also written `require` (as `[[transport]] tls` documents it).
    #[serde(alias = "require")]
    RequireTls,
    /// STARTTLS with a certificate valid for the MX host name (web PKI roots plus `ca_file`).
    Verify,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDelivery {
    /// Local delivery tasks writing mailboxes in parallel (each fsyncs its own batch). Default: 8.
    pub local_workers: usize,
    /// A message whose every recipient is local is written to the mailboxes by the SMTP session before
    /// its 250 (fsynced with the folder, as the 250 promises), and never queued unless something about it
    /// is left to do (a deferral, a script's reject, a success DSN). false: every message is queued first
    /// and delivered by the workers. Default: true.
    pub deliver_in_session: bool,
    /// TCP port of remote MX hosts. Default: 25 (tests use another).
    pub remote_port: u16,
    /// Outbound SMTP connections in total. Default: 100.
    pub max_connections: usize,
    /// Outbound SMTP connections to one destination domain. Default: 10.
    pub per_destination: usize,
    /// Seconds an idle outbound connection is kept for the next message to the same host. Default: 30.
    pub idle_secs: u64,
    /// Seconds to wait for a TCP connection to an MX host. Default: 30.
    pub connect_timeout_secs: u64,
    /// A message with more Received: headers than this is a loop and bounces (5.4.14). Default: 50.
    pub max_received: usize,
    /// Seconds before the sender is told once that a recipient is still being retried. Default: 14400 (4 h).
    pub delay_warning_secs: u64,
    /// TLS policy per destination domain: "may" (default for all), "require-tls" or "verify".
    pub tls_policy: std::collections::BTreeMap<String, TlsPolicy>,
    /// Extra PEM CA certificates trusted by the "verify" policy (besides the web PKI roots).
    pub ca_file: Option<String>,
    /// Deliver to MX hosts of other domains that resolve to loopback, private, link-local or other
    /// non-public addresses. Default: false (such an MX is refused and the delivery deferred).
    pub allow_private_addresses: bool,
}

impl Default for RawDelivery {
    fn default() -> Self {
        RawDelivery {
            local_workers: 8,
            deliver_in_session: true,
            remote_port: 25,
            max_connections: 100,
            per_destination: 10,
            idle_secs: 30,
            connect_timeout_secs: 30,
            max_received: 50,
            delay_warning_secs: 4 * 3600,
            tls_policy: Default::default(),
            ca_file: None,
            allow_private_addresses: false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDns {
    /// Name servers as "ip:port" instead of /etc/resolv.conf, e.g. ["127.0.0.1:5353"].
    pub nameservers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDkimKey {
    pub domain: String,
    pub selector: String,
    /// PEM private key: RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8).
    pub key: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDkim {
    /// Keys besides those `tern dkim generate` writes under data_dir/dkim/.
    pub keys: Vec<RawDkimKey>,
    /// Header fields to sign; empty means tern's default set.
    pub headers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SenderPolicy {
    /// MAIL FROM and every From: address must be one of the user's own addresses.
    #[default]
    Own,
    /// The user may send as anyone (for a trusted application account).
    Any,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSubmission {
    /// Whose addresses an authenticated user may send as; `tern user set --sender-policy` overrides it per user.
    pub sender_policy: SenderPolicy,
    /// Leave the client's IP address out of the Received: header of authenticated submissions. Default: false.
    pub hide_client_ip: bool,
    /// Recipients per message for an authenticated user. Default: 100.
    pub max_recipients: usize,
    /// Messages per hour for an authenticated user. Default: 500.
    pub max_messages_per_hour: u32,
    /// Largest message for an authenticated user in octets; 0 means limits.message_size. Default: 0.
    pub max_message_size: usize,
    /// Client networks allowed to relay without AUTH on the relay listener (CIDR). Default: none.
    pub trusted_networks: Vec<String>,
    /// Offer AUTH on the relay listener too (after STARTTLS). Default: false.
    pub relay_auth: bool,
}

impl Default for RawSubmission {
    fn default() -> Self {
        RawSubmission {
            sender_policy: SenderPolicy::Own,
            hide_client_ip: false,
            max_recipients: 100,
            max_messages_per_hour: 500,
            max_message_size: 0,
            trusted_networks: Vec::new(),
            relay_auth: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// Failed logins from one client IP, or for one account, within `window_secs` before it is blocked. Default: 10.
    pub failures_before_block: u32,
    /// How long failures are remembered, in seconds. Default: 900.
    pub window_secs: u64,
    /// How long a blocked client IP or account gets 421 4.7.0 to AUTH, in seconds. Default: 900.
    pub block_secs: u64,
    /// Delay before answering a failed login, multiplied by the failures so far, in milliseconds. Default: 1000.
    pub failure_delay_ms: u64,
    /// Password checks (argon2id, ~19 MiB and tens of milliseconds each) running at once; more wait.
    /// Default: 4.
    pub parallel_checks: usize,
    /// Seconds a verified password is remembered in memory, so that a mail client's many reconnects do not
    /// each cost an argon2id check; 0 turns it off. A password change takes effect at once. Default: 300.
    pub login_cache_secs: u64,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            failures_before_block: 10,
            window_secs: 900,
            block_secs: 900,
            failure_delay_ms: 1000,
            parallel_checks: 4,
            login_cache_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSendmail {
    /// Unix socket where `tern sendmail` hands messages to the daemon. Default: data_dir/sendmail.sock.
    pub socket: Option<String>,
    /// Unix users who may give any sender (`sendmail -f`), besides root and the service user. Everyone
    /// else sends as their login name at the first local domain. Default: none.
    pub trusted_users: Vec<String>,
    /// Sessions on the sendmail socket at once. Default: 50.
    pub max_connections: usize,
    /// Sessions on the sendmail socket at once from one Unix user. Default: 10.
    pub max_connections_per_user: usize,
}

impl Default for RawSendmail {
    fn default() -> Self {
        RawSendmail {
            socket: None,
            trusted_users: Vec::new(),
            max_connections: 50,
            max_connections_per_user: 10,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckAction {
    /// Deliver to the inbox (with the Authentication-Results header).
    Deliver,
    /// Deliver to the recipient's Junk folder.
    Junk,
    /// Refuse at the end of DATA (5xx).
    Reject,
    /// Refuse for now (4xx); the sender retries.
    Defer,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawChecks {
    /// SPF, DKIM, DMARC and ARC on the relay listener. Default: true.
    pub enabled: bool,
    /// SPF fail for a domain without a DMARC record: deliver, junk or reject. Default: deliver.
    pub spf_fail: CheckAction,
    /// DMARC fail with p=quarantine: junk or deliver. Default: junk.
    pub dmarc_quarantine: CheckAction,
    /// DMARC fail with p=reject: reject, junk or deliver. Default: reject.
    pub dmarc_reject: CheckAction,
    /// A temporary DNS error during the checks: deliver (with temperror results) or defer. Default: deliver.
    pub temperror: CheckAction,
    /// DNS blocklist zones checked for the client IP at connection time, e.g. ["zen.spamhaus.org"], or
    /// { zone = "...", listed = ["127.0.0.2", "127.0.0.4/30"] } to say which answers mean listed (by
    /// default 127.0.0.2-127.0.0.255; Spamhaus's 127.255.255.x error answers never count). Default: none.
    pub dnsbl: Vec<RawDnsbl>,
    /// A client a blocklist lists: "reject" (554 at connect, before the greeting) or "junk" (greeted and
    /// checked as usual; its mail goes to Junk, and the reason is in the log line). Default: reject.
    pub dnsbl_action: CheckAction,
    /// DKIM signatures verified per message; further ones are not checked (each costs a DNS lookup and
    /// a hash). Messages with more than this many ARC sets get no ARC verdict. Default: 10.
    pub max_signatures: usize,
    /// Client networks (CIDR) that skip the blocklists and greylisting. Default: none.
    pub allow: Vec<String>,
    /// Client networks (CIDR) whose mail is not checked at all: local content filters and tools.
    /// Default: ["127.0.0.0/8", "::1"].
    pub skip_networks: Vec<String>,
}

impl Default for RawChecks {
    fn default() -> Self {
        RawChecks {
            enabled: true,
            spf_fail: CheckAction::Deliver,
            dmarc_quarantine: CheckAction::Junk,
            dmarc_reject: CheckAction::Reject,
            temperror: CheckAction::Deliver,
            dnsbl: Vec::new(),
            dnsbl_action: CheckAction::Reject,
            max_signatures: 10,
            allow: Vec::new(),
            skip_networks: vec!["127.0.0.0/8".into(), "::1".into()],
        }
    }
}

/// A DNS blocklist: its zone, and optionally the answers that mean "listed".
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawDnsbl {
    Zone(String),
    Table { zone: String, listed: Vec<String> },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGreylist {
    /// Greylist first-time (client network, sender, recipient) triplets with 451 4.7.1. Default: false.
    pub enabled: bool,
    /// Seconds before a retry of a new triplet is accepted. Default: 300.
    pub delay_secs: u64,
    /// Seconds a triplet is remembered after it was last seen. Default: 3024000 (35 days).
    pub expire_secs: u64,
}

impl Default for RawGreylist {
    fn default() -> Self {
        RawGreylist {
            enabled: false,
            delay_secs: 300,
            expire_secs: 35 * 86400,
        }
    }
}

/// One outbound routing rule (Postfix's transport map and relayhost in one list); the first whose
/// `domains` match a recipient's domain decides.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransport {
    /// Recipient domains: names, `*.example.com` (its subdomains) or `*` (everything).
    pub domains: Vec<String>,
    /// `host:port` of a relay (smarthost), used as it is, without an MX lookup (Postfix's `[host]:port`);
    /// absent: the domains' MX hosts, as without a rule.
    #[serde(default)]
    pub relay: Option<String>,
    /// TLS for these deliveries: may, require or verify. Default: may (or [delivery] tls_policy).
    #[serde(default)]
    pub tls: Option<TlsPolicy>,
    /// User name for AUTH at the relay.
    #[serde(default)]
    pub auth_user: Option<String>,
    /// File holding the password (its first line), readable by the service user only (mode 0600).
    #[serde(default)]
    pub auth_password_file: Option<String>,
    /// Source addresses for these connections: at most one IPv4 and one IPv6 address of this host (Postfix's
    /// smtp_bind_address); a destination of the other family goes from the default address.
    #[serde(default)]
    pub bind: Vec<String>,
    /// Connections at once for this rule, over all its destinations (default: no limit of its own).
    #[serde(default)]
    pub concurrency: Option<usize>,
}
