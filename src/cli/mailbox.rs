//! `tern mailbox`: folders listed, imported from a Maildir or mbox, and the mailbox index checked.

use clap::Subcommand;
use std::path::PathBuf;
use tern::config::Config;

#[derive(Subcommand)]
pub enum MailboxAction {
    /// Folders with message counts and sizes.
    List { address: String },
    /// Write the mailbox as a Maildir (folders as Maildir++ .Name, flags and dates kept).
    Export { address: String, dir: PathBuf },
    /// Append a Maildir (a folder) or an mbox file (a file) to the mailbox.
    Import { address: String, path: PathBuf },
}

/// An index refusal during import, as a mailbox error naming the folder.
pub fn import_error(
    folder: &str,
    e: tern::mailbox::index::IndexError,
) -> tern::mailbox::MailboxError {
    match e {
        tern::mailbox::index::IndexError::Storage(s) => s,
        other => tern::mailbox::MailboxError {
            path: folder.to_string(),
            op: "import",
            source: std::io::Error::other(other.to_string()),
        },
    }
}

pub async fn mailbox(action: MailboxAction, cfg: Config) -> anyhow::Result<()> {
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
