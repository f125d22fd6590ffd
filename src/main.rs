//! The `tern` command: parses arguments, sets up logging and calls into the library.

mod cli;

use clap::{Parser, Subcommand};
use cli::alias::AliasAction;
use cli::dkim::DkimAction;
use cli::mailbox::MailboxAction;
use cli::sieve::{SieveAction, sieve_check, sieve_test};
use cli::user::UserAction;
use std::path::PathBuf;
use std::process::ExitCode;
use tern::config::Config;

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
        Command::User { action } => cli::user::user(action, cfg).await,
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
        Command::Alias { action } => cli::alias::alias(action, cfg).await,
        Command::Mailbox { action } => cli::mailbox::mailbox(action, cfg).await,
        Command::Sieve { action } => cli::sieve::sieve(action, cfg).await,
        Command::Dkim { action } => cli::dkim::dkim(action, cfg),
        Command::Sendmail { .. } => Ok(()),
        Command::Newaliases { file } => cli::alias::newaliases(file, cfg).await,
        Command::Reload => {
            let answer = tern::ops::control::request(&cfg.data_dir, "RELOAD")
                .await
                .map_err(anyhow::Error::msg)?;
            println!("{answer}");
            Ok(())
        }
    }
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
                    runtime.block_on(cli::alias::newaliases(None, cfg.clone()))
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
