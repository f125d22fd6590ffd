//! Connection limits and timeouts.

use crate::harness::{Daemon, Raw};

#[tokio::test]
async fn per_ip_connection_limit_answers_421() {
    let d = Daemon::start("[limits]\nconnections_per_ip = 2\n");
    let _a = Raw::connect(d.addr).await;
    let _b = Raw::connect(d.addr).await;
    let mut c = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(
        crate::harness::IO_TIMEOUT,
        tokio::io::AsyncReadExt::read(&mut c, &mut buf),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("421 4.7.0 Too many connections from your address"),
        "{text}"
    );
    // Another source address is not affected.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.9:0".parse().unwrap()).unwrap();
    let mut other = Raw::from_stream(socket.connect(d.addr).await.unwrap());
    assert_eq!(other.reply().await.0, 220);
    // A slot frees when its session ends.
    drop(_a);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut c = tokio::net::TcpStream::connect(d.addr).await.unwrap();
        let n = tokio::io::AsyncReadExt::read(&mut c, &mut buf)
            .await
            .unwrap();
        if buf[..n].starts_with(b"220") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idle_client_is_cut_off_with_421_4_4_2() {
    let d = Daemon::start("[limits]\ncommand_timeout_secs = 1\n");
    let mut c = Raw::connect(d.addr).await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("421 4.4.2"), "{text}");
    assert!(c.closed().await);
}

/// A daemon relaying remote.test (from 127.0.0.1) to a sink on 127.0.0.2 that stalls every session, with
/// `queue` as its `[queue]` settings.
fn stalled_destination(queue: &str) -> (Daemon, Vec<crate::sink::Sink>) {
    use crate::dns::{Rr, TestDns};
    use crate::sink::{Behaviour, sinks};
    let s = sinks(vec![Behaviour {
        stall_secs: 120,
        ..Behaviour::default()
    }]);
    let dns = TestDns::start(vec![Rr::A("remote.test", "127.0.0.2")]);
    let mut d = Daemon::start_with_dns(&format!(
        "[delivery]\nremote_port = {}\nallow_private_addresses = true\nmax_connections = 2\n\
         [queue]\n{queue}\n[submission]\ntrusted_networks = [\"127.0.0.1/32\"]\n{}",
        s[0].addr.port(),
        dns.config()
    ));
    d.dns = Some(dns);
    (d, s)
}

