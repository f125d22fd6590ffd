//! ManageSieve dialogues: input whole and split at every byte, responses as text, a fake driver with the
//! scripts in memory.

use super::*;
use base64::Engine;
use std::sync::Arc;

fn cfg() -> Arc<ManageSieveConfig> {
    Arc::new(ManageSieveConfig {
        hostname: "mx.example.test".into(),
        starttls: true,
        bad_commands: 4,
        max_line: 200,
        max_script: 64,
        sieve_extensions: "fileinto reject".into(),
        max_redirects: 5,
    })
}

/// The user's scripts: (name, source, active).
type Scripts = Vec<(String, String, bool)>;

fn run_op(scripts: &mut Scripts, op: ScriptOp) -> Result<Done, Refusal> {
    let find = |s: &Scripts, n: &str| s.iter().position(|(name, _, _)| name == n);
    match op {
        ScriptOp::List => Ok(Done::Listed(
            scripts.iter().map(|(n, _, a)| (n.clone(), *a)).collect(),
        )),
        ScriptOp::Get { name } => match find(scripts, &name) {
            Some(i) => Ok(Done::Script(scripts[i].1.clone())),
            None => Err(Refusal::Nonexistent(name)),
        },
        ScriptOp::Put { script, .. } | ScriptOp::Check { script } if script.contains("headr") => {
            Err(Refusal::Invalid(
                "line 1, column 4: unknown test \"headr\"".into(),
            ))
        }
        ScriptOp::Put { name, script } => {
            match find(scripts, &name) {
                Some(i) => scripts[i].1 = script,
                None => scripts.push((name, script, false)),
            }
            Ok(Done::Done)
        }
        ScriptOp::Check { .. } | ScriptOp::HaveSpace { .. } => Ok(Done::Done),
        ScriptOp::SetActive { name } => {
            if let Some(n) = &name
                && find(scripts, n).is_none()
            {
                return Err(Refusal::Nonexistent(n.clone()));
            }
            for s in scripts.iter_mut() {
                s.2 = Some(&s.0) == name.as_ref();
            }
            Ok(Done::Done)
        }
        ScriptOp::Delete { name } => match find(scripts, &name) {
            Some(i) if scripts[i].2 => Err(Refusal::Active(name)),
            Some(i) => {
                scripts.remove(i);
                Ok(Done::Done)
            }
            None => Err(Refusal::Nonexistent(name)),
        },
        ScriptOp::Rename { from, to } => match (find(scripts, &from), find(scripts, &to)) {
            (_, Some(_)) => Err(Refusal::AlreadyExists(to)),
            (Some(i), None) => {
                scripts[i].0 = to;
                Ok(Done::Done)
            }
            (None, None) => Err(Refusal::Nonexistent(from)),
        },
    }
}

