//! POP3 dialogues: input whole and split into small pieces, replies as text.

use super::*;
use base64::Engine;
use std::sync::Arc;

fn cfg() -> Arc<Pop3Config> {
    Arc::new(Pop3Config {
        hostname: "mx.example.test".into(),
        starttls: true,
        bad_commands: 5,
    })
}

fn drop_of(n: usize) -> Vec<DropMessage> {
    (1..=n)
        .map(|i| DropMessage {
            uid: format!("u{i}"),
            size: wire_size(format!("Subject: {i}\n\nbody {i}\n").as_bytes()),
        })
        .collect()
}

/// Runs `input` through a session (split into `chunk`-byte pieces) with a fake driver; returns the output.
fn run(input: &[u8], chunk: usize, secure: bool, deleted: &mut Vec<String>) -> String {
    let mut s = Session::new(cfg(), false, secure);
    let mut out = String::from_utf8(s.greeting()).unwrap();
    for piece in input.chunks(chunk.max(1)) {
        s.receive(piece);
        while let Some(a) = s.poll() {
            match a {
                Action::Send(b) => out.push_str(&String::from_utf8(b).unwrap()),
                Action::Authenticate(c) => {
                    let ok = c.username == "alice@example.test" && c.password == "pw";
                    s.auth_verdict(if ok {
                        Ok(drop_of(3))
                    } else {
                        Err("[AUTH] invalid login".into())
                    });
                }
                Action::Retrieve { uid, lines } => {
                    let n: usize = uid[1..].parse().unwrap();
                    let m = format!("Subject: {n}\n\n.dotted\nbody {n}\nmore\n");
                    s.retrieved(Some(m.as_bytes()), lines);
                }
                Action::Update(uids) => {
                    deleted.extend(uids);
                    s.updated(Ok(()));
                }
                Action::StartTls => {
                    out.push_str("<TLS>");
                    s.tls_established();
                }
                Action::Close => out.push_str("<CLOSE>"),
            }
        }
    }
    out
}

fn dialogue(input: &str, secure: bool) -> (String, Vec<String>) {
    let mut deleted = Vec::new();
    let whole = run(input.as_bytes(), usize::MAX, secure, &mut deleted);
    for size in [1, 3, 7] {
        let mut d = Vec::new();
        assert_eq!(
            run(input.as_bytes(), size, secure, &mut d),
            whole,
            "split into {size}"
        );
        assert_eq!(d, deleted);
    }
    (whole, deleted)
}

#[test]
fn login_list_retrieve_delete_at_quit() {
    let (out, deleted) = dialogue(
        "USER alice@example.test\r\nPASS pw\r\nSTAT\r\nLIST\r\nUIDL 2\r\nRETR 1\r\nTOP 2 0\r\nDELE 1\r\nDELE 1\r\nSTAT\r\nQUIT\r\n",
        true,
    );
    let size = wire_size(b"Subject: 1\n\nbody 1\n");
    assert!(out.contains(&format!("+OK 3 {}", 3 * size)), "{out}");
    assert!(
        out.contains(&format!(
            "+OK scan listing follows\r\n1 {size}\r\n2 {size}\r\n3 {size}\r\n.\r\n"
        )),
        "{out}"
    );
    assert!(out.contains("+OK 2 u2\r\n"), "{out}");
    assert!(
        out.contains(
            "+OK message follows\r\nSubject: 1\r\n\r\n..dotted\r\nbody 1\r\nmore\r\n.\r\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("+OK message follows\r\nSubject: 2\r\n\r\n.\r\n"),
        "TOP 2 0: {out}"
    );
    assert!(
        out.contains("-ERR no such message"),
        "a deleted message is gone: {out}"
    );
    assert!(out.contains(&format!("+OK 2 {}", 2 * size)), "{out}");
    assert!(out.ends_with("signing off\r\n<CLOSE>"), "{out}");
    assert_eq!(deleted, ["u1"]);
}

#[test]
fn rset_undeletes_and_a_dropped_session_deletes_nothing() {
    let (out, deleted) = dialogue(
        "USER alice@example.test\r\nPASS pw\r\nDELE 2\r\nRSET\r\nSTAT\r\nQUIT\r\n",
        true,
    );
    assert!(out.contains("+OK maildrop has 3 messages"), "{out}");
    assert!(deleted.is_empty());
    let (_, deleted) = dialogue("USER alice@example.test\r\nPASS pw\r\nDELE 2\r\n", true);
    assert!(deleted.is_empty(), "no QUIT, no UPDATE state");
}

#[test]
fn sasl_plain_and_login_and_wrong_passwords() {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let plain = b64("\0alice@example.test\0pw");
    let (out, _) = dialogue(&format!("AUTH PLAIN {plain}\r\nSTAT\r\nQUIT\r\n"), true);
    assert!(out.contains("+OK logged in, 3 messages"), "{out}");
    let (out, _) = dialogue(
        &format!(
            "AUTH LOGIN\r\n{}\r\n{}\r\nSTAT\r\n",
            b64("alice@example.test"),
            b64("pw")
        ),
        true,
    );
    assert!(
        out.contains("+ VXNlcm5hbWU6\r\n") && out.contains("+OK logged in"),
        "{out}"
    );
    let (out, _) = dialogue("USER alice@example.test\r\nPASS nope\r\nSTAT\r\n", true);
    assert!(
        out.contains("-ERR [AUTH] invalid login") && out.contains("-ERR log in first"),
        "{out}"
    );
}

#[test]
fn no_plaintext_login_outside_tls_and_stls_discards_pipelined_input() {
    let (out, _) = dialogue(
        "CAPA\r\nUSER alice@example.test\r\nAUTH PLAIN AGFsaWNlAHB3\r\n",
        false,
    );
    assert!(
        out.contains("STLS\r\n") && !out.contains("USER\r\n"),
        "{out}"
    );
    assert_eq!(
        out.matches("-ERR [AUTH] plaintext login is not allowed")
            .count(),
        2,
        "{out}"
    );
    // Sent in one piece with STLS: discarded (split input would arrive after the handshake, legitimately).
    let out = run(
        b"STLS\r\nUSER injected\r\nCAPA\r\n",
        usize::MAX,
        false,
        &mut Vec::new(),
    );
    assert!(out.ends_with("<TLS>"), "{out}");
}

#[test]
fn long_lines_and_bad_commands_are_bounded() {
    let long = format!("{}\r\nNOOP\r\n", "X".repeat(1000));
    let (out, _) = dialogue(&long, true);
    assert!(out.contains("-ERR line too long"), "{out}");
    let (out, _) = dialogue(&"BOGUS\r\n".repeat(6), true);
    assert!(
        out.ends_with("too many bad commands, closing\r\n<CLOSE>"),
        "{out}"
    );
}

#[test]
fn sizes_are_counted_with_crlf_line_endings() {
    assert_eq!(wire_size(b"a\nb\n"), 6);
    assert_eq!(wire_size(b"a\r\nb\r\n"), 6);
    assert_eq!(wire_size(b"a\nb"), 6);
}
