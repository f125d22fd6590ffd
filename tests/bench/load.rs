//! The load generator shared by the benchmarks: N messages over C concurrent connections, one message per
//! connection (as Postfix's smtp-source does by default), latency measured from the final dot to its reply.

// Each benchmark uses part of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A message body of about `size` octets.
pub fn body(size: usize) -> Arc<Vec<u8>> {
    let mut body = b"Subject: load\r\n\r\n".to_vec();
    while body.len() + 80 < size {
        body.extend_from_slice(&[b'x'; 76]);
        body.extend_from_slice(b"\r\n");
    }
    Arc::new(body)
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

/// One session, one message; the latency from the final dot to the reply.
pub async fn send_one(
    addr: SocketAddr,
    from: &str,
    to: &str,
    body: Arc<Vec<u8>>,
) -> Option<Duration> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    if reply(&mut r).await != 220 {
        return None;
    }
    let mail = format!("MAIL FROM:<{from}>\r\n");
    let rcpt = format!("RCPT TO:<{to}>\r\n");
    for (cmd, want) in [
        (&b"EHLO bench.test\r\n"[..], 250),
        (mail.as_bytes(), 250),
        (rcpt.as_bytes(), 250),
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

/// The outcome of a load run.
pub struct Run {
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    pub failures: usize,
}

impl Run {
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }
}

/// Sends `messages` over `connections` concurrent sessions.
pub async fn run(
    addr: SocketAddr,
    messages: usize,
    connections: usize,
    from: &str,
    to: &str,
    body: Arc<Vec<u8>>,
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (next, failures, body) = (next.clone(), failures.clone(), body.clone());
        let (from, to) = (from.to_string(), to.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < messages {
                match send_one(addr, &from, &to, body.clone()).await {
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
        latencies.extend(t.await.unwrap_or_default());
    }
    Run {
        elapsed: start.elapsed(),
        latencies,
        failures: failures.load(Ordering::Relaxed),
    }
}

/// Writes a daemon configuration for a benchmark (loopback, port 0, admin on port 0, local domain
/// example.test) with `extra` appended; returns its path.
pub fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let config = dir.join("tern.toml");
    let text = format!(
        "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"data\"\nallow_root = true\n\
         [log]\nlevel = \"warn,tern::app=info\"\n[admin]\nbind = \"127.0.0.1:0\"\n\
         [[listener]]\nkind = \"relay\"\nbind = [\"127.0.0.1:0\"]\n\
         [domains]\nlocal = [\"example.test\"]\npostmaster = \"postmaster@example.test\"\n{extra}\n"
    );
    std::fs::write(&config, text).expect("config");
    config
}

/// Starts `tern serve` on `config` and returns it with its listening addresses (kind, addr).
pub fn start_tern(config: &std::path::Path) -> (std::process::Child, Vec<(String, SocketAddr)>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tern");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut listeners = Vec::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            panic!("tern exited before it started");
        }
        if line.contains("listening") {
            let field = |n: &str| {
                line.split(n)
                    .nth(1)
                    .and_then(|v| v.split_whitespace().next())
                    .map(|v| v.trim_matches('"').to_string())
            };
            if let (Some(kind), Some(addr)) = (field("kind="), field("addr=")) {
                listeners.push((kind, addr.parse().expect("addr")));
            }
        }
        if line.contains("tern started") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, listeners)
}

/// Waits (at most 300 s) until the folder `dir` holds `n` entries; returns how many it holds.
pub fn wait_count(dir: &std::path::Path, n: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let count = || std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    while count() < n && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    count()
}

/// Peak resident memory of a process, in kB.
pub fn peak_rss_kb(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .unwrap_or_default()
}
