//! ManageSieve (RFC 5804) against the real binary: Debian's sieve-connect (an independent client) uploads,
//! lists, activates, downloads and deletes a script over STARTTLS; raw dialogues check the capability
//! response, refused logins and the throttle, the script size limit, compile errors, the response codes,
//! bad names and the bad-command limit.

use crate::harness::{Daemon, Raw, add_user_with_password, tern};
use base64::Engine;
use std::time::{Duration, Instant};

const LISTENER: &str = "[[listener]]\nkind = \"managesieve\"\nbind = [\"127.0.0.1:0\"]\n";
const SIEVE_CONNECT: &str = "/usr/bin/sieve-connect";

fn daemon(extra: &str) -> Daemon {
    let d = Daemon::start(&format!("{LISTENER}{extra}"));
    tern(d.dir.path(), &["user", "del", "alice@example.test"]);
    add_user_with_password(d.dir.path(), "alice@example.test", "alice-pw");
    d
}

/// A raw ManageSieve client.
struct Ms<S = tokio::net::TcpStream> {
    raw: Raw<S>,
}

impl Ms {
    /// Connects and reads the greeting (the capability response).
    async fn connect(d: &Daemon) -> (Ms, String) {
        let stream = tokio::net::TcpStream::connect(d.listener("managesieve"))
            .await
            .expect("connect");
        let mut ms = Ms {
            raw: Raw::from_stream(stream),
        };
        let greeting = ms.response().await;
        (ms, greeting)
    }

