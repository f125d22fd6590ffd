//! Large messages go to spool files as they arrive: memory stays a function of configuration whatever
//! the messages' size and number, a 250 still means on disk (kill -9), orphans are swept at start, and an
//! oversized stream is refused without being kept.

use crate::harness::{Daemon, Raw};
use std::time::{Duration, Instant};

/// A message of about `size` octets (CRLF, lines of 998 characters plus a few dot lines) with `subject`.
fn large_message(subject: &str, size: usize) -> String {
    let mut m =
        format!("From: <a@remote.test>\r\nTo: <alice@example.test>\r\nSubject: {subject}\r\n\r\n");
    let line = "w".repeat(990);
    let mut n = 0;
    while m.len() < size {
        // Dot-stuffed on the wire: the stored message has one dot.
        if n % 50 == 0 {
            m.push_str("..dot line\r\n");
        }
        m.push_str(&format!("{n:07} {line}\r\n"));
        n += 1;
    }
    m
}

/// The message as the Maildir stores it: one dot, LF line ends.
fn stored_body(wire: &str) -> String {
    let body = wire.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let unstuffed = format!("\r\n{body}").replace("\r\n..", "\r\n.");
    unstuffed[2..].replace("\r\n", "\n")
}

fn spool_files(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.dir.path().join("data").join("spool"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_spool_empty(d: &Daemon) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = spool_files(d);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A session from `source` (127.0.0.x), greeting read.
async fn connect_from(source: &str, addr: std::net::SocketAddr) -> Raw {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = tokio::time::timeout(Duration::from_secs(15), socket.connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect");
    let mut raw = Raw::from_stream(stream);
    // 200 MB through a debug build beside the other tests: generous, still bounded.
    raw.timeout = Duration::from_secs(120);
    let (code, text) = raw.reply().await;
    assert_eq!(code, 220, "{text}");
    raw
}

/// 200 sessions from 4 client addresses each send a 1 MiB message at once (200 MB in flight; without
/// spooling every session held its message whole, and the queue and the delivery a copy each). Every one
/// is accepted and delivered whole; tern's peak RSS stays under a ceiling that does not grow with the
/// messages; no spool file is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_large_messages_at_once_stay_within_a_fixed_memory_ceiling() {
    let d = Daemon::start("[limits]\nconnections_per_ip = 100\n");
    const SESSIONS: usize = 200;
    const SIZE: usize = 1024 * 1024;
    let message = std::sync::Arc::new(large_message("large", SIZE));
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        let (addr, message) = (d.addr, message.clone());
        let source = format!("127.0.0.{}", 1 + i % 4);
        tasks.push(tokio::spawn(async move {
            let mut raw = connect_from(&source, addr).await;
            raw.cmd("EHLO load.test").await;
            raw.send_message("a@remote.test", "alice@example.test", &message)
                .await
        }));
    }
    for t in tasks {
        let (code, text) = tokio::time::timeout(Duration::from_secs(300), t)
            .await
            .expect("session within 300 s")
            .unwrap();
        assert_eq!(code, 250, "{text}");
    }
    let files = d.wait_delivered("alice@example.test", SESSIONS);
    assert_eq!(files.len(), SESSIONS);
    let (rss, peak) = d.rss_kib();
    eprintln!("{SESSIONS} x {SIZE} octets at once: RSS {rss} kB, peak {peak} kB");
    assert!(
        peak < 100 * 1024,
        "peak RSS {peak} kB with {SESSIONS} concurrent 1 MiB messages (200 MB)"
    );
    let want = stored_body(&message);
    for f in files.iter().step_by(37) {
        let got = std::fs::read_to_string(f).unwrap();
        assert!(
            got.ends_with(&want),
            "{} is not the message whole",
            f.display()
        );
        let size: usize = f
            .file_name()
            .unwrap()
            .to_string_lossy()
            .split(",S=")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert_eq!(size, got.len(), "S= in {} is the stored size", f.display());
    }
    let left = wait_spool_empty(&d);
    assert!(left.is_empty(), "spool files left after delivery: {left:?}");
}

/// kill -9 while large messages arrive and are delivered: every message that got its 250 is delivered
/// exactly once and whole after the restart; the files of messages in flight at the kill (no 250) are
/// swept at start, as is a stray file nobody names.
#[tokio::test(flavor = "multi_thread")]
async fn spooled_messages_survive_kill_9_and_orphans_are_swept() {
    let d = Daemon::start("[limits]\nconnections_per_ip = 100\n");
    const SESSIONS: usize = 8;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        let (addr, acked, stop) = (d.addr, acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                    .await
            else {
                return;
            };
            let mut raw = Raw::from_stream(stream);
            raw.reply().await;
            raw.cmd("EHLO load.test").await;
            for n in 0..40 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let subject = format!("s{s}-m{n}");
                let msg = large_message(&subject, 300_000 + 1000 * n);
                // After the kill, any step may fail: only a 250 counts.
                let r = tokio::time::timeout(Duration::from_secs(20), async {
                    raw.send_message("a@remote.test", "alice@example.test", &msg)
                        .await
                })
                .await;
                match r {
                    Ok((250, _)) => acked.lock().unwrap().push(subject),
                    _ => return,
                }
            }
        }));
    }
    // Kill once enough have been acknowledged (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 40 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir_path = d.dir.path().to_path_buf();
    let stopped = d.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 40,
        "{} acknowledged before the kill",
        acked.len()
    );
    // A stray file and a file under a queue ID no row has: both orphans.
    let spool = dir_path.join("data").join("spool");
    std::fs::write(spool.join("tmp.4242.7"), b"half a message").unwrap();
    std::fs::write(spool.join("00000000000001"), b"nobody's").unwrap();
    let d = Daemon::restart(stopped);
    let files = d.wait_delivered("alice@example.test", acked.len());
    std::thread::sleep(Duration::from_millis(500));
    let files_now = d.delivered("alice@example.test");
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for f in &files_now {
        let text = std::fs::read_to_string(f).unwrap();
        let subject = text
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or("")
            .to_string();
        let n: usize = subject
            .rsplit("-m")
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let want = stored_body(&large_message(&subject, 300_000 + 1000 * n));
        assert!(
            text.ends_with(&want),
            "{subject} is not whole in {}",
            f.display()
        );
        *seen.entry(subject).or_default() += 1;
    }
    for s in &acked {
        assert_eq!(
            seen.get(s),
            Some(&1),
            "{s} acknowledged: delivered exactly once"
        );
    }
    assert!(files.len() >= acked.len());
    let left = wait_spool_empty(&d);
    assert!(left.is_empty(), "spool files left: {left:?}");
    assert!(
        d.log_text()
            .contains("removed spool files no queued message names"),
        "the sweep says what it removed"
    );
}

