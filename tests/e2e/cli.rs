//! The command line: check-config, user management while the daemon runs, bad configuration messages.

use crate::harness::{Daemon, Raw, TERN, config_text, tern};
use std::process::Command;

#[test]
fn version_and_check_config() {
    let out = Command::new(TERN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("tern "));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tern.toml"), config_text("")).unwrap();
    let out = tern(dir.path(), &["check-config"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("message_size = 26214400"), "{text}");
    assert!(
        text.contains(&format!("data_dir = \"{}/data\"", dir.path().display())),
        "{text}"
    );
}

#[test]
fn bad_config_names_file_key_and_reason_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bad = config_text("").replace(
        r#"bind = ["127.0.0.1:0"]"#,
        r#"bind = ["127.0.0.1:0", "127.0.0.1:99999"]"#,
    );
    std::fs::write(dir.path().join("tern.toml"), bad).unwrap();
    let out = tern(dir.path(), &["serve"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "tern: {}/tern.toml: listener[0].bind[1]: \"127.0.0.1:99999\" is not a socket address",
            dir.path().display()
        )
    );
    let out = Command::new(TERN)
        .args(["serve", "--config", "/nonexistent/tern.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("tern: /nonexistent/tern.toml: cannot read")
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[tokio::test]
async fn users_added_while_the_daemon_runs_receive_mail_at_once() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO client.test").await;
    c.cmd("MAIL FROM:<a@remote.test>").await;
    assert_eq!(c.cmd("RCPT TO:<carol@example.test>").await.0, 550);
    let out = tern(d.dir.path(), &["user", "add", "Carol@example.test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.cmd("RCPT TO:<carol@example.test>").await.0, 250);
    let list = String::from_utf8_lossy(&tern(d.dir.path(), &["user", "list"]).stdout).to_string();
    assert!(list.contains("carol@example.test\tno-login"), "{list}");
    let out = tern(d.dir.path(), &["user", "add", "x@other.test"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not one of [domains] local"));
    assert!(
        tern(d.dir.path(), &["user", "del", "carol@example.test"])
            .status
            .success()
    );
    assert_eq!(c.cmd("RCPT TO:<carol@example.test>").await.0, 550);
}

#[test]
fn password_from_stdin_is_stored_as_argon2id() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tern.toml"), config_text("")).unwrap();
    crate::harness::add_user_with_password(dir.path(), "dave@example.test", "correct horse");
    let db = std::fs::read(dir.path().join("data/tern.db")).unwrap_or_default();
    let wal = std::fs::read(dir.path().join("data/tern.db-wal")).unwrap_or_default();
    let all = [db, wal].concat();
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("$argon2id$"), "no argon2id hash stored");
    assert!(!text.contains("correct horse"), "password stored in clear");
}

#[test]
fn check_config_loads_the_tls_pair_and_warns_about_unwise_settings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tern.toml"), config_text("")).unwrap();
    let out = tern(dir.path(), &["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("warning: server.allow_root"),
        "{err}"
    );
    // A certificate and a key that do not belong together: the daemon would not start, so neither does this.
    let a = rcgen::generate_simple_self_signed(vec!["mx.example.test".to_string()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["mx.example.test".to_string()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), a.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), b.signing_key.serialize_pem()).unwrap();
    std::fs::write(
        dir.path().join("tern.toml"),
        config_text("[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n"),
    )
    .unwrap();
    let out = tern(dir.path(), &["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("key.pem: this private key does not belong to the certificate"),
        "{err}"
    );
    // A pair that belongs together but expired, for another name: the daemon starts (it still encrypts),
    // and check-config says what is wrong with it.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["*.example.net".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let old = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("cert.pem"), old.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let out = tern(dir.path(), &["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("expired on Wed, 1 Jan 2020"), "{err}");
    assert!(
        err.contains("does not name server.hostname \"mx.example.test\" (it names *.example.net)"),
        "{err}"
    );
    // Public listeners with the self-signed bootstrap are worth a warning.
    let public = config_text("").replace("bind = [\"127.0.0.1:0\"]", "bind = [\"0.0.0.0:0\"]");
    std::fs::write(dir.path().join("tern.toml"), public).unwrap();
    let out = tern(dir.path(), &["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("self-signed certificate"), "{err}");
}

/// POP3 USER/PASS on loopback: whether the daemon accepts this password for alice.
async fn pop3_login(addr: std::net::SocketAddr, password: &str) -> bool {
    let mut c = Raw::connect_greeting(addr, "+OK").await;
    assert!(c.pop_cmd("USER alice@example.test", false).await.0);
    let ok = c.pop_cmd(&format!("PASS {password}"), false).await.0;
    let _ = c.pop_cmd("QUIT", false).await;
    ok
}

/// `tern user passwd` while the daemon runs: the new password works at the next login and the old one
/// no more (a remembered login is keyed by the old hash); `--remove` leaves an account that receives mail
/// but cannot log in; an unknown user is an error; no password reaches the log.
#[tokio::test]
async fn user_passwd_changes_and_removes_a_password_on_the_running_daemon() {
    use std::io::Write;
    let d = Daemon::start("[[listener]]\nkind = \"pop3\"\nbind = [\"127.0.0.1:0\"]\n");
    tern(d.dir.path(), &["user", "del", "alice@example.test"]);
    crate::harness::add_user_with_password(d.dir.path(), "alice@example.test", "first-pw");
    let pop = d.listener("pop3");
    assert!(pop3_login(pop, "first-pw").await);
    let passwd = |args: &[&str], input: &str| {
        let mut child = Command::new(TERN)
            .args(["user", "passwd"])
            .args(args)
            .arg("--config")
            .arg(d.dir.path().join("tern.toml"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = passwd(&["Alice@Example.test"], "second-pw\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !pop3_login(pop, "first-pw").await,
        "the old password is refused"
    );
    assert!(pop3_login(pop, "second-pw").await, "the new one works");
    let out = passwd(&["alice@example.test"], "\n");
    assert!(!out.status.success(), "an empty password is refused");
    assert!(pop3_login(pop, "second-pw").await, "and changes nothing");
    let out = passwd(&["nobody@example.test"], "x\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user"));
    let out = passwd(&["alice@example.test", "--remove"], "");
    assert!(out.status.success());
    assert!(!pop3_login(pop, "second-pw").await, "no password, no login");
    let list = tern(d.dir.path(), &["user", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("alice@example.test\tno-login"));
    let log = d.log_text();
    assert!(!log.contains("first-pw") && !log.contains("second-pw"));
}

/// `tern user disable`: the account keeps its mailbox, but mail for it gets 550 5.2.1 at RCPT and a login
/// with the right password is refused with the account's state (SMTP 525 5.7.13, POP3 [AUTH]); a wrong
/// password gets the usual answer, so guessing learns nothing. `enable` undoes it at once.
#[tokio::test]
async fn a_disabled_account_refuses_mail_and_logins_until_enabled() {
    use base64::Engine;
    let d = Daemon::start(
        "[[listener]]\nkind = \"pop3\"\nbind = [\"127.0.0.1:0\"]\n\
         [[listener]]\nkind = \"submission\"\nbind = [\"127.0.0.1:0\"]\n",
    );
    tern(d.dir.path(), &["user", "del", "alice@example.test"]);
    crate::harness::add_user_with_password(d.dir.path(), "alice@example.test", "alice-pw");
    let pop = d.listener("pop3");
    // A login just before: the daemon remembers it (login_cache_secs), which must not outlive the disable.
    assert!(pop3_login(pop, "alice-pw").await);
    // RCPTs just before: the daemon remembers the lookup while tern.db is unchanged, which must not
    // outlive the change another process (the CLI) commits.
    let mut before = Raw::connect(d.addr).await;
    before.cmd("EHLO remote.test").await;
    assert_eq!(before.cmd("MAIL FROM:<x@remote.test>").await.0, 250);
    for _ in 0..3 {
        assert_eq!(before.cmd("RCPT TO:<alice@example.test>").await.0, 250);
    }
    let out = tern(d.dir.path(), &["user", "disable", "Alice@example.test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = tern(d.dir.path(), &["user", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("alice@example.test\tdisabled"));

    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO remote.test").await;
    assert_eq!(c.cmd("MAIL FROM:<x@remote.test>").await.0, 250);
    let (code, text) = c.cmd("RCPT TO:<alice@example.test>").await;
    assert_eq!(code, 550, "{text}");
    assert!(
        text.contains("5.2.1") && text.contains("disabled"),
        "{text}"
    );

    let mut p = Raw::connect_greeting(pop, "+OK").await;
    p.pop_cmd("USER alice@example.test", false).await;
    let (ok, text) = p.pop_cmd("PASS alice-pw", false).await;
    assert!(!ok && text.contains("[AUTH] account disabled"), "{text}");
    // Twice: a refused login of a disabled account is not remembered as a good one either.
    assert!(!pop3_login(pop, "alice-pw").await);
    let mut p = Raw::connect_greeting(pop, "+OK").await;
    p.pop_cmd("USER alice@example.test", false).await;
    let (ok, text) = p.pop_cmd("PASS wrong", false).await;
    assert!(
        !ok && !text.contains("disabled"),
        "a wrong password tells nothing: {text}"
    );

    let mut t = crate::harness::tls_session(d.listener("submission")).await;
    let creds = base64::engine::general_purpose::STANDARD.encode("\0alice@example.test\0alice-pw");
    let (code, text) = t.cmd(&format!("AUTH PLAIN {creds}")).await;
    assert_eq!(code, 525, "{text}");
    assert!(text.contains("5.7.13"), "{text}");

    // Behind an alias too: the disabled target is dropped, and an alias left with none is refused.
    tern(
        d.dir.path(),
        &["alias", "add", "team@example.test", "alice@example.test"],
    );
    let out = tern(
        d.dir.path(),
        &[
            "alias",
            "add",
            "both@example.test",
            "alice@example.test",
            "bob@example.test",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, text) = c.cmd("RCPT TO:<team@example.test>").await;
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("5.2.1"), "{text}");
    assert_eq!(c.cmd("RCPT TO:<both@example.test>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(b"Subject: to both\r\n\r\nhi\r\n.\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    assert_eq!(d.wait_delivered("bob@example.test", 1).len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        d.delivered("alice@example.test").is_empty(),
        "nothing for the disabled account"
    );
    assert_eq!(c.cmd("MAIL FROM:<x@remote.test>").await.0, 250);
    let out = tern(d.dir.path(), &["user", "enable", "alice@example.test"]);
    assert!(out.status.success());
    let (code, text) = c.cmd("RCPT TO:<alice@example.test>").await;
    assert_eq!(code, 250, "{text}");
    assert!(
        pop3_login(pop, "alice-pw").await,
        "enabled: the login works again"
    );
    assert!(
        !tern(d.dir.path(), &["user", "disable", "nobody@example.test"])
            .status
            .success()
    );
}

/// POP3 USER/PASS for any user.
async fn pop3_login_as(addr: std::net::SocketAddr, user: &str, password: &str) -> bool {
    let mut c = Raw::connect_greeting(addr, "+OK").await;
    assert!(c.pop_cmd(&format!("USER {user}"), false).await.0);
    let ok = c.pop_cmd(&format!("PASS {password}"), false).await.0;
    let _ = c.pop_cmd("QUIT", false).await;
    ok
}

/// Users moved from Dovecot keep their passwords: a passwd-file with hashes made by Dovecot's own
/// `doveadm pw` is imported as it is, each hash logs in, and the first login replaces it by argon2id.
/// A scheme tern does not take ({PLAIN}) is named and skipped, and the import says it was not complete.
#[tokio::test]
async fn dovecot_password_hashes_are_imported_and_rehashed_at_login() {
    let Some(doveadm) = ["/usr/bin/doveadm", "/usr/local/bin/doveadm"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("doveadm not installed: skipping (CI installs dovecot-core with dovecot-sieve)");
        return;
    };
    let d = Daemon::start(
        "[[listener]]\nkind = \"pop3\"\nbind = [\"127.0.0.1:0\"]\n[auth]\nfailure_delay_ms = 1\n",
    );
    let schemes = ["SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2ID"];
    let mut file = String::from("# exported from dovecot\n");
    for (i, scheme) in schemes.iter().enumerate() {
        let out = Command::new(doveadm)
            .args(["pw", "-s", scheme, "-p", &format!("pw-{i}")])
            .output()
            .unwrap();
        let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(hash.starts_with(&format!("{{{scheme}}}")), "{hash}");
        // The last one without a domain: --domain qualifies it.
        let user = if i == 3 {
            format!("u{i}")
        } else {
            format!("u{i}@example.test")
        };
        file.push_str(&format!("{user}:{hash}:1000:1000::/home/u{i}::\n"));
    }
    file.push_str("plain@example.test:{PLAIN}pencil:1000:1000::::\n");
    std::fs::write(d.dir.path().join("users"), &file).unwrap();
    let path = d.dir.path().join("users");
    let out = tern(
        d.dir.path(),
        &[
            "user",
            "import-dovecot",
            path.to_str().unwrap(),
            "--domain",
            "example.test",
        ],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(
        !out.status.success(),
        "a skipped line must show in the exit status"
    );
    assert!(
        stdout.contains("4 users added, 0 passwords replaced, 1 lines skipped"),
        "{stdout}"
    );
    assert!(
        stderr.contains("plain@example.test skipped") && stderr.contains("PLAIN"),
        "{stderr}"
    );

    let db = d.dir.path().join("data/tern.db");
    let stored = |user: String| {
        let db = db.clone();
        async move {
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect(&format!("sqlite:{}?mode=ro", db.display()))
                .await
                .unwrap();
            let h: Option<String> =
                sqlx::query_scalar("SELECT password_hash FROM users WHERE address = ?")
                    .bind(user)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            pool.close().await;
            h.unwrap_or_default()
        }
    };
    let pop = d.listener("pop3");
    for i in 0..schemes.len() {
        let user = format!("u{i}@example.test");
        assert!(!pop3_login_as(pop, &user, "wrong").await, "{user}");
        assert!(
            pop3_login_as(pop, &user, &format!("pw-{i}")).await,
            "{user}: {}",
            d.log_text()
        );
        let now = stored(user.clone()).await;
        assert!(now.starts_with("$argon2id$"), "{user} still has {now}");
        if i < 3 {
            assert!(d.wait_log("imported password hash replaced by argon2id"));
        }
        assert!(
            pop3_login_as(pop, &user, &format!("pw-{i}")).await,
            "{user}"
        );
    }
    assert!(!pop3_login_as(pop, "plain@example.test", "pencil").await);
}

/// `tern dns`: the records to publish, as zone text that a real zone parser (dnspython) reads, naming the
/// active DKIM key's record exactly, the listeners' ports in SRV records, and the host's PTR.
#[test]
fn dns_prints_the_records_to_publish_as_a_parsable_zone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tern.toml"),
        config_text(
            "[[listener]]\nkind = \"submission\"\nbind = [\"127.0.0.1:2587\"]\n\
             [[listener]]\nkind = \"imaps\"\nbind = [\"127.0.0.1:2993\"]\n\
             [[listener]]\nkind = \"https\"\nbind = [\"127.0.0.1:2443\"]\n\
             [mta_sts]\nmode = \"testing\"\n",
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = tern(dir.path(), args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let zone = run(&["dns", "example.test", "--ip", "192.0.2.10"]);
    assert!(zone.contains("no DKIM key for example.test"), "{zone}");
    run(&[
        "dkim",
        "generate",
        "--domain",
        "example.test",
        "--selector",
        "s1",
        "--algorithm",
        "rsa",
    ]);
    run(&["dkim", "activate", "--domain", "example.test", "s1"]);
    let keys: serde_json::Value = serde_json::from_str(&run(&["dkim", "list", "--json"])).unwrap();
    let record = keys[0]["record"].as_str().unwrap().to_string();
    let zone = run(&["dns", "example.test", "--ip", "192.0.2.10"]);
    for want in [
        "example.test.\t3600\tIN\tMX\t10 mx.example.test.",
        "_submission._tcp.example.test.\t3600\tIN\tSRV\t10 1 2587 mx.example.test.",
        "_imaps._tcp.example.test.\t3600\tIN\tSRV\t0 1 2993 mx.example.test.",
        "10.2.0.192.in-addr.arpa.\t3600\tIN\tPTR\tmx.example.test.",
        "\"v=DMARC1; p=none; rua=mailto:postmaster@example.test\"",
        "_mta-sts.example.test.\t3600\tIN\tTXT\t\"v=STSv1; id=",
        "mta-sts.example.test.\t3600\tIN\tCNAME\tmx.example.test.",
        "autoconfig.example.test.\t3600\tIN\tCNAME\tmx.example.test.",
        "autodiscover.example.test.\t3600\tIN\tCNAME\tmx.example.test.",
    ] {
        assert!(zone.contains(want), "missing {want:?} in\n{zone}");
    }
    // A zone parser reads it, and the DKIM TXT (split into 255-octet strings) joins back to the key's record.
    let has_dnspython = Command::new("/usr/bin/python3")
        .args(["-c", "import dns.zone"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_dnspython {
        eprintln!("python3-dnspython not installed: zone syntax not checked");
        return;
    }
    let file = dir.path().join("zone.txt");
    std::fs::write(&file, &zone).unwrap();
    let script = r#"
import sys, dns.zone, dns.rdatatype
z = dns.zone.from_file(sys.argv[1], origin='.', relativize=False, check_origin=False)
txt = z.get_rdataset('s1._domainkey.example.test.', 'TXT')
print(b''.join(txt[0].strings).decode())
print(len(list(z.iterate_rdatas())))
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let mut lines = said.lines();
    assert_eq!(lines.next(), Some(record.as_str()));
    assert!(
        lines.next().unwrap().parse::<usize>().unwrap() >= 8,
        "{said}"
    );
}
