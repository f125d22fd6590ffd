//! The outbound MTA against an in-process authoritative DNS server and receiving peers on 127.0.0.x: a
//! second tern and minimal sinks that answer as each test needs.

use crate::dns::{Rr, TestDns};
use crate::harness::{Daemon, TERN, run_sendmail, tern};
use crate::sink::{Behaviour, sinks};
use std::path::Path;
use std::time::{Duration, Instant};

/// A sending daemon for example.test resolving through `dns`, MX hosts on `port`.
pub(crate) fn sender(dns: TestDns, port: u16, extra: &str) -> Daemon {
    let mut d = Daemon::start_with_dns(&format!(
        "[delivery]\nremote_port = {port}\nallow_private_addresses = true\n{extra}\n{}",
        dns.config()
    ));
    d.dns = Some(dns);
    d
}

/// alice@example.test sends a message to `to` through `tern sendmail`.
pub(crate) fn send(d: &Daemon, to: &[&str], subject: &str) {
    send_raw(
        d,
        to,
        &format!(
            "From: Alice <alice@example.test>\nTo: {}\nSubject: {subject}\n\nHello from tern.\n.dot line\n",
            to.join(", ")
        ),
    );
}

pub(crate) fn send_raw(d: &Daemon, to: &[&str], msg: &str) {
    let mut args = vec!["sendmail", "-i", "-f", "alice@example.test"];
    args.extend_from_slice(to);
    let out = run_sendmail(
        Path::new(TERN),
        &d.dir.path().join("tern.toml"),
        &args,
        msg.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub(crate) fn queue_list(d: &Daemon) -> String {
    String::from_utf8_lossy(&tern(d.dir.path(), &["queue", "list"]).stdout).to_string()
}

/// Waits (bounded) for `pred` on `tern queue list`.
pub(crate) fn wait_queue(d: &Daemon, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = queue_list(d);
        if pred(&list) || Instant::now() > deadline {
            return list;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The DSNs in alice's Maildir, once there are `n`.
pub(crate) fn dsns(d: &Daemon, n: usize) -> Vec<String> {
    d.wait_delivered("alice@example.test", n)
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect()
}

#[test]
fn delivers_via_the_mx_to_a_second_tern_over_starttls() {
    let dns = TestDns::start(vec![
        Rr::Mx("peer.test", 10, "mx.peer.test"),
        Rr::A("mx.peer.test", "127.0.0.2"),
    ]);
    let peer_extra = format!(
        "[[listener]]\nkind = \"relay\"\nbind = [\"127.0.0.2:0\"]\n[domains]\nlocal = [\"peer.test\"]\npostmaster = \"carol@peer.test\"\n{}",
        dns.config()
    );
    let peer = Daemon::start_with_dns(&peer_extra);
    assert!(
        tern(peer.dir.path(), &["user", "add", "carol@peer.test"])
            .status
            .success()
    );
    let port = peer
        .listeners
        .iter()
        .find(|(_, a)| a.ip().to_string() == "127.0.0.2")
        .unwrap()
        .1
        .port();
    let d = sender(dns, port, "");
    send(&d, &["carol@peer.test"], "across the wire");
    let files = peer.wait_delivered("carol@peer.test", 1);
    assert_eq!(files.len(), 1, "{}", d.log_text());
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.starts_with("Return-Path: <alice@example.test>\n"),
        "{text}"
    );
    assert!(
        text.contains("with ESMTPS id"),
        "STARTTLS used between the two: {text}"
    );
    assert_eq!(
        text.matches("Received: ").count(),
        2,
        "the sender's and the peer's Received: {text}"
    );
    assert!(text.contains("\n.dot line\n"), "{text}");
    // The peer has the message a moment before the sender logs its delivery.
    d.wait_log("relay=\"mx.peer.test[127.0.0.2]");
    let log = d.log_text();
    assert!(
        log.contains("status=\"sent\"") && log.contains("relay=\"mx.peer.test[127.0.0.2]"),
        "{log}"
    );
    assert!(wait_queue(&d, |l| l.contains("queue is empty")).contains("queue is empty"));
}

#[test]
fn falls_back_to_the_second_mx_when_the_first_refuses_connections() {
    // mx1 is 127.0.0.2 where nothing listens on the sinks' port; mx2 is a sink on 127.0.0.3.
    let s = sinks(vec![Behaviour::default(), Behaviour::default()]);
    let port = s[0].addr.port();
    let dns = TestDns::start(vec![
        Rr::Mx("far.test", 10, "mx1.far.test"),
        Rr::Mx("far.test", 20, "mx2.far.test"),
        Rr::A("mx1.far.test", "127.0.0.4"),
        Rr::A("mx2.far.test", "127.0.0.3"),
    ]);
    let d = sender(dns, port, "");
    send(&d, &["dave@far.test"], "fallback");
    let got = s[1].wait(1);
    assert_eq!(got.len(), 1, "{}", d.log_text());
    assert_eq!(got[0].rcpt_to, ["dave@far.test"]);
    assert_eq!(got[0].mail_from, "alice@example.test");
    assert!(d.log_text().contains("trying the next MX"));
}

#[test]
fn implicit_mx_null_mx_and_nxdomain() {
    let s = sinks(vec![Behaviour::default()]);
    let dns = TestDns::start(vec![
        Rr::A("plain.test", "127.0.0.2"),
        Rr::Mx("nomail.test", 0, "."),
    ]);
    let d = sender(dns, s[0].addr.port(), "");
    send(&d, &["erin@plain.test"], "implicit");
    assert_eq!(
        s[0].wait(1).len(),
        1,
        "implicit MX: the domain's own address"
    );
    send(&d, &["frank@nomail.test"], "null");
    send(&d, &["gina@nowhere.test"], "nxdomain");
    let reports = dsns(&d, 2);
    let null = reports
        .iter()
        .find(|r| r.contains("frank@nomail.test"))
        .expect("null MX DSN");
    assert!(
        null.contains("Status: 5.1.10") && null.contains("null MX"),
        "{null}"
    );
    let nx = reports
        .iter()
        .find(|r| r.contains("gina@nowhere.test"))
        .expect("NXDOMAIN DSN");
    assert!(
        nx.contains("Action: failed") && nx.contains("Status: 5.1.2"),
        "{nx}"
    );
    assert!(
        nx.starts_with("Return-Path: <>\n"),
        "bounces use the null reverse-path: {nx}"
    );
}

#[test]
fn temporary_failure_then_success_on_flush() {
    let s = sinks(vec![Behaviour {
        fail_data: 1,
        ..Default::default()
    }]);
    let dns = TestDns::start(vec![
        Rr::Mx("slow.test", 10, "mx.slow.test"),
        Rr::A("mx.slow.test", "127.0.0.2"),
    ]);
    let d = sender(dns, s[0].addr.port(), "");
    send(&d, &["hank@slow.test"], "retry me");
    let list = wait_queue(&d, |l| l.contains("attempts 1"));
    assert!(
        list.contains("queued   remote <hank@slow.test> attempts 1") && list.contains("451 4.3.0"),
        "{list}"
    );
    assert!(s[0].messages().is_empty());
    // No waiting for the backoff: the administrator retries now.
    let out = tern(d.dir.path(), &["queue", "flush"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s[0].wait(1).len(), 1);
    assert!(wait_queue(&d, |l| l.contains("queue is empty")).contains("queue is empty"));
}

#[test]
fn one_of_two_recipients_refused_gets_a_dsn_with_the_remote_reply() {
    let s = sinks(vec![Behaviour::default()]);
    let dns = TestDns::start(vec![
        Rr::Mx("mixed.test", 10, "mx.mixed.test"),
        Rr::A("mx.mixed.test", "127.0.0.2"),
    ]);
    let d = sender(dns, s[0].addr.port(), "");
    send(&d, &["ok@mixed.test", "reject@mixed.test"], "one bad");
    let got = s[0].wait(1);
    assert_eq!(got[0].rcpt_to, ["ok@mixed.test"]);
    let dsn = &dsns(&d, 1)[0];
    for want in [
        "Subject: Undelivered Mail Returned to Sender",
        "Content-Type: multipart/report; report-type=delivery-status;",
        "Reporting-MTA: dns; mx.example.test",
        "Final-Recipient: rfc822; reject@mixed.test",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; mx.mixed.test[127.0.0.2]",
        "Diagnostic-Code: smtp; 550 5.1.1 no such user here",
        "Subject: one bad",
    ] {
        assert!(dsn.contains(want), "missing {want:?}:\n{dsn}");
    }
    assert!(!dsn.contains("Final-Recipient: rfc822; ok@mixed.test"));
    assert!(
        !dsn.contains("Hello from tern"),
        "headers only without RET=FULL"
    );
}

#[test]
fn expiry_bounces_and_the_delay_dsn_is_sent_once() {
    // Nothing listens: every attempt is a temporary failure.
    let dns = TestDns::start(vec![Rr::A("down.test", "127.0.0.2")]);
    let d = sender(dns, 9, "delay_warning_secs = 0\n");
    send(&d, &["ivy@down.test"], "still trying");
    let delay = &dsns(&d, 1)[0];
    assert!(
        delay.contains("Action: delayed") && delay.contains("Subject: Delayed Mail"),
        "{delay}"
    );
    tern(d.dir.path(), &["queue", "flush"]);
    let list = wait_queue(&d, |l| l.contains("attempts 2"));
    assert!(list.contains("attempts 2"), "{list}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        d.delivered("alice@example.test").len(),
        1,
        "one delay DSN at most"
    );

    let dns = TestDns::start(vec![Rr::A("down.test", "127.0.0.2")]);
    let d = sender(dns, 9, "[queue]\nmax_lifetime_secs = 0\n");
    send(&d, &["jack@down.test"], "expires");
    let bounce = &dsns(&d, 1)[0];
    assert!(
        bounce.contains("Action: failed") && bounce.contains("Status: 5.4.7"),
        "{bounce}"
    );
    // Every recipient is final: the message leaves the queue (its body no longer kept).
    let list = wait_queue(&d, |l| !l.contains("jack@down.test"));
    assert!(!list.contains("jack@down.test"), "{list}");
}

#[test]
fn starttls_is_used_when_offered() {
    let s = sinks(vec![Behaviour {
        starttls: true,
        ..Default::default()
    }]);
    let dns = TestDns::start(vec![
        Rr::Mx("secure.test", 10, "mx.secure.test"),
        Rr::A("mx.secure.test", "127.0.0.2"),
    ]);
    let d = sender(dns, s[0].addr.port(), "");
    send(&d, &["kim@secure.test"], "private");
    let got = s[0].wait(1);
    assert!(
        got[0].tls,
        "sent in the clear although STARTTLS was offered"
    );
    // The delivery line is written after the sink has the message: wait for it.
    assert!(d.wait_log("TLSv1.3"), "{}", d.log_text());
}

#[test]
fn require_tls_policy_defers_when_tls_is_not_offered() {
    let s = sinks(vec![Behaviour::default()]);
    let dns = TestDns::start(vec![Rr::A("strict.test", "127.0.0.2")]);
    let d = sender(
        dns,
        s[0].addr.port(),
        "[delivery.tls_policy]\n\"strict.test\" = \"require-tls\"\n",
    );
    send(&d, &["lee@strict.test"], "must be private");
    let list = wait_queue(&d, |l| l.contains("attempts 1"));
    assert!(list.contains("4.7.5 TLS is required"), "{list}");
    assert!(s[0].messages().is_empty());
}

#[test]
fn loops_bounce_instead_of_being_sent() {
    // We are the best MX of a domain that is not ours (RFC 5321 5.1): nothing better to relay to, and a DNS
    // mistake that may be mended: deferred, not bounced. A better MX is used; a worse one is dropped.
    let s = sinks(vec![Behaviour::default()]);
    let dns = TestDns::start(vec![
        Rr::Mx("self.test", 10, "mx.example.test"),
        Rr::Mx("self.test", 20, "mx.other.test"),
        Rr::Mx("better.test", 5, "mx.other.test"),
        Rr::Mx("better.test", 10, "mx.example.test"),
        Rr::A("mx.other.test", "127.0.0.2"),
    ]);
    let d = sender(dns, s[0].addr.port(), "");
    send(&d, &["x@self.test"], "loop");
    let list = wait_queue(&d, |l| l.contains("4.4.6"));
    assert!(
        list.contains("4.4.6") && list.contains("loops back to myself"),
        "{list}"
    );
    assert!(s[0].messages().is_empty(), "the worse MX must not be used");
    send(&d, &["z@better.test"], "via the better MX");
    assert_eq!(s[0].wait(1).len(), 1);
    let mut hops = String::new();
    for i in 0..51 {
        hops.push_str(&format!(
            "Received: from hop{i}.test by hop{}.test; Mon, 23 Nov 2026 10:00:00 +0000\n",
            i + 1
        ));
    }
    send_raw(
        &d,
        &["y@self.test"],
        &format!("{hops}From: alice@example.test\nSubject: hops\n\nx\n"),
    );
    let reports = dsns(&d, 1);
    assert!(
        reports.iter().any(|r| r.contains("Status: 5.4.14")),
        "{reports:?}"
    );
}

#[test]
fn many_messages_to_one_domain_reuse_connections_within_the_limit() {
    let s = sinks(vec![Behaviour::default()]);
    let dns = TestDns::start(vec![Rr::A("busy.test", "127.0.0.2")]);
    let d = sender(dns, s[0].addr.port(), "per_destination = 2\n");
    for i in 0..20 {
        send(&d, &[&format!("user{i}@busy.test")], &format!("n{i}"));
    }
    assert_eq!(s[0].wait(20).len(), 20);
    let st = &s[0].state;
    let max_open = st.max_open.load(std::sync::atomic::Ordering::SeqCst);
    let connections = st.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(max_open <= 2, "{max_open} connections at once, limit 2");
    assert!(
        connections < 20,
        "{connections} connections for 20 messages: none reused"
    );
}

#[test]
fn queue_commands_show_delete_and_bounce() {
    let dns = TestDns::start(vec![Rr::A("down.test", "127.0.0.2")]);
    let d = sender(dns, 9, "");
    send(&d, &["a@down.test"], "to delete");
    send(&d, &["b@down.test"], "to bounce");
    let list = wait_queue(&d, |l| l.matches("attempts 1").count() == 2);
    let ids: Vec<String> = list
        .lines()
        .filter(|l| !l.starts_with(' '))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    let show = String::from_utf8_lossy(&tern(d.dir.path(), &["queue", "show", &ids[0]]).stdout)
        .to_string();
    assert!(
        show.contains("sender:    <alice@example.test>") && show.contains("<a@down.test>"),
        "{show}"
    );
    assert!(
        tern(d.dir.path(), &["queue", "delete", &ids[0]])
            .status
            .success()
    );
    let out = tern(d.dir.path(), &["queue", "bounce", &ids[1]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bounce = &dsns(&d, 1)[0];
    assert!(
        bounce.contains("b@down.test")
            && bounce.contains("returned to sender by the administrator"),
        "{bounce}"
    );
    assert!(!bounce.contains("a@down.test"));
    let out = tern(d.dir.path(), &["queue", "delete", "00000000000000"]);
    assert!(!out.status.success());
}

/// Verifies a received message's DKIM signature with mail-auth against the test DNS.
async fn dkim_passes(dns: std::net::SocketAddr, message: &str) -> bool {
    dkim_results(dns, message).await.iter().all(|r| r == "Pass")
        && !dkim_results(dns, message).await.is_empty()
}

async fn dkim_results(dns: std::net::SocketAddr, message: &str) -> Vec<String> {
    use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
    let resolver = tern::dns::Dns::new(Some(&[dns]))
        .unwrap()
        .resolver()
        .clone();
    let authenticator = MessageAuthenticator(resolver);
    let parsed = AuthenticatedMessage::parse(message.as_bytes()).expect("parsable message");
    let results = authenticator.verify_dkim(&parsed).await;
    results
        .iter()
        .map(|r| {
            if r.result() == &DkimResult::Pass {
                "Pass".to_string()
            } else {
                format!("{:?}", r.result())
            }
        })
        .collect()
}

/// python3-dkim's verdict, where Debian's python3-dkim is installed (CI installs it).
fn python_dkim_verdict(message: &str, selector_domain: &str, txt: &str) -> Option<bool> {
    let python = Path::new("/usr/bin/python3");
    let ok = python.exists()
        && std::process::Command::new(python)
            .args(["-c", "import dkim"])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("python3-dkim not installed: skipping the independent DKIM check");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("msg.eml"), message).unwrap();
    std::fs::write(dir.path().join("key.txt"), txt).unwrap();
    let script = format!(
        "import dkim,sys\nmsg=open(sys.argv[1],'rb').read()\ntxt=open(sys.argv[2],'rb').read()\n\
         def dns(name, timeout=5):\n    return txt if name.decode().rstrip('.')=='{selector_domain}' else None\n\
         print(dkim.verify(msg, dnsfunc=dns))\n"
    );
    let out = std::process::Command::new(python)
        .args(["-c", &script])
        .arg(dir.path().join("msg.eml"))
        .arg(dir.path().join("key.txt"))
        .output()
        .unwrap();
    Some(String::from_utf8_lossy(&out.stdout).trim() == "True")
}

/// The TXT record `tern dkim generate` printed, its character-strings joined.
fn printed_txt(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.contains("IN TXT"))
        .expect("TXT record printed");
    // Zone text: one or more quoted character-strings.
    line.split('"').skip(1).step_by(2).collect()
}

/// `tern dkim generate` for `domain` (selector s1), its TXT record published in the test DNS; returns it.
fn dkim_key(d: &Daemon, domain: &str, algorithm: &str) -> String {
    let out = tern(
        d.dir.path(),
        &[
            "dkim",
            "generate",
            "--domain",
            domain,
            "--selector",
            "s1",
            "--algorithm",
            algorithm,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let txt = printed_txt(&String::from_utf8_lossy(&out.stdout));
    assert!(
        txt.starts_with(&format!("v=DKIM1; k={algorithm}; p=")),
        "{txt}"
    );
    d.dns
        .as_ref()
        .unwrap()
        .add(Rr::Txt(format!("s1._domainkey.{domain}"), txt.clone()));
    let out = tern(
        d.dir.path(),
        &["dkim", "activate", "--domain", domain, "s1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    txt
}

/// Rotation: a generated key waits until activated (publish first, then sign), `tern dkim list` shows
/// each key's state and record, and activation switches the running daemon without a restart.
#[tokio::test]
async fn a_new_dkim_key_signs_only_once_activated() {
    let s = sinks(vec![Behaviour::default()]);
    let dns = TestDns::start(vec![Rr::A("sig.test", "127.0.0.2")]);
    let dns_addr = dns.addr;
    let d = sender(dns, s[0].addr.port(), "");
    // Generated but not active: mail goes unsigned.
    let out = tern(
        d.dir.path(),
        &[
            "dkim",
            "generate",
            "--domain",
            "example.test",
            "--selector",
            "s1",
            "--algorithm",
            "ed25519",
        ],
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && said.contains("tern dkim activate --domain example.test s1"),
        "{said}"
    );
    let txt1 = printed_txt(&said);
    send(&d, &["rcpt@sig.test"], "before activation");
    let got = s[0].wait(1);
    assert!(!got[0].data.contains("DKIM-Signature:"), "{}", got[0].data);
    // Activated s1, then s2 generated: s1 keeps signing while s2's record propagates.
    d.dns
        .as_ref()
        .unwrap()
        .add(Rr::Txt("s1._domainkey.example.test".into(), txt1.clone()));
    let out = tern(
        d.dir.path(),
        &["dkim", "activate", "--domain", "example.test", "s1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tern(
        d.dir.path(),
        &[
            "dkim",
            "generate",
            "--domain",
            "example.test",
            "--selector",
            "s2",
            "--algorithm",
            "rsa",
        ],
    );
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let txt2 = printed_txt(&said);
    send(&d, &["rcpt@sig.test"], "after rotation started");
    let got = s[0].wait(2);
    assert!(got[1].data.contains("s=s1;"), "{}", got[1].data);
    assert!(dkim_passes(dns_addr, &got[1].data).await);
    // The list: s1 active, s2 pending, each with the record it needs.
    let out = tern(d.dir.path(), &["dkim", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let state = |sel: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|k| k["selector"] == sel)
            .map(|k| {
                (
                    k["state"].as_str().unwrap().to_string(),
                    k["record"].as_str().unwrap().to_string(),
                )
            })
            .unwrap()
    };
    assert_eq!(state("s1"), ("active".to_string(), txt1.clone()));
    assert_eq!(state("s2"), ("pending".to_string(), txt2.clone()));
    // Activating a selector with no key is refused and changes nothing.
    let out = tern(
        d.dir.path(),
        &["dkim", "activate", "--domain", "example.test", "s3"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("s3.pem"));
    // s2 published and activated: the next message is signed with it, no restart.
    d.dns
        .as_ref()
        .unwrap()
        .add(Rr::Txt("s2._domainkey.example.test".into(), txt2));
    let out = tern(
        d.dir.path(),
        &["dkim", "activate", "--domain", "example.test", "s2"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    send(&d, &["rcpt@sig.test"], "after activation of s2");
    let got = s[0].wait(3);
    assert!(got[2].data.contains("s=s2;"), "{}", got[2].data);
    assert!(dkim_passes(dns_addr, &got[2].data).await);
}

#[tokio::test]
async fn dkim_signatures_verify_for_ed25519_and_rsa_keys() {
    let s = sinks(vec![Behaviour::default()]);
    let dns = TestDns::start(vec![Rr::A("sig.test", "127.0.0.2")]);
    let dns_addr = dns.addr;
    let d = sender(dns, s[0].addr.port(), "");
    let mut records = Vec::new();
    for (domain, algorithm) in [("example.test", "ed25519"), ("example.org", "rsa")] {
        let txt = dkim_key(&d, domain, algorithm);
        records.push((domain, txt));
    }
    // A second key for a domain must not overwrite the first.
    assert!(
        !tern(
            d.dir.path(),
            &[
                "dkim",
                "generate",
                "--domain",
                "example.test",
                "--selector",
                "s1"
            ]
        )
        .status
        .success()
    );

    send(&d, &["rcpt@sig.test"], "signed with ed25519");
    send_raw(
        &d,
        &["rcpt@sig.test"],
        "From: Alice <alice@example.org>\nSubject: signed with rsa\n\nbody\n",
    );
    let got = s[0].wait(2);
    assert_eq!(got.len(), 2);
    for (domain, txt) in &records {
        let msg = got
            .iter()
            .find(|m| m.data.contains(&format!("d={domain};")))
            .expect("a message signed for the domain");
        assert!(msg.data.starts_with("DKIM-Signature: "), "{}", msg.data);
        assert!(msg.data.contains("s=s1"), "{}", msg.data);
        let verdict = dkim_results(dns_addr, &msg.data).await;
        assert!(
            dkim_passes(dns_addr, &msg.data).await,
            "mail-auth does not verify ({verdict:?}):\n{}",
            msg.data
        );
        if let Some(verdict) =
            python_dkim_verdict(&msg.data, &format!("s1._domainkey.{domain}"), txt)
        {
            assert!(verdict, "python3-dkim does not verify:\n{}", msg.data);
        }
        // Altered in transit: the signature must fail.
        let tampered = msg
            .data
            .replace("Hello from tern.", "Hello from someone else.")
            .replace("body", "b0dy");
        assert!(!dkim_passes(dns_addr, &tampered).await);
    }
}

#[test]
fn a_stuck_domain_does_not_hold_the_connections_other_domains_need() {
    // stuck.test's server never answers the final dot (within this test); fast.test answers at once.
    let s = sinks(vec![
        Behaviour {
            stall_secs: 55,
            ..Default::default()
        },
        Behaviour::default(),
    ]);
    let dns = TestDns::start(vec![
        Rr::A("stuck.test", "127.0.0.2"),
        Rr::A("fast.test", "127.0.0.3"),
    ]);
    // Two connections in all, one per domain: without domain-first ordering the queued stuck.test jobs
    // take both global connections while they wait for stuck.test's one slot.
    let d = sender(
        dns,
        s[0].addr.port(),
        "max_connections = 2\nper_destination = 1\n",
    );
    for i in 0..4 {
        send(&d, &[&format!("u{i}@stuck.test")], &format!("stuck {i}"));
    }
    send(&d, &["kim@fast.test"], "fast");
    assert_eq!(
        s[1].wait(1).len(),
        1,
        "fast.test waited behind stuck.test: {}",
        d.log_text()
    );
    assert!(s[0].messages().is_empty());
}

/// A smarthost: a second tern's submission listener (STARTTLS, then AUTH) as the relay for relay.test.
fn smarthost() -> Daemon {
    let dns = TestDns::start(Vec::new());
    let mut relay = Daemon::start_with_dns(&format!(
        "[domains]\nlocal = [\"relay.test\"]\npostmaster = \"carol@relay.test\"\n\
         [[listener]]\nkind = \"submission\"\nbind = [\"127.0.0.1:0\"]\n{}",
        dns.config()
    ));
    relay.dns = Some(dns);
    crate::harness::add_user_with_password(relay.dir.path(), "bob@relay.test", "bob-relay-pw");
    let out = tern(
        relay.dir.path(),
        &["user", "set", "bob@relay.test", "--sender-policy", "any"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tern(relay.dir.path(), &["user", "add", "carol@relay.test"]);
    assert!(out.status.success());
    relay
}

/// `[[transport]] relay = "lmtp:..."`: mail for a domain goes to an LMTP server (a second tern's LMTP
/// listener here) over its Unix socket or TCP, and each recipient gets its own reply after the data: one
/// delivered, one over quota and bounced, in the same transaction.
#[test]
fn lmtp_transports_deliver_with_a_reply_per_recipient() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("lmtp.sock");
    let dns = TestDns::start(Vec::new());
    let mut peer = Daemon::start_with_dns(&format!(
        "[domains]\nlocal = [\"peer.test\", \"peer.org\"]\npostmaster = \"carol@peer.test\"\n\
         [[listener]]\nkind = \"lmtp\"\nbind = [\"127.0.0.1:0\", \"unix:{}\"]\n{}",
        sock.display(),
        dns.config()
    ));
    peer.dns = Some(dns);
    for u in ["carol@peer.test", "dave@peer.test", "erin@peer.org"] {
        assert!(tern(peer.dir.path(), &["user", "add", u]).status.success());
    }
    // Dave's quota cannot hold the message: his reply after the data is a 5xx, Carol's a 250.
    assert!(
        tern(
            peer.dir.path(),
            &["user", "set-quota", "dave@peer.test", "--bytes", "50"]
        )
        .status
        .success()
    );
    let d = sender(
        TestDns::start(Vec::new()),
        25,
        &format!(
            "[[transport]]\ndomains = [\"peer.test\"]\nrelay = \"lmtp:unix:{}\"\n\
             [[transport]]\ndomains = [\"peer.org\"]\nrelay = \"lmtp:127.0.0.1:{}\"\n",
            sock.display(),
            peer.listener("lmtp").port()
        ),
    );
    send(&d, &["carol@peer.test", "dave@peer.test"], "over lmtp");
    send(&d, &["erin@peer.org"], "over lmtp tcp");
    assert_eq!(
        peer.wait_delivered("carol@peer.test", 1).len(),
        1,
        "{}",
        d.log_text()
    );
    assert_eq!(
        peer.wait_delivered("erin@peer.org", 1).len(),
        1,
        "{}",
        d.log_text()
    );
    let got = std::fs::read_to_string(&peer.delivered("carol@peer.test")[0]).unwrap();
    assert!(
        got.contains("Subject: over lmtp") && got.contains("Hello from tern."),
        "{got}"
    );
    // Dave's reply: the message can never fit his quota (552 5.2.2), so he bounces alone; Carol is
    // delivered from the same transaction.
    let dsn = dsns(&d, 1).remove(0);
    assert!(
        dsn.contains("Final-Recipient: rfc822; dave@peer.test")
            && dsn.contains("Status: 5.2.2")
            && !dsn.contains("Final-Recipient: rfc822; carol@peer.test"),
        "{dsn}"
    );
    let list = wait_queue(&d, |l| l.contains("queue is empty"));
    assert!(list.contains("queue is empty"), "{list}");
    assert!(peer.delivered("dave@peer.test").is_empty());
    let log = d.log_text();
    assert!(
        log.matches(&format!("relay=lmtp:unix:{} ", sock.display()))
            .count()
            == 2,
        "{log}"
    );
    assert!(log.contains("relay=lmtp:127.0.0.1:"), "{log}");
    // An LMTP transport with AUTH is refused: LMTP is for a local delivery agent.
    let text = std::fs::read_to_string(d.dir.path().join("tern.toml")).unwrap().replace(
        "[[transport]]\ndomains = [\"peer.org\"]",
        "[[transport]]\nauth_user = \"x\"\nauth_password_file = \"/nonexistent\"\ndomains = [\"peer.org\"]",
    );
    std::fs::write(d.dir.path().join("tern.toml"), text).unwrap();
    let out = tern(d.dir.path(), &["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("transport[1].relay") && err.contains("LMTP"),
        "{err}"
    );
}

fn password_file(dir: &Path, password: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join("relay.password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    file.display().to_string()
}

#[test]
fn a_transport_relays_through_a_smarthost_with_starttls_and_auth() {
    let relay = smarthost();
    let keys = tempfile::tempdir().unwrap();
    let file = password_file(keys.path(), "bob-relay-pw", 0o600);
    let dns = TestDns::start(Vec::new());
    let d = sender(
        dns,
        25,
        &format!(
            "[[transport]]\ndomains = [\"relay.test\", \"*.relay.test\"]\nrelay = \"127.0.0.1:{}\"\n\
             tls = \"require\"\nauth_user = \"bob@relay.test\"\nauth_password_file = {file:?}\n",
            relay.listener("submission").port()
        ),
    );
    send(&d, &["carol@relay.test"], "via the smarthost");
    let got = relay.wait_delivered("carol@relay.test", 1);
    assert_eq!(got.len(), 1, "{}\n{}", d.log_text(), relay.log_text());
    let text = std::fs::read_to_string(&got[0]).unwrap();
    assert!(text.contains("Subject: via the smarthost"), "{text}");
    // The relay saw an authenticated TLS session; the password is nowhere in either log.
    assert!(
        relay.log_text().contains("bob@relay.test"),
        "{}",
        relay.log_text()
    );
    assert!(!d.log_text().contains("bob-relay-pw") && !relay.log_text().contains("bob-relay-pw"));
    // A spooled message goes the same way: tern offers CHUNKING, so as one BDAT chunk streamed from
    // its spool file.
    let mut body = String::new();
    for n in 0..30_000 {
        body.push_str(&format!(
            "{}{n} {}\n",
            if n % 11 == 0 { "." } else { "" },
            "b".repeat(n % 60)
        ));
    }
    send_raw(
        &d,
        &["carol@relay.test"],
        &format!("From: Alice <alice@example.test>\nSubject: large via the smarthost\n\n{body}"),
    );
    let got = relay.wait_delivered("carol@relay.test", 2);
    let large = got
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .find(|t| t.contains("Subject: large via the smarthost"))
        .unwrap_or_else(|| panic!("{}\n{}", d.log_text(), relay.log_text()));
    assert!(
        large.ends_with(&format!("\n\n{body}")),
        "the body arrived whole"
    );
}

#[test]
fn a_wrong_relay_password_defers_and_a_readable_password_file_is_refused() {
    let relay = smarthost();
    let keys = tempfile::tempdir().unwrap();
    let file = password_file(keys.path(), "not-the-password", 0o600);
    let dns = TestDns::start(Vec::new());
    let d = sender(
        dns,
        25,
        &format!(
            "[[transport]]\ndomains = [\"*\"]\nrelay = \"127.0.0.1:{}\"\ntls = \"require\"\n\
             auth_user = \"bob@relay.test\"\nauth_password_file = {file:?}\n",
            relay.listener("submission").port()
        ),
    );
    send(&d, &["carol@relay.test"], "wrong password");
    let list = wait_queue(&d, |l| l.contains("4.7.8"));
    assert!(
        list.contains("refused the login of bob@relay.test"),
        "{list}\n{}",
        d.log_text()
    );
    assert!(!list.contains("not-the-password") && !d.log_text().contains("not-the-password"));
    assert!(relay.delivered("carol@relay.test").is_empty());

    // A password file others can read stops the configuration.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = tern(d.dir.path(), &["check-config"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("transport[0].auth_password_file") && err.contains("chmod 0600"),
        "{err}"
    );
}

/// `[[transport]] bind` and `concurrency`: connections under the rule come from the named source address
/// and never more than the limit at once; an address this host does not have stops the configuration.
#[test]
fn a_transport_binds_its_source_address_and_limits_its_connections() {
    // The relay answers each final dot after a second, so that deliveries would overlap without the limit.
    let relay = crate::sink::Sink::start(
        "127.0.0.2",
        0,
        Behaviour {
            stall_secs: 1,
            ..Behaviour::default()
        },
    )
    .expect("sink");
    let dns = TestDns::start(Vec::new());
    let d = sender(
        dns,
        25,
        &format!(
            "idle_secs = 0\n[[transport]]\ndomains = [\"bound.test\"]\nrelay = \"127.0.0.2:{}\"\n\
             bind = [\"127.0.0.3\"]\nconcurrency = 1\n",
            relay.addr.port()
        ),
    );
    for i in 0..3 {
        send(&d, &[&format!("r{i}@bound.test")], &format!("bound {i}"));
    }
    let got = relay.wait(3);
    assert_eq!(got.len(), 3, "{}", d.log_text());
    let peers = relay.state.peers.lock().unwrap().clone();
    assert!(
        !peers.is_empty() && peers.iter().all(|p| p.to_string() == "127.0.0.3"),
        "{peers:?}"
    );
    assert_eq!(
        relay
            .state
            .max_open
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "more than `concurrency` connections at once"
    );
    // A source address that is not this host's is refused by check-config, naming the key.
    let text = std::fs::read_to_string(d.dir.path().join("tern.toml"))
        .unwrap()
        .replace("bind = [\"127.0.0.3\"]", "bind = [\"192.0.2.55\"]");
    std::fs::write(d.dir.path().join("tern.toml"), text).unwrap();
    let out = tern(d.dir.path(), &["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("transport[0].bind")
            && err.contains("not an address of this host"),
        "{err}"
    );
}

/// A message past the spool threshold (600 KiB here, under the sink's SIZE, with dot lines on every chunk edge a reader could
/// pick) goes out whole from its spool file: dot-stuffed correctly, DKIM-signed over all of it (mail-auth
/// and python3-dkim verify), and its spool file is gone once it is delivered.
#[tokio::test]
async fn a_spooled_message_goes_out_whole_and_signed() {
    let s = sinks(vec![Behaviour::default()]);
    let dns = TestDns::start(vec![Rr::A("big.test", "127.0.0.2")]);
    let dns_addr = dns.addr;
    let d = sender(dns, s[0].addr.port(), "");
    let txt = dkim_key(&d, "example.test", "rsa");
    let mut body = String::new();
    let mut n = 0;
    while body.len() < 600 * 1024 {
        // Lines of varied length, some starting with a dot, so that dots land on every kind of edge.
        body.push_str(&format!(
            "{}line {n} {}\n",
            if n % 7 == 0 { "." } else { "" },
            "z".repeat(n % 97)
        ));
        n += 1;
    }
    let msg = format!(
        "From: Alice <alice@example.test>\nTo: <rcpt@big.test>\nSubject: spooled\n\n{body}"
    );
    send_raw(&d, &["rcpt@big.test"], &msg);
    let got = s[0].wait(1);
    assert_eq!(got.len(), 1, "{}", d.log_text());
    let data = &got[0].data;
    let sent_body = data.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    assert_eq!(
        sent_body,
        body.replace('\n', "\r\n"),
        "the body arrived unchanged (dot-stuffing undone by the sink)"
    );
    assert!(data.starts_with("DKIM-Signature: "), "{}", &data[..300]);
    assert!(
        dkim_passes(dns_addr, data).await,
        "mail-auth verifies the signature over the whole spooled message"
    );
    if let Some(verdict) = python_dkim_verdict(data, "s1._domainkey.example.test", &txt) {
        assert!(verdict, "python3-dkim verifies it");
    }
    // Delivered: the queue row and the spool file are both gone.
    wait_queue(&d, |q| !q.contains("rcpt@big.test"));
    let spool = d.dir.path().join("data").join("spool");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&spool).map(|r| r.count()).unwrap_or(0) > 0 && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "spool files left after delivery: {left:?}");
}

/// `tern queue hold`: a held message is not delivered (not by its retry, not by `tern queue flush`, not
/// after a restart) and shows as held; `tern queue release` delivers it at once.
#[test]
fn a_held_message_waits_until_it_is_released() {
    // The MX is down at first: the message is deferred and stays queued.
    let port = sinks(vec![Behaviour::default()])[0].addr.port();
    let dns = TestDns::start(vec![Rr::A("held.test", "127.0.0.2")]);
    let d = sender(
        dns,
        port,
        "[queue]\nretry_base_secs = 1\nretry_max_secs = 1\n",
    );
    send(&d, &["rcpt@held.test"], "hold me");
    let list = wait_queue(&d, |l| {
        l.contains("rcpt@held.test") && l.contains("attempts 1")
    });
    let id = list.split_whitespace().next().unwrap().to_string();
    let out = tern(d.dir.path(), &["queue", "hold", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(queue_list(&d).contains("HELD"), "{}", queue_list(&d));
    let json = String::from_utf8_lossy(&tern(d.dir.path(), &["queue", "list", "--json"]).stdout)
        .to_string();
    assert!(json.contains("\"held\": true"), "{json}");
    // The MX is back; retries every second and a flush must still leave the message alone.
    let sink = crate::sink::Sink::start("127.0.0.2", port, Behaviour::default()).expect("sink");
    assert!(tern(d.dir.path(), &["queue", "flush"]).status.success());
    std::thread::sleep(Duration::from_secs(3));
    assert!(sink.messages().is_empty(), "a held message was delivered");
    // Still held after a restart.
    let d = crate::harness::Daemon::restart(d.kill9());
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        sink.messages().is_empty(),
        "a held message was delivered after a restart"
    );
    assert!(queue_list(&d).contains("HELD"));
    let out = tern(d.dir.path(), &["queue", "release", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = sink.wait(1);
    assert_eq!(got.len(), 1, "{}", d.log_text());
    assert!(got[0].data.contains("Subject: hold me"));
    wait_queue(&d, |l| !l.contains("rcpt@held.test"));
    let out = tern(d.dir.path(), &["queue", "hold", "00000000000001"]);
    assert!(
        !out.status.success(),
        "holding an unknown message is an error"
    );
}
