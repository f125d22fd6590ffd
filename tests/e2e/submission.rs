//! Submission: users' mail clients over 587 (STARTTLS) and 465 (implicit TLS) with SMTP AUTH, the outgoing
//! policy, routing of local and remote recipients, and `tern sendmail`.

use crate::harness::{
    Daemon, Raw, TERN, add_user_with_password, insecure_tls_connector, run_sendmail, tern,
};
use base64::Engine;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rustls::pki_types::ServerName;
use std::path::Path;

const LISTENERS: &str = r#"
[[listener]]
kind = "submission"
bind = ["127.0.0.1:0"]
[[listener]]
kind = "submissions"
bind = ["127.0.0.1:0"]
[auth]
failure_delay_ms = 20
"#;

/// A daemon with submission listeners; alice@ has password "alice-pw", bob@ "bob-pw".
fn daemon(extra: &str) -> Daemon {
    // remote.test has an address but no SMTP server on the remote port (9): relayed mail stays queued.
    let dns = crate::dns::TestDns::start(vec![crate::dns::Rr::A("remote.test", "127.0.0.1")]);
    let mut d = Daemon::start_with_dns(&format!("{LISTENERS}{extra}\n{}", dns.config()));
    d.dns = Some(dns);
    for (user, pw) in [
        ("alice@example.test", "alice-pw"),
        ("bob@example.test", "bob-pw"),
    ] {
        tern(d.dir.path(), &["user", "del", user]);
        add_user_with_password(d.dir.path(), user, pw);
    }
    d
}

fn tls_params() -> TlsParameters {
    TlsParameters::builder("mx.example.test".into())
        .dangerous_accept_invalid_certs(true)
        .build_rustls()
        .unwrap()
}

fn starttls_mailer(
    d: &Daemon,
    user: &str,
    pw: &str,
    mechanism: Mechanism,
) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(d.listener("submission").port())
        .tls(Tls::Required(tls_params()))
        .credentials(Credentials::new(user.into(), pw.into()))
        .authentication(vec![mechanism])
        .build()
}

