//! Dialogue tests of the session: each feeds client bytes (whole, and split at every byte) and checks replies.

use super::*;
use crate::smtp::Mailbox;

fn config() -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        hostname: "mx.example.test".into(),
        limits: SessionLimits {
            message_size: 1000,
            recipients: 3,
            command_line: 100,
            text_line: 200,
            errors: 5,
            header_section: 1 << 20,
            junk_commands: 1000,
        },
        starttls: true,
        auth: true,
        require_auth: false,
        lmtp: false,
    })
}

/// What happened: replies as text lines, plus markers for messages and TLS.
fn drive(session: &mut Session, input: &[u8], chunk: usize) -> Vec<String> {
    let mut log = Vec::new();
    let mut feed = input.chunks(chunk.max(1)).collect::<Vec<_>>().into_iter();
    loop {
        while let Some(action) = session.poll() {
            match action {
                Action::Reply(r) => {
                    let mut out = Vec::new();
                    r.write_to(&mut out);
                    log.push(String::from_utf8(out).unwrap().trim_end().to_string());
                }
                Action::CheckSender(rp, _) => {
                    let refusal = rp
                        .to_string()
                        .starts_with("spoof")
                        .then(|| Reply::sender_not_owned("MAIL FROM", &rp.to_string(), "u"));
                    session.sender_verdict(refusal);
                }
                Action::Authenticate(c) => {
                    let v = if c.password == "good" {
                        Ok(c.username)
                    } else {
                        Err(Reply::auth_failed())
                    };
                    session.auth_verdict(v);
                }
                Action::CheckRecipient(fp) => {
                    let v = match fp.to_string().as_str() {
                        s if s.starts_with("unknown") => {
                            RcptVerdict::Refuse(Reply::unknown_user(s))
                        }
                        "postmaster" => RcptVerdict::Accept(vec![
                            Mailbox::parse("admin@example.test", false).unwrap(),
                        ]),
                        s => RcptVerdict::Accept(vec![Mailbox::parse(s, true).unwrap()]),
                    };
                    session.recipient_verdict(v);
                }
                Action::Message(env, body) => {
                    let rcpts: Vec<String> = env
                        .recipients
                        .iter()
                        .flat_map(|r| r.mailboxes.iter().map(|m| m.to_string()))
                        .collect();
                    log.push(format!(
                        "MESSAGE from=<{}> to={} proto={} body={:?}",
                        env.reverse_path,
                        rcpts.join(","),
                        env.protocol,
                        String::from_utf8_lossy(&body)
                    ));
                    session.message_stored(Reply::queued("Q1"));
                }
                Action::StartTls => {
                    log.push("TLS".into());
                    session.tls_established();
                }
                Action::Close => log.push("CLOSE".into()),
            }
        }
        match feed.next() {
            Some(bytes) => session.receive(bytes),
            None => return log,
        }
    }
}

/// Runs a dialogue whole and split at every byte boundary; all runs must agree.
fn dialogue(input: &str) -> Vec<String> {
    let whole = drive(&mut Session::new(config()), input.as_bytes(), usize::MAX);
    for size in [1, 2, 3, 7] {
        let split = drive(&mut Session::new(config()), input.as_bytes(), size);
        assert_eq!(split, whole, "split into {size}-byte pieces");
    }
    whole
}

fn codes(log: &[String]) -> Vec<&str> {
    log.iter()
        .map(|l| {
            if l.starts_with("MESSAGE") {
                "MSG"
            } else {
                &l[l.len().min(l.rfind("\n").map_or(0, |i| i + 1))..][..3]
            }
        })
        .collect()
}

#[test]
fn ehlo_advertises_the_extensions() {
    let log = dialogue("EHLO client.test\r\n");
    assert_eq!(
        log[0],
        "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
         250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-STARTTLS\r\n250 DSN"
    );
}

#[test]
fn happy_path_with_pipelining() {
    let log = dialogue(
        "EHLO c.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<Postmaster>\r\nDATA\r\n\
         Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        codes(&log),
        [
            "250", "250", "250", "250", "354", "MSG", "250", "221", "CLO"
        ]
    );
    assert_eq!(
        log[5],
        "MESSAGE from=<a@remote.test> to=bob@example.test,admin@example.test proto=ESMTP body=\"Subject: hi\\r\\n\\r\\n.dot\\r\\n\""
    );
    assert_eq!(log[6], "250 2.0.0 OK: queued as Q1");
}

