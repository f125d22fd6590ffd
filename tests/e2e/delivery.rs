//! Mail for local users arrives in their Maildir, byte for byte, through an independent client and raw SMTP.

use crate::harness::{Daemon, Raw};
use lettre::message::header::ContentType;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

fn read(path: &std::path::Path) -> String {
    String::from_utf8(std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn lettre_over_starttls_lands_in_the_maildir_with_trace_headers() {
    let d = Daemon::start("");
    let tls = TlsParameters::builder("mx.example.test".into())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap();
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(d.port())
        .tls(Tls::Required(tls))
        .build();
    let email = Message::builder()
        .from("Carol <carol@remote.test>".parse().unwrap())
        .to("Alice <alice@example.test>".parse().unwrap())
        .subject("first message")
        .header(ContentType::TEXT_PLAIN)
        .body("Hello Alice,\r\n.a line starting with a dot\r\n..two dots\r\n".to_string())
        .unwrap();
    let response = mailer.send(email).await.unwrap();
    let reply = response.message().collect::<Vec<_>>().join(" ");
    assert!(reply.contains("queued as"), "{reply}");
    let files = d.wait_delivered("alice@example.test", 1);
    assert_eq!(files.len(), 1);
    let text = read(&files[0]);
    assert!(
        text.starts_with("Return-Path: <carol@remote.test>\nReceived: from "),
        "{text}"
    );
    assert!(text.contains("(using TLSv1.3 with cipher"), "{text}");
    assert!(text.contains("with ESMTPS id "), "{text}");
    assert!(text.contains("\tfor <alice@example.test>; "), "{text}");
    assert!(
        text.contains("\n.a line starting with a dot\n..two dots\n"),
        "dot-stuffing round trip: {text}"
    );
    assert!(!text.contains('\r'), "Maildir files use LF line endings");
    // The file is visible a moment before the delivery's log line is written.
    assert!(d.wait_log("status=\"sent\""), "{}", d.log_text());
}

#[tokio::test]
async fn dot_stuffing_round_trip_is_exact() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO client.test").await;
    let (code, _) = c
        .send_message(
            "a@remote.test",
            "bob@example.test",
            "Subject: dots\r\n\r\n..\r\n...x\r\n.\tz\r\nend\r\n",
        )
        .await;
    assert_eq!(code, 250);
    let files = d.wait_delivered("bob@example.test", 1);
    let text = read(&files[0]);
    assert!(
        text.ends_with("Subject: dots\n\n.\n..x\n\tz\nend\n"),
        "{text:?}"
    );
}

#[tokio::test]
async fn pipelined_commands_get_replies_in_order() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO client.test").await;
    c.send(
        b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\n\
          RCPT TO:<bob@Example.TEST>\r\nDATA\r\n",
    )
    .await;
    let codes: Vec<u16> = [
        c.reply().await,
        c.reply().await,
        c.reply().await,
        c.reply().await,
        c.reply().await,
    ]
    .iter()
    .map(|r| r.0)
    .collect();
    assert_eq!(codes, [250, 250, 550, 250, 354]);
    c.send(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    assert_eq!(c.reply().await.0, 221);
    assert_eq!(d.wait_delivered("alice@example.test", 1).len(), 1);
    assert_eq!(d.wait_delivered("bob@example.test", 1).len(), 1);
}

#[tokio::test]
async fn bdat_chunks_and_8bit_content_arrive_byte_exact() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.addr).await;
    let (_, ehlo) = c.cmd("EHLO client.test").await;
    assert!(
        ehlo.contains("CHUNKING") && ehlo.contains("8BITMIME"),
        "{ehlo}"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@remote.test> BODY=8BITMIME").await.0,
        250
    );
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").await.0, 250);
    let part1 = "Subject: chunked\r\n\r\nGrüße aus Köln\r\n";
    let part2 = ".this dot is not stuffed in BDAT\r\n";
    c.send(format!("BDAT {}\r\n{part1}", part1.len()).as_bytes())
        .await;
    assert_eq!(c.reply().await.0, 250);
    c.send(format!("BDAT {} LAST\r\n{part2}", part2.len()).as_bytes())
        .await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 250, "{text}");
    let files = d.wait_delivered("alice@example.test", 1);
    let text = read(&files[0]);
    assert!(
        text.ends_with("Subject: chunked\n\nGrüße aus Köln\n.this dot is not stuffed in BDAT\n"),
        "{text}"
    );
}

#[tokio::test]
async fn smtputf8_sender_is_accepted_and_recorded() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO client.test").await;
    assert_eq!(
        c.cmd("MAIL FROM:<jörg@bücher.test>").await.0,
        553,
        "UTF-8 without SMTPUTF8"
    );
    assert_eq!(c.cmd("MAIL FROM:<jörg@bücher.test> SMTPUTF8").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(
        "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\nFrom: jörg@bücher.test\r\n\r\nhej\r\n.\r\n"
            .as_bytes(),
    )
    .await;
    assert_eq!(c.reply().await.0, 250);
    let text = read(&d.wait_delivered("alice@example.test", 1)[0]);
    assert!(
        text.starts_with("Return-Path: <jörg@bücher.test>\n"),
        "{text}"
    );
    assert!(text.contains("with UTF8SMTP id"), "{text}");
}

#[tokio::test]
async fn unknown_users_relaying_and_postmaster() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<a@remote.test>").await;
    let (code, text) = c.cmd("RCPT TO:<nobody@example.test>").await;
    assert_eq!(code, 550);
    assert!(text.starts_with("550 5.1.1 "), "{text}");
    let (code, text) = c.cmd("RCPT TO:<someone@gmail.com>").await;
    assert_eq!(code, 554);
    assert!(
        text.starts_with("554 5.7.1 ") && text.contains("Relay access denied"),
        "{text}"
    );
    assert_eq!(
        c.cmd("RCPT TO:<ALICE@EXAMPLE.TEST>").await.0,
        250,
        "case-insensitive"
    );
    assert_eq!(c.cmd("RCPT TO:<Postmaster>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<postmaster@example.org>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(b"Subject: x\r\n\r\nhi\r\n.\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    assert_eq!(d.wait_delivered("alice@example.test", 1).len(), 1);
    // Both postmaster forms go to the configured postmaster, each with its own Received: for clause.
    assert_eq!(d.wait_delivered("admin@example.test", 2).len(), 2);
}

#[tokio::test]
async fn two_hundred_concurrent_clients_all_delivered() {
    let d = Daemon::start("");
    let addr = d.addr;
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        tasks.push(tokio::spawn(async move {
            // Five source addresses, 40 sessions each: within the default per-IP limit of 50.
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(format!("127.0.0.{}:0", 1 + i % 5).parse().unwrap())
                .unwrap();
            let stream = socket.connect(addr).await.unwrap();
            let mut c = Raw::from_stream(stream);
            assert_eq!(c.reply().await.0, 220);
            c.cmd("EHLO client.test").await;
            let (code, text) = c
                .send_message(
                    "load@remote.test",
                    "alice@example.test",
                    &format!("Subject: n{i}\r\n\r\nbody {i}\r\n"),
                )
                .await;
            assert_eq!(code, 250, "{text}");
            c.cmd("QUIT").await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let files = d.wait_delivered("alice@example.test", 200);
    assert_eq!(files.len(), 200);
    let mut subjects: Vec<String> = files
        .iter()
        .map(|f| {
            read(f)
                .lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap()
                .to_string()
        })
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 200, "every message exactly once");
}