/// Runs `input` through a session (split into `chunk`-byte pieces) with a fake driver; returns the output
/// with the greeting left out.
fn run_with(input: &[u8], chunk: usize, secure: bool, scripts: &mut Scripts) -> String {
    let mut s = Session::new(cfg(), false, secure);
    let mut out = String::new();
    for piece in input.chunks(chunk.max(1)) {
        s.receive(piece);
        while let Some(a) = s.poll() {
            match a {
                Action::Send(b) => out.push_str(&String::from_utf8(b).unwrap()),
                Action::Authenticate(c) => {
                    let ok = c.username == "alice@example.test" && c.password == "pw";
                    s.auth_verdict(if ok {
                        Ok(c.username)
                    } else {
                        Err(LoginRefusal::Invalid)
                    });
                }
                Action::Script(op) => {
                    let r = run_op(scripts, op);
                    s.script_done(r);
                }
                Action::Unauthenticated => out.push_str("<UNAUTH>"),
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

fn run(input: &str, secure: bool) -> String {
    let mut whole = Vec::new();
    let expected = run_with(input.as_bytes(), input.len(), secure, &mut whole);
    for chunk in 1..input.len().min(40) {
        let mut scripts = Vec::new();
        assert_eq!(
            run_with(input.as_bytes(), chunk, secure, &mut scripts),
            expected,
            "input split every {chunk} bytes"
        );
    }
    expected
}

fn plain(user: &str, pw: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
}

const CAPS_PLAIN: &str = "\"IMPLEMENTATION\" \"tern\"\r\n\"SASL\" \"\"\r\n\"SIEVE\" \"fileinto reject\"\r\n\
    \"STARTTLS\"\r\n\"MAXREDIRECTS\" \"5\"\r\n\"UNAUTHENTICATE\"\r\n\"VERSION\" \"1.0\"\r\n";

#[test]
fn greeting_is_the_capability_response() {
    let s = Session::new(cfg(), false, false);
    assert_eq!(
        String::from_utf8(s.greeting()).unwrap(),
        format!("{CAPS_PLAIN}OK \"mx.example.test ManageSieve ready\"\r\n")
    );
}

#[test]
fn no_mechanism_before_tls_then_capabilities_again_after_it() {
    let out = run(
        &format!(
            "AUTHENTICATE \"PLAIN\" \"{}\"\r\nSTARTTLS\r\n",
            plain("alice@example.test", "pw")
        ),
        false,
    );
    assert_eq!(
        out,
        "NO (ENCRYPT-NEEDED) \"no password is accepted without TLS: use STARTTLS first\"\r\n\
         OK \"begin TLS negotiation now\"\r\n<TLS>\"IMPLEMENTATION\" \"tern\"\r\n\"SASL\" \"PLAIN LOGIN\"\r\n\
         \"SIEVE\" \"fileinto reject\"\r\n\"MAXREDIRECTS\" \"5\"\r\n\"UNAUTHENTICATE\"\r\n\"VERSION\" \"1.0\"\r\n\
         OK \"TLS negotiation successful\"\r\n"
    );
}

#[test]
fn capability_after_login_names_the_owner() {
    let out = run(
        &format!(
            "AUTHENTICATE \"PLAIN\" \"{}\"\r\nCAPABILITY\r\n",
            plain("alice@example.test", "pw")
        ),
        true,
    );
    assert_eq!(
        out,
        "OK \"logged in\"\r\n\"IMPLEMENTATION\" \"tern\"\r\n\"SASL\" \"\"\r\n\"SIEVE\" \"fileinto reject\"\r\n\
         \"MAXREDIRECTS\" \"5\"\r\n\"OWNER\" \"alice@example.test\"\r\n\"UNAUTHENTICATE\"\r\n\
         \"VERSION\" \"1.0\"\r\nOK \"capability completed\"\r\n"
    );
}

#[test]
fn plain_and_login_with_continuations() {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let p = plain("alice@example.test", "pw");
    let out = run(
        &format!(
            "AUTHENTICATE \"PLAIN\"\r\n{{{}+}}\r\n{p}\r\nUNAUTHENTICATE\r\n\
             AUTHENTICATE \"LOGIN\"\r\n\"{}\"\r\n\"{}\"\r\nAUTHENTICATE \"plain\"\r\n",
            p.len(),
            b64("alice@example.test"),
            b64("pw")
        ),
        true,
    );
    assert_eq!(
        out,
        "\"\"\r\nOK \"logged in\"\r\n<UNAUTH>OK \"unauthenticated\"\r\n\"VXNlcm5hbWU6\"\r\n\"UGFzc3dvcmQ6\"\r\n\
         OK \"logged in\"\r\nNO \"already authenticated\"\r\n"
    );
}

#[test]
fn wrong_password_and_cancel() {
    let out = run(
        &format!(
            "AUTHENTICATE \"PLAIN\" \"{}\"\r\nAUTHENTICATE \"LOGIN\"\r\n\"*\"\r\nHAVESPACE \"a\" 1\r\n",
            plain("alice@example.test", "nope")
        ),
        true,
    );
    assert_eq!(
        out,
        "NO \"invalid user name or password\"\r\n\"VXNlcm5hbWU6\"\r\nNO \"authentication cancelled\"\r\n\
         NO \"authenticate first\"\r\n"
    );
}

fn logged_in(rest: &str) -> String {
    let login = format!(
        "AUTHENTICATE \"PLAIN\" \"{}\"\r\n",
        plain("alice@example.test", "pw")
    );
    let out = run(&format!("{login}{rest}"), true);
    out.strip_prefix("OK \"logged in\"\r\n")
        .unwrap_or_else(|| panic!("not logged in: {out}"))
        .to_string()
}

#[test]
fn scripts_round_trip() {
    let out = logged_in(
        "PUTSCRIPT \"vacation\" {6+}\r\nkeep;\n\r\nPUTSCRIPT \"b\" \"stop;\"\r\nSETACTIVE \"vacation\"\r\n\
         LISTSCRIPTS\r\nGETSCRIPT \"vacation\"\r\nRENAMESCRIPT \"b\" \"c\"\r\nDELETESCRIPT \"c\"\r\n\
         SETACTIVE \"\"\r\nLISTSCRIPTS\r\nNOOP \"sync-1\"\r\nLOGOUT\r\n",
    );
    assert_eq!(
        out,
        "OK \"putscript completed\"\r\nOK \"putscript completed\"\r\nOK \"script activated\"\r\n\
         \"vacation\" ACTIVE\r\n\"b\"\r\nOK \"listscripts completed\"\r\n\
         {6}\r\nkeep;\n\r\nOK \"getscript completed\"\r\nOK \"script renamed\"\r\nOK \"script deleted\"\r\n\
         OK \"no script is active\"\r\n\"vacation\"\r\nOK \"listscripts completed\"\r\n\
         OK (TAG \"sync-1\") \"Done\"\r\nOK \"logout completed\"\r\n<CLOSE>"
    );
}

#[test]
fn refusals_carry_their_codes() {
    let out = logged_in(
        "PUTSCRIPT \"a\" \"keep;\"\r\nSETACTIVE \"a\"\r\nDELETESCRIPT \"a\"\r\nPUTSCRIPT \"b\" \"keep;\"\r\n\
         RENAMESCRIPT \"b\" \"a\"\r\nGETSCRIPT \"zz\"\r\nSETACTIVE \"zz\"\r\n\
         PUTSCRIPT \"c\" \"if headr {}\"\r\nCHECKSCRIPT \"if headr {}\"\r\nCHECKSCRIPT \"keep;\"\r\n\
         HAVESPACE \"a\" 65\r\nHAVESPACE \"a\" 64\r\n",
    );
    assert_eq!(
        out,
        "OK \"putscript completed\"\r\nOK \"script activated\"\r\n\
         NO (ACTIVE) \"script \\\"a\\\" is active: activate another one (or none) first\"\r\n\
         OK \"putscript completed\"\r\nNO (ALREADYEXISTS) \"a script \\\"a\\\" already exists\"\r\n\
         NO (NONEXISTENT) \"there is no script \\\"zz\\\"\"\r\nNO (NONEXISTENT) \"there is no script \\\"zz\\\"\"\r\n\
         NO \"line 1, column 4: unknown test \\\"headr\\\"\"\r\nNO \"line 1, column 4: unknown test \\\"headr\\\"\"\r\n\
         OK \"script is valid\"\r\nNO (QUOTA/MAXSIZE) \"script too large (at most 64 octets)\"\r\n\
         OK \"putscript would succeed\"\r\n"
    );
}

#[test]
fn an_oversized_script_is_refused_and_the_session_goes_on() {
    let big = "#".repeat(65);
    let out = logged_in(&format!(
        "PUTSCRIPT \"big\" {{65+}}\r\n{big}\r\nPUTSCRIPT \"ok\" {{5+}}\r\nkeep;\r\nLISTSCRIPTS\r\n"
    ));
    assert_eq!(
        out,
        "NO (QUOTA/MAXSIZE) \"script of 65 octets is too large (at most 64 octets)\"\r\n\
         OK \"putscript completed\"\r\n\"ok\"\r\nOK \"listscripts completed\"\r\n"
    );
}

#[test]
fn bad_names_are_refused() {
    let out = logged_in(
        "PUTSCRIPT \"../x\" \"keep;\"\r\nGETSCRIPT {3+}\r\na\u{1}b\r\nDELETESCRIPT \"\"\r\nRENAMESCRIPT \"a\" \"b/c\"\r\n",
    );
    assert_eq!(
        out,
        "NO \"\\\"../x\\\" holds a \\\"/\\\" or \\\"\\\\\\\" or is a dot name\"\r\n\
         NO \"\\\"a\\\\u{1}b\\\" holds a control character\"\r\n\
         NO \"a script name cannot be empty\"\r\n\
         NO \"\\\"b/c\\\" holds a \\\"/\\\" or \\\"\\\\\\\" or is a dot name\"\r\n"
    );
}

#[test]
fn garbage_ends_in_bye() {
    let long = "x".repeat(300);
    let out = run(
        &format!(
            "FROB\r\nPUTSCRIPT \"a\" \"keep;\"\r\n{long}\r\n\"{long}\" {{2+}}\r\nab\r\nNOOP\r\n"
        ),
        false,
    );
    assert_eq!(
        out,
        "NO \"unknown command \\\"FROB\\\"\"\r\nNO \"authenticate first\"\r\n\
         NO \"line too long (at most 200 octets)\"\r\nNO \"line too long (at most 200 octets)\"\r\n\
         BYE \"too many bad commands\"\r\n<CLOSE>"
    );
}

#[test]
fn a_literal_length_past_32_bits_ends_the_session() {
    let out = run("PUTSCRIPT \"a\" {4294967296+}\r\n", true);
    assert_eq!(
        out,
        "BYE \"literal length 4294967296 is not a 32-bit number\"\r\n<CLOSE>"
    );
}

#[test]
fn starttls_drops_what_was_sent_before_the_handshake() {
    // Whole: the CAPABILITY that came with STARTTLS is dropped, only the post-handshake capability follows.
    let out = run_with(b"STARTTLS\r\nCAPABILITY\r\n", 100, false, &mut Vec::new());
    assert!(out.starts_with("OK \"begin TLS negotiation now\"\r\n<TLS>\"IMPLEMENTATION\""));
    assert!(
        out.ends_with("OK \"TLS negotiation successful\"\r\n"),
        "{out}"
    );
}