#[test]
fn sequence_errors_get_503_5_5_1() {
    let log = dialogue(
        "MAIL FROM:<a@b.test>\r\nEHLO c\r\nRCPT TO:<x@y.test>\r\nDATA\r\nMAIL FROM:<>\r\nMAIL FROM:<>\r\n",
    );
    assert!(log[0].starts_with("503 5.5.1"), "{}", log[0]);
    assert!(log[2].starts_with("503 5.5.1"));
    assert!(log[3].starts_with("503 5.5.1"));
    assert!(log[4].starts_with("250 2.1.0"));
    assert!(log[5].starts_with("503 5.5.1 Bad sequence of commands: nested MAIL"));
}

#[test]
fn data_without_valid_recipients_is_554() {
    let log = dialogue("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<unknown@example.test>\r\nDATA\r\n");
    assert!(log[2].starts_with("550 5.1.1"));
    assert!(log[3].starts_with("554 5.5.1"));
}

#[test]
fn unknown_command_and_syntax_errors() {
    let log = dialogue(
        "EHLO c\r\nXYZZY\r\nMAIL FROM:<a@@b>\r\nMAIL FROM:<a@b.test> FOO=1\r\nRCPT TO:<a b>\r\nHELO\r\n",
    );
    assert!(log[1].starts_with("500 5.5.2 Command unrecognized: \"XYZZY\""));
    assert!(log[2].starts_with("501 5.1.7"));
    assert!(log[3].starts_with("555 5.5.4"));
    assert!(
        log[4].starts_with("501 5.1.3") || log[4].starts_with("501 5.5.4"),
        "{}",
        log[4]
    );
    assert!(
        log[5].starts_with("421 4.7.0") || log[5].starts_with("501 5.5.4"),
        "{}",
        log[5]
    );
}

#[test]
fn error_limit_closes_with_421() {
    let log = dialogue("A\r\nB\r\nC\r\nD\r\nE\r\nF\r\nG\r\n");
    assert_eq!(
        codes(&log),
        ["500", "500", "500", "500", "500", "421", "CLO"]
    );
}

#[test]
fn over_long_command_line_gets_500_and_the_session_survives() {
    let long = "NOOP ".to_string() + &"x".repeat(300);
    let log = dialogue(&format!("EHLO c\r\n{long}\r\nNOOP\r\n"));
    assert!(log[1].starts_with("500 5.5.2 Line too long"), "{}", log[1]);
    assert!(log[2].starts_with("250 2.0.0"));
}

#[test]
fn size_limit_at_mail_and_in_data() {
    let log = dialogue("EHLO c\r\nMAIL FROM:<> SIZE=5000\r\n");
    assert!(log[1].starts_with("552 5.3.4"));
    let body = "x".repeat(150) + "\r\n";
    let log = dialogue(&format!(
        "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nDATA\r\n{}.\r\nNOOP\r\n",
        body.repeat(8)
    ));
    assert!(log[4].starts_with("552 5.3.4"), "{}", log[4]);
    assert!(log[5].starts_with("250"));
}

#[test]
fn recipient_limit_is_452() {
    let log = dialogue(
        "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@e.test>\r\nRCPT TO:<b@e.test>\r\nRCPT TO:<c@e.test>\r\nRCPT TO:<d@e.test>\r\n",
    );
    assert!(log[5].starts_with("452 4.5.3"));
}

#[test]
fn bare_lf_does_not_end_data_and_is_refused() {
    let log = dialogue(
        "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@e.test>\r\nDATA\r\nx\n.\nMAIL FROM:<evil@e.test>\r\n.\r\nNOOP\r\n",
    );
    assert_eq!(codes(&log), ["250", "250", "250", "354", "550", "250"]);
    assert!(log[4].contains("bare LF"));
}

#[test]
fn bdat_chunks_make_one_message() {
    let log = dialogue(
        "EHLO c\r\nMAIL FROM:<a@r.test>\r\nRCPT TO:<b@e.test>\r\nBDAT 7\r\nHello\r\nBDAT 3 LAST\r\nx\r\nNOOP\r\n",
    );
    assert_eq!(
        codes(&log),
        ["250", "250", "250", "250", "MSG", "250", "250"]
    );
    assert!(log[4].contains("body=\"Hello\\r\\nx\\r\\n\""), "{}", log[4]);
}

