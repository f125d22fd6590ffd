//! The sendmail interface as cron, PHP and admins use it: bare names, /etc/aliases through newaliases,
//! `sendmail -bs`, `-bv`, and `mailq`/`newaliases` as program names.

use crate::harness::{Daemon, TERN, run_sendmail, tern};
use std::path::Path;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn cron_mail_to_root_reaches_the_alias_target() {
    let d = Daemon::start("");
    let aliases = d.dir.path().join("aliases");
    std::fs::write(
        &aliases,
        "# as Debian ships it\nmailer-daemon: postmaster\npostmaster: root\nroot: alice\n\
         team: bob,\n  carol@remote.test\nlogger: \"|/usr/bin/logger\"\n",
    )
    .unwrap();
    let out = tern(d.dir.path(), &["newaliases", aliases.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("program or file target"), "{stderr}");
    let list = String::from_utf8_lossy(&tern(d.dir.path(), &["alias", "list"]).stdout).to_string();
    assert!(
        list.contains("root@example.test\talice@example.test"),
        "{list}"
    );
    assert!(
        list.contains("mailer-daemon@example.test\talice@example.test"),
        "chains flattened: {list}"
    );
    // Debian's cron: sendmail -FCronDaemon -i -B8BITMIME -oem root
    let out = run_sendmail(
        Path::new(TERN),
        &d.dir.path().join("tern.toml"),
        &[
            "sendmail",
            "-FCronDaemon",
            "-i",
            "-B8BITMIME",
            "-oem",
            "root",
        ],
        b"Subject: Cron <root@host> run-parts\n\nall good\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = read(&d.wait_delivered("alice@example.test", 1)[0]);
    assert!(
        got.contains("for <root@example.test>") && got.contains("all good"),
        "{got}"
    );
}

#[test]
fn php_style_smtp_dialogue_on_standard_input() {
    let d = Daemon::start("");
    // Symfony's and Drupal's default transport: `sendmail -bs`, SMTP over the pipe.
    let dialogue =
        b"EHLO app\r\nMAIL FROM:<root@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n\
                     Subject: from php\r\n\r\nhello\r\n.\r\nQUIT\r\n";
    let out = run_sendmail(
        Path::new(TERN),
        &d.dir.path().join("tern.toml"),
        &["sendmail", "-bs"],
        dialogue,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replies = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        replies.starts_with("220 ") && replies.contains("250 2.0.0") && replies.contains("221"),
        "{replies}"
    );
    let got = read(&d.wait_delivered("bob@example.test", 1)[0]);
    assert!(got.contains("Subject: from php"), "{got}");
}

#[test]
fn verify_mode_and_mailq_as_a_program_name() {
    let d = Daemon::start("");
    let config = d.dir.path().join("tern.toml");
    let out = run_sendmail(
        Path::new(TERN),
        &config,
        &["sendmail", "-bv", "alice", "nobody@example.test"],
        b"",
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("alice@example.test... deliverable"), "{text}");
    assert!(
        text.contains("nobody@example.test... undeliverable: 550"),
        "{text}"
    );
    let mailq = d.dir.path().join("mailq");
    std::os::unix::fs::symlink(TERN, &mailq).unwrap();
    let out = run_sendmail(&mailq, &config, &[], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let newaliases = d.dir.path().join("newaliases");
    std::os::unix::fs::symlink(TERN, &newaliases).unwrap();
    let out = run_sendmail(&newaliases, &config, &[], b"");
    // /etc/aliases may or may not exist here; either way the program name is understood (no usage error).
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("unknown option") && !err.contains("Usage"),
        "{err}"
    );
}
