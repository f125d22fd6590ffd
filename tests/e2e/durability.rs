//! A 250 means durable: kill -9 while a batch is being sent, restart, and every acknowledged message is in a
//! Maildir exactly once, with no half-written file anywhere.

use crate::harness::{Daemon, Raw};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Sends messages over `connections` sessions until the daemon dies (at most 500 each), recording each one
/// acknowledged with 250. Messages alternate between the `to` addresses; each ends with `END <token>`.
fn load(
    addr: std::net::SocketAddr,
    connections: u32,
    to: &'static [&'static str],
    filler: usize,
    acked: Arc<Mutex<Vec<String>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..connections)
        .map(|conn| {
            let acked = acked.clone();
            tokio::spawn(async move {
                let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                    return;
                };
                let mut c = Raw::from_stream(stream);
                if c.reply().await.0 != 220 {
                    return;
                }
                c.cmd("EHLO client.test").await;
                for n in 0..500u32 {
                    let token = format!("m{conn}-{n}");
                    let rcpt = to[n as usize % to.len()];
                    if c.cmd("MAIL FROM:<load@remote.test>").await.0 != 250
                        || c.cmd(&format!("RCPT TO:<{rcpt}>")).await.0 != 250
                        || c.cmd("DATA").await.0 != 354
                    {
                        return;
                    }
                    let body = format!(
                        "Subject: {token}\r\n\r\n{}\r\nEND {token}\r\n.\r\n",
                        "x".repeat(filler)
                    );
                    c.send(body.as_bytes()).await;
                    if c.reply().await.0 != 250 {
                        return;
                    }
                    acked.lock().unwrap().push(token);
                }
            })
        })
        .collect()
}

/// Every acknowledged message was delivered once, and no message twice.
fn assert_exactly_once(acked: &[String], seen: &HashMap<String, usize>) {
    for token in acked {
        assert_eq!(
            seen.get(token),
            Some(&1),
            "acknowledged message {token} delivered {:?} times",
            seen.get(token)
        );
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "a message was delivered twice"
    );
}

