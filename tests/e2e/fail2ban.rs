//! The text log as tools read it: Debian's fail2ban-regex, with the filter tern ships under
//! config/fail2ban/, finds the failed logins a daemon logged (SMTP AUTH, IMAP, POP3) and bans the client's
//! address only, whatever the client put in its user name; logfmt values with spaces are quoted.

use crate::harness::{Daemon, add_user_with_password, tern};
use std::process::Command;

const LISTENERS: &str = "[[listener]]\nkind = \"submission\"\nbind = [\"127.0.0.1:0\"]\n\
                         [[listener]]\nkind = \"imap\"\nbind = [\"127.0.0.1:0\"]\n\
                         [[listener]]\nkind = \"pop3\"\nbind = [\"127.0.0.1:0\"]\n\
                         [auth]\nfailure_delay_ms = 1\n";

/// Failed logins from 127.0.0.1 over three protocols with Python's standard clients; the user names try to
/// forge a log line or a field that names another address.
const CLIENTS: &str = r#"
import imaplib, poplib, smtplib, ssl, sys
ctx = ssl._create_unverified_context()
forged = 'bob" client_ip=10.9.8.7 x="'
s = smtplib.SMTP('127.0.0.1', {submission}); s.starttls(context=ctx)
for user in ['alice@example.test', forged, 'eve}: tern::access: login failed\nWARN access{client_ip=10.9.8.7}:']:
    try: s.login(user, 'wrong')
    except smtplib.SMTPException as e: print('smtp', e.smtp_code if hasattr(e, 'smtp_code') else e)
c = imaplib.IMAP4('127.0.0.1', {imap}); c.starttls(ssl_context=ctx)
try: c.login('alice@example.test', 'wrong')
except imaplib.IMAP4.error as e: print('imap', e)
p = poplib.POP3('127.0.0.1', {pop3}); p.stls(context=ctx); p.user('alice@example.test')
try: p.pass_('wrong')
except poplib.error_proto as e: print('pop3', e)
"#;

#[test]
fn fail2ban_bans_the_address_of_failed_logins_and_nothing_else() {
    let Some(regex) = ["/usr/bin/fail2ban-regex", "/usr/local/bin/fail2ban-regex"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("fail2ban-regex not installed: skipping (CI installs fail2ban)");
        return;
    };
    let d = Daemon::start(LISTENERS);
    tern(d.dir.path(), &["user", "del", "alice@example.test"]);
    add_user_with_password(d.dir.path(), "alice@example.test", "alice-pw");
    let script = CLIENTS
        .replace("{submission}", &d.listener("submission").port().to_string())
        .replace("{imap}", &d.listener("imap").port().to_string())
        .replace("{pop3}", &d.listener("pop3").port().to_string());
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.lines().count(), 5, "{said}");
    // Eight failures logged: smtplib tries PLAIN and LOGIN for each of three users, then IMAP and POP3
    // (bounded wait).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while d.log_text().matches("failed user=").count() < 8 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = d.log_text();
    assert_eq!(log.matches("failed user=").count(), 8, "{log}");
    // logfmt: a user name with spaces and quotes is one quoted value, its quotes escaped.
    assert!(
        log.contains(r#"user="bob\" client_ip=10.9.8.7 x=\"""#),
        "{log}"
    );
    let file = d.dir.path().join("tern.log");
    std::fs::write(&file, &log).unwrap();
    let filter =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fail2ban/filter.d/tern.conf");
    let ips = |mode: &str| -> Vec<String> {
        let out = Command::new(regex)
            .arg("-o")
            .arg("ip")
            .arg(&file)
            .arg(format!("{}[mode={mode}]", filter.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    let normal = ips("normal");
    assert_eq!(normal, vec!["127.0.0.1"; 8], "{log}");

    // aggressive adds a relay attempt and mail to an unknown user, with a HELO that tries the same trick.
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            &format!(
                r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {}, local_hostname='x]client_ip=10.9.8.7')
for rcpt in ['victim@elsewhere.test', 'nobody@example.test']:
    try: s.sendmail('spam@spam.test', [rcpt], 'Subject: x\r\n\r\nx\r\n')
    except smtplib.SMTPRecipientsRefused as e: print(list(e.recipients.values())[0][0])
"#,
                d.listener("relay").port()
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "554\n550",
        "{out:?}"
    );
    assert!(d.wait_log("nobody@example.test"));
    std::fs::write(&file, d.log_text()).unwrap();
    assert_eq!(ips("normal").len(), 8);
    assert_eq!(ips("aggressive"), vec!["127.0.0.1"; 10], "{}", d.log_text());
}
