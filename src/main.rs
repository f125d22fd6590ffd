//! The `tern` command: parses arguments, sets up logging and calls into the library.

mod cli;

use clap::{Parser, Subcommand};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use tern::config::Config;
use tern::directory::Directory;

#[derive(Parser)]
#[command(
    name = "tern",
    version,
    about = "A mail server: MX, submission, relay and mailbox delivery in one daemon"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "TERN_CONFIG",
        default_value = "/etc/tern/tern.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve,
    /// Validate the configuration and print it with every default filled in.
    CheckConfig,
    /// Manage users of the local domains.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Aliases, catch-alls (@domain) and domain aliases (@alias.domain @local.domain).
    Alias {
        #[command(subcommand)]
        action: AliasAction,
    },
    /// Mailboxes in the configured store: folders and sizes, export to a Maildir, import a Maildir or mbox.
    Mailbox {
        #[command(subcommand)]
        action: MailboxAction,
    },
    /// A message's history: received from whom, each delivery attempt with relay and reply, DSNs sent,
    /// admin actions. KEY is a queue ID or a Message-ID (while the history is kept: [queue] history_secs).
    Trace {
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// The DNS records to publish for each local domain (or DOMAIN), as zone-file text: MX, SPF, DKIM,
    /// DMARC, TLS-RPT, SRV for mail clients, and the host's A/AAAA and PTR.
    Dns {
        domain: Option<String>,
        /// The host's public address (repeatable), when the listeners bind 0.0.0.0.
        #[arg(long)]
        ip: Vec<std::net::IpAddr>,
    },
    /// Look up what `tern dns` says to publish, and say record by record what is wrong and how to fix
    /// it (MX, SPF, DKIM, DMARC, TLS-RPT, MTA-STS, autoconfig, PTR, certificate, port 25). Exits 1 when
    /// something fails.
    Doctor {
        domain: Option<String>,
        /// The host's public address (repeatable); default: the listeners', else the host name's A/AAAA.
        #[arg(long)]
        ip: Vec<std::net::IpAddr>,
        /// Where the port 25 check connects (repeatable), e.g. when the public address is not reachable
        /// from inside (NAT); default: each host address at the relay listener's port, else 25.
        #[arg(long)]
        probe: Vec<std::net::SocketAddr>,
        /// Findings as JSON, for monitoring.
        #[arg(long)]
        json: bool,
    },
    /// Look at the queue.
    Queue {
        #[command(subcommand)]
        action: cli::queue::QueueAction,
    },
    /// DKIM keys for outgoing mail.
    Dkim {
        #[command(subcommand)]
        action: DkimAction,
    },
    /// Ask the running daemon to reload its configuration and TLS certificate; exits non-zero with the
    /// reason when the new configuration is refused (the running one stays). systemd's ExecReload uses it.
    Reload,
    /// Read the aliases file (default /etc/aliases, aliases(5) format) into the alias table: each
    /// `name: targets` becomes name@<origin>. Program and file targets are refused with a warning.
    Newaliases { file: Option<PathBuf> },
    /// Users' Sieve scripts: list, get, put, activate, deactivate, delete, check; and `test` to run a
    /// script on a message file and print the actions it would take.
    Sieve {
        #[command(subcommand)]
        action: SieveAction,
    },
    /// Read a message on standard input and queue it, as /usr/sbin/sendmail does (a symlink named
    /// `sendmail` to tern behaves the same): sendmail [-t] [-i] [-f sender] [-F name] [recipients...].
    /// Bare names (`root`) are qualified with [domains] origin. Modes: -bm (default), -bs (SMTP on
    /// standard input and output), -bp (= mailq), -bi (= newaliases), -bv (check recipients). Accepted and
    /// ignored: -oi, -oem, -oep, -odi, -v, -N, -R, -V, -B.
    Sendmail {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SieveAction {
    /// A user's scripts; `*` marks the active one.
    List { user: String },
    /// Print a script.
    Get { user: String, name: String },
    /// Store a script (from FILE, or standard input) after compiling it; --activate makes it active.
    Put {
        user: String,
        name: String,
        file: Option<PathBuf>,
        #[arg(long)]
        activate: bool,
    },
    /// Make a script the active one (it runs at delivery).
    Activate { user: String, name: String },
    /// No active script: mail is kept in INBOX.
    Deactivate { user: String },
    /// Delete a script that is not active.
    Delete { user: String, name: String },
    /// Compile a script file and report the first error with its line and column.
    Check { file: PathBuf },
    /// Run a script on a message file and print the actions it would take, one per line.
    Test {
        /// Envelope sender.
        #[arg(long, default_value = "sender@example.com")]
        from: String,
        /// Envelope recipient.
        #[arg(long, default_value = "user@example.test")]
        to: String,
        script: PathBuf,
        message: PathBuf,
    },
}

#[derive(Subcommand)]
enum MailboxAction {
    /// Folders with message counts and sizes.
    List { address: String },
    /// Write the mailbox as a Maildir (folders as Maildir++ .Name, flags and dates kept).
    Export { address: String, dir: PathBuf },
    /// Append a Maildir (a folder) or an mbox file (a file) to the mailbox.
    Import { address: String, path: PathBuf },
}

#[derive(Subcommand)]
enum AliasAction {
    /// SOURCE is local@domain or @domain (catch-all) with target addresses, or @alias.domain @local.domain.
    Add {
        source: String,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    Del {
        source: String,
    },
    List,
}

#[derive(Subcommand)]
enum DkimAction {
    /// Make a signing key for a domain and print the DNS TXT record to publish; it signs once activated.
    Generate {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        selector: String,
        #[arg(long, default_value = "rsa", value_parser = ["rsa", "ed25519"])]
        algorithm: String,
    },
    /// Sign the domain's mail with this selector from now on (publish its TXT record first); the running
    /// daemon switches at its next message.
    Activate {
        #[arg(long)]
        domain: String,
        selector: String,
    },
    /// Every key: domain, selector, state (active, pending, configured, unusable) and the TXT record.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user; without --password-stdin the account receives mail but cannot log in.
    Add {
        address: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List {
        /// One JSON array, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Delete a user (the mailbox on disk is kept).
    Del { address: String },
    /// Disable an account: logins are refused (SMTP 525 5.7.13, IMAP [AUTHORIZATIONFAILED]) and mail for
    /// it gets 550 5.2.1; the mailbox, settings and password are kept.
    Disable { address: String },
    /// Enable a disabled account again.
    Enable { address: String },
    /// Set a user's password from the first line of standard input (stored as an argon2id hash; takes
    /// effect at the next login), or with --remove take it away (the account then receives mail but
    /// cannot log in).
    Passwd {
        address: String,
        #[arg(long)]
        remove: bool,
    },
    /// Import users and their password hashes from a Dovecot passwd-file (`user:{SCHEME}hash:...`), as they
    /// are: {ARGON2ID}, {SHA512-CRYPT}, {SHA256-CRYPT}, {BLF-CRYPT}. Missing users are added, existing ones
    /// get the hash; each is re-hashed to argon2id at its next login. For Dovecot's SQL schemes, export
    /// `user:password` lines first.
    ImportDovecot {
        /// The passwd-file; - for standard input.
        file: PathBuf,
        /// Domain for names without one (`alice` becomes alice@DOMAIN).
        #[arg(long)]
        domain: Option<String>,
    },
    /// Limit a user's mailbox; 0 removes a limit. Over quota: 452 4.2.2 at RCPT, deliveries deferred.
    SetQuota {
        address: String,
        /// Octets.
        #[arg(long)]
        bytes: Option<u64>,
        #[arg(long)]
        messages: Option<u64>,
    },
    /// Change a user's sending rules and limits (unset ones keep the [submission] defaults).
    Set {
        address: String,
        /// own: MAIL FROM and From: must be the user's addresses; any: the user may send as anyone.
        #[arg(long, value_parser = ["own", "any"])]
        sender_policy: Option<String>,
        #[arg(long)]
        max_messages_per_hour: Option<u32>,
        #[arg(long)]
        max_recipients: Option<usize>,
        /// In octets.
        #[arg(long)]
        max_message_size: Option<usize>,
    },
}

fn main() -> ExitCode {
    // Large buffers (an argon2id check takes ~19 MiB, big messages more) are mapped and unmapped each time
    // rather than kept by the allocator: glibc otherwise raises its mmap threshold after the first free and
    // leaves that memory resident in every thread's arena, so RSS would follow past traffic, not the limits.
    // SAFETY: mallopt only sets allocator parameters; called once, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
    // Invoked as `sendmail` (a symlink at /usr/sbin/sendmail): everything after the name is sendmail's.
    let argv: Vec<String> = std::env::args().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str());
    let config_from_env = || {
        std::env::var_os("TERN_CONFIG")
            .map_or_else(|| PathBuf::from("/etc/tern/tern.toml"), PathBuf::from)
    };
    match invoked_as {
        Some("sendmail") => return sendmail(&config_from_env(), &argv[1..]),
        // Postfix's and sendmail's companions, as symlinks to tern.
        Some("mailq") => return sendmail(&config_from_env(), &["-bp".to_string()]),
        Some("newaliases") => return sendmail(&config_from_env(), &["-bi".to_string()]),
        _ => {}
    }
    let cli = Cli::parse();
    if let Command::Sendmail { args } = &cli.command {
        return sendmail(&cli.config, args);
    }
    // Needs no configuration: a script and a message file.
    match &cli.command {
        Command::Sieve {
            action:
                SieveAction::Test {
                    from,
                    to,
                    script,
                    message,
                },
        } => return sieve_test(script, message, from, to),
        Command::Sieve {
            action: SieveAction::Check { file },
        } => return sieve_check(file),
        _ => {}
    }
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        // A refused configuration is what `tern reload` must still report through the daemon (its log
        // and systemd's STATUS=), so it finds the control socket from the file's data_dir alone.
        Err(e) if matches!(cli.command, Command::Reload) => {
            return reload_with_invalid(&cli.config, &e);
        }
        Err(e) => {
            eprintln!("tern: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    let level = match cli.command {
        Command::Serve => cfg.log_level.clone(),
        _ => "warn".to_string(),
    };
    init_logging(&level, cfg.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tern: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sieve_test(
    script: &std::path::Path,
    message: &std::path::Path,
    from: &str,
    to: &str,
) -> ExitCode {
    match tern::sieve::try_run::run_files(script, message, from, to) {
        Ok((lines, error)) => {
            for l in lines {
                println!("{l}");
            }
            if let Some(e) = error {
                eprintln!("tern: {}: {e}", script.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tern: {e}");
            ExitCode::from(66) // EX_NOINPUT
        }
    }
}

fn sieve_check(file: &std::path::Path) -> ExitCode {
    let source = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tern: {}: {e}", file.display());
            return ExitCode::from(66);
        }
    };
    match tern::sieve::compile(&source) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tern: {}: {e}", file.display());
            ExitCode::from(65) // EX_DATAERR
        }
    }
}

async fn sieve(action: SieveAction, cfg: Config) -> anyhow::Result<()> {
    let store = tern::sieve::store::ScriptStore::open(&cfg.data_dir, cfg.sieve.quota()).await?;
    let user_of = |u: &str| -> anyhow::Result<String> {
        Ok(tern::smtp::Mailbox::parse(u, true)
            .map_err(|e| anyhow::anyhow!("{u:?}: {e}"))?
            .to_string())
    };
    let changed = match &action {
        SieveAction::Put { user, .. }
        | SieveAction::Activate { user, .. }
        | SieveAction::Deactivate { user }
        | SieveAction::Delete { user, .. } => Some(user_of(user)?),
        _ => None,
    };
    match action {
        SieveAction::List { user } => {
            for s in store.list(&user_of(&user)?).await? {
                println!("{}{}", s.name, if s.active { " *" } else { "" });
            }
        }
        SieveAction::Get { user, name } => print!("{}", store.get(&user_of(&user)?, &name).await?),
        SieveAction::Put {
            user,
            name,
            file,
            activate,
        } => {
            let source = match file {
                Some(f) => std::fs::read_to_string(&f)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
                None => std::io::read_to_string(std::io::stdin())?,
            };
            let user = user_of(&user)?;
            store.put(&user, &name, &source).await?;
            if activate {
                store.set_active(&user, Some(&name)).await?;
            }
        }
        SieveAction::Activate { user, name } => {
            store.set_active(&user_of(&user)?, Some(&name)).await?
        }
        SieveAction::Deactivate { user } => store.set_active(&user_of(&user)?, None).await?,
        SieveAction::Delete { user, name } => store.delete(&user_of(&user)?, &name).await?,
        SieveAction::Check { .. } | SieveAction::Test { .. } => {}
    }
    // A running daemon caches who has which script: tell it (nothing to tell when it is not running).
    if let Some(user) = changed {
        let _ = tern::ops::control::request(&cfg.data_dir, &format!("SIEVE {user}")).await;
    }
    Ok(())
}

/// `tern reload` with a configuration that does not validate: the daemon is asked anyway (it refuses,
/// logs and tells systemd), and the command fails with the reason.
fn reload_with_invalid(path: &std::path::Path, error: &tern::config::ConfigError) -> ExitCode {
    let data_dir = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| toml::from_str::<toml::Value>(&t).ok())
        .and_then(|v| {
            v.get("server")?
                .get("data_dir")?
                .as_str()
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("data"));
    let data_dir = if data_dir.is_absolute() {
        data_dir
    } else {
        path.parent()
            .unwrap_or(std::path::Path::new("."))
            .join(data_dir)
    };
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        && let Err(answer) = rt.block_on(tern::ops::control::request(&data_dir, "RELOAD"))
    {
        eprintln!("tern: {answer}");
        return ExitCode::from(78);
    }
    eprintln!("tern: {error}");
    ExitCode::from(78)
}

fn init_logging(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder
            .fmt_fields(tern::log::Logfmt)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

async fn run(command: Command, cfg: Config) -> anyhow::Result<()> {
    // Whatever a command creates under data_dir (databases, mailboxes, keys) is not for other users.
    tern::ops::privileges::restrict_umask();
    // Commands that write under data_dir run as the service user when root starts them.
    if matches!(
        command,
        Command::User { .. }
            | Command::Alias { .. }
            | Command::Mailbox { .. }
            | Command::Queue { .. }
            | Command::Trace { .. }
            | Command::Dkim { .. }
            | Command::Sieve { .. }
            | Command::Newaliases { .. }
    ) {
        tern::ops::privileges::become_service_user(
            cfg.user.as_deref(),
            cfg.group.as_deref(),
            &cfg.data_dir,
        )?;
    }
    match command {
        Command::Serve => tern::app::serve(cfg).await,
        Command::CheckConfig => {
            // What would stop the daemon at start is an error; what is unwise is a warning.
            let mut warnings = tern::config::warnings(&cfg);
            if let Some(files) = &cfg.tls_files {
                tern::tls::load_base(Some(files), &cfg.data_dir, &cfg.hostname)
                    .map_err(|e| anyhow::anyhow!("tls: {e}"))?;
                let public = cfg
                    .listeners
                    .iter()
                    .flat_map(|l| &l.bind)
                    .any(|a| !a.ip().is_loopback());
                warnings.extend(tern::tls::certificate_warnings(
                    Some(files),
                    &cfg.data_dir,
                    &cfg.hostname,
                    public,
                ));
            }
            for w in warnings {
                eprintln!("warning: {w}");
            }
            print!("# {}: valid\n{}", cfg.path.display(), cfg.to_toml());
            Ok(())
        }
        Command::User { action } => user(action, cfg).await,
        Command::Queue { action } => cli::queue::run(action, cfg).await,
        Command::Dns { domain, ip } => {
            let domains = cli::local_domains(&cfg, domain)?;
            let keys = tern::outbound::dkim::list(&cfg.data_dir, &cfg.dkim_keys);
            let ips = tern::ops::zone::public_addresses(&cfg, &ip);
            for (i, d) in domains.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("; ---- {d} ----");
                print!(
                    "{}",
                    tern::ops::zone::zone_text(&tern::ops::zone::records(
                        &cfg,
                        d,
                        &keys,
                        if i == 0 { &ips } else { &[] }
                    ))
                );
            }
            Ok(())
        }
        Command::Doctor {
            domain,
            ip,
            probe,
            json,
        } => cli::doctor::run(&cfg, domain, ip, probe, json).await,
        Command::Trace { key, json } => cli::queue::trace(&cfg.data_dir, &key, json).await,
        Command::Alias { action } => alias(action, cfg).await,
        Command::Mailbox { action } => mailbox(action, cfg).await,
        Command::Sieve { action } => sieve(action, cfg).await,
        Command::Dkim { action } => dkim(action, cfg),
        Command::Sendmail { .. } => Ok(()),
        Command::Newaliases { file } => newaliases(file, cfg).await,
        Command::Reload => {
            let answer = tern::ops::control::request(&cfg.data_dir, "RELOAD")
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{answer}");
            Ok(())
        }
    }
}

/// An index refusal during import, as a mailbox error naming the folder.
fn import_error(folder: &str, e: tern::mailbox::index::IndexError) -> tern::mailbox::MailboxError {
    match e {
        tern::mailbox::index::IndexError::Storage(s) => s,
        other => tern::mailbox::MailboxError {
            path: folder.to_string(),
            op: "import",
            source: std::io::Error::other(other.to_string()),
        },
    }
}

async fn mailbox(action: MailboxAction, cfg: Config) -> anyhow::Result<()> {
    use tern::mailbox::{self, StoredMessage};
    std::fs::create_dir_all(&cfg.data_dir)?;
    let store = mailbox::open(&cfg).await?;
    let address = match &action {
        MailboxAction::List { address }
        | MailboxAction::Export { address, .. }
        | MailboxAction::Import { address, .. } => address,
    };
    let mbox = tern::smtp::Mailbox::parse(&address.to_lowercase(), true)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The stores block on file and database I/O: run them on the blocking pool.
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        match action {
            MailboxAction::List { .. } => {
                for f in store.folders(&mbox)? {
                    println!(
                        "{:<20} {:>8} messages {:>12} octets",
                        f.name, f.messages, f.bytes
                    );
                }
            }
            MailboxAction::Export { dir, .. } => {
                let writer = mailbox::maildir::Maildir::new(dir.clone());
                let mut n = 0;
                store.for_each(&mbox, &mut |m| {
                    n += 1;
                    writer.import_at(&dir, std::slice::from_ref(&m))
                })?;
                println!("exported {n} messages to {}", dir.display());
            }
            MailboxAction::Import { path, .. } => {
                // Streamed in batches of 200 (one message of an mbox in memory at a time), through the
                // mailbox index when the store has one: new UIDs, flags and keywords kept, folders made as
                // needed, and IMAP sessions of the user told at once.
                let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
                if let Some(index) = store.index() {
                    // The mailbox's default folders, as a first IMAP login makes them.
                    index
                        .list(&mbox)
                        .map_err(|e| anyhow::anyhow!("{}", import_error("INBOX", e)))?;
                }
                let mut total = 0usize;
                let mut batch: Vec<StoredMessage> = Vec::new();
                let mut made: std::collections::HashSet<String> = Default::default();
                let mut flush =
                    |batch: &mut Vec<StoredMessage>| -> Result<(), mailbox::MailboxError> {
                        if batch.is_empty() {
                            return Ok(());
                        }
                        total += batch.len();
                        match store.index() {
                            Some(index) => {
                                // Unseen mail without flags keeps its place in new/ (the store's own import);
                                // the rest goes through the index with its flags and keywords.
                                let (unseen, rest): (Vec<StoredMessage>, Vec<StoredMessage>) =
                                    batch.drain(..).partition(|m| {
                                        m.recent && m.flags.is_empty() && m.keywords.is_empty()
                                    });
                                if !unseen.is_empty() {
                                    store.import(&mbox, &unseen)?;
                                }
                                let mut by_folder: Vec<(String, Vec<mailbox::index::NewMessage>)> =
                                    Vec::new();
                                for m in rest {
                                    let new = mailbox::index::NewMessage {
                                        flags: m.index_flags(),
                                        internal_date: m.internal_date as i64,
                                        body: m.body,
                                    };
                                    match by_folder.last_mut() {
                                        Some((f, v)) if *f == m.folder => v.push(new),
                                        _ => by_folder.push((m.folder, vec![new])),
                                    }
                                }
                                for (folder, messages) in by_folder {
                                    if folder != "INBOX" && made.insert(folder.clone()) {
                                        match index.create(&mbox, &folder) {
                                            Ok(()) | Err(mailbox::index::IndexError::Exists(_)) => {
                                            }
                                            Err(e) => return Err(import_error(&folder, e)),
                                        }
                                    }
                                    index
                                        .append(&mbox, &folder, messages)
                                        .map_err(|e| import_error(&folder, e))?;
                                }
                            }
                            None => {
                                store.import(&mbox, batch)?;
                                batch.clear();
                            }
                        }
                        if tty {
                            eprint!("\rimported {total}");
                        }
                        Ok(())
                    };
                if path.is_dir() {
                    let reader = mailbox::maildir::Maildir::new(path.clone());
                    reader.for_each_at(&path, &mut |m| {
                        batch.push(m);
                        if batch.len() >= 200 {
                            flush(&mut batch)?;
                        }
                        Ok(())
                    })?;
                } else {
                    let file = std::fs::File::open(&path)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    let mut failed: Option<mailbox::MailboxError> = None;
                    mailbox::mbox::for_each(std::io::BufReader::new(file), &mut |date, body| {
                        batch.push(StoredMessage {
                            folder: "INBOX".into(),
                            flags: String::new(),
                            keywords: Vec::new(),
                            recent: true,
                            internal_date: date.unwrap_or_else(tern::clock::unix_now),
                            body,
                        });
                        if batch.len() >= 200
                            && let Err(e) = flush(&mut batch)
                        {
                            failed = Some(e);
                            return Err(std::io::Error::other("import stopped"));
                        }
                        Ok(())
                    })
                    .map_err(|e| match failed.take() {
                        Some(f) => anyhow::anyhow!("{f}"),
                        None => anyhow::anyhow!("{}: {e}", path.display()),
                    })?;
                }
                flush(&mut batch)?;
                drop(flush);
                if tty {
                    eprintln!();
                }
                println!("imported {total} messages into {mbox}");
            }
        }
        Ok(())
    })
    .await?
}

async fn alias(action: AliasAction, cfg: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    let dir = Directory::open(&cfg.data_dir).await?;
    match action {
        AliasAction::Add { source, targets } => {
            let spec =
                tern::directory::aliases::AliasSpec::parse(&source, &targets, &cfg.local_domains)?;
            dir.add_alias(&spec).await?;
            println!("added {source} -> {}", targets.join(","));
        }
        AliasAction::Del { source } => {
            anyhow::ensure!(dir.delete_alias(&source).await?, "no alias {source:?}");
            println!("deleted {source}");
        }
        AliasAction::List => {
            for a in dir.list_aliases().await? {
                println!("{}\t{}", a.source, a.targets.join(","));
            }
        }
    }
    Ok(())
}

/// `tern newaliases [FILE]`: the aliases file (default /etc/aliases) into the alias table.
async fn newaliases(file: Option<PathBuf>, cfg: Config) -> anyhow::Result<()> {
    let path = file.unwrap_or_else(|| PathBuf::from("/etc/aliases"));
    std::fs::create_dir_all(&cfg.data_dir)?;
    let dir = Directory::open(&cfg.data_dir).await?;
    let (added, warnings) =
        tern::directory::aliases_file::import(&dir, &path, &cfg.origin, &cfg.local_domains).await?;
    for w in &warnings {
        eprintln!("newaliases: {w}");
    }
    println!("{}: {added} aliases", path.display());
    Ok(())
}

fn dkim(action: DkimAction, cfg: Config) -> anyhow::Result<()> {
    use tern::outbound::dkim;
    let local = |domain: &str| -> anyhow::Result<String> {
        let domain = domain.to_lowercase();
        anyhow::ensure!(
            cfg.local_domains.iter().any(|d| d.as_str() == domain),
            "{domain:?} is not one of [domains] local"
        );
        Ok(domain)
    };
    let valid_selector = |selector: &str| -> anyhow::Result<()> {
        anyhow::ensure!(
            !selector.is_empty()
                && selector.len() <= 63
                && selector
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{selector:?} is not a DKIM selector (letters, digits, - and _)"
        );
        Ok(())
    };
    match action {
        DkimAction::Generate {
            domain,
            selector,
            algorithm,
        } => {
            let domain = local(&domain)?;
            valid_selector(&selector)?;
            let (path, record) = dkim::generate(&cfg.data_dir, &domain, &selector, &algorithm)
                .map_err(anyhow::Error::msg)?;
            println!("# key written to {}", path.display());
            println!("# 1. publish this TXT record:");
            println!(
                "{selector}._domainkey.{domain}. IN TXT {}",
                dkim::zone_text(&record)
            );
            println!(
                "# 2. once it resolves (dig +short TXT {selector}._domainkey.{domain}), sign with it:"
            );
            println!("#    tern dkim activate --domain {domain} {selector}");
        }
        DkimAction::Activate { domain, selector } => {
            let domain = local(&domain)?;
            valid_selector(&selector)?;
            if cfg.dkim_keys.iter().any(|k| k.domain == domain) {
                eprintln!(
                    "warning: [dkim] keys names a key for {domain}; it signs instead, whatever is active here"
                );
            }
            let path =
                dkim::activate(&cfg.data_dir, &domain, &selector).map_err(anyhow::Error::msg)?;
            println!(
                "{domain}: {selector} ({}) signs from now on; keep the previous selector's record published for a few days",
                path.display()
            );
        }
        DkimAction::List { json } => {
            let keys = dkim::list(&cfg.data_dir, &cfg.dkim_keys);
            if json {
                let v: Vec<serde_json::Value> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "domain": k.domain, "selector": k.selector, "state": k.state,
                            "algorithm": k.algorithm, "path": k.path, "record": k.record,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            if keys.is_empty() {
                println!("no DKIM keys (tern dkim generate --domain D --selector S)");
            }
            for k in keys {
                println!(
                    "{}  {}  {}  {}  {}",
                    k.domain,
                    k.selector,
                    k.state,
                    if k.algorithm.is_empty() {
                        "-"
                    } else {
                        k.algorithm
                    },
                    k.path.display()
                );
                if !k.record.is_empty() {
                    println!(
                        "    {}._domainkey.{}. IN TXT {}",
                        k.selector,
                        k.domain,
                        dkim::zone_text(&k.record)
                    );
                }
            }
        }
    }
    Ok(())
}

/// The sendmail interface: exit codes from sysexits.h, messages on standard error.
fn sendmail(config: &std::path::Path, args: &[String]) -> ExitCode {
    use tern::sendmail::{self as sm, exit};
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sendmail: {e}");
            return ExitCode::from(78);
        }
    };
    let origin = cfg.origin.to_string();
    let run = || -> Result<String, sm::Failure> {
        let opts = sm::parse_args(args)?;
        let sender = opts
            .sender
            .as_deref()
            .map(|s| sm::qualify(s, &origin))
            // The daemon maps the caller's uid to this same address (the origin domain).
            .unwrap_or_else(|| format!("{}@{origin}", sm::login_name().to_lowercase()));
        match opts.mode {
            sm::Mode::Smtp => {
                return sm::smtp_dialogue(&cfg.sendmail_socket).map(|_| String::new());
            }
            sm::Mode::Queue | sm::Mode::Aliases => {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| sm::Failure {
                        code: exit::SOFTWARE,
                        message: e.to_string(),
                    })?;
                let result = if opts.mode == sm::Mode::Queue {
                    runtime.block_on(cli::queue::list(&cfg.data_dir, false))
                } else {
                    runtime.block_on(newaliases(None, cfg.clone()))
                };
                return result.map(|_| String::new()).map_err(|e| sm::Failure {
                    code: exit::UNAVAILABLE,
                    message: format!("{e:#}"),
                });
            }
            sm::Mode::Verify => {
                let recipients: Vec<String> = opts
                    .recipients
                    .iter()
                    .map(|r| sm::qualify(r, &origin))
                    .collect();
                for line in sm::verify(&cfg.sendmail_socket, &sender, &recipients)? {
                    println!("{line}");
                }
                return Ok(String::new());
            }
            sm::Mode::Deliver => {}
        }
        let mut message = sm::read_message(std::io::stdin().lock(), opts.ignore_dots)?;
        let mut recipients = opts.recipients.clone();
        if opts.extract_recipients {
            let (found, without_bcc) = sm::extract_recipients(&message);
            recipients.extend(found);
            message = without_bcc;
        }
        let recipients: Vec<String> = recipients.iter().map(|r| sm::qualify(r, &origin)).collect();
        let message = sm::ensure_from(message, &sender, opts.full_name.as_deref());
        sm::submit(&cfg.sendmail_socket, &sender, &recipients, &message)
    };
    match run() {
        Ok(_) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("sendmail: {}", f.message);
            ExitCode::from(if f.code == 0 { exit::SOFTWARE } else { f.code })
        }
    }
}

