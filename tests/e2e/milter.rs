//! Content filters over the milter protocol, with a real libmilter filter (Debian's pymilter running
//! tests/fixtures/test_milter.py): rejects at RCPT and MAIL reach the client at that command, end-of-message
//! verdicts and changes (headers, recipients, sender, body, quarantine to Junk) apply before the 250, a
//! filter cannot inject a header field, and a filter that hangs, is down or resets the connection mid-body
//! gives its default_action.

use crate::harness::{Daemon, Raw};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct TestMilter {
    child: Child,
    port: u16,
}

impl Drop for TestMilter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test milter on a free port, once it accepts connections; None when pymilter is not installed.
fn test_milter() -> Option<TestMilter> {
    let has = Command::new("/usr/bin/python3")
        .args(["-c", "import Milter"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        eprintln!(
            "python3-milter is not installed (apt-get install python3-milter): milter tests skipped"
        );
        return None;
    }
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/test_milter.py");
    let child = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the test milter");
    let m = TestMilter { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the test milter did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(m)
}

fn filter(address: &str, extra: &str) -> String {
    format!(
        "[[filter]]\nkind = \"milter\"\naddress = \"{address}\"\ncommand_timeout_secs = 2\n{extra}\n"
    )
}

async fn session(d: &Daemon) -> Raw {
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO peer.test").await;
    c
}

fn message(subject: &str) -> String {
    format!(
        "From: x@remote.test\r\nSubject: {subject}\r\nX-Remove: secret\r\nX-Change: old\r\n\r\nbody line\r\n"
    )
}

/// A delivered message with its line ends as LF (Maildir files use LF).
fn read(path: &std::path::Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap()).replace("\r\n", "\n")
}

#[tokio::test]
async fn milter_verdicts_and_changes_apply_while_the_session_is_open() {
    let Some(m) = test_milter() else { return };
    let d = Daemon::start(&filter(&format!("127.0.0.1:{}", m.port), ""));
    let mut c = session(&d).await;

    // Accepted, with the filter's header changes; the macros reached it.
    let (code, text) = c
        .send_message("x@remote.test", "alice@example.test", &message("hello"))
        .await;
    assert_eq!(code, 250, "{text}");
    let got = d.wait_delivered("alice@example.test", 1);
    assert_eq!(got.len(), 1, "{}", d.log_text());
    let mail = read(&got[0]);
    assert!(mail.contains("X-Milter: seen\n"), "{mail}");
    assert!(mail.contains("X-Milter-Client: 127.0.0.1\n"), "{mail}");
    // The `i` macro at end of message is the queue ID the 250 names.
    let id = text.rsplit(' ').next().unwrap();
    assert!(
        mail.contains(&format!("X-Milter-Queue-Id: {id}\n")),
        "{text}\n{mail}"
    );
    assert!(mail.contains("X-Change: changed\n"), "{mail}");
    assert!(!mail.contains("X-Remove"), "{mail}");
    assert!(mail.ends_with("\nbody line\n"), "{mail}");

    // A reject at RCPT reaches the client at RCPT, with the filter's own words.
    c.cmd("MAIL FROM:<x@remote.test>").await;
    let (code, text) = c.cmd("RCPT TO:<alice+milter-reject@example.test>").await;
    assert_eq!(code, 550, "{text}");
    assert!(
        text.contains("5.7.1") && text.contains("no such luck"),
        "{text}"
    );
    c.cmd("RSET").await;
    // TEMPFAIL at MAIL.
    let (code, text) = c.cmd("MAIL FROM:<tempfail@remote.test>").await;
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("4.7.1"), "{text}");

    // End-of-message REJECT with a reply code: nothing is queued.
    let (code, text) = c
        .send_message("x@remote.test", "alice@example.test", &message("reject me"))
        .await;
    assert_eq!(
        (code, text.contains("5.7.1 spam detected")),
        (554, true),
        "{text}"
    );
    // DISCARD: 250, and nothing delivered.
    let (code, text) = c
        .send_message(
            "x@remote.test",
            "alice@example.test",
            &message("discard me"),
        )
        .await;
    assert_eq!(code, 250, "{text}");
    assert!(d.wait_log("message discarded by a content filter"));

    // Quarantine: delivered to Junk.
    let (code, _) = c
        .send_message(
            "x@remote.test",
            "alice@example.test",
            &message("quarantine me"),
        )
        .await;
    assert_eq!(code, 250);
    let junk = d.maildir("alice@example.test").join(".Junk/new");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&junk).map(|r| r.count()).unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing in Junk: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Recipients and sender changed: alice removed, bob added, the sender replaced.
    let (code, _) = c
        .send_message("x@remote.test", "alice@example.test", &message("add rcpt"))
        .await;
    assert_eq!(code, 250);
    let bob = d.wait_delivered("bob@example.test", 1);
    assert_eq!(bob.len(), 1, "{}", d.log_text());
    assert!(
        read(&bob[0]).starts_with("Return-Path: <changed@remote.test>"),
        "{}",
        read(&bob[0])
    );
    assert_eq!(d.delivered("alice@example.test").len(), 1);

    // The body replaced.
    let (code, _) = c
        .send_message(
            "x@remote.test",
            "bob@example.test",
            &message("replace body"),
        )
        .await;
    assert_eq!(code, 250);
    let bob = d.wait_delivered("bob@example.test", 2);
    let newest = bob
        .iter()
        .map(|p| read(p))
        .find(|m| m.contains("replace body"))
        .expect("replaced");
    assert!(newest.ends_with("\n\nnew body\n"), "{newest}");

    // A header value cannot smuggle a field in.
    let (code, _) = c
        .send_message("x@remote.test", "bob@example.test", &message("inject"))
        .await;
    assert_eq!(code, 250);
    let bob = d.wait_delivered("bob@example.test", 3);
    let injected = bob
        .iter()
        .map(|p| read(p))
        .find(|m| m.contains("Subject: inject"))
        .expect("inject");
    assert!(
        injected.contains("X-Inject: a Bcc: evil@remote.test\n"),
        "{injected}"
    );
    assert!(!injected.contains("\nBcc:"), "{injected}");

    // A filter that hangs past command_timeout: 451 (default_action tempfail), said in the log; the
    // session's later messages get the same answer rather than passing unfiltered.
    let started = Instant::now();
    let (code, text) = c
        .send_message("x@remote.test", "alice@example.test", &message("hang"))
        .await;
    assert_eq!(code, 451, "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(d.wait_log("content filter failed"));
    let (code, _) = c.cmd("MAIL FROM:<x@remote.test>").await;
    assert_eq!(code, 451);
    assert!(d.log_text().contains("filter=milter:127.0.0.1"));
}