#[test]
fn bdat_without_transaction_reads_and_drops_the_chunk() {
    let log = dialogue("EHLO c\r\nBDAT 6 LAST\r\nNOOP\r\nNOOP\r\n");
    assert_eq!(codes(&log), ["250", "503", "250"]);
}

#[test]
fn bdat_with_bare_lf_is_refused() {
    let log =
        dialogue("EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<b@e.test>\r\nBDAT 4 LAST\r\na\n.\nNOOP\r\n");
    assert_eq!(codes(&log), ["250", "250", "250", "550", "250"]);
}

#[test]
fn starttls_discards_pipelined_plaintext_and_resets() {
    // Not split: bytes that arrive after the handshake are legitimately inside TLS.
    let log = drive(
        &mut Session::new(config()),
        b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@e.test>\r\n",
        usize::MAX,
    );
    assert_eq!(log[1], "220 2.0.0 Ready to start TLS");
    assert_eq!(log[2], "TLS");
    assert_eq!(
        log.len(),
        3,
        "the injected MAIL must not be answered: {log:?}"
    );
    let mut s = Session::new(config());
    drive(&mut s, b"EHLO c\r\nSTARTTLS\r\n", usize::MAX);
    let log = drive(
        &mut s,
        b"MAIL FROM:<a@b.test>\r\nEHLO c\r\nSTARTTLS\r\n",
        usize::MAX,
    );
    assert!(
        log[0].starts_with("503 5.5.1"),
        "session must restart at EHLO: {log:?}"
    );
    assert!(
        !log[1].contains("STARTTLS"),
        "STARTTLS offered again: {}",
        log[1]
    );
    assert!(log[2].starts_with("503 5.5.1"));
}

#[test]
fn smtputf8_addresses_need_the_parameter() {
    let log = dialogue(
        "EHLO c\r\nMAIL FROM:<jö@e.test>\r\nMAIL FROM:<jö@e.test> SMTPUTF8\r\nRCPT TO:<bö@e.test>\r\nDATA\r\n.\r\n",
    );
    assert!(log[1].starts_with("553 5.6.7"), "{}", log[1]);
    assert!(log[2].starts_with("250"));
    assert!(log[3].starts_with("250"));
    assert!(log[5].contains("proto=UTF8SMTP"), "{}", log[5]);
    let log = dialogue("EHLO c\r\nMAIL FROM:<a@e.test>\r\nRCPT TO:<bö@e.test>\r\n");
    assert!(log[2].starts_with("553 5.6.7"));
}

#[test]
fn vrfy_never_confirms_and_rset_clears() {
    let log =
        dialogue("EHLO c\r\nVRFY alice\r\nMAIL FROM:<>\r\nRSET\r\nRCPT TO:<a@e.test>\r\nHELP\r\n");
    assert!(log[1].starts_with("252 2.5.2"));
    assert!(log[3].starts_with("250 2.0.0"));
    assert!(log[4].starts_with("503 5.5.1"));
    assert!(log[5].starts_with("214 2.0.0"));
}

#[test]
fn helo_gives_plain_smtp_and_no_extensions() {
    let log = dialogue("HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@e.test>\r\nDATA\r\n.\r\n");
    assert_eq!(log[0], "250 mx.example.test");
    assert!(log[4].contains("proto=SMTP "), "{}", log[4]);
}

#[test]
fn lmtp_takes_lhlo_and_answers_once_per_recipient() {
    let cfg = Arc::new(SessionConfig {
        lmtp: true,
        starttls: false,
        auth: false,
        ..(*config()).clone()
    });
    let mut s = Session::new(cfg);
    assert!(s.greeting().lines[0].contains("LMTP"));
    let mut log = Vec::new();
    s.receive(b"EHLO c\r\nLHLO c\r\nMAIL FROM:<a@r.test>\r\nRCPT TO:<x@e.test>\r\nRCPT TO:<y@e.test>\r\nDATA\r\nhi\r\n.\r\n");
    while let Some(a) = s.poll() {
        match a {
            Action::Reply(r) => log.push(r.code),
            Action::CheckSender(..) => s.sender_verdict(None),
            Action::CheckRecipient(fp) => s.recipient_verdict(RcptVerdict::Accept(vec![
                Mailbox::parse(&fp.to_string(), false).unwrap(),
            ])),
            Action::Message(env, _) => {
                assert_eq!(env.protocol, "LMTP");
                s.message_stored_each(vec![Reply::queued("Q"), Reply::over_quota("y@e.test")]);
            }
            _ => {}
        }
    }
    assert_eq!(log, [500, 250, 250, 250, 250, 354, 250, 452]);
}