    async fn login(d: &Daemon) -> Ms {
        let (mut ms, _) = Ms::connect(d).await;
        let r = ms
            .cmd(&format!(
                "AUTHENTICATE \"PLAIN\" \"{}\"",
                plain("alice@example.test", "alice-pw")
            ))
            .await;
        assert!(r.starts_with("OK"), "{r}");
        ms
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Ms<S> {
    /// Lines up to and with the final OK, NO or BYE, joined by "\n"; what came when the server closed.
    async fn response(&mut self) -> String {
        let mut lines = Vec::new();
        let mut empty = 0;
        loop {
            let line = self.raw.line().await;
            // `line` gives "" at the end of the stream as for an empty line (a script's).
            empty = if line.is_empty() { empty + 1 } else { 0 };
            if empty > 3 {
                return lines.join("\n").trim_end().to_string();
            }
            let done = ["OK", "NO", "BYE"]
                .iter()
                .any(|s| line == *s || line.starts_with(&format!("{s} ")));
            lines.push(line);
            if done {
                return lines.join("\n");
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.raw.send(format!("{line}\r\n").as_bytes()).await;
        self.response().await
    }

    /// PUTSCRIPT with the script as a literal.
    async fn put(&mut self, name: &str, script: &str) -> String {
        self.raw
            .send(format!("PUTSCRIPT \"{name}\" {{{}+}}\r\n{script}\r\n", script.len()).as_bytes())
            .await;
        self.response().await
    }
}

fn plain(user: &str, pw: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
}

const VACATION: &str = "require [\"fileinto\"];\r\nif header :contains \"subject\" \"offer\" {\r\n  fileinto \"Junk\";\r\n}\r\nkeep;\r\n";

/// Runs sieve-connect with one action; returns (success, stdout + stderr).
fn sieve_connect(d: &Daemon, args: &[&str]) -> (bool, String) {
    use std::io::Write;
    let port = d.listener("managesieve").port().to_string();
    let mut child = std::process::Command::new(SIEVE_CONNECT)
        .args([
            "--nosrv",
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            "alice@example.test",
            "--passwordfd",
            "0",
            "--notlsverify",
            "--noclearauth",
        ])
        .args(args)
        .current_dir(d.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sieve-connect");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"alice-pw\n")
        .expect("password");
    let out = child.wait_with_output().expect("sieve-connect");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn sieve_connect_uploads_lists_activates_downloads_and_deletes() {
    if !std::path::Path::new(SIEVE_CONNECT).exists() {
        eprintln!(
            "{SIEVE_CONNECT} not found: skipping the sieve-connect client (apt-get install sieve-connect)"
        );
        return;
    }
    // No secure networks: logging in needs the STARTTLS that sieve-connect does.
    let d = daemon("[access]\nsecure_networks = []\n");
    let local = d.dir.path().join("vacation.sieve");
    std::fs::write(&local, VACATION).unwrap();
    let (ok, out) = sieve_connect(
        &d,
        &[
            "--upload",
            "--localsieve",
            "vacation.sieve",
            "--remotesieve",
            "vacation",
        ],
    );
    assert!(ok, "upload: {out}\n{}", d.log_text());
    let (ok, out) = sieve_connect(&d, &["--activate", "--remotesieve", "vacation"]);
    assert!(ok, "activate: {out}");
    let (ok, out) = sieve_connect(&d, &["--list"]);
    assert!(
        ok && out.contains("vacation") && out.contains("ACTIVE"),
        "list: {out}"
    );
    let (ok, out) = sieve_connect(
        &d,
        &[
            "--download",
            "--remotesieve",
            "vacation",
            "--localsieve",
            "copy.sieve",
        ],
    );
    assert!(ok, "download: {out}");
    let copy = std::fs::read_to_string(d.dir.path().join("copy.sieve")).unwrap();
    assert_eq!(copy, VACATION, "the script comes back as it went up");
    // The active script cannot go; deactivated it can.
    let (ok, out) = sieve_connect(&d, &["--delete", "--remotesieve", "vacation"]);
    assert!(!ok, "deleting the active script: {out}");
    let (ok, out) = sieve_connect(&d, &["--deactivate"]);
    assert!(ok, "deactivate: {out}");
    let (ok, out) = sieve_connect(&d, &["--delete", "--remotesieve", "vacation"]);
    assert!(ok, "delete: {out}");
    let (ok, out) = sieve_connect(&d, &["--list"]);
    assert!(ok && !out.contains("vacation"), "list after delete: {out}");
    // No password reached the log.
    assert!(!d.log_text().contains("alice-pw"));
}

#[tokio::test]
async fn capability_before_tls_after_tls_and_after_login() {
    let d = daemon("[access]\nsecure_networks = []\n");
    let (mut ms, greeting) = Ms::connect(&d).await;
    assert!(
        greeting.contains("\"IMPLEMENTATION\" \"tern\"")
            && greeting.contains("\"SASL\" \"\"")
            && greeting.contains("\"STARTTLS\"")
            && greeting.contains("\"VERSION\" \"1.0\"")
            && greeting.contains("\"SIEVE\" \"")
            && greeting.contains("\"MAXREDIRECTS\" \"")
            && !greeting.contains("OWNER"),
        "{greeting}"
    );
    // No password without TLS from outside the secure networks.
    let r = ms
        .cmd(&format!(
            "AUTHENTICATE \"PLAIN\" \"{}\"",
            plain("alice@example.test", "alice-pw")
        ))
        .await;
    assert!(r.starts_with("NO (ENCRYPT-NEEDED)"), "{r}");
    let r = ms.cmd("STARTTLS").await;
    assert!(r.starts_with("OK"), "{r}");
    let tls = crate::harness::insecure_tls_connector()
        .connect(
            rustls::pki_types::ServerName::try_from("mx.example.test").unwrap(),
            ms.raw.stream,
        )
        .await
        .expect("TLS handshake");
    let mut ms = Ms {
        raw: Raw::from_stream(tls),
    };
    // RFC 5804 section 2.2: the capabilities again, unasked.
    let caps = ms.response().await;
    assert!(
        caps.contains("\"SASL\" \"PLAIN LOGIN\"") && !caps.contains("\"STARTTLS\""),
        "{caps}"
    );
    // LOGIN with continuations.
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    ms.raw.send(b"AUTHENTICATE \"LOGIN\"\r\n").await;
    assert_eq!(ms.raw.line().await, "\"VXNlcm5hbWU6\"");
    ms.raw
        .send(format!("\"{}\"\r\n", b64("alice@example.test")).as_bytes())
        .await;
    assert_eq!(ms.raw.line().await, "\"UGFzc3dvcmQ6\"");
    let r = ms.cmd(&format!("\"{}\"", b64("alice-pw"))).await;
    assert!(r.starts_with("OK"), "{r}");
    let caps = ms.cmd("CAPABILITY").await;
    assert!(
        caps.contains("\"OWNER\" \"alice@example.test\"")
            && caps.ends_with("OK \"capability completed\""),
        "{caps}"
    );
    assert!(ms.cmd("LOGOUT").await.starts_with("OK"));
}

#[tokio::test]
async fn a_wrong_password_is_refused_slowly_then_blocked() {
    let d = daemon("[auth]\nfailure_delay_ms = 400\nfailures_before_block = 2\n");
    let (mut ms, _) = Ms::connect(&d).await;
    let t0 = Instant::now();
    let r = ms
        .cmd(&format!(
            "AUTHENTICATE \"PLAIN\" \"{}\"",
            plain("alice@example.test", "wrong-pw")
        ))
        .await;
    assert_eq!(r, "NO \"invalid user name or password\"");
    assert!(
        t0.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t0.elapsed()
    );
    let r = ms
        .cmd(&format!(
            "AUTHENTICATE \"PLAIN\" \"{}\"",
            plain("alice@example.test", "wrong-again")
        ))
        .await;
    assert!(r.starts_with("NO"), "{r}");
    // Blocked now: even the right password is refused, as a temporary condition.
    let r = ms
        .cmd(&format!(
            "AUTHENTICATE \"PLAIN\" \"{}\"",
            plain("alice@example.test", "alice-pw")
        ))
        .await;
    assert!(r.starts_with("NO (TRYLATER)"), "{r}");
    let log = d.log_text();
    assert!(!log.contains("wrong-pw") && !log.contains("alice-pw"));
}

#[tokio::test]
async fn refusals_carry_the_rfc_codes() {
    let d = daemon("");
    let mut ms = Ms::login(&d).await;
    // The size limit, learnt from HAVESPACE, then a literal one octet over it: refused, and the
    // connection goes on.
    let r = ms.cmd("HAVESPACE \"big\" 4294967295").await;
    assert!(r.starts_with("NO (QUOTA/MAXSIZE)"), "{r}");
    let limit: usize = r
        .split("at most ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no limit in {r}"));
    let big = "#".repeat(limit + 1);
    let r = ms.put("big", &big).await;
    assert!(r.starts_with("NO (QUOTA/MAXSIZE)"), "{r}");
    assert!(
        ms.cmd("NOOP \"still-here\"")
            .await
            .starts_with("OK (TAG \"still-here\")")
    );
    // A script that does not compile: the compiler's message.
    let r = ms
        .put("broken", "if headr :is \"x\" \"y\" { keep; }\r\n")
        .await;
    assert!(
        r.starts_with("NO") && r.contains("headr") && r.contains("line 1"),
        "{r}"
    );
    let r = ms
        .cmd("CHECKSCRIPT \"if headr :is \\\"x\\\" \\\"y\\\" { keep; }\"")
        .await;
    assert!(r.starts_with("NO") && r.contains("headr"), "{r}");
    assert!(ms.cmd("CHECKSCRIPT \"keep;\"").await.starts_with("OK"));
    // The active script cannot be deleted.
    assert!(ms.put("a", "keep;\r\n").await.starts_with("OK"));
    assert!(ms.put("b", "stop;\r\n").await.starts_with("OK"));
    assert!(ms.cmd("SETACTIVE \"a\"").await.starts_with("OK"));
    let r = ms.cmd("DELETESCRIPT \"a\"").await;
    assert!(r.starts_with("NO (ACTIVE)"), "{r}");
    let r = ms.cmd("RENAMESCRIPT \"b\" \"a\"").await;
    assert!(r.starts_with("NO (ALREADYEXISTS)"), "{r}");
    let r = ms.cmd("GETSCRIPT \"missing\"").await;
    assert!(r.starts_with("NO (NONEXISTENT)"), "{r}");
    let r = ms.cmd("SETACTIVE \"missing\"").await;
    assert!(r.starts_with("NO (NONEXISTENT)"), "{r}");
    let list = ms.cmd("LISTSCRIPTS").await;
    assert!(
        list.contains("\"a\" ACTIVE") && list.contains("\"b\"") && !list.contains("big"),
        "{list}"
    );
    assert_eq!(
        ms.cmd("GETSCRIPT \"a\"").await,
        "{7}\nkeep;\n\nOK \"getscript completed\""
    );
    // Bad names never reach the store.
    let r = ms.put("../x", "keep;\r\n").await;
    assert!(r.starts_with("NO") && r.contains("../x"), "{r}");
    ms.raw.send(b"PUTSCRIPT {3+}\r\na\x01b \"keep;\"\r\n").await;
    let r = ms.response().await;
    assert!(
        r.starts_with("NO") && r.contains("control character"),
        "{r}"
    );
    let list = ms.cmd("LISTSCRIPTS").await;
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(ms.cmd("LOGOUT").await.starts_with("OK"));
}

#[tokio::test]
async fn garbage_commands_end_in_bye() {
    let d = daemon("[access]\nbad_commands = 3\n");
    let (mut ms, _) = Ms::connect(&d).await;
    assert!(ms.cmd("FROB").await.starts_with("NO \"unknown command"));
    assert!(
        ms.cmd("LISTSCRIPTS")
            .await
            .starts_with("NO \"authenticate first\"")
    );
    let r = ms.cmd("\u{1}\u{2}\u{3}").await;
    assert!(r.starts_with("NO"), "{r}");
    assert_eq!(ms.response().await, "BYE \"too many bad commands\"");
    assert!(ms.raw.closed().await);
}

/// A script uploaded with sieve-connect decides where the next message goes.
#[tokio::test(flavor = "multi_thread")]
async fn a_script_uploaded_with_sieve_connect_files_the_next_message() {
    if !std::path::Path::new(SIEVE_CONNECT).exists() {
        eprintln!("{SIEVE_CONNECT} not found: skipping");
        return;
    }
    let d = daemon("");
    let script = "require [\"fileinto\", \"mailbox\"];\nif header :contains \"subject\" \"[lists]\" { fileinto :create \"Lists\"; }\n";
    std::fs::write(d.dir.path().join("lists.sieve"), script).unwrap();
    let (ok, out) = sieve_connect(
        &d,
        &[
            "--upload",
            "--localsieve",
            "lists.sieve",
            "--remotesieve",
            "lists",
        ],
    );
    assert!(ok, "upload: {out}");
    let (ok, out) = sieve_connect(&d, &["--activate", "--remotesieve", "lists"]);
    assert!(ok, "activate: {out}");
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO remote.test").await;
    let msg =
        "From: <a@remote.test>\r\nTo: <alice@example.test>\r\nSubject: [lists] hello\r\n\r\nx\r\n";
    let (code, text) = c
        .send_message("a@remote.test", "alice@example.test", msg)
        .await;
    assert_eq!(code, 250, "{text}");
    let folder = d.maildir("alice@example.test").join(".Lists").join("new");
    let deadline = Instant::now() + Duration::from_secs(20);
    let count = || std::fs::read_dir(&folder).map(|e| e.count()).unwrap_or(0);
    while count() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count(), 1, "{}", d.log_text());
}
