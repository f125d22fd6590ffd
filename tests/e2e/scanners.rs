//! Real scanners from Debian behind `[[filter]] kind = "milter"`, each started by the test on loopback with
//! its own temporary configuration: rspamd's proxy worker in milter mode (GTUBE refused at end of DATA, a
//! clean message delivered with rspamd's score headers) and clamav-milter with clamd on a signature made
//! here (the test file refused, a clean one delivered). Skipped, and said so, when not installed.

use crate::harness::{Daemon, Raw};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_listening(port: u16, secs: u64, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap()).replace("\r\n", "\n")
}

fn filter(port: u16) -> String {
    format!("[[filter]]\nkind = \"milter\"\naddress = \"127.0.0.1:{port}\"\n")
}

#[tokio::test]
async fn rspamd_over_milter_and_http_refuses_gtube_scores_and_files_spam_into_junk() {
    if !installed("rspamd") {
        eprintln!("rspamd is not installed (apt-get install rspamd): rspamd milter test skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (port, http_port, controller_port, redis_port) =
        (free_port(), free_port(), free_port(), free_port());
    let log = dir.path().join("rspamd.log");
    // Bayes learning keeps its tokens in redis: a private one on loopback, when installed.
    let mut running = Running(Vec::new());
    let bayes = if installed("redis-server") {
        let redis = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--port",
            ])
            .arg(redis_port.to_string())
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        running.0.push(redis);
        wait_listening(redis_port, 20, "redis-server", &log);
        format!(
            "worker \"controller\" {{ bind_socket = \"127.0.0.1:{controller_port}\"; count = 1; secure_ip = \"127.0.0.1\"; }}\n\
             classifier \"bayes\" {{ backend = \"redis\"; servers = \"127.0.0.1:{redis_port}\"; min_learns = 1; tokenizer {{ name = \"osb\"; }} \
             statfile {{ symbol = \"BAYES_HAM\"; spam = false; }} statfile {{ symbol = \"BAYES_SPAM\"; spam = true; }} }}\n"
        )
    } else {
        eprintln!("redis-server is not installed: rspamd training not tested");
        String::new()
    };
    // A configuration of its own: the proxy scans by itself, only the regexp rules and milter_headers are
    // loaded (nothing that reaches the network), DNS goes to a closed loopback port.
    let config = format!(
        r#"options {{
  pidfile = "{d}/rspamd.pid";
  dns {{ nameserver = ["127.0.0.1:9"]; timeout = 1s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "{log}"; level = "info"; }}
worker "rspamd_proxy" {{
  bind_socket = "127.0.0.1:{port}";
  milter = yes;
  timeout = 120s;
  upstream "local" {{ default = yes; self_scan = yes; }}
  count = 1;
}}
worker "normal" {{
  bind_socket = "127.0.0.1:{http_port}";
  count = 1;
}}
actions {{ reject = 15; add_header = 0.9; }}
lua = "/usr/share/rspamd/rules/rspamd.lua";
modules {{ path = "/usr/share/rspamd/plugins/milter_headers.lua"; }}
milter_headers {{ use = ["x-spamd-result", "x-spam-status"]; skip_local = false; }}
{bayes}"#,
        d = dir.path().display(),
        log = log.display()
    );
    std::fs::write(dir.path().join("rspamd.conf"), config).unwrap();
    let mut cmd = Command::new("rspamd");
    cmd.args(["-f", "-i", "-c"])
        .arg(dir.path().join("rspamd.conf"))
        .arg(format!("--var=DBDIR={}", dir.path().display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if is_root() {
        cmd.args(["-u", "root", "-g", "root"]);
    }
    running.0.push(cmd.spawn().expect("start rspamd"));
    wait_listening(port, 90, "rspamd", &log);
    wait_listening(http_port, 30, "rspamd's normal worker", &log);

    let d = Daemon::start(&filter(port));
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO peer.test").await;
    let (code, text) = c
        .send_message(
            "x@remote.test",
            "alice@example.test",
            &format!("From: x@remote.test\r\nSubject: spam\r\n\r\n{GTUBE}\r\n"),
        )
        .await;
    assert_eq!(code, 554, "{text}");
    assert!(text.contains("5.7.1"), "{text}");
    let (code, text) = c
        .send_message(
            "x@remote.test",
            "alice@example.test",
            "From: x@remote.test\r\nSubject: hello\r\nDate: Wed, 2 Dec 2026 01:00:00 +0000\r\nMessage-ID: <clean@remote.test>\r\n\r\nA clean message.\r\n",
        )
        .await;
    assert_eq!(code, 250, "{text}");
    let got = d.wait_delivered("alice@example.test", 1);
    assert_eq!(got.len(), 1, "{}", d.log_text());
    let mail = read(&got[0]);
    assert!(
        mail.contains("\nX-Spamd-Result: default: False ["),
        "{mail}"
    );
    assert!(mail.contains("\nX-Spam-Status: No, score="), "{mail}");
    assert!(
        d.wait_log(&format!("filter=milter:127.0.0.1:{port}:reject")),
        "{}",
        d.log_text()
    );
    drop(d);

    // The same rspamd over its HTTP protocol (/checkv2), trained from IMAP moves through its controller.
    let d = Daemon::start(&format!(
        "[[filter]]\nkind = \"rspamd\"\nurl = \"http://127.0.0.1:{http_port}\"\n\
         controller_url = \"http://127.0.0.1:{controller_port}\"\n\
         [[listener]]\nkind = \"imaps\"\nbind = [\"127.0.0.1:0\"]\n"
    ));
    // alice gets a password, for IMAP.
    crate::harness::tern(d.dir.path(), &["user", "del", "alice@example.test"]);
    crate::harness::add_user_with_password(d.dir.path(), "alice@example.test", "alice-pw");
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO peer.test").await;
    let (code, text) = c
        .send_message(
            "x@remote.test",
            "alice@example.test",
            &format!("From: x@remote.test\r\nSubject: spam\r\n\r\n{GTUBE}\r\n"),
        )
        .await;
    assert_eq!(code / 100, 5, "{text}");
    assert!(text.contains("5.7.1"), "{text}");
    let (code, text) = c
        .send_message(
            "x@remote.test",
            "alice@example.test",
            "From: x@remote.test\r\nSubject: hello\r\nDate: Wed, 2 Dec 2026 01:00:00 +0000\r\nMessage-ID: <clean2@remote.test>\r\n\r\nA clean message.\r\n",
        )
        .await;
    assert_eq!(code, 250, "{text}");
    let got = d.wait_delivered("alice@example.test", 1);
    assert_eq!(got.len(), 1, "{}", d.log_text());
    let mail = read(&got[0]);
    assert!(
        mail.contains("\nX-Spamd-Result: default: False ["),
        "{mail}"
    );
    // Without a Date: field rspamd scores 1.0, over add_header = 0.9: delivered to Junk, marked.
    let (code, text) = c
        .send_message(
            "x@remote.test",
            "alice@example.test",
            "From: x@remote.test\r\nSubject: hello\r\nMessage-ID: <nodate@remote.test>\r\n\r\nNo date.\r\n",
        )
        .await;
    assert_eq!(code, 250, "{text}");
    let junk = d.maildir("alice@example.test").join(".Junk/new");
    let deadline = Instant::now() + Duration::from_secs(20);
    let file = loop {
        if let Some(f) = std::fs::read_dir(&junk)
            .ok()
            .and_then(|mut r| r.next())
            .and_then(|e| e.ok())
        {
            break f.path();
        }
        assert!(
            Instant::now() < deadline,
            "nothing in Junk: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let spam = read(&file);
    assert!(spam.contains("\nX-Spam-Status: Yes, score=1.00"), "{spam}");
    assert!(spam.contains("MISSING_DATE"), "{spam}");
    assert!(
        d.wait_log(&format!(
            "rspamd:127.0.0.1:{http_port}:add_header score=1.00"
        )),
        "{}",
        d.log_text()
    );
    let lines = d.log_text();
    assert!(
        lines.contains(&format!("rspamd:127.0.0.1:{http_port}:reject")),
        "{lines}"
    );
    // Thresholds set in tern decide over rspamd's actions: reject_score 0.5 refuses the score-1.0 message.
    let strict = Daemon::start(&format!(
        "[[filter]]\nkind = \"rspamd\"\nurl = \"http://127.0.0.1:{http_port}\"\nreject_score = 0.5\n"
    ));
    let mut s = Raw::connect(strict.addr).await;
    s.cmd("EHLO peer.test").await;
    let (code, text) = s
        .send_message(
            "x@remote.test",
            "alice@example.test",
            "From: x@remote.test\r\nSubject: hello\r\nMessage-ID: <nodate2@remote.test>\r\n\r\nNo date.\r\n",
        )
        .await;
    assert_eq!(code, 550, "{text}");
    drop(strict);

    // The score reaches Sieve's spamtest (RFC 5235): junk_score = 100 keeps the message out of Junk, and
    // alice's script files spamtest >= 2 (score 1.0 of 15) itself.
    let sieved = Daemon::start(&format!(
        "[[filter]]\nkind = \"rspamd\"\nurl = \"http://127.0.0.1:{http_port}\"\njunk_score = 100.0\n"
    ));
    sieved.activate_sieve(
        "alice@example.test",
        "spam",
        "require [\"spamtest\", \"relational\", \"comparator-i;ascii-numeric\", \"fileinto\", \"mailbox\"];\n\
         if spamtest :value \"ge\" :comparator \"i;ascii-numeric\" \"2\" { fileinto :create \"Spammy\"; }\n",
    );
    let mut s = Raw::connect(sieved.addr).await;
    s.cmd("EHLO peer.test").await;
    let (code, _) = s
        .send_message(
            "x@remote.test",
            "alice@example.test",
            "From: x@remote.test\r\nSubject: hello\r\nMessage-ID: <nodate3@remote.test>\r\n\r\nNo date.\r\n",
        )
        .await;
    assert_eq!(code, 250);
    let spammy = sieved.maildir("alice@example.test").join(".Spammy/new");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&spammy).map(|r| r.count()).unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "spamtest did not file it: {}",
            sieved.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !sieved
            .maildir("alice@example.test")
            .join(".Junk/new")
            .read_dir()
            .is_ok_and(|mut r| r.next().is_some())
    );
    drop(sieved);
    if bayes.is_empty() {
        return;
    }
    // alice moves the clean message into Junk, then the Junk one out: rspamd learns spam, then ham.
    let script = format!(
        "import imaplib, ssl\nctx = ssl.create_default_context()\nctx.check_hostname = False\nctx.verify_mode = ssl.CERT_NONE\n\
         m = imaplib.IMAP4_SSL('127.0.0.1', {}, ssl_context=ctx)\n\
         m.login('alice@example.test', 'alice-pw')\n\
         m.select('INBOX'); print(m.uid('MOVE', '1', 'Junk'))\n\
         m.select('Junk'); print(m.uid('MOVE', '1', 'INBOX'))\n\
         m.logout()\n",
        d.listener("imaps").port()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = d.log_text();
        let learnt = lines
            .lines()
            .filter(|l| l.contains("rspamd trained from a Junk move"))
            .collect::<Vec<_>>();
        if learnt.len() >= 2 {
            assert!(
                learnt
                    .iter()
                    .any(|l| l.contains("learned=\"spam\"") && l.contains("success")),
                "{lines}"
            );
            assert!(
                learnt.iter().any(|l| l.contains("learned=\"ham\"")),
                "{lines}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{lines}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(running);
}

#[tokio::test]
async fn clamav_milter_refuses_a_file_matching_a_local_signature() {
    if !installed("clamav-milter") || !installed("clamd") {
        eprintln!(
            "clamav-milter or clamd is not installed (apt-get install clamav-milter clamav-daemon): test skipped"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d_path = dir.path().display().to_string();
    // A signature database of one hash signature (MD5:size:name) for a test string: no download.
    let payload = format!("tern-clamav-test-{}", std::process::id());
    let digest = {
        let out = Command::new("md5sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(payload.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let db = dir.path().join("db");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(
        db.join("tern.hdb"),
        format!("{digest}:{}:Tern.Test.Signature\n", payload.len()),
    )
    .unwrap();
    let (clamd_port, milter_port) = (free_port(), free_port());
    let user = if is_root() { "root" } else { "" };
    std::fs::write(
        dir.path().join("clamd.conf"),
        format!(
            "Foreground yes\nDatabaseDirectory {d_path}/db\nTCPSocket {clamd_port}\nTCPAddr 127.0.0.1\nLogFile {d_path}/clamd.log\nPidFile {d_path}/clamd.pid\n{}",
            if user.is_empty() { String::new() } else { format!("User {user}\n") }
        ),
    )
    .unwrap();
    let clamd = Command::new("clamd")
        .arg("-c")
        .arg(dir.path().join("clamd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start clamd");
    let mut running = Running(vec![clamd]);
    wait_listening(clamd_port, 60, "clamd", &dir.path().join("clamd.log"));
    clamav_milter(
        &mut running,
        dir.path(),
        "milter",
        milter_port,
        clamd_port,
        "Reject",
    );

    let d = Daemon::start(&filter(milter_port));
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO peer.test").await;
    let infected = format!(
        "From: x@remote.test\r\nSubject: file\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"t.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        base64_encode(payload.as_bytes())
    );
    let (code, text) = c
        .send_message("x@remote.test", "alice@example.test", &infected)
        .await;
    assert_eq!(code / 100, 5, "{text}\n{}", d.log_text());
    let (code, text) = c
        .send_message(
            "x@remote.test",
            "alice@example.test",
            "From: x@remote.test\r\nSubject: clean\r\n\r\nnothing here\r\n",
        )
        .await;
    assert_eq!(code, 250, "{text}");
    let got = d.wait_delivered("alice@example.test", 1);
    assert_eq!(got.len(), 1);
    let mail = read(&got[0]);
    assert!(
        mail.contains("\nX-Virus-Scanned: clamav-milter")
            && mail.contains("\nX-Virus-Status: Clean"),
        "{mail}"
    );
    drop(d);

    // The scanner's verdict is Sieve's virustest (RFC 5235): a second clamav-milter quarantines what it
    // finds; with `virus = true` tern records 5 for that message and 1 for a clean one, and alice's
    // script files each by its value.
    let quarantine_port = free_port();
    clamav_milter(
        &mut running,
        dir.path(),
        "quarantine",
        quarantine_port,
        clamd_port,
        "Quarantine",
    );
    let d = Daemon::start(&format!("{}virus = true\n", filter(quarantine_port)));
    d.activate_sieve(
        "alice@example.test",
        "virus",
        "require [\"virustest\", \"relational\", \"comparator-i;ascii-numeric\", \"fileinto\", \"mailbox\"];\n\
         if virustest :value \"eq\" :comparator \"i;ascii-numeric\" \"5\" { fileinto :create \"Infected\"; stop; }\n\
         if virustest :value \"eq\" :comparator \"i;ascii-numeric\" \"1\" { fileinto :create \"Scanned\"; }\n",
    );
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO peer.test").await;
    let (code, text) = c
        .send_message("x@remote.test", "alice@example.test", &infected)
        .await;
    assert_eq!(code, 250, "{text}");
    let (code, text) = c
        .send_message(
            "x@remote.test",
            "alice@example.test",
            "From: x@remote.test\r\nSubject: clean\r\n\r\nnothing here\r\n",
        )
        .await;
    assert_eq!(code, 250, "{text}");
    let maildir = d.maildir("alice@example.test");
    for (folder, subject) in [
        (".Infected", "Subject: file"),
        (".Scanned", "Subject: clean"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(20);
        let file = loop {
            if let Some(f) = std::fs::read_dir(maildir.join(folder).join("new"))
                .ok()
                .and_then(|mut r| r.next())
            {
                break f.unwrap().path();
            }
            assert!(
                Instant::now() < deadline,
                "nothing in {folder}: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(read(&file).contains(subject), "{folder}");
    }
    assert!(d.wait_log(" virus=5\""), "{}", d.log_text());
    assert!(d.wait_log(" virus=1\""), "{}", d.log_text());
    assert!(d.wait_log("reasons=filter:quarantine"), "{}", d.log_text());
    drop(running);
}

/// A clamav-milter on `port` in front of clamd, doing `on_infected` (Reject, Quarantine...), with its
/// configuration and log named `name` in `dir`; returns once it listens.
fn clamav_milter(
    running: &mut Running,
    dir: &Path,
    name: &str,
    port: u16,
    clamd_port: u16,
    on_infected: &str,
) {
    let d = dir.display();
    let user = if is_root() { "User root\n" } else { "" };
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "Foreground yes\nMilterSocket inet:{port}@127.0.0.1\nClamdSocket tcp:127.0.0.1:{clamd_port}\nOnInfected {on_infected}\nOnFail Defer\nLogFile {d}/{name}.log\nPidFile {d}/{name}.pid\nAddHeader Replace\n{user}"
        ),
    )
    .unwrap();
    let child = Command::new("clamav-milter")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start clamav-milter");
    // Killed with the others even if it never listens.
    running.0.push(child);
    wait_listening(port, 30, "clamav-milter", &dir.join(format!("{name}.log")));
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn spamass_milter_refuses_gtube_and_marks_clean_mail() {
    if !installed("spamass-milter") || !installed("spamd") {
        eprintln!(
            "spamass-milter or spamd is not installed (apt-get install spamass-milter spamassassin): test skipped"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (spamd_port, milter_port) = (free_port(), free_port());
    let log = dir.path().join("spamd.log");
    // -L: local tests only (no DNS, no network checks).
    let mut spamd = Command::new("spamd");
    spamd
        .arg(format!("--listen=127.0.0.1:{spamd_port}"))
        .args(["-L", "--max-children=1", "--syslog"])
        .arg(&log);
    if is_root() {
        spamd.args(["-u", "nobody"]);
    }
    let spamd = spamd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start spamd");
    let mut running = Running(vec![spamd]);
    wait_listening(spamd_port, 90, "spamd", &log);
    let milter = Command::new("spamass-milter")
        .arg("-p")
        .arg(format!("inet:{milter_port}@127.0.0.1"))
        .args(["-r", "5", "--", "-d", "127.0.0.1", "-p"])
        .arg(spamd_port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start spamass-milter");
    running.0.push(milter);
    wait_listening(milter_port, 30, "spamass-milter", &log);

    let d = Daemon::start(&filter(milter_port));
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO peer.test").await;
    let (code, text) = c
        .send_message(
            "x@remote.test",
            "alice@example.test",
            &format!("From: x@remote.test\r\nSubject: spam\r\n\r\n{GTUBE}\r\n"),
        )
        .await;
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("SpamAssassin"), "{text}");
    let (code, text) = c
        .send_message(
            "x@remote.test",
            "alice@example.test",
            "From: x@remote.test\r\nSubject: clean\r\n\r\nnothing much\r\n",
        )
        .await;
    assert_eq!(code, 250, "{text}");
    let got = d.wait_delivered("alice@example.test", 1);
    assert_eq!(got.len(), 1);
    let mail = read(&got[0]);
    assert!(mail.contains("\nX-Spam-Status: No, score="), "{mail}");
    assert!(
        mail.contains("\nX-Spam-Checker-Version: SpamAssassin"),
        "{mail}"
    );
    drop(running);
}
