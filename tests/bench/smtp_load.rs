//! Load benchmark: N messages of S bytes over C concurrent connections (one message per connection, as
//! Postfix's smtp-source does by default) into a tern daemon with fsync on, delivering to a Maildir.
//!
//! Prints accepted messages/s (250 after the final dot), delivered-to-Maildir messages/s (until every file is
//! in new/) and p50/p99 latency from the final dot to its 250.
//!
//!     cargo bench --bench smtp_load                      # 2000 x 1 KiB over 50 connections
//!     BENCH_MESSAGES=5000 BENCH_SIZE=102400 BENCH_CONNECTIONS=10 cargo bench --bench smtp_load
//!
//! Compare with Postfix in the same run: ../shared/bench/compare-inbound.sh (see docs/benchmarks.md).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> u16 {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return 0;
        }
        if line.len() < 4 || line.as_bytes()[3] == b' ' {
            return line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        }
    }
}

/// One session, one message; returns the latency from the final dot to the reply.
async fn send_one(addr: std::net::SocketAddr, body: Arc<Vec<u8>>) -> Option<Duration> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    if reply(&mut r).await != 220 {
        return None;
    }
    for (cmd, want) in [
        (&b"EHLO bench.test\r\n"[..], 250),
        (b"MAIL FROM:<load@bench.test>\r\n", 250),
        (b"RCPT TO:<alice@example.test>\r\n", 250),
        (b"DATA\r\n", 354),
    ] {
        w.write_all(cmd).await.ok()?;
        if reply(&mut r).await != want {
            return None;
        }
    }
    w.write_all(&body).await.ok()?;
    let t = Instant::now();
    w.write_all(b".\r\n").await.ok()?;
    if reply(&mut r).await != 250 {
        return None;
    }
    let latency = t.elapsed();
    w.write_all(b"QUIT\r\n").await.ok()?;
    let _ = reply(&mut r).await;
    Some(latency)
}

fn main() {
    let messages = env("BENCH_MESSAGES", 2000);
    let size = env("BENCH_SIZE", 1024);
    let connections = env("BENCH_CONNECTIONS", 50);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tern.toml");
    // BENCH_CONFIG appends TOML to the daemon's configuration, e.g. "[delivery]\nlocal_workers = 16".
    let extra = std::env::var("BENCH_CONFIG").unwrap_or_default();
    std::fs::write(
        &config,
        format!("[server]\nhostname = \"mx.example.test\"\ndata_dir = \"data\"\n[log]\nlevel = \"warn,tern::app=info\"\n\
         [[listener]]\nkind = \"relay\"\nbind = [\"127.0.0.1:0\"]\n\
         [domains]\nlocal = [\"example.test\"]\npostmaster = \"alice@example.test\"\n{extra}\n"),
    )
    .expect("config");
    let tern = env!("CARGO_BIN_EXE_tern");
    let ok = Command::new(tern)
        .args(["user", "add", "alice@example.test", "--config"])
        .arg(&config)
        .status()
        .expect("tern");
    assert!(ok.success());
    let mut child = Command::new(tern)
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tern");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let addr: std::net::SocketAddr = loop {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stderr, &mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            panic!("tern exited before listening");
        }
        if let Some(a) = line.split("addr=").nth(1) {
            break a
                .split_whitespace()
                .next()
                .expect("addr")
                .parse()
                .expect("addr");
        }
    };
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));

    let mut body = b"Subject: load\r\n\r\n".to_vec();
    while body.len() + 80 < size {
        body.extend_from_slice(&[b'x'; 76]);
        body.extend_from_slice(b"\r\n");
    }
    let body = Arc::new(body);
    let maildir = dir.path().join("data/mail/example.test/alice/new");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (accepted_secs, latencies, failures) = runtime.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (next, failures, body) = (next.clone(), failures.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < messages {
                    match send_one(addr, body.clone()).await {
                        Some(l) => lat.push(l),
                        None => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                lat
            }));
        }
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await.expect("task"));
        }
        (start.elapsed(), latencies, failures.load(Ordering::Relaxed))
    });
    let started = Instant::now() - accepted_secs;
    let deadline = Instant::now() + Duration::from_secs(300);
    let accepted = latencies.len();
    while std::fs::read_dir(&maildir).map(|d| d.count()).unwrap_or(0) < accepted
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let delivered_secs = started.elapsed();
    let delivered = std::fs::read_dir(&maildir).map(|d| d.count()).unwrap_or(0);
    let rss_kb = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();

    let mut sorted = latencies.clone();
    sorted.sort();
    let pct = |p: f64| {
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "smtp_load: {messages} messages x {size} B over {connections} connections (one message per connection), fsync on"
    );
    println!(
        "  accepted:  {accepted} in {:.2} s = {:.0} msg/s ({failures} failed)",
        accepted_secs.as_secs_f64(),
        accepted as f64 / accepted_secs.as_secs_f64()
    );
    println!(
        "  delivered: {delivered} in {:.2} s = {:.0} msg/s into the Maildir",
        delivered_secs.as_secs_f64(),
        delivered as f64 / delivered_secs.as_secs_f64()
    );
    println!(
        "  latency after final dot: p50 {:.2} ms, p99 {:.2} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
    println!("  daemon peak RSS: {rss_kb} kB");
}
