//! `tern sieve`: scripts put, listed, activated and removed in sieve.db, and `test`/`check`, which need no
//! configuration.

use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use tern::config::Config;

#[derive(Subcommand)]
pub enum SieveAction {
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

pub fn sieve_test(
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

pub fn sieve_check(file: &std::path::Path) -> ExitCode {
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

pub async fn sieve(action: SieveAction, cfg: Config) -> anyhow::Result<()> {
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
