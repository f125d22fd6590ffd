//! POP3 against the real binary with Python's poplib (an independent client): STLS and implicit TLS, UIDL
//! stable across sessions and restarts, DELE only at QUIT, TOP, plaintext refused outside the secure
//! networks, both stores.

use crate::harness::{Daemon, Raw, add_user_with_password, tern};

const LISTENERS: &str = "[[listener]]\nkind = \"pop3\"\nbind = [\"127.0.0.1:0\"]\n\
                         [[listener]]\nkind = \"pop3s\"\nbind = [\"127.0.0.1:0\"]\n";

fn daemon(extra: &str) -> Daemon {
    let d = Daemon::start(&format!("{LISTENERS}{extra}"));
    tern(d.dir.path(), &["user", "del", "alice@example.test"]);
    add_user_with_password(d.dir.path(), "alice@example.test", "alice-pw");
    d
}

fn python() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("python3"))
            .find(|f| f.is_file())
    })
}

/// Runs a poplib script; `{port}` and `{sport}` are the pop3 and pop3s ports. Returns its standard output.
fn poplib(d: &Daemon, script: &str) -> String {
    let py = python().expect("python3");
    let script = script
        .replace("{port}", &d.listener("pop3").port().to_string())
        .replace("{sport}", &d.listener("pop3s").port().to_string());
    let prelude = "import poplib, ssl\nctx = ssl.create_default_context()\nctx.check_hostname = False\nctx.verify_mode = ssl.CERT_NONE\n";
    let out = std::process::Command::new(py)
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log_text()
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

async fn deliver(d: &Daemon, subject: &str) {
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO sender.test").await;
    let body =
        format!("From: bob@remote.test\r\nSubject: {subject}\r\n\r\n..leading dot\r\nline two\r\n");
    let (code, text) = c
        .send_message("bob@remote.test", "alice@example.test", &body)
        .await;
    assert_eq!(code, 250, "{text}");
}

async fn read_over_pop3(extra: &str) {
    if python().is_none() {
        eprintln!("python3 not found: skipping the poplib client");
        return;
    }
    let d = daemon(extra);
    deliver(&d, "first").await;
    deliver(&d, "second").await;
    d.wait_delivered_any("alice@example.test", 2);
    // STLS on the plain port, USER/PASS, STAT, UIDL, RETR byte for byte, TOP.
    let out = poplib(
        &d,
        "p = poplib.POP3('127.0.0.1', {port})\n\
         p.stls(context=ctx)\n\
         p.user('alice@example.test'); p.pass_('alice-pw')\n\
         print('STAT', p.stat())\n\
         print('UIDL', p.uidl()[1])\n\
         r = p.retr(1)[1]\n\
         print('RETR', r)\n\
         print('TOP', p.top(2, 0)[1])\n\
         p.quit()\n",
    );
    assert!(out.contains("STAT (2, "), "{out}");
    assert!(
        out.contains("b'Subject: first'")
            && out.contains("b'.leading dot'")
            && out.contains("b'line two'"),
        "{out}"
    );
    assert!(
        out.contains("b'Subject: second'")
            && !out.split("TOP").nth(1).unwrap().contains("line two"),
        "{out}"
    );
    let uidl = out
        .lines()
        .find(|l| l.starts_with("UIDL"))
        .unwrap()
        .to_string();
    // The sizes LIST gives are the octets RETR sends.
    let out = poplib(
        &d,
        "p = poplib.POP3_SSL('127.0.0.1', {sport}, context=ctx)\n\
         p.user('alice@example.test'); p.pass_('alice-pw')\n\
         size = int(p.list(1).split()[2])\n\
         resp, lines, octets = p.retr(1)\n\
         print('SIZES', size, sum(len(l) + 2 for l in lines))\n\
         print('UIDL', p.uidl()[1])\n\
         p.dele(1)\n\
         p.rset()\n\
         p.dele(2)\n\
         p.quit()\n",
    );
    let sizes: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("SIZES"))
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(sizes[1], sizes[2], "{out}");
    assert!(out.contains(&uidl), "UIDL stable across sessions: {out}");
    // After QUIT: only the first message is left, with its UIDL, also after a restart.
    let d = Daemon::restart(d.kill9());
    let out = poplib(
        &d,
        "p = poplib.POP3('127.0.0.1', {port})\n\
         p.user('alice@example.test'); p.pass_('alice-pw')\n\
         print('STAT', p.stat())\n\
         print('UIDL', p.uidl()[1])\n\
         p.dele(1)\n\
         p.sock.close()\n",
    );
    assert!(out.contains("STAT (1, "), "{out}");
    let first = uidl
        .split("b'1 ")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert!(out.contains(first), "{first} in {out}");
    // A session dropped without QUIT deletes nothing.
    let out = poplib(
        &d,
        "p = poplib.POP3('127.0.0.1', {port})\n\
         p.user('alice@example.test'); p.pass_('alice-pw')\n\
         print('STAT', p.stat())\n\
         p.quit()\n",
    );
    assert!(out.contains("STAT (1, "), "{out}");
}

