//! `tern queue`: look at the queue (read from queue.db, also while the daemon runs) and act on it (through
//! the running daemon's control socket, one message or a selection at a time).

use clap::{Args, Subcommand};
use std::io::Write;
use std::path::Path;
use tern::config::Config;
use tern::queue::select::{Selection, Summary, human_age};

#[derive(Subcommand)]
pub enum QueueAction {
    /// Messages in the queue with each recipient's state, ages as 3h12m.
    List {
        /// One JSON array, for scripts (times as Unix seconds).
        #[arg(long)]
        json: bool,
    },
    /// One message: envelope, recipients and header section; with --body the whole message.
    Show {
        id: String,
        /// Print the whole message as it is queued, after the envelope.
        #[arg(long)]
        body: bool,
    },
    /// Messages per destination domain and age in minutes (like Postfix's qshape).
    Summary {
        #[arg(long)]
        json: bool,
    },
    /// Retry now: one message, a selection, or (with neither) every message (on the running daemon).
    Flush {
        id: Option<String>,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Remove messages without telling anyone (on the running daemon).
    Delete {
        id: Option<String>,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Start no delivery of messages until they are released (one already handed to delivery still
    /// runs); their lifetime still counts from arrival (on the running daemon).
    Hold {
        id: Option<String>,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Deliver held messages again, at once (on the running daemon).
    Release {
        id: Option<String>,
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Fail every remaining recipient of messages now and send their senders a DSN (on the running daemon).
    Bounce {
        id: Option<String>,
        #[command(flatten)]
        select: SelectArgs,
    },
}

/// A selection instead of one ID; every criterion given must hold. A message is taken whole.
#[derive(Args)]
pub struct SelectArgs {
    /// Messages with a recipient still queued at this domain.
    #[arg(long)]
    domain: Option<String>,
    /// Messages from this sender: an address, @domain, or <> for bounces.
    #[arg(long)]
    sender: Option<String>,
    /// Messages received at least this long ago: 90s, 30m, 4h, 2d, 1w.
    #[arg(long)]
    older: Option<String>,
}

pub async fn run(action: QueueAction, cfg: Config) -> anyhow::Result<()> {
    let data_dir = cfg.data_dir.as_path();
    match action {
        QueueAction::List { json } => list(data_dir, json).await,
        QueueAction::Show { id, body } => show(data_dir, &id, body).await,
        QueueAction::Summary { json } => summary(data_dir, json).await,
        QueueAction::Flush { id, select } => act(data_dir, "FLUSH", id, select, true).await,
        QueueAction::Delete { id, select } => act(data_dir, "DELETE", id, select, false).await,
        QueueAction::Hold { id, select } => act(data_dir, "HOLD", id, select, false).await,
        QueueAction::Release { id, select } => act(data_dir, "RELEASE", id, select, false).await,
        QueueAction::Bounce { id, select } => act(data_dir, "BOUNCE", id, select, false).await,
    }
}

/// One request for an ID, or one per selected message over one control connection. `all_when_empty`:
/// with neither an ID nor a criterion the request goes without an ID (FLUSH: the whole queue); the other
/// verbs refuse, so that a missing argument never deletes or bounces the whole queue.
async fn act(
    data_dir: &Path,
    verb: &str,
    id: Option<String>,
    select: SelectArgs,
    all_when_empty: bool,
) -> anyhow::Result<()> {
    let selection = Selection::parse(
        select.domain.as_deref(),
        select.sender.as_deref(),
        select.older.as_deref(),
    )?;
    let lines: Vec<String> = match (id, selection.is_empty()) {
        (Some(_), false) => {
            anyhow::bail!(
                "name one queue ID or a selection (--domain, --sender, --older), not both"
            )
        }
        (Some(id), true) => vec![format!("{verb} {id}")],
        (None, true) if all_when_empty => vec![verb.to_string()],
        (None, true) => anyhow::bail!(
            "name a queue ID or a selection (--domain, --sender, --older); see tern queue list"
        ),
        (None, false) => {
            let now = tern::clock::unix_now();
            let picked: Vec<String> = tern::queue::list(data_dir)
                .await?
                .into_iter()
                .filter(|m| selection.matches(m, now))
                .filter(|m| verb != "RELEASE" || m.held)
                .map(|m| format!("{verb} {}", m.id))
                .collect();
            if picked.is_empty() {
                println!("no message in the queue matches");
                return Ok(());
            }
            picked
        }
    };
    let answers = tern::ops::control::requests(data_dir, &lines)
        .await
        .map_err(anyhow::Error::msg)?;
    let refused: Vec<String> = answers
        .iter()
        .filter_map(|a| a.as_ref().err().cloned())
        .collect();
    if lines.len() == 1 {
        return match &answers[0] {
            Ok(text) => {
                println!("{text}");
                Ok(())
            }
            Err(reason) => Err(anyhow::anyhow!("{reason}")),
        };
    }
    for a in answers.iter().flatten() {
        println!("{a}");
    }
    for r in &refused {
        eprintln!("refused: {r}");
    }
    println!(
        "{} of {} messages done{}",
        lines.len() - refused.len(),
        lines.len(),
        if refused.is_empty() {
            String::new()
        } else {
            format!(", {} refused", refused.len())
        }
    );
    if refused.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{} requests refused", refused.len()))
    }
}

async fn summary(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let s = Summary::of(&tern::queue::list(data_dir).await?, tern::clock::unix_now());
    if json {
        println!("{}", serde_json::to_string_pretty(&s.to_json())?);
    } else {
        print!("{s}");
    }
    Ok(())
}

/// When a queued recipient is tried next, from now: `now`, `in 4m10s`.
fn next_in(next_attempt: i64, now: u64) -> String {
    let at = next_attempt.max(0) as u64;
    if at <= now {
        "now".into()
    } else {
        format!("in {}", human_age(at - now))
    }
}

async fn show(data_dir: &Path, id: &str, body: bool) -> anyhow::Result<()> {
    let messages = tern::queue::list(data_dir).await?;
    let m = messages
        .iter()
        .find(|m| m.id.eq_ignore_ascii_case(id))
        .ok_or_else(|| anyhow::anyhow!("no message {id} in the queue"))?;
    let now = tern::clock::unix_now();
    let received = m.received_at.max(0) as u64;
    println!("queue id:  {}", m.id);
    println!(
        "received:  {} ({} ago)",
        tern::clock::rfc5322_date(received),
        human_age(now.saturating_sub(received))
    );
    println!("sender:    <{}>", m.reverse_path);
    println!("size:      {} octets", m.size);
    if m.held {
        println!("held:      yes (tern queue release {})", m.id);
    }
    for r in &m.recipients {
        let next = if r.state == "queued" {
            format!(" next {}", next_in(r.next_attempt, now))
        } else {
            String::new()
        };
        println!(
            "recipient: <{}> {} {} attempts {}{next} {}",
            r.forward_path,
            r.transport,
            r.state,
            r.attempts,
            r.last_reply.as_deref().unwrap_or("")
        );
    }
    let qid = tern::queue::QueueId::parse(&m.id.to_ascii_uppercase())
        .ok_or_else(|| anyhow::anyhow!("{:?} is not a queue ID", m.id))?;
    let content = tern::queue::content(data_dir, qid).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out)?;
    if body {
        content.for_each_chunk(|c| out.write_all(c))?;
    } else {
        // The header section only: up to and including the empty line.
        let head = &content.head;
        let end = memchr::memmem::find(head, b"\r\n\r\n")
            .map(|i| i + 4)
            .unwrap_or(head.len());
        out.write_all(&head[..end])?;
    }
    out.flush()?;
    Ok(())
}

pub async fn list(data_dir: &Path, json: bool) -> anyhow::Result<()> {
    let messages = tern::queue::list(data_dir).await?;
    if json {
        let value: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id, "received_at": m.received_at, "sender": m.reverse_path, "size": m.size, "held": m.held,
                    "recipients": m.recipients.iter().map(|r| serde_json::json!({
                        "address": r.forward_path, "transport": r.transport, "state": r.state,
                        "attempts": r.attempts, "next_attempt": r.next_attempt, "last_reply": r.last_reply,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    if messages.is_empty() {
        println!("queue is empty");
    }
    let now = tern::clock::unix_now();
    for m in messages {
        let age = human_age(now.saturating_sub(m.received_at.max(0) as u64));
        println!(
            "{}  {:>8} B  age {age}  from <{}>{}",
            m.id,
            m.size,
            m.reverse_path,
            if m.held { "  HELD" } else { "" }
        );
        for r in m.recipients {
            let next = if r.state == "queued" {
                format!(" next {}", next_in(r.next_attempt, now))
            } else {
                String::new()
            };
            let reply = r.last_reply.map(|l| format!(" ({l})")).unwrap_or_default();
            println!(
                "    {:<8} {:<6} <{}> attempts {}{next}{reply}",
                r.state, r.transport, r.forward_path, r.attempts
            );
        }
    }
    Ok(())
}

/// `tern trace KEY`.
pub async fn trace(data_dir: &Path, key: &str, json: bool) -> anyhow::Result<()> {
    let events = tern::queue::trace(data_dir, key).await?;
    if json {
        let v: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::json!({"queue_id": e.message_id, "at": e.at, "kind": e.kind, "detail": e.detail}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    anyhow::ensure!(
        !events.is_empty(),
        "nothing known of {key:?}: not a queue ID or Message-ID seen here, or older than [queue] history_secs"
    );
    let mut last = "";
    for e in &events {
        if e.message_id != last {
            println!("{}", e.message_id);
            last = &e.message_id;
        }
        println!(
            "  {}  {:<8} {}",
            tern::clock::rfc5322_date(e.at.max(0) as u64),
            e.kind,
            e.detail
        );
    }
    Ok(())
}
