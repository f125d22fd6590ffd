//! Malformed and hostile input over raw TCP: precise replies, nothing half-delivered, the connection survives.

use crate::harness::{Daemon, Raw};

#[tokio::test]
async fn smuggling_sequences_neither_end_nor_split_a_message() {
    let d = Daemon::start("");
    let sequences: [&[u8]; 5] = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r"];
    for seq in sequences {
        let mut c = Raw::connect(d.addr).await;
        c.cmd("EHLO client.test").await;
        assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await.0, 250);
        assert_eq!(c.cmd("RCPT TO:<alice@example.test>").await.0, 250);
        assert_eq!(c.cmd("DATA").await.0, 354);
        let mut payload = b"Subject: outer\r\n\r\nbody".to_vec();
        payload.extend_from_slice(seq);
        payload.extend_from_slice(b"MAIL FROM:<spoof@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\n.\r\n");
        c.send(&payload).await;
        let (code, text) = c.reply().await;
        assert_eq!(code, 550, "{seq:?}: {text}");
        assert!(text.contains("5.6.0") && text.contains("bare"), "{text}");
        // Nothing else may be answered: the smuggled commands were message content.
        assert_eq!(
            c.cmd("NOOP").await.0,
            250,
            "{seq:?}: the connection is still in step"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(d.delivered("alice@example.test").is_empty());
    assert!(
        d.delivered("bob@example.test").is_empty(),
        "smuggled message delivered"
    );
}

#[tokio::test]
async fn size_limit_at_mail_and_while_reading() {
    let d = Daemon::start("[limits]\nmessage_size = 10000\n");
    let mut c = Raw::connect(d.addr).await;
    let (_, ehlo) = c.cmd("EHLO client.test").await;
    assert!(ehlo.contains("SIZE 10000"), "{ehlo}");
    let (code, text) = c.cmd("MAIL FROM:<a@remote.test> SIZE=20000").await;
    assert_eq!(code, 552);
    assert!(text.starts_with("552 5.3.4"), "{text}");
    let big = "x".repeat(100) + "\r\n";
    let (code, text) = c
        .send_message("a@remote.test", "alice@example.test", &big.repeat(200))
        .await;
    assert_eq!(code, 552, "{text}");
    assert!(text.starts_with("552 5.3.4"));
    assert_eq!(c.cmd("NOOP").await.0, 250);
    let (code, _) = c
        .send_message(
            "a@remote.test",
            "alice@example.test",
            "Subject: small\r\n\r\nok\r\n",
        )
        .await;
    assert_eq!(code, 250);
    assert_eq!(d.wait_delivered("alice@example.test", 1).len(), 1);
}

#[tokio::test]
async fn over_long_command_line_gets_500_and_the_connection_survives() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO client.test").await;
    let (code, text) = c.cmd(&format!("NOOP {}", "x".repeat(10_000))).await;
    assert_eq!(code, 500);
    assert!(text.starts_with("500 5.5.2"), "{text}");
    assert_eq!(c.cmd("NOOP").await.0, 250);
}

#[tokio::test]
async fn syntax_and_sequence_errors_have_enhanced_codes() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.addr).await;
    assert!(
        c.cmd("MAIL FROM:<a@remote.test>")
            .await
            .1
            .starts_with("503 5.5.1")
    );
    assert!(c.cmd("FROB").await.1.starts_with("500 5.5.2"));
    c.cmd("EHLO client.test").await;
    assert!(
        c.cmd("RCPT TO:<alice@example.test>")
            .await
            .1
            .starts_with("503 5.5.1")
    );
    assert!(c.cmd("MAIL FROM:alice").await.1.starts_with("501 5.5.4"));
    assert!(c.cmd("MAIL FROM:<a@@b>").await.1.starts_with("501 5.1.7"));
    assert!(
        c.cmd("MAIL FROM:<a@remote.test> FROB=1")
            .await
            .1
            .starts_with("555 5.5.4")
    );
    assert!(c.cmd("VRFY alice").await.1.starts_with("252 2.5.2"));
    assert!(
        c.cmd("AUTH PLAIN AGFsaWNlAHg=")
            .await
            .1
            .starts_with("502 5.5.1"),
        "AUTH is not offered on the relay listener"
    );
}

#[tokio::test]
async fn error_limit_closes_the_connection_with_421() {
    let d = Daemon::start("[limits]\nerrors = 3\n");
    let mut c = Raw::connect(d.addr).await;
    c.send(b"X1\r\nX2\r\nX3\r\n").await;
    assert_eq!(c.reply().await.0, 500);
    assert_eq!(c.reply().await.0, 500);
    assert_eq!(c.reply().await.0, 500);
    let (code, text) = c.reply().await;
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("421 4.7.0"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn garbage_bytes_never_crash_the_daemon() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.addr).await;
    let mut junk: Vec<u8> = (0..=255u8).cycle().take(20_000).collect();
    junk.extend_from_slice(b"\r\n\xff\xfe\x00\r\n");
    c.send(&junk).await;
    drop(c);
    let mut c = Raw::connect(d.addr).await;
    assert_eq!(c.cmd("NOOP").await.0, 250);
}
