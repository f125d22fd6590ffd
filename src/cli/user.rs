//! `tern user`: accounts added, listed, changed, disabled and removed in tern.db.

use clap::Subcommand;
use std::io::BufRead;
use std::path::PathBuf;
use tern::config::Config;
use tern::directory::Directory;

#[derive(Subcommand)]
pub enum UserAction {
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

pub async fn set_disabled(dir: &Directory, address: &str, disable: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        dir.set_disabled(address, disable).await?,
        "no user {address:?}"
    );
    let done = if disable { "disabled" } else { "enabled" };
    println!("{done} {}", address.to_lowercase());
    Ok(())
}

pub async fn user(action: UserAction, cfg: Config) -> anyhow::Result<()> {
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
