//! Aliases (fanning out to local and remote addresses), catch-all, domain aliases and quotas.

use crate::dns::{Rr, TestDns};
use crate::harness::{Daemon, Raw, tern};
use crate::sink::{Behaviour, sinks};

fn ok(out: std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn an_alias_fans_out_to_local_and_remote_addresses() {
    let s = sinks(vec![Behaviour::default()]);
    let dns = TestDns::start(vec![Rr::A("partner.test", "127.0.0.2")]);
    let mut d = Daemon::start_with_dns(&format!(
        "[delivery]\nremote_port = {}\nallow_private_addresses = true\n{}",
        s[0].addr.port(),
        dns.config()
    ));
    d.dns = Some(dns);
    ok(tern(
        d.dir.path(),
        &[
            "alias",
            "add",
            "team@example.test",
            "alice@example.test,bob@example.test",
            "carol@partner.test",
        ],
    ));
    let list = String::from_utf8_lossy(&tern(d.dir.path(), &["alias", "list"]).stdout).to_string();
    assert!(
        list.contains("team@example.test\talice@example.test,bob@example.test,carol@partner.test"),
        "{list}"
    );
    // From outside, through the relay listener: the alias is local, its remote target is relayed by us.
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO peer.test").await;
    let (code, text) = c
        .send_message(
            "x@remote.test",
            "Team@example.test",
            "Subject: to the team\r\n\r\nhi\r\n",
        )
        .await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(d.wait_delivered("alice@example.test", 1).len(), 1);
    assert_eq!(d.wait_delivered("bob@example.test", 1).len(), 1);
    let got = s[0].wait(1);
    assert_eq!(got[0].rcpt_to, ["carol@partner.test"]);
    ok(tern(d.dir.path(), &["alias", "del", "team@example.test"]));
    c.cmd("MAIL FROM:<x@remote.test>").await;
    assert_eq!(c.cmd("RCPT TO:<team@example.test>").await.0, 550);
}

#[tokio::test]
async fn catch_all_and_domain_alias() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO peer.test").await;
    c.cmd("MAIL FROM:<x@remote.test>").await;
    assert_eq!(
        c.cmd("RCPT TO:<anything@example.test>").await.0,
        550,
        "no catch-all by default"
    );
    c.cmd("RSET").await;
    ok(tern(
        d.dir.path(),
        &["alias", "add", "@example.test", "alice@example.test"],
    ));
    let (code, _) = c
        .send_message(
            "x@remote.test",
            "anything@example.test",
            "Subject: catch\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(code, 250);
    assert_eq!(d.wait_delivered("alice@example.test", 1).len(), 1);
    // A domain alias: mail for bob@alias.test is bob@example.test's.
    c.cmd("MAIL FROM:<x@remote.test>").await;
    assert!(
        c.cmd("RCPT TO:<bob@alias.test>")
            .await
            .1
            .starts_with("554 5.7.1"),
        "not ours yet"
    );
    c.cmd("RSET").await;
    ok(tern(
        d.dir.path(),
        &["alias", "add", "@alias.test", "@example.test"],
    ));
    let (code, _) = c
        .send_message(
            "x@remote.test",
            "bob@alias.test",
            "Subject: alias domain\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(code, 250);
    let got = std::fs::read_to_string(&d.wait_delivered("bob@example.test", 1)[0]).unwrap();
    assert!(got.contains("for <bob@alias.test>"), "{got}");
    let out = tern(
        d.dir.path(),
        &["alias", "add", "@alias.test", "@nowhere.test"],
    );
    assert!(!out.status.success());
}

#[tokio::test]
async fn quota_at_rcpt_and_at_delivery() {
    let d = Daemon::start("");
    // Room for one small message.
    ok(tern(
        d.dir.path(),
        &["user", "set-quota", "alice@example.test", "--messages", "1"],
    ));
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO peer.test").await;
    assert_eq!(
        c.send_message(
            "x@remote.test",
            "alice@example.test",
            "Subject: one\r\n\r\nx\r\n"
        )
        .await
        .0,
        250
    );
    assert_eq!(d.wait_delivered("alice@example.test", 1).len(), 1);
    c.cmd("MAIL FROM:<x@remote.test>").await;
    let (code, text) = c.cmd("RCPT TO:<alice@example.test>").await;
    assert_eq!(code, 452, "{text}");
    assert!(text.starts_with("452 4.2.2"), "{text}");
    c.cmd("RSET").await;
    // Bob has room for one message; two copies in one transaction both pass RCPT (his mailbox is empty), so
    // the second is found over quota at delivery: deferred, visible in the queue, not lost.
    ok(tern(
        d.dir.path(),
        &["user", "set-quota", "bob@example.test", "--messages", "1"],
    ));
    c.cmd("MAIL FROM:<x@remote.test>").await;
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<bob+copy@example.test>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(b"Subject: twice\r\n\r\nx\r\n.\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    assert_eq!(d.wait_delivered("bob@example.test", 1).len(), 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut list = String::new();
    while !list.contains("4.2.2") && std::time::Instant::now() < deadline {
        list = String::from_utf8_lossy(&tern(d.dir.path(), &["queue", "list"]).stdout).to_string();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        list.contains("queued   local  <bob+copy@example.test>") && list.contains("4.2.2"),
        "{list}"
    );
    assert_eq!(d.delivered("bob@example.test").len(), 1);
}