/// A destination that stalls every delivery, and mail for it pouring in: the bodies held by waiting
/// deliveries stay within `[queue] delivery_memory_mb`, whatever the queue holds (100 MB here); the rest
/// waits on disk. The same after a kill -9 and a restart with everything due at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_destination_holds_no_more_than_delivery_memory() {
    use std::time::Duration;
    let (d, s) = stalled_destination("delivery_memory_mb = 8");
    const MESSAGES: usize = 400;
    const SIZE: usize = 256 * 1024;
    let line = "x".repeat(1000);
    let mut body =
        String::from("From: <a@example.test>\r\nTo: <bob@remote.test>\r\nSubject: big\r\n\r\n");
    while body.len() < SIZE {
        body.push_str(&line);
        body.push_str("\r\n");
    }
    let body = std::sync::Arc::new(body);
    let mut tasks = Vec::new();
    for c in 0..4 {
        let (addr, body) = (d.addr, body.clone());
        tasks.push(tokio::spawn(async move {
            let mut raw = Raw::connect(addr).await;
            raw.cmd("EHLO load.test").await;
            for _ in 0..MESSAGES / 4 {
                let (code, text) = raw
                    .send_message("a@load.test", "bob@remote.test", &body)
                    .await;
                assert_eq!(code, 250, "session {c}: {text}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, peak) = d.rss_kib();
    eprintln!("stalled destination, 100 MB queued: RSS {rss} kB, peak {peak} kB");
    // 100 MB of mail is queued; the budget is 8 MiB. Without it, every waiting delivery held its body.
    assert!(
        peak < 90 * 1024,
        "peak RSS {peak} kB (now {rss} kB) with 100 MB queued and delivery_memory_mb = 8"
    );
    assert!(
        s[0].state
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );

    // A restart finds all of it due at once: still within the budget.
    let stopped = d.kill9();
    let d = Daemon::restart(stopped);
    let out = crate::harness::tern(d.dir.path(), &["queue", "flush"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss, peak) = d.rss_kib();
    eprintln!("after a restart with 100 MB due: RSS {rss} kB, peak {peak} kB");
    assert!(
        peak < 90 * 1024,
        "after a restart: peak RSS {peak} kB (now {rss} kB) with 100 MB due"
    );
    let queued = crate::harness::tern(d.dir.path(), &["queue", "list", "--json"]);
    let text = String::from_utf8_lossy(&queued.stdout);
    assert_eq!(
        text.matches("bob@remote.test").count(),
        MESSAGES,
        "nothing lost: {}",
        &text[..text.len().min(300)]
    );
}

/// Many messages at once: what the sessions hold in memory while the content arrives (messages below the
/// spool threshold, and the piece of a larger one not yet written to its spool file) stays within
/// `[limits] data_memory_mb`; the messages past it are read to their end and answered 452 4.3.1 (the
/// client tries again), never half-stored, and every 250 is delivered.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_large_messages_stay_within_data_memory() {
    use std::time::Duration;
    let d = Daemon::start("[limits]\ndata_memory_mb = 1\nconnections_per_ip = 100\n");
    const SESSIONS: usize = 60;
    // Below the spool threshold (256 KiB): held in memory whole until its end.
    const SIZE: usize = 60 * 1024;
    let line = "y".repeat(998);
    let mut body =
        String::from("From: <a@remote.test>\r\nTo: <alice@example.test>\r\nSubject: large\r\n\r\n");
    while body.len() < SIZE {
        body.push_str(&line);
        body.push_str("\r\n");
    }
    let body = std::sync::Arc::new(body);
    // Every session sends all but the end, then all end at once: 60 x 60 KiB held together.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(SESSIONS));
    let mut tasks = Vec::new();
    for _ in 0..SESSIONS {
        let (addr, body, start) = (d.addr, body.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let mut raw = Raw::connect(addr).await;
            raw.cmd("EHLO load.test").await;
            assert_eq!(raw.cmd("MAIL FROM:<a@remote.test>").await.0, 250);
            assert_eq!(raw.cmd("RCPT TO:<alice@example.test>").await.0, 250);
            assert_eq!(raw.cmd("DATA").await.0, 354);
            raw.send(body.as_bytes()).await;
            start.wait().await;
            raw.send(b".\r\n").await;
            raw.reply().await
        }));
    }
    let mut stored = 0;
    let mut shed = 0;
    for t in tasks {
        let (code, text) = t.await.unwrap();
        match code {
            250 => stored += 1,
            452 if text.contains("4.3.1") => shed += 1,
            _ => panic!("unexpected reply {code} {text}"),
        }
    }
    let (rss, peak) = d.rss_kib();
    eprintln!(
        "{SESSIONS} x 60 KiB at once, data_memory_mb = 1: {stored} stored, {shed} told to retry; RSS {rss} kB, peak {peak} kB"
    );
    assert!(stored >= 1, "some got through");
    assert!(shed >= 1, "3.6 MB held at once does not fit a 1 MiB budget");
    // Every 250 is a delivered message; nothing of the refused ones was kept.
    let delivered = d.wait_delivered("alice@example.test", stored);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        d.delivered("alice@example.test").len(),
        stored,
        "{delivered:?}"
    );
    assert!(d.log_text().contains("data_memory_mb is in use"));
}

/// A destination that stalls and mail for it pouring in: at most `[queue] delivery_jobs` messages are in
/// delivery at once (each costs its bookkeeping, whatever its size); the rest wait on disk, all queued.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_destination_holds_no_more_than_delivery_jobs_messages() {
    use std::time::Duration;
    let (d, _s) = stalled_destination("delivery_jobs = 20");
    const MESSAGES: usize = 200;
    let mut raw = Raw::connect(d.addr).await;
    raw.cmd("EHLO load.test").await;
    for n in 0..MESSAGES {
        let (code, text) = raw
            .send_message(
                "a@load.test",
                "bob@remote.test",
                &format!("Subject: backlog {n}\r\n\r\nbody\r\n"),
            )
            .await;
        assert_eq!(code, 250, "{text}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let admin = d.listener("admin");
    let metrics = crate::ops::http_get(admin, "/metrics").await;
    let in_flight = metrics
        .lines()
        .find(|l| l.starts_with("tern_deliveries_in_flight"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("tern_deliveries_in_flight") as u64;
    // The gauge counts claims: 20 jobs, plus the two (local, remote) the scheduler holds on the next
    // message while it waits for a job to finish.
    assert!(
        (1..=22).contains(&in_flight),
        "{in_flight} claims in delivery with delivery_jobs = 20"
    );
    let queued = crate::harness::tern(d.dir.path(), &["queue", "list", "--json"]);
    let text = String::from_utf8_lossy(&queued.stdout);
    assert_eq!(
        text.matches("bob@remote.test").count(),
        MESSAGES,
        "all still queued"
    );
}

/// Copies the one queued message of a stopped daemon's queue.db until the queue holds `total`, every
/// recipient due now (the state a long outage of the destination leaves behind). Python's sqlite3, so
/// that the backlog takes seconds to make instead of minutes of SMTP.
fn grow_backlog(data: &std::path::Path, total: usize) {
    let script = r#"
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
(mid,) = db.execute("SELECT id FROM messages").fetchone()
base = int(mid, 16)
cols = [r[1] for r in db.execute("PRAGMA table_info(messages)")]
rcols = [r[1] for r in db.execute("PRAGMA table_info(recipients)")]
row = db.execute("SELECT %s FROM messages WHERE id = ?" % ",".join(cols), (mid,)).fetchone()
rrow = db.execute("SELECT %s FROM recipients WHERE message_id = ?" % ",".join(rcols), (mid,)).fetchone()
now = int(time.time())
msgs, rcpts = [], []
for n in range(1, int(sys.argv[2])):
    nid = "%014X" % (base + n)
    m = list(row); m[cols.index("id")] = nid; msgs.append(m)
    r = list(rrow); r[rcols.index("message_id")] = nid; r[rcols.index("next_attempt")] = now; rcpts.append(r)
db.executemany("INSERT INTO messages (%s) VALUES (%s)" % (",".join(cols), ",".join("?" * len(cols))), msgs)
db.executemany("INSERT INTO recipients (%s) VALUES (%s)" % (",".join(rcols), ",".join("?" * len(rcols))), rcpts)
db.commit()
print(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(data.join("queue.db"))
        .arg(total.to_string())
        .output()
        .expect("/usr/bin/python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        total.to_string()
    );
}

/// A restart with 50,000 messages queued for a destination that stalls, all due at once, then
/// `tern queue flush` on them: resident memory stays under 200 MB (bodies are read only when a delivery
/// starts, `[queue] delivery_jobs` at a time) and delivery starts at once instead of after a full load.
#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_of_50000_restarts_and_flushes_within_a_memory_ceiling() {
    use std::time::{Duration, Instant};
    const BACKLOG: usize = 50_000;
    const CEILING_KIB: u64 = 200 * 1024;
    let (d, _s) = stalled_destination("");
    let mut raw = Raw::connect(d.addr).await;
    raw.cmd("EHLO load.test").await;
    let filler = "y".repeat(1000);
    let (code, text) = raw
        .send_message(
            "a@load.test",
            "bob@remote.test",
            &format!("Subject: backlog\r\n\r\n{filler}\r\n"),
        )
        .await;
    assert_eq!(code, 250, "{text}");
    drop(raw);
    let (dir, dns) = d.kill9();
    grow_backlog(&dir.path().join("data"), BACKLOG);
    let started = Instant::now();
    let d = Daemon::restart((dir, dns));
    // Deliveries are under way (the sink holds them) well before 50,000 bodies could have been read.
    let admin = d.listener("admin");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut in_flight = 0.0;
    while in_flight < 1.0 && Instant::now() < deadline {
        let metrics = crate::ops::http_get(admin, "/metrics").await;
        in_flight = metrics
            .lines()
            .find(|l| l.starts_with("tern_deliveries_in_flight"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = started.elapsed();
    assert!(
        in_flight >= 1.0,
        "no delivery started within 60 s of the restart"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss, peak) = d.rss_kib();
    let flush = crate::harness::tern(d.dir.path(), &["queue", "flush"]);
    assert!(
        flush.status.success(),
        "{}",
        String::from_utf8_lossy(&flush.stderr)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss_flushed, peak_flushed) = d.rss_kib();
    eprintln!(
        "backlog of {BACKLOG}: first delivery {first:?} after the restart; RSS {rss} kB (peak {peak}) before the flush, {rss_flushed} kB (peak {peak_flushed}) after"
    );
    assert!(peak > 0 && peak_flushed > 0, "no /proc reading");
    assert!(
        peak_flushed < CEILING_KIB,
        "peak RSS {peak_flushed} kB over {CEILING_KIB} kB with {BACKLOG} queued"
    );
    let queued = crate::harness::tern(d.dir.path(), &["queue", "list", "--json"]);
    assert_eq!(
        String::from_utf8_lossy(&queued.stdout)
            .matches("bob@remote.test")
            .count(),
        BACKLOG,
        "all still queued"
    );
}

/// `tern queue hold` on a message whose job was already handed to delivery but is still waiting for a
/// connection slot: the job is set aside when its turn comes (nothing sent, nothing counted), and the
/// message goes only once released.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_held_while_its_job_waits_is_not_delivered() {
    use crate::dns::{Rr, TestDns};
    use crate::sink::{Behaviour, sinks};
    use std::time::Duration;
    let s = sinks(vec![Behaviour {
        stall_secs: 2,
        ..Behaviour::default()
    }]);
    let dns = TestDns::start(vec![Rr::A("remote.test", "127.0.0.2")]);
    let mut d = Daemon::start_with_dns(&format!(
        "[delivery]\nremote_port = {}\nallow_private_addresses = true\nmax_connections = 1\n\
         [submission]\ntrusted_networks = [\"127.0.0.1/32\"]\n{}",
        s[0].addr.port(),
        dns.config()
    ));
    d.dns = Some(dns);
    let mut raw = Raw::connect(d.addr).await;
    raw.cmd("EHLO load.test").await;
    let mut ids = Vec::new();
    for subject in ["first", "second"] {
        let (code, text) = raw
            .send_message(
                "a@load.test",
                "bob@remote.test",
                &format!("Subject: {subject}\r\n\r\nbody\r\n"),
            )
            .await;
        assert_eq!(code, 250, "{text}");
        ids.push(text.rsplit(' ').next().unwrap().to_string());
    }
    // The first holds the only connection (the sink stalls 2 s); the second's job waits for it.
    let hold = crate::harness::tern(d.dir.path(), &["queue", "hold", &ids[1]]);
    assert!(
        hold.status.success(),
        "{}",
        String::from_utf8_lossy(&hold.stderr)
    );
    assert!(d.wait_log(&format!(
        "queue_id={} from=a@load.test to=bob@remote.test",
        ids[0]
    )));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = s[0].messages();
    assert_eq!(got.len(), 1, "only the first was sent");
    assert!(got[0].data.contains("Subject: first"));
    assert!(d.wait_log("held before its delivery began; set aside"));
    let show = crate::harness::tern(d.dir.path(), &["queue", "show", &ids[1]]);
    let show = String::from_utf8_lossy(&show.stdout).to_string();
    assert!(show.contains("held:      yes"), "{show}");
    assert!(
        show.contains("remote queued attempts 0"),
        "nothing counted: {show}"
    );
    let release = crate::harness::tern(d.dir.path(), &["queue", "release", &ids[1]]);
    assert!(release.status.success());
    let got = s[0].wait(2);
    assert!(got[1].data.contains("Subject: second"), "{}", got[1].data);
}