/// 1 GiB of DATA against a 10 MiB message size limit: read to its end without being kept (the spool
/// file stops growing at the limit and is removed), answered 552 5.3.4, and tern's memory stays flat.
#[tokio::test(flavor = "multi_thread")]
async fn a_gigabyte_stream_is_refused_at_the_size_limit_without_memory_or_disk() {
    use tokio::io::AsyncWriteExt;
    let d = Daemon::start("[limits]\nmessage_size = 10485760\n");
    let mut raw = Raw::connect(d.addr).await;
    raw.cmd("EHLO big.test").await;
    assert_eq!(raw.cmd("MAIL FROM:<a@remote.test>").await.0, 250);
    assert_eq!(raw.cmd("RCPT TO:<alice@example.test>").await.0, 250);
    assert_eq!(raw.cmd("DATA").await.0, 354);
    let mut line = "v".repeat(998);
    line.push_str("\r\n");
    let block: Vec<u8> = line.as_bytes().repeat(1024);
    raw.stream
        .write_all(b"Subject: huge\r\n\r\n")
        .await
        .unwrap();
    let total: usize = 1 << 30;
    let mut sent = 0;
    let mut max_spool = 0u64;
    while sent < total {
        tokio::time::timeout(Duration::from_secs(30), raw.stream.write_all(&block))
            .await
            .expect("write within 30 s")
            .expect("write");
        sent += block.len();
        if sent % (64 << 20) < block.len() {
            let size: u64 = std::fs::read_dir(d.dir.path().join("data").join("spool"))
                .unwrap()
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum();
            max_spool = max_spool.max(size);
        }
    }
    raw.send(b".\r\n").await;
    let (code, text) = raw.reply().await;
    assert_eq!(code, 552, "{text}");
    assert!(text.contains("5.3.4"), "{text}");
    let (rss, peak) = d.rss_kib();
    eprintln!("1 GiB refused: RSS {rss} kB, peak {peak} kB, largest spool {max_spool} octets");
    assert!(
        peak < 80 * 1024,
        "peak RSS {peak} kB while 1 GiB streamed in"
    );
    assert!(
        max_spool <= 11 << 20,
        "the spool file stopped at the limit: {max_spool}"
    );
    assert!(wait_spool_empty(&d).is_empty());
    // The session goes on.
    assert_eq!(raw.cmd("NOOP").await.0, 250);
}

/// A queued message whose spool file was removed by hand cannot be delivered by any retry: it is held,
/// once and visibly (a log line, `tern queue show`, `tern trace`), instead of failing to load every 30 s.
#[tokio::test]
async fn a_message_whose_spool_file_is_gone_is_held_not_retried() {
    let d = Daemon::start("");
    // Room for one message: of two copies in one transaction the second is deferred and stays queued.
    crate::harness::tern(
        d.dir.path(),
        &["user", "set-quota", "alice@example.test", "--messages", "1"],
    );
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO load.test").await;
    c.cmd("MAIL FROM:<a@remote.test>").await;
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<alice+copy@example.test>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(large_message("gone", 400_000).as_bytes()).await;
    c.send(b".\r\n").await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 250, "{text}");
    let id = text.rsplit(' ').next().unwrap().to_string();
    d.wait_delivered("alice@example.test", 1);
    assert!(d.wait_log("4.2.2"), "{}", d.log_text());
    let spool = d.dir.path().join("data").join("spool").join(&id);
    assert!(spool.exists(), "the deferred copy keeps the spool file");
    std::fs::remove_file(&spool).unwrap();
    for _ in 0..3 {
        let out = crate::harness::tern(d.dir.path(), &["queue", "flush"]);
        assert!(out.status.success());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(d.wait_log("spool file of this message is missing or truncated; held"));
    let show = crate::harness::tern(d.dir.path(), &["queue", "show", &id]);
    let show = String::from_utf8_lossy(&show.stdout).to_string();
    assert!(show.contains("held:      yes"), "{show}");
    // Flushes skip a held message: said once, not once per attempt.
    let said = d
        .log_text()
        .matches("spool file of this message is missing")
        .count();
    assert_eq!(said, 1, "{}", d.log_text());
    let trace = crate::harness::tern(d.dir.path(), &["trace", &id]);
    assert!(String::from_utf8_lossy(&trace.stdout).contains("spool file is missing"));
}