async fn set_disabled(dir: &Directory, address: &str, disable: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        dir.set_disabled(address, disable).await?,
        "no user {address:?}"
    );
    let done = if disable { "disabled" } else { "enabled" };
    println!("{done} {}", address.to_lowercase());
    Ok(())
}

async fn user(action: UserAction, cfg: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    let dir = Directory::open(&cfg.data_dir).await?;
    match action {
        UserAction::Add {
            address,
            password_stdin,
        } => {
            let mailbox = Directory::parse_user_address(&address, &cfg.local_domains)?;
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                let pw = line.trim_end_matches(['\r', '\n']).to_string();
                anyhow::ensure!(!pw.is_empty(), "no password on standard input");
                Some(pw)
            } else {
                None
            };
            dir.add_user(&mailbox, password).await?;
            println!("added {mailbox}");
        }
        UserAction::List { json: true } => {
            let users: Vec<serde_json::Value> = dir
                .list_users()
                .await?
                .iter()
                .map(|u| serde_json::json!({"address": u.address, "login": u.has_password, "disabled": u.disabled, "created_at": u.created_at}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&users)?);
        }
        UserAction::List { json: false } => {
            for u in dir.list_users().await? {
                let login = match (u.disabled, u.has_password) {
                    (true, _) => "disabled",
                    (false, true) => "password",
                    (false, false) => "no-login",
                };
                println!(
                    "{}\t{login}\t{}",
                    u.address,
                    tern::clock::rfc5322_date(u.created_at.max(0) as u64)
                );
            }
        }
        UserAction::Set {
            address,
            sender_policy,
            max_messages_per_hour,
            max_recipients,
            max_message_size,
        } => {
            let settings = tern::directory::UserSettings {
                sender_policy: sender_policy.map(|p| {
                    if p == "any" {
                        tern::config::SenderPolicy::Any
                    } else {
                        tern::config::SenderPolicy::Own
                    }
                }),
                max_messages_per_hour,
                max_recipients,
                max_message_size,
            };
            anyhow::ensure!(
                dir.update_settings(&address, &settings).await?,
                "no user {address:?}"
            );
            println!("updated {}", address.to_lowercase());
        }
        UserAction::SetQuota {
            address,
            bytes,
            messages,
        } => {
            anyhow::ensure!(
                dir.set_quota(&address, bytes, messages).await?,
                "no user {address:?}"
            );
            println!("quota of {} updated", address.to_lowercase());
        }
        UserAction::Disable { address } => set_disabled(&dir, &address, true).await?,
        UserAction::Enable { address } => set_disabled(&dir, &address, false).await?,
        UserAction::Passwd { address, remove } => {
            let password = if remove {
                None
            } else {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                let pw = line.trim_end_matches(['\r', '\n']).to_string();
                anyhow::ensure!(!pw.is_empty(), "no password on standard input");
                Some(pw)
            };
            anyhow::ensure!(
                dir.set_password(&address, password).await?,
                "no user {address:?}"
            );
            if remove {
                println!("password removed for {}", address.to_lowercase());
            } else {
                println!("password changed for {}", address.to_lowercase());
            }
        }
        UserAction::ImportDovecot { file, domain } => {
            let text = if file.as_os_str() == "-" {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut t)?;
                t
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?
            };
            let (mut added, mut updated, mut skipped) = (0, 0, 0);
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut fields = line.splitn(3, ':');
                let (user, hash) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
                let address = match (&domain, user.contains('@')) {
                    (Some(d), false) => format!("{user}@{d}"),
                    _ => user.to_string(),
                };
                let result = async {
                    let mailbox = Directory::parse_user_address(&address, &cfg.local_domains)?;
                    anyhow::ensure!(!hash.is_empty(), "no password hash");
                    Ok(dir.import_hash(&mailbox, hash).await?)
                }
                .await;
                match result {
                    Ok(true) => added += 1,
                    Ok(false) => updated += 1,
                    Err(e) => {
                        skipped += 1;
                        eprintln!(
                            "{}:{}: {} skipped: {e:#}",
                            file.display(),
                            n + 1,
                            tern::log::escape(&address)
                        );
                    }
                }
            }
            println!("{added} users added, {updated} passwords replaced, {skipped} lines skipped");
            anyhow::ensure!(skipped == 0, "{skipped} lines were not imported");
        }
        UserAction::Del { address } => {
            anyhow::ensure!(dir.delete_user(&address).await?, "no user {address:?}");
            println!("deleted {}", address.to_lowercase());
        }
    }
    Ok(())
}
