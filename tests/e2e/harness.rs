//! Starts the real `tern` binary on port 0 with a temporary data folder, and talks to it as clients do: raw
//! bytes over TCP (for malformed input and exact transcripts) or lettre (an independent SMTP client).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const TERN: &str = env!("CARGO_BIN_EXE_tern");

/// A string no other call in this test run returns (for Message-IDs).
pub fn unique() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{t}.{}.{n}", std::process::id())
}

pub struct Daemon {
    /// The DNS server the daemon resolves through (kept alive with it), unless the test brought its own.
    pub dns: Option<crate::dns::TestDns>,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// The relay listener.
    pub addr: SocketAddr,
    /// Every listener by kind (relay, submission, submissions).
    pub listeners: Vec<(String, SocketAddr)>,
    pub logs: Arc<Mutex<String>>,
}

pub fn config_text(extra: &str) -> String {
    format!(
        r#"
[server]
hostname = "mx.example.test"
data_dir = "data"
allow_root = true
{log}
[[listener]]
kind = "relay"
bind = ["127.0.0.1:0"]
{domains}
{admin}
{extra}
"#,
        log = if extra.contains("[log]") {
            ""
        } else {
            "[log]\nlevel = \"info\""
        },
        admin = if extra.contains("[admin]") {
            ""
        } else {
            "[admin]\nbind = \"127.0.0.1:0\""
        },
        domains = if extra.contains("[domains]") {
            ""
        } else {
            "[domains]\nlocal = [\"example.test\", \"example.org\"]\npostmaster = \"admin@example.test\""
        }
    )
}

/// Runs `tern ARGS --config DIR/tern.toml` to completion.
pub fn tern(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(TERN)
        .args(args)
        .arg("--config")
        .arg(dir.join("tern.toml"))
        .output()
        .expect("run tern")
}

