//! The `tern` command: parses arguments, sets up logging and calls into the library.

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
    List,
    /// Delete a user (the mailbox on disk is kept).
    Del { address: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tern: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    let level = match cli.command {
        Command::Serve => cfg.log_level.clone(),
        _ => "warn".to_string(),
    };
    init_logging(&level);
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

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(command: Command, cfg: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => tern::app::serve(cfg).await,
        Command::CheckConfig => {
            print!("# {}: valid\n{}", cfg.path.display(), cfg.to_toml());
            Ok(())
        }
        Command::User { action } => user(action, cfg).await,
    }
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
        UserAction::List => {
            for u in dir.list_users().await? {
                let login = if u.has_password {
                    "password"
                } else {
                    "no-login"
                };
                println!(
                    "{}\t{login}\t{}",
                    u.address,
                    tern::clock::rfc5322_date(u.created_at.max(0) as u64)
                );
            }
        }
        UserAction::Del { address } => {
            anyhow::ensure!(dir.delete_user(&address).await?, "no user {address:?}");
            println!("deleted {}", address.to_lowercase());
        }
    }
    Ok(())
}