#[tokio::test]
async fn a_filter_that_is_down_gives_its_default_action() {
    let closed = free_port();
    let d = Daemon::start(&filter(&format!("127.0.0.1:{closed}"), ""));
    let mut c = session(&d).await;
    let (code, text) = c.cmd("MAIL FROM:<x@remote.test>").await;
    assert_eq!(code, 451, "{text}");
    assert!(d.wait_log("content filter failed"));
    assert!(
        d.log_text().contains("default_action=\"tempfail\"")
            || d.log_text().contains("default_action=tempfail"),
        "{}",
        d.log_text()
    );

    let d = Daemon::start(&filter(
        &format!("127.0.0.1:{closed}"),
        "default_action = \"accept\"",
    ));
    let mut c = session(&d).await;
    let (code, text) = c
        .send_message(
            "x@remote.test",
            "alice@example.test",
            "Subject: x\r\n\r\ny\r\n",
        )
        .await;
    assert_eq!(code, 250, "{text}");
    assert!(d.wait_log("content filter failed"));
    assert!(d.wait_log(":skipped"), "{}", d.log_text());

    let d = Daemon::start(&filter(
        &format!("127.0.0.1:{closed}"),
        "default_action = \"reject\"",
    ));
    let mut c = session(&d).await;
    let (code, _) = c.cmd("MAIL FROM:<x@remote.test>").await;
    assert_eq!(code, 550);

    // rspamd over HTTP, down: its default action at the end of DATA, asked again for the next message.
    let d = Daemon::start(&format!(
        "[[filter]]\nkind = \"rspamd\"\nurl = \"http://127.0.0.1:{closed}\"\n"
    ));
    let mut c = session(&d).await;
    for _ in 0..2 {
        c.cmd("MAIL FROM:<x@remote.test>").await;
        c.cmd("RCPT TO:<alice@example.test>").await;
        c.cmd("DATA").await;
        c.send(b"Subject: x\r\n\r\ny\r\n.\r\n").await;
        let (code, text) = c.reply().await;
        assert_eq!(code, 451, "{text}");
    }
    // The log is read as the daemon writes it: wait (bounded) for both lines.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.log_text().matches("content filter failed").count() < 2 {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A filter written here on raw packets: it negotiates, answers "continue" to every step, and after the
/// first body chunk resets the connection (RST: SO_LINGER 0). Returns its address; each connection is served
/// by its own task, at most `connections` of them.
async fn resetting_milter(connections: usize) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..connections {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let reply = |code: u8, data: &[u8]| {
                    let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
                    p.push(code);
                    p.extend_from_slice(data);
                    p
                };
                // Bounded: a session of a few messages is far fewer packets.
                for _ in 0..10_000 {
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut packet = vec![0u8; u32::from_be_bytes(len) as usize];
                    if s.read_exact(&mut packet).await.is_err() {
                        return;
                    }
                    let answer = match packet.first() {
                        // Version 6, no actions, every step sent and answered.
                        Some(b'O') => reply(b'O', &[0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]),
                        Some(b'B') => {
                            let _ = s.set_zero_linger();
                            return;
                        }
                        // Macros and abort get no answer; quit ends the session.
                        Some(b'D' | b'A') => continue,
                        Some(b'Q') | None => return,
                        Some(_) => reply(b'c', b""),
                    };
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_filter_that_resets_mid_body_gives_its_default_action_and_nothing_is_half_delivered() {
    // A body of several 64 KiB chunks: the filter is gone while tern is still sending it.
    let big: String = (0..3000)
        .map(|i| {
            format!("line {i:05} of a body long enough for several chunks of the milter body\r\n")
        })
        .collect();
    let content = format!("From: x@remote.test\r\nSubject: big\r\n\r\n{big}");
    let addr = resetting_milter(4).await;
    let d = Daemon::start(&filter(&addr.to_string(), ""));
    let mut c = session(&d).await;
    let (code, text) = c
        .send_message("x@remote.test", "alice@example.test", &content)
        .await;
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("4.7.1"), "{text}");
    assert!(d.wait_log("content filter failed"), "{}", d.log_text());
    assert!(d.log_text().contains("stage=\"eom\"") || d.log_text().contains("stage=eom"));
    // The failed filter's default action holds for the rest of the session: nothing goes in unfiltered.
    let (code, text) = c.cmd("MAIL FROM:<x@remote.test>").await;
    assert_eq!(code, 451, "{text}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.delivered("alice@example.test").is_empty());

    // With default_action = "accept" the message goes through, and the log line says the filter failed.
    let d = Daemon::start(&filter(&addr.to_string(), "default_action = \"accept\""));
    let mut c = session(&d).await;
    let (code, text) = c
        .send_message("x@remote.test", "alice@example.test", &content)
        .await;
    assert_eq!(code, 250, "{text}");
    let got = d.wait_delivered("alice@example.test", 1);
    assert_eq!(got.len(), 1);
    assert!(
        read(&got[0]).contains("line 02999 of a body"),
        "whole message delivered"
    );
    assert!(d.wait_log(":failed"), "{}", d.log_text());
}