fn message(from: &str, to: &[&str], subject: &str) -> Message {
    let mut b = Message::builder()
        .from(from.parse().unwrap())
        .subject(subject);
    for t in to {
        b = b.to(t.parse().unwrap());
    }
    b.body(String::from("Hello from a mail client.\r\n"))
        .unwrap()
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn starttls_then_auth_plain_and_login_deliver_locally_with_esmtpsa() {
    let d = daemon("");
    for (mech, n) in [(Mechanism::Plain, 1), (Mechanism::Login, 2)] {
        let mailer = starttls_mailer(&d, "alice@example.test", "alice-pw", mech);
        mailer
            .send(message(
                "alice@example.test",
                &["bob@example.test"],
                "via 587",
            ))
            .await
            .unwrap();
        assert_eq!(d.wait_delivered("bob@example.test", n).len(), n);
    }
    let text = read(&d.delivered("bob@example.test")[0]);
    assert!(text.contains("with ESMTPSA id"), "{text}");
    assert!(
        text.contains("(unknown [127.0.0.1])"),
        "client IP recorded by default: {text}"
    );
    assert!(!d.log_text().contains("alice-pw"), "password in the log");
}

#[tokio::test]
async fn implicit_tls_on_the_submissions_port() {
    let d = daemon("");
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(d.listener("submissions").port())
        .tls(Tls::Wrapper(tls_params()))
        .credentials(Credentials::new("bob@example.test".into(), "bob-pw".into()))
        .build();
    mailer
        .send(message(
            "Bob <bob@example.test>",
            &["alice@example.test"],
            "via 465",
        ))
        .await
        .unwrap();
    let text = read(&d.wait_delivered("alice@example.test", 1)[0]);
    assert!(
        text.contains("(using TLSv1.3 with cipher") && text.contains("with ESMTPSA"),
        "{text}"
    );
}

#[tokio::test]
async fn auth_is_offered_only_under_tls_and_mail_needs_auth() {
    let d = daemon("");
    let mut c = Raw::connect(d.listener("submission")).await;
    let (_, ehlo) = c.cmd("EHLO laptop").await;
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    let creds = base64::engine::general_purpose::STANDARD.encode("\0alice@example.test\0alice-pw");
    assert!(
        c.cmd(&format!("AUTH PLAIN {creds}"))
            .await
            .1
            .starts_with("538 5.7.11")
    );
    assert!(
        c.cmd("MAIL FROM:<alice@example.test>")
            .await
            .1
            .starts_with("530 5.7.0")
    );
    assert_eq!(c.cmd("STARTTLS").await.0, 220);
    let tls = insecure_tls_connector()
        .connect(ServerName::try_from("mx.example.test").unwrap(), c.stream)
        .await
        .unwrap();
    let mut t = Raw::from_stream(tls);
    let (_, ehlo) = t.cmd("EHLO laptop").await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(
        t.cmd("MAIL FROM:<alice@example.test>")
            .await
            .1
            .starts_with("530 5.7.0"),
        "MAIL without AUTH"
    );
    assert!(t.cmd("AUTH CRAM-MD5").await.1.starts_with("504 5.5.4"));
    assert_eq!(t.cmd(&format!("AUTH PLAIN {creds}")).await.0, 235);
    assert!(
        t.cmd("AUTH PLAIN").await.1.starts_with("503 5.5.1"),
        "AUTH twice"
    );
    assert_eq!(t.cmd("MAIL FROM:<alice@example.test>").await.0, 250);
    // The relay listener offers no AUTH unless configured.
    let mut r = Raw::connect(d.addr).await;
    assert!(!r.cmd("EHLO laptop").await.1.contains("AUTH"));
}

#[tokio::test]
async fn wrong_password_is_535_and_repeated_failures_are_blocked_with_421() {
    let d = daemon("failures_before_block = 3\n");
    let mailer = starttls_mailer(&d, "alice@example.test", "wrong", Mechanism::Plain);
    let err = mailer
        .send(message("alice@example.test", &["bob@example.test"], "x"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("535")
            || err
                .status()
                .is_some_and(|s| s.to_string().starts_with("535")),
        "{err}"
    );
    // Raw client over TLS, LOGIN mechanism, counting replies.
    let mut c = Raw::connect(d.listener("submission")).await;
    c.cmd("EHLO laptop").await;
    c.cmd("STARTTLS").await;
    let tls = insecure_tls_connector()
        .connect(ServerName::try_from("mx.example.test").unwrap(), c.stream)
        .await
        .unwrap();
    let mut t = Raw::from_stream(tls);
    t.cmd("EHLO laptop").await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(t.cmd("AUTH LOGIN").await.0, 334);
    assert_eq!(t.cmd(&b64("alice@example.test")).await.0, 334);
    let (code, text) = t.cmd(&b64("still wrong")).await;
    assert!(code == 535 && text.starts_with("535 5.7.8"), "{text}");
    // Third failure (the first was lettre's) blocks the client IP and the account.
    let (code, text) = t
        .cmd(&format!("AUTH PLAIN {}", b64("\0alice@example.test\0nope")))
        .await;
    assert_eq!(code, 421, "{text}");
    assert!(text.starts_with("421 4.7.0"));
    assert!(t.closed().await);
    // Blocked now even with the right password.
    let ok = starttls_mailer(&d, "alice@example.test", "alice-pw", Mechanism::Plain);
    assert!(
        ok.send(message("alice@example.test", &["bob@example.test"], "x"))
            .await
            .is_err()
    );
    let log = d.log_text();
    assert!(
        log.contains("authentication failed")
            && !log.contains("still wrong")
            && !log.contains("nope"),
        "{log}"
    );
}

#[tokio::test]
async fn spoofed_mail_from_and_spoofed_from_header_are_refused() {
    let d = daemon("");
    let mailer = starttls_mailer(&d, "alice@example.test", "alice-pw", Mechanism::Plain);
    // Envelope sender of somebody else.
    let env = lettre::address::Envelope::new(
        Some("bob@example.test".parse().unwrap()),
        vec!["bob@example.test".parse().unwrap()],
    )
    .unwrap();
    let err = mailer
        .send_raw(&env, b"From: alice@example.test\r\nSubject: x\r\n\r\nx\r\n")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not owned by user alice@example.test"),
        "{err}"
    );
    // Own envelope, somebody else's From:.
    let env = lettre::address::Envelope::new(
        Some("alice@example.test".parse().unwrap()),
        vec!["bob@example.test".parse().unwrap()],
    )
    .unwrap();
    let err = mailer
        .send_raw(
            &env,
            b"From: The CEO <ceo@example.test>\r\nSubject: wire money\r\n\r\nx\r\n",
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("From: <ceo@example.test> is not owned"),
        "{err}"
    );
    // A subaddress is the user's own.
    mailer
        .send(message(
            "alice+news@example.test",
            &["bob@example.test"],
            "ok",
        ))
        .await
        .unwrap();
    assert_eq!(d.wait_delivered("bob@example.test", 1).len(), 1);
    // Per-user override: bob may send as anyone.
    assert!(
        tern(
            d.dir.path(),
            &["user", "set", "bob@example.test", "--sender-policy", "any"]
        )
        .status
        .success()
    );
    let bob = starttls_mailer(&d, "bob@example.test", "bob-pw", Mechanism::Plain);
    bob.send(message(
        "noreply@example.test",
        &["alice@example.test"],
        "app",
    ))
    .await
    .unwrap();
    assert_eq!(d.wait_delivered("alice@example.test", 1).len(), 1);
}

#[tokio::test]
async fn per_user_rate_limit_says_which_limit() {
    let d = daemon("[submission]\nmax_messages_per_hour = 2\n");
    let mailer = starttls_mailer(&d, "alice@example.test", "alice-pw", Mechanism::Plain);
    for i in 0..2 {
        mailer
            .send(message(
                "alice@example.test",
                &["bob@example.test"],
                &format!("n{i}"),
            ))
            .await
            .unwrap();
    }
    let err = mailer
        .send(message("alice@example.test", &["bob@example.test"], "n3"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("at most 2 messages per hour"),
        "{err}"
    );
    assert!(err.is_transient(), "{err}");
    // Bob has his own budget.
    starttls_mailer(&d, "bob@example.test", "bob-pw", Mechanism::Plain)
        .send(message("bob@example.test", &["alice@example.test"], "b"))
        .await
        .unwrap();
}

#[tokio::test]
async fn mixed_local_and_remote_recipients_one_queue_id() {
    // remote.test's MX answers nowhere (nothing listens on the remote port): the recipient stays queued.
    let d = daemon("[submission]\nhide_client_ip = true\n[delivery]\nremote_port = 9\n");
    let mailer = starttls_mailer(&d, "alice@example.test", "alice-pw", Mechanism::Plain);
    let response = mailer
        .send(message(
            "alice@example.test",
            &["bob@example.test", "friend@remote.test"],
            "mixed",
        ))
        .await
        .unwrap();
    let reply = response.message().collect::<Vec<_>>().join(" ");
    let queue_id = reply.rsplit(' ').next().unwrap().to_string();
    let text = read(&d.wait_delivered("bob@example.test", 1)[0]);
    assert!(text.contains(&format!("id {queue_id}")), "{text}");
    assert!(!text.contains("127.0.0.1"), "hide_client_ip: {text}");
    // The remote recipient is deferred by the outbound MTA and stays visible in the queue.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = tern(d.dir.path(), &["queue", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains(&queue_id), "{list}");
    assert!(
        list.contains("queued   remote <friend@remote.test>"),
        "{list}"
    );
    assert!(
        list.contains("delivered local  <bob@example.test>"),
        "local recipient delivered at once: {list}"
    );
    // Without authentication, the same remote recipient is relaying.
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO mx.remote.test").await;
    c.cmd("MAIL FROM:<x@remote.test>").await;
    assert!(
        c.cmd("RCPT TO:<friend@remote.test>")
            .await
            .1
            .starts_with("554 5.7.1")
    );
}

#[tokio::test]
async fn message_id_and_date_are_added_when_missing() {
    let d = daemon("");
    let mailer = starttls_mailer(&d, "alice@example.test", "alice-pw", Mechanism::Plain);
    let env = lettre::address::Envelope::new(
        Some("alice@example.test".parse().unwrap()),
        vec!["bob@example.test".parse().unwrap()],
    )
    .unwrap();
    mailer
        .send_raw(
            &env,
            b"From: alice@example.test\r\nSubject: bare\r\n\r\nno id, no date\r\n",
        )
        .await
        .unwrap();
    mailer
        .send_raw(&env, b"From: alice@example.test\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <keep@me>\r\n\r\nx\r\n")
        .await
        .unwrap();
    let files = d.wait_delivered("bob@example.test", 2);
    let texts: Vec<String> = files.iter().map(|f| read(f)).collect();
    let bare = texts.iter().find(|t| t.contains("Subject: bare")).unwrap();
    assert!(
        bare.contains("\nDate: ")
            && bare.contains("\nMessage-ID: <")
            && bare.contains("@mx.example.test>"),
        "{bare}"
    );
    let kept = texts.iter().find(|t| t.contains("<keep@me>")).unwrap();
    assert_eq!(kept.matches("Message-ID:").count(), 1, "{kept}");
    assert_eq!(kept.matches("Date:").count(), 1, "{kept}");
}

#[test]
fn sendmail_t_delivers_to_a_local_user() {
    let d = Daemon::start("");
    let config = d.dir.path().join("tern.toml");
    let input = b"To: alice@example.test\nBcc: bob@example.test\nSubject: cron job\n\n.leading dot\nresult: ok\n";
    let out = run_sendmail(
        Path::new(TERN),
        &config,
        &["sendmail", "-t", "-F", "Cron Daemon"],
        input,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alice = read(&d.wait_delivered("alice@example.test", 1)[0]);
    assert!(
        alice.contains("Subject: cron job") && alice.contains("\n.leading dot\nresult: ok\n"),
        "{alice}"
    );
    assert!(alice.contains("From: \"Cron Daemon\" <"), "{alice}");
    assert!(alice.contains("(tern, from uid "), "{alice}");
    assert!(
        alice.contains("Message-ID: <") && alice.contains("Date: "),
        "{alice}"
    );
    let bob = read(&d.wait_delivered("bob@example.test", 1)[0]);
    assert!(!bob.contains("Bcc:"), "Bcc: must not be delivered: {bob}");

    // An unknown local user: sendmail's EX_NOUSER (67) and a message on stderr.
    let out = run_sendmail(
        Path::new(TERN),
        &config,
        &["sendmail", "nobody@example.test"],
        b"Subject: x\n\nx\n",
    );
    assert_eq!(out.status.code(), Some(67));
    assert!(String::from_utf8_lossy(&out.stderr).contains("5.1.1"));
}

#[test]
fn a_symlink_named_sendmail_behaves_like_tern_sendmail() {
    let d = Daemon::start("");
    let link = d.dir.path().join("sendmail");
    std::os::unix::fs::symlink(TERN, &link).unwrap();
    let input = b"Subject: via symlink\n\n.\nstill body\n";
    let out = run_sendmail(
        &link,
        &d.dir.path().join("tern.toml"),
        &["-i", "bob@example.test"],
        input,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = read(&d.wait_delivered("bob@example.test", 1)[0]);
    assert!(
        text.contains("\n.\nstill body\n"),
        "-i keeps a lone dot: {text}"
    );
}

#[test]
fn python_smtplib_submits_with_starttls_and_login() {
    let Ok(python) = which("python3") else {
        eprintln!("python3 not found: skipping the smtplib client");
        return;
    };
    let d = daemon("");
    let port = d.listener("submission").port();
    let script = format!(
        "import smtplib, ssl\n\
         s = smtplib.SMTP('127.0.0.1', {port}, timeout=15)\n\
         s.starttls(context=ssl._create_unverified_context())\n\
         s.login('alice@example.test', 'alice-pw')\n\
         s.sendmail('alice@example.test', ['bob@example.test'], 'From: alice@example.test\\r\\nSubject: from smtplib\\r\\n\\r\\nhi\\r\\n')\n\
         s.quit()\n"
    );
    let out = std::process::Command::new(python)
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = read(&d.wait_delivered("bob@example.test", 1)[0]);
    assert!(
        text.contains("Subject: from smtplib") && text.contains("with ESMTPSA"),
        "{text}"
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
        .ok_or(())
}