/// `tern user add ADDRESS --password-stdin` with this password.
pub fn add_user_with_password(dir: &Path, address: &str, password: &str) {
    use std::io::Write;
    let mut child = Command::new(TERN)
        .args(["user", "add", address, "--password-stdin", "--config"])
        .arg(dir.join("tern.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn tern user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    assert!(child.wait().expect("wait").success());
}

/// Runs `tern sendmail ARGS` (or the program at `program`) with `input` on standard input.
pub fn run_sendmail(
    program: &Path,
    config: &Path,
    args: &[&str],
    input: &[u8],
) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(program)
        .env("TERN_CONFIG", config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sendmail");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write message");
    child.wait_with_output().expect("wait")
}

impl Daemon {
    /// A daemon with users alice@ and bob@example.test, and `extra` appended to its configuration. It
    /// resolves through an empty in-process `test.` zone.
    pub fn start(extra: &str) -> Daemon {
        let dns = crate::dns::TestDns::start(Vec::new());
        let mut d = Self::start_with_dns(&format!("{extra}\n{}", dns.config()));
        d.dns = Some(dns);
        d
    }

    /// Like `start`, but `extra` must point the daemon at a DNS server itself (`[dns] nameservers`).
    pub fn start_with_dns(extra: &str) -> Daemon {
        assert!(
            extra.contains("nameservers"),
            "a daemon under test must resolve through a test DNS server"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("tern.toml"), config_text(extra)).expect("write config");
        // With its own [domains], a test adds its own users.
        let users: &[&str] = if extra.contains("[domains]") {
            &[]
        } else {
            &["alice@example.test", "bob@example.test"]
        };
        for user in users {
            let out = tern(dir.path(), &["user", "add", user]);
            assert!(
                out.status.success(),
                "user add: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Self::spawn(dir)
    }

    /// Starts `tern serve` in an existing folder and waits for its listening line.
    pub fn spawn(dir: tempfile::TempDir) -> Daemon {
        let mut cmd = Command::new(TERN);
        cmd.args(["serve", "--config"])
            .arg(dir.path().join("tern.toml"));
        Self::spawn_command(dir, cmd)
    }

    /// Starts the daemon with a command of the test's making (`sh -c 'umask 0; exec tern serve ...'`).
    pub fn spawn_command(dir: tempfile::TempDir, mut cmd: Command) -> Daemon {
        let mut child = cmd
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn tern serve");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut listeners = Vec::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let field = |name: &str| {
                    let v = line.split(name).nth(1)?.split_whitespace().next()?;
                    Some(v.trim_matches('"').to_string())
                };
                if line.contains("listening")
                    && let (Some(kind), Some(addr)) = (field("kind="), field("addr="))
                {
                    listeners.push((kind, addr.parse::<SocketAddr>().expect("listening address")));
                }
                if line.contains("tern started") {
                    let _ = tx.send(std::mem::take(&mut listeners));
                }
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let listeners = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("tern did not start: {}", logs.lock().unwrap());
            }
        };
        let addr = listeners
            .iter()
            .find(|(k, _)| k == "relay")
            .map(|(_, a)| *a)
            .expect("a relay listener");
        Daemon {
            dns: None,
            child: Some(child),
            dir,
            addr,
            listeners,
            logs,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sends a signal (1 = SIGHUP, 15 = SIGTERM) to the daemon.
    pub fn signal(&self, sig: i32) {
        unsafe_kill(self.pid(), sig);
    }

    /// Waits (bounded) until the log contains `text`.
    pub fn wait_log(&self, text: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.log_text().contains(text) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The daemon's resident memory in KiB (VmRSS from /proc), and its peak (VmHWM).
    pub fn rss_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The address of the listener of this kind.
    pub fn listener(&self, kind: &str) -> SocketAddr {
        self.listeners
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no {kind} listener"))
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// SIGKILL: no chance to flush or clean anything up.
    /// SIGKILL; returns the data folder and the DNS server for [`Daemon::restart`].
    pub fn kill9(mut self) -> (tempfile::TempDir, Option<crate::dns::TestDns>) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let dir = tempfile::tempdir().expect("placeholder");
        (std::mem::replace(&mut self.dir, dir), self.dns.take())
    }

    /// Starts the daemon again on a folder left by [`Daemon::kill9`].
    pub fn restart((dir, dns): (tempfile::TempDir, Option<crate::dns::TestDns>)) -> Daemon {
        let mut d = Self::spawn(dir);
        d.dns = dns;
        d
    }

    /// SIGTERM, then wait for exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        unsafe_kill(c.id(), 15);
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "tern did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Installs `script` as `user`'s active Sieve script with `tern sieve put --activate`.
    pub fn activate_sieve(&self, user: &str, name: &str, script: &str) {
        let path = self.dir.path().join(format!("{name}.sieve"));
        std::fs::write(&path, script).unwrap();
        let out = tern(
            self.dir.path(),
            &[
                "sieve",
                "put",
                user,
                name,
                &path.display().to_string(),
                "--activate",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn maildir(&self, address: &str) -> PathBuf {
        let (local, domain) = address.split_once('@').expect("address");
        self.dir.path().join("data/mail").join(domain).join(local)
    }

    /// Files in new/ of a mailbox.
    pub fn delivered(&self, address: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.maildir(address).join("new"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Waits (bounded) until the log shows at least `n` local or remote deliveries (any store).
    pub fn wait_delivered_any(&self, _address: &str, n: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.log_text().matches("status=\"sent\"").count() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits (bounded) until a mailbox holds at least `n` messages, and returns them.
    pub fn wait_delivered(&self, address: &str, n: usize) -> Vec<PathBuf> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let files = self.delivered(address);
            if files.len() >= n || Instant::now() > deadline {
                return files;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A raw SMTP client: exact bytes out, replies parsed as they come.
pub struct Raw<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
    /// Bound on each read and write (IO_TIMEOUT unless set).
    pub timeout: Duration,
}

pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

impl Raw<TcpStream> {
    /// Connects and reads the greeting.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timeout")
            .expect("connect");
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
            timeout: IO_TIMEOUT,
        };
        let (code, _) = raw.reply().await;
        assert_eq!(code, 220);
        raw
    }
}

impl Raw<TcpStream> {
    /// Connects and reads a one-line greeting that starts with `prefix` (POP3's `+OK`).
    pub async fn connect_greeting(addr: SocketAddr, prefix: &str) -> Raw {
        let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timeout")
            .expect("connect");
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
            timeout: IO_TIMEOUT,
        };
        let greeting = raw.line().await;
        assert!(greeting.starts_with(prefix), "{greeting}");
        raw
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Raw<S> {
    /// A POP3 command: whether it got +OK, and the reply (with the lines of a multi-line one up to ".").
    pub async fn pop_cmd(&mut self, line: &str, multiline: bool) -> (bool, String) {
        self.send(format!("{line}\r\n").as_bytes()).await;
        let first = self.line().await;
        let ok = first.starts_with("+OK");
        let mut text = first;
        if ok && multiline {
            loop {
                let l = self.line().await;
                if l == "." || l.is_empty() {
                    break;
                }
                text.push('\n');
                text.push_str(&l);
            }
        }
        (ok, text)
    }

    pub fn from_stream(stream: S) -> Raw<S> {
        Raw {
            stream,
            buf: Vec::new(),
            timeout: IO_TIMEOUT,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(self.timeout, self.stream.write_all(bytes))
            .await
            .expect("write timeout")
            .expect("write");
    }

    /// Reads one (possibly multi-line) reply: its code and its full text.
    pub async fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let line = self.line().await;
            text.push_str(&line);
            text.push('\n');
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return (code, text.trim_end().to_string());
            }
        }
    }

    /// Sends a command and returns the reply.
    pub async fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    pub async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(self.timeout, self.stream.read(&mut chunk))
                .await
                .expect("read timeout")
                .expect("read");
            if n == 0 {
                return String::new();
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the server has closed the connection (reads until EOF, bounded).
    pub async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 256];
        matches!(
            tokio::time::timeout(IO_TIMEOUT, self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// MAIL, RCPT, DATA and the content (already dot-stuffed, ending with CRLF), returning the final reply.
    pub async fn send_message(&mut self, from: &str, to: &str, content: &str) -> (u16, String) {
        let (c, t) = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        assert_eq!(c, 250, "{t}");
        let (c, t) = self.cmd(&format!("RCPT TO:<{to}>")).await;
        assert_eq!(c, 250, "{t}");
        let (c, t) = self.cmd("DATA").await;
        assert_eq!(c, 354, "{t}");
        self.send(content.as_bytes()).await;
        self.send(b".\r\n").await;
        self.reply().await
    }
}

/// A raw session on `addr` that said EHLO, STARTTLS and EHLO again: ready for AUTH.
pub async fn tls_session(addr: SocketAddr) -> Raw<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut c = Raw::connect(addr).await;
    c.cmd("EHLO laptop").await;
    let (code, text) = c.cmd("STARTTLS").await;
    assert_eq!(code, 220, "{text}");
    let tls = insecure_tls_connector()
        .connect(
            rustls::pki_types::ServerName::try_from("mx.example.test").unwrap(),
            c.stream,
        )
        .await
        .expect("TLS handshake");
    let mut t = Raw::from_stream(tls);
    t.cmd("EHLO laptop").await;
    t
}

/// A rustls client that accepts any certificate: the daemon's is self-signed, and this checks TLS use, not PKI.
/// It is the outbound MTA's own opportunistic configuration.
pub fn insecure_tls_connector() -> tokio_rustls::TlsConnector {
    let clients = tern::outbound::tls::TlsClients::new(None).expect("TLS client configuration");
    tokio_rustls::TlsConnector::from(clients.opportunistic)
}
