//! STARTTLS: the upgrade works, plaintext pipelined behind STARTTLS is thrown away (CVE-2011-0411), and the
//! session starts over.

use crate::harness::{Daemon, Raw, insecure_tls_connector};
use rustls::pki_types::ServerName;

#[tokio::test]
async fn plaintext_injected_after_starttls_is_discarded() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO client.test").await;
    // The attacker's MAIL rides in the same packet as STARTTLS.
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
        .await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 220, "{text}");
    let tls = insecure_tls_connector()
        .connect(ServerName::try_from("mx.example.test").unwrap(), c.stream)
        .await
        .expect("handshake");
    let mut t = Raw::from_stream(tls);
    // Had the injected MAIL been obeyed, its 250 would be the first thing read here.
    let (code, text) = t.cmd("EHLO client.test").await;
    assert_eq!(code, 250, "{text}");
    assert!(text.starts_with("250-mx.example.test"), "{text}");
    assert!(!text.contains("STARTTLS"), "STARTTLS offered again: {text}");
    assert!(
        t.cmd("RCPT TO:<alice@example.test>")
            .await
            .1
            .starts_with("503 5.5.1"),
        "no transaction survives the upgrade"
    );
    assert!(t.cmd("STARTTLS").await.1.starts_with("503 5.5.1"));
    let (code, _) = t
        .send_message(
            "a@remote.test",
            "alice@example.test",
            "Subject: tls\r\n\r\nsecret\r\n",
        )
        .await;
    assert_eq!(code, 250);
    let files = d.wait_delivered("alice@example.test", 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("with ESMTPS id"), "{text}");
}