#[test]
fn the_input_buffer_holds_at_most_one_unfinished_line() {
    let mut s = Session::new(config());
    let line = b"NOOP 0123456789012345678901234567890123456789\r\n";
    let stream = line.repeat(2000);
    let mut widest = 0;
    // Reads that almost never end at a line end: the consumed part must still go.
    for chunk in stream.chunks(97) {
        s.receive(chunk);
        while s.poll().is_some() {}
        widest = widest.max(s.buffered().0);
    }
    assert!(widest <= 97 + line.len(), "{widest} octets buffered");
    assert!(s.buffered().1 <= 64 * 1024, "capacity {}", s.buffered().1);
}

#[test]
fn junk_commands_are_limited_and_a_message_resets_the_count() {
    let mut cfg = (*config()).clone();
    cfg.limits.junk_commands = 3;
    let mut s = Session::new(Arc::new(cfg));
    let log = drive(
        &mut s,
        b"EHLO c.test\r\nNOOP\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\nx\r\n.\r\nNOOP\r\nNOOP\r\nNOOP\r\nNOOP\r\n",
        usize::MAX,
    );
    let c = codes(&log);
    assert_eq!(c[..7], ["250", "250", "250", "250", "354", "MSG", "250"]);
    assert_eq!(c[7..], ["250", "250", "250", "421", "CLO"]);
}

#[test]
fn a_refused_bdat_chunk_is_data_and_a_long_line_ends_an_auth_exchange() {
    let mut s = Session::new_tls(config());
    s.receive(b"EHLO c.test\r\nBDAT 50\r\n0123");
    while s.poll().is_some() {}
    assert!(s.in_data(), "the refused chunk's octets are still to come");
    let log = drive(&mut s, &[b'x'; 46], usize::MAX);
    assert!(log.iter().any(|l| l.starts_with("503")), "{log:?}");
    assert!(!s.in_data());
    let mut s = Session::new_tls(config());
    let mut input = b"EHLO c.test\r\nAUTH LOGIN\r\n".to_vec();
    input.extend_from_slice(&[b'A'; 300]);
    input.extend_from_slice(b"\r\nNOOP\r\n");
    let log = drive(&mut s, &input, usize::MAX);
    let c = codes(&log);
    assert_eq!(c, ["250", "334", "500", "250"], "{log:?}");
}

#[test]
fn lmtp_answers_duplicate_rcpts_and_whole_refusals_per_rcpt() {
    let mut cfg = (*config()).clone();
    cfg.lmtp = true;
    let cfg = Arc::new(cfg);
    let mut s = Session::new(cfg.clone());
    let mut log = Vec::new();
    s.receive(b"LHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@example.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\nbare\nlf\r\n.\r\n");
    while let Some(a) = s.poll() {
        match a {
            Action::Reply(r) => log.push(r.code),
            Action::CheckSender(..) => s.sender_verdict(None),
            Action::CheckRecipient(fp) => s.recipient_verdict(RcptVerdict::Accept(vec![
                Mailbox::parse(&fp.to_string(), false).unwrap(),
            ])),
            _ => {}
        }
    }
    assert_eq!(log, [250, 250, 250, 250, 354, 550, 550]);
}

#[test]
fn a_shed_message_is_read_to_its_end_then_refused_with_452_4_3_1() {
    let mut s = Session::new(config());
    let start = "EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nSubject: x\r\n\r\nfirst part\r\n";
    let log = drive(&mut s, start.as_bytes(), usize::MAX);
    assert_eq!(codes(&log), ["250", "250", "250", "354"]);
    assert!(s.message_memory() > 0);
    s.shed_message();
    assert_eq!(s.message_memory(), 0);
    // The rest of the content, with a line that looks like a command, then the end and a new transaction.
    let rest = "MAIL FROM:<evil@x.test>\r\nmore\r\n.\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nok\r\n.\r\n";
    let log = drive(&mut s, rest.as_bytes(), 5);
    assert!(log[0].starts_with("452 4.3.1"), "{log:?}");
    assert_eq!(codes(&log[1..]), ["250", "250", "354", "MSG", "250"]);
}