/// Waits (bounded) until `n` messages are acknowledged.
async fn until_acked(acked: &Arc<Mutex<Vec<String>>>, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn kill_9_mid_batch_loses_no_acknowledged_message() {
    kill_9_mid_batch("").await;
}

/// The same through the queue: every message committed to queue.db first, then delivered by the workers.
#[tokio::test]
async fn kill_9_mid_batch_through_the_queue_loses_nothing_either() {
    kill_9_mid_batch("[delivery]\ndeliver_in_session = false\n").await;
}

/// A message for local recipients only is in the Maildir when its 250 arrives, and nothing of it is
/// queued: a kill -9 right after the 250 (no restart) finds it there, and `tern trace` tells its history.
#[tokio::test]
async fn delivered_in_the_session_before_the_250() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO client.test").await;
    let (code, text) = c
        .send_message(
            "a@remote.test",
            "alice@example.test",
            "Subject: at once\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(code, 250, "{text}");
    let id = text.rsplit(' ').next().unwrap().to_string();
    // No waiting: the copy is in new/ (fsynced, with its folder) before the reply was sent.
    assert_eq!(d.delivered("alice@example.test").len(), 1);
    let list = crate::harness::tern(d.dir.path(), &["queue", "list"]);
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(!list.contains(&id), "{list}");
    assert!(d.wait_log(&format!("queue_id={id}")));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut trace = String::new();
    while !trace.contains("status=sent") && std::time::Instant::now() < deadline {
        let out = crate::harness::tern(d.dir.path(), &["trace", &id]);
        trace = String::from_utf8_lossy(&out.stdout).to_string();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        trace.contains("received") && trace.contains("status=sent"),
        "{trace}"
    );
    // Killed at once and started again: one copy, nothing delivered a second time from a queue row.
    let stopped = d.kill9();
    let d = Daemon::restart(stopped);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(d.delivered("alice@example.test").len(), 1);
}

async fn kill_9_mid_batch(config: &str) {
    let d = Daemon::start(config);
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let tasks = load(
        d.addr,
        20,
        &["alice@example.test", "bob@example.test"],
        2000,
        acked.clone(),
    );
    // Let a good number be acknowledged, then kill without warning.
    until_acked(&acked, 300).await;
    let stopped = d.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 300,
        "only {} acknowledged before the kill",
        acked.len()
    );

    let d = Daemon::restart(stopped);
    let want_alice = acked
        .iter()
        .filter(|t| t.split('-').nth(1).unwrap().parse::<u32>().unwrap() % 2 == 0)
        .count();
    d.wait_delivered("alice@example.test", want_alice);
    d.wait_delivered("bob@example.test", acked.len() - want_alice);
    // Deliveries resumed from the queue settle; give stragglers a moment.
    std::thread::sleep(Duration::from_millis(500));

    let mut seen: HashMap<String, usize> = HashMap::new();
    for user in ["alice@example.test", "bob@example.test"] {
        assert_eq!(
            std::fs::read_dir(d.maildir(user).join("new"))
                .unwrap()
                .count(),
            d.delivered(user).len()
        );
        for f in d.delivered(user) {
            let text = std::fs::read_to_string(&f).unwrap();
            let token = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .expect("subject")
                .to_string();
            assert!(
                text.ends_with(&format!("END {token}\n")),
                "half-written message {}",
                f.display()
            );
            *seen.entry(token).or_default() += 1;
        }
    }
    assert_exactly_once(&acked, &seen);
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_keeps_the_queue() {
    let mut d = Daemon::start("");
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO client.test").await;
    let (code, _) = c
        .send_message(
            "a@remote.test",
            "alice@example.test",
            "Subject: before stop\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(code, 250);
    let status = d.terminate();
    assert!(status.success(), "{status:?}\n{}", d.log_text());
    assert_eq!(d.delivered("alice@example.test").len(), 1);
}

#[tokio::test]
async fn kill_9_with_the_sqlite_store_loses_nothing_either() {
    let d = Daemon::start("[store]\nkind = \"sqlite\"\n");
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let tasks = load(d.addr, 8, &["alice@example.test"], 0, acked.clone());
    until_acked(&acked, 150).await;
    let stopped = d.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 150, "only {} acknowledged", acked.len());
    let d = Daemon::restart(stopped);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen: HashMap<String, usize> = HashMap::new();
    loop {
        let out = tempfile::tempdir().unwrap();
        let status = crate::harness::tern(
            d.dir.path(),
            &[
                "mailbox",
                "export",
                "alice@example.test",
                out.path().to_str().unwrap(),
            ],
        );
        assert!(status.status.success());
        seen.clear();
        for sub in ["new", "cur"] {
            for e in std::fs::read_dir(out.path().join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                let text = std::fs::read_to_string(e.path()).unwrap();
                let token = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Subject: "))
                    .unwrap()
                    .to_string();
                assert!(
                    text.ends_with(&format!("END {token}\n")),
                    "half-written message"
                );
                *seen.entry(token).or_default() += 1;
            }
        }
        if acked.iter().all(|t| seen.contains_key(t)) || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_exactly_once(&acked, &seen);
}

/// Tokens (Subject:) of the complete messages in a Maildir folder's new/ and cur/.
fn tokens_in(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let token = text
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .expect("subject")
                .to_string();
            assert!(
                text.ends_with(&format!("END {token}\n")),
                "half-written {}",
                e.path().display()
            );
            out.push(token);
        }
    }
    out
}

#[tokio::test]
async fn kill_9_during_sieve_deliveries_stores_each_copy_once() {
    let d = Daemon::start("");
    d.activate_sieve(
        "alice@example.test",
        "copy",
        "require [\"fileinto\", \"copy\", \"mailbox\", \"imap4flags\"];\n\
         fileinto :copy :create :flags \"\\\\Flagged\" \"Copies\";\n",
    );
    let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let tasks = load(d.addr, 20, &["alice@example.test"], 500, acked.clone());
    until_acked(&acked, 200).await;
    let stopped = d.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 200, "only {} acknowledged", acked.len());
    let d = Daemon::restart(stopped);
    let inbox = d.maildir("alice@example.test");
    let copies = inbox.join(".Copies");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline
        && (tokens_in(&inbox).len() < acked.len() || tokens_in(&copies).len() < acked.len())
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    for (name, dir) in [("INBOX", &inbox), ("Copies", &copies)] {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for t in tokens_in(dir) {
            *seen.entry(t).or_default() += 1;
        }
        assert!(
            seen.values().all(|&n| n == 1),
            "{name}: a copy stored twice"
        );
        for t in &acked {
            assert_eq!(
                seen.get(t),
                Some(&1),
                "{name}: acknowledged {t} not stored once"
            );
        }
    }
    // The copies carry the script's flag.
    let flagged = std::fs::read_dir(copies.join("cur"))
        .unwrap()
        .flatten()
        .all(|e| e.file_name().to_string_lossy().contains(":2,F"));
    assert!(flagged);
}