#[tokio::test]
async fn read_delete_and_restart_over_pop3_from_maildir() {
    read_over_pop3("").await;
}

#[tokio::test]
async fn read_delete_and_restart_over_pop3_from_sqlite() {
    read_over_pop3("[store]\nkind = \"sqlite\"\n").await;
}

#[tokio::test]
async fn plaintext_login_is_refused_outside_the_secure_networks() {
    let d = daemon("[access]\nsecure_networks = []\n[auth]\nfailure_delay_ms = 1\n");
    let mut c = Raw::connect_greeting(d.listener("pop3"), "+OK").await;
    let (_, capa) = c.pop_cmd("CAPA", true).await;
    assert!(capa.contains("STLS") && !capa.contains("USER"), "{capa}");
    let (ok, text) = c.pop_cmd("USER alice@example.test", false).await;
    assert!(!ok && text.contains("[AUTH]"), "{text}");
    // Over TLS the same login works, and a wrong password is refused without saying which part was wrong.
    if python().is_some() {
        let out = poplib(
            &d,
            "p = poplib.POP3_SSL('127.0.0.1', {sport}, context=ctx)\n\
             p.user('alice@example.test')\n\
             try:\n    p.pass_('wrong'); print('LOGGED IN')\n\
             except poplib.error_proto as e: print('REFUSED', e)\n\
             p = poplib.POP3_SSL('127.0.0.1', {sport}, context=ctx)\n\
             p.user('alice@example.test'); p.pass_('alice-pw'); print('STAT', p.stat())\n",
        );
        assert!(
            out.contains("REFUSED b'-ERR [AUTH]") && out.contains("STAT (0, 0)"),
            "{out}"
        );
    }
    assert!(!d.log_text().contains("alice-pw") && !d.log_text().contains("wrong"));
}

/// The certificate of a TLS session on `addr` (implicit TLS).
async fn peer_certificate(addr: std::net::SocketAddr) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = crate::harness::insecure_tls_connector()
        .connect(
            rustls::pki_types::ServerName::try_from("mx.example.test").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_reload_swaps_the_pop3_certificate_for_new_sessions() {
    let d = daemon("");
    let before = peer_certificate(d.listener("pop3s")).await;
    let tls = d.dir.path().join("data/tls");
    let made = rcgen::generate_simple_self_signed(vec!["mx.example.test".to_string()]).unwrap();
    std::fs::write(tls.join("cert.pem"), made.cert.pem()).unwrap();
    std::fs::write(tls.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
    let out = tern(d.dir.path(), &["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = peer_certificate(d.listener("pop3s")).await;
    assert_ne!(before, after, "pop3s still presents the old certificate");
    assert_eq!(after, made.cert.der().to_vec());
}
