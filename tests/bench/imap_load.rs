//! IMAP benchmark beside Dovecot in the same run:
//!
//! 1. imaptest's stress mode (clients log in, select, fetch, store, expunge, append and log out at random in
//!    one mailbox, with state tracking) against tern and against a loopback Dovecot 2.3, at 10 and 100
//!    clients: commands per second, and imaptest's error count.
//! 2. Resident memory with N sessions logged in, selected and in IDLE over TLS (default 10,000 for tern);
//!    Dovecot (one process per session) is measured at `BENCH_DOVECOT_IDLE` sessions (default 500) as the
//!    sum of its processes' PSS.
//!
//!     cargo bench --bench imap_load
//!     BENCH_SECS=10 BENCH_CLIENTS=10 BENCH_IDLE=2000 cargo bench --bench imap_load
//!
//! Needs ../shared/imaptest (imaptest and dovecot-local.sh); without it only the IDLE memory of tern runs.

#[allow(dead_code)]
mod load;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/imaptest")
}

/// Runs imaptest's stress mode; returns (commands per second, error lines).
fn stress(port: u16, user: &str, pass: &str, clients: usize, secs: u64) -> (f64, usize) {
    let out = std::process::Command::new(shared().join("imaptest"))
        .arg("host=127.0.0.1")
        .arg(format!("port={port}"))
        .arg(format!("user={user}"))
        .arg(format!("pass={pass}"))
        .arg(format!(
            "mbox={}",
            shared().join("tests/default.mbox").display()
        ))
        .arg(format!("clients={clients}"))
        .arg(format!("secs={secs}"))
        .output()
        .expect("imaptest");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let errors = text.lines().filter(|l| l.starts_with("Error")).count();
    for l in text.lines().filter(|l| l.starts_with("Error")).take(5) {
        eprintln!("    imaptest: {l}");
    }
    // The last line after "Totals:" holds the command counts.
    let totals: u64 = text
        .split("Totals:")
        .nth(1)
        .and_then(|t| t.lines().filter(|l| !l.trim().is_empty()).last())
        .map(|l| {
            l.split_whitespace()
                .filter_map(|n| n.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    (totals as f64 / secs as f64, errors)
}

/// Sessions logged in, with INBOX selected and IDLE running, held open until the returned value is dropped.
async fn idle_sessions(
    addr: std::net::SocketAddr,
    tls: bool,
    users: &[(String, String)],
    n: usize,
) -> Vec<Box<dyn std::any::Any + Send>> {
    let connector = {
        let mut roots = rustls::RootCertStore::empty();
        let _ = &mut roots;
        let config = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(AnyCert))
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
    };
    // A few logins at a time, as clients arriving do: the failed-login throttle counts attempts in progress.
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (user, pass) = users[i % users.len()].clone();
        let connector = connector.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.ok()?;
            for _ in 0..5 {
                let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
                let held = if tls {
                    let name = rustls::pki_types::ServerName::try_from("mx.example.test").ok()?;
                    let s = connector.connect(name, tcp).await.ok()?;
                    login_and_idle(s, &user, &pass)
                        .await
                        .map(|s| Box::new(s) as Box<dyn std::any::Any + Send>)
                } else {
                    login_and_idle(tcp, &user, &pass)
                        .await
                        .map(|s| Box::new(s) as Box<dyn std::any::Any + Send>)
                };
                if held.is_some() {
                    return held;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(Some(s)) = t.await {
            out.push(s);
        }
    }
    out
}

async fn login_and_idle<
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
>(
    s: S,
    user: &str,
    pass: &str,
) -> Option<tokio::io::BufReader<S>> {
    let mut s = tokio::io::BufReader::new(s);
    let mut line = String::new();
    let limit = Duration::from_secs(120);
    tokio::time::timeout(limit, s.read_line(&mut line))
        .await
        .ok()?
        .ok()?;
    s.get_mut()
        .write_all(
            format!("a LOGIN \"{user}\" \"{pass}\"\r\nb SELECT INBOX\r\nc IDLE\r\n").as_bytes(),
        )
        .await
        .ok()?;
    loop {
        line.clear();
        tokio::time::timeout(limit, s.read_line(&mut line))
            .await
            .ok()?
            .ok()?;
        if line.starts_with("a NO") || line.starts_with("b NO") || line.is_empty() {
            return None;
        }
        if line.starts_with('+') {
            return Some(s);
        }
    }
}

#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The PSS of every process whose command line starts with `prefix`, in kB.
fn pss_of(prefix: &str) -> (u64, usize) {
    let mut total = 0;
    let mut count = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let p = e.path();
        let Ok(cmd) = std::fs::read(p.join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmd).starts_with(prefix) {
            continue;
        }
        let pss: u64 = std::fs::read_to_string(p.join("smaps_rollup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Pss:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0);
        total += pss;
        count += 1;
    }
    (total, count)
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs = load::env("BENCH_SECS", 20) as u64;
    let clients: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .unwrap_or_else(|_| "10,100".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let idle = load::env("BENCH_IDLE", 10_000);
    let dovecot_idle = load::env("BENCH_DOVECOT_IDLE", 500);
    let have_shared = shared().join("imaptest").exists();

    let dir = tempfile::tempdir().expect("tempdir");
    let config = load::write_config(
        dir.path(),
        "[[listener]]\nkind = \"imap\"\nbind = [\"127.0.0.1:0\"]\n\
         [[listener]]\nkind = \"imaps\"\nbind = [\"127.0.0.1:0\"]\n\
         [access]\nmax_connections = 30000\nmax_connections_per_ip = 30000\nmax_connections_per_user = 30000\n\
         [auth]\nparallel_checks = 2\n",
    );
    let users: Vec<(String, String)> = (0..20)
        .map(|i| (format!("user{i}@example.test"), "pass".to_string()))
        .chain(std::iter::once((
            "imaptest@example.test".to_string(),
            "pass".to_string(),
        )))
        .collect();
    for (u, p) in &users {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["user", "add", u, "--password-stdin", "--config"])
            .arg(&config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("tern");
        use std::io::Write;
        let _ = writeln!(child.stdin.take().expect("stdin"), "{p}");
        assert!(child.wait().expect("tern").success());
    }
    let (mut child, listeners) = load::start_tern(&config);
    let addr = |k: &str| {
        listeners
            .iter()
            .find(|(kind, _)| kind == k)
            .map(|l| l.1)
            .expect("listener")
    };
    let imap = addr("imap");
    let imaps = addr("imaps");

    println!(
        "imap_load: imaptest stress, {secs} s per run, both servers on this machine, Maildir, fsync on"
    );
    let dovecot_dir = dir.path().join("dovecot");
    let dovecot_port = 10143u16;
    let dovecot = have_shared
        && std::process::Command::new(shared().join("dovecot-local.sh"))
            .args(["start", "-p", &dovecot_port.to_string(), "-d"])
            .arg(&dovecot_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if have_shared {
        for &c in &clients {
            let (tern_rate, tern_errors) =
                stress(imap.port(), "imaptest@example.test", "pass", c, secs);
            let tern_rss = load::peak_rss_kb(child.id());
            print!(
                "  {c:>3} clients: tern {tern_rate:.0} commands/s ({tern_errors} errors, peak RSS {tern_rss} kB)"
            );
            if dovecot {
                let (dv_rate, dv_errors) = stress(dovecot_port, "bench", "pass", c, secs);
                println!(
                    "; Dovecot {dv_rate:.0} commands/s ({dv_errors} errors); ratio {:.2}",
                    tern_rate / dv_rate.max(1.0)
                );
            } else {
                println!("; Dovecot not available");
            }
        }
    } else {
        println!("  ../shared/imaptest not found: stress runs skipped");
    }

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let before = rss_kb(child.id());
    let started = Instant::now();
    let sessions = runtime.block_on(idle_sessions(imaps, true, &users[..20], idle));
    let held = sessions.len();
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kb(child.id());
    println!(
        "  tern: {held} of {idle} sessions in IDLE over TLS (set up in {:.0} s): RSS {} MB ({} MB before, {:.1} kB per session)",
        started.elapsed().as_secs_f64(),
        after / 1024,
        before / 1024,
        (after.saturating_sub(before)) as f64 / held.max(1) as f64
    );
    drop(sessions);
    if dovecot {
        let (base, _) = pss_of("dovecot/imap");
        let sessions = runtime.block_on(idle_sessions(
            std::net::SocketAddr::from(([127, 0, 0, 1], dovecot_port)),
            false,
            &[("bench".to_string(), "pass".to_string())],
            dovecot_idle,
        ));
        std::thread::sleep(Duration::from_secs(2));
        let (pss, procs) = pss_of("dovecot/imap");
        println!(
            "  Dovecot: {} of {dovecot_idle} sessions in IDLE (plain, one process each: {procs} imap processes): PSS {} MB, {:.1} kB per session",
            sessions.len(),
            pss / 1024,
            pss.saturating_sub(base) as f64 / sessions.len().max(1) as f64
        );
        drop(sessions);
        let _ = std::process::Command::new(shared().join("dovecot-local.sh"))
            .args(["stop", "-d"])
            .arg(&dovecot_dir)
            .status();
    }
    let _ = child.kill();
    let _ = child.wait();
}
