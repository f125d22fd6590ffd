//! The LMTP delivery listener (RFC 2033): LHLO, no relay, one reply per recipient after the final dot, over
//! TCP and a Unix socket.

use crate::harness::{Daemon, Raw, tern};

#[tokio::test]
async fn per_recipient_replies_good_over_quota_and_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("lmtp.sock");
    let d = Daemon::start(&format!(
        "[[listener]]\nkind = \"lmtp\"\nbind = [\"127.0.0.1:0\", \"unix:{}\"]\n",
        sock.display()
    ));
    // Bob's quota cannot hold the message that is coming.
    assert!(
        tern(
            d.dir.path(),
            &["user", "set-quota", "bob@example.test", "--bytes", "50"]
        )
        .status
        .success()
    );
    let mut c = Raw::connect(d.listener("lmtp")).await;
    let (code, text) = c.cmd("EHLO mta.test").await;
    assert_eq!(code, 500, "LMTP wants LHLO: {text}");
    let (code, text) = c.cmd("LHLO mta.test").await;
    assert!(
        code == 250 && text.contains("PIPELINING") && !text.contains("STARTTLS"),
        "{text}"
    );
    assert_eq!(c.cmd("MAIL FROM:<sender@remote.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@example.test>").await.0, 550);
    assert!(
        c.cmd("RCPT TO:<x@remote.test>")
            .await
            .1
            .starts_with("554 5.7.1"),
        "no relay through LMTP"
    );
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(format!("Subject: lmtp\r\n\r\n{}\r\n.\r\n", "x".repeat(200)).as_bytes())
        .await;
    let (alice, alice_text) = c.reply().await;
    let (bob, bob_text) = c.reply().await;
    assert_eq!(alice, 250, "{alice_text}");
    // 200 octets can never fit a 50-octet quota: permanent (RFC 3463 5.2.2), not "try again later".
    assert_eq!(bob, 552, "{bob_text}");
    assert!(bob_text.starts_with("552 5.2.2"), "{bob_text}");
    let got = std::fs::read_to_string(&d.wait_delivered("alice@example.test", 1)[0]).unwrap();
    assert!(got.contains("with LMTP id"), "{got}");
    assert!(d.delivered("bob@example.test").is_empty());

    // The same over the Unix socket.
    let stream = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let mut u = Raw::from_stream(stream);
    assert_eq!(u.reply().await.0, 220);
    u.cmd("LHLO mta.test").await;
    let (code, _) = u
        .send_message(
            "sender@remote.test",
            "alice@example.test",
            "Subject: via unix\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(code, 250);
    assert_eq!(d.wait_delivered("alice@example.test", 2).len(), 2);
}
