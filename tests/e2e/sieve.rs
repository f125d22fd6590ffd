//! Sieve at delivery against the real binary: scripts stored with `tern sieve`, mail sent over SMTP, the
//! results read over IMAP (folders, flags) and at a sink playing the remote MX (redirects, vacation
//! replies, refusals), and scripts that fail or loop falling back to keeping the message.

use crate::dns::{Rr, TestDns};
use crate::harness::{Daemon, Raw, add_user_with_password, tern};
use crate::sink::{Behaviour, Sink, sinks};
use std::time::{Duration, Instant};

const IMAP: &str = "[[listener]]\nkind = \"imap\"\nbind = [\"127.0.0.1:0\"]\n";

/// A daemon whose mail for remote.test goes to a sink on 127.0.0.2; alice has a password for IMAP.
fn daemon(extra: &str) -> (Daemon, Vec<Sink>) {
    let s = sinks(vec![Behaviour::default()]);
    let dns = TestDns::start(vec![Rr::A("remote.test", "127.0.0.2")]);
    let mut d = Daemon::start_with_dns(&format!(
        "{IMAP}[delivery]\nremote_port = {}\nallow_private_addresses = true\n{extra}\n{}",
        s[0].addr.port(),
        dns.config()
    ));
    d.dns = Some(dns);
    tern(d.dir.path(), &["user", "del", "alice@example.test"]);
    add_user_with_password(d.dir.path(), "alice@example.test", "alice-pw");
    (d, s)
}

fn put(d: &Daemon, name: &str, script: &str, activate: bool) -> std::process::Output {
    let file = d.dir.path().join(format!("{name}.sieve"));
    std::fs::write(&file, script).unwrap();
    let file = file.display().to_string();
    let mut args = vec!["sieve", "put", "alice@example.test", name, &file];
    if activate {
        args.push("--activate");
    }
    tern(d.dir.path(), &args)
}

async fn send(d: &Daemon, from: &str, headers: &str, body: &str) {
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO remote.test").await;
    let msg = format!(
        "From: <{from}>\r\nTo: Alice <alice@example.test>\r\nMessage-ID: <{}@remote.test>\r\n{headers}\r\n{body}\r\n",
        crate::harness::unique()
    );
    let (code, text) = c.send_message(from, "alice@example.test", &msg).await;
    assert_eq!(code, 250, "{text}");
}

async fn imap_cmd(c: &mut Raw, tag: &mut usize, line: &str) -> String {
    *tag += 1;
    c.send(format!("t{tag} {line}\r\n").as_bytes()).await;
    let mut text = String::new();
    loop {
        let l = c.line().await;
        text.push_str(&l);
        text.push('\n');
        if l.starts_with(&format!("t{tag} ")) || l.is_empty() {
            return text;
        }
    }
}

/// What a fresh IMAP session sees: `FOLDER: * n FETCH (FLAGS ...)` per message of each folder.
async fn imap_view(d: &Daemon, folders: &[&str]) -> String {
    let mut c = Raw::connect_greeting(d.listener("imap"), "* OK").await;
    let mut tag = 0;
    let mut out = String::new();
    let r = imap_cmd(&mut c, &mut tag, "LOGIN alice@example.test alice-pw").await;
    assert!(r.contains(" OK"), "{r}");
    for f in folders {
        let r = imap_cmd(&mut c, &mut tag, &format!("SELECT \"{f}\"")).await;
        if !r.contains(&format!("t{tag} OK")) {
            out.push_str(&format!("{f}: none\n"));
            continue;
        }
        let r = imap_cmd(&mut c, &mut tag, "FETCH 1:* (FLAGS)").await;
        for l in r
            .lines()
            .filter(|l| l.starts_with("* ") && l.contains("FETCH"))
        {
            out.push_str(&format!("{f}: {l}\n"));
        }
    }
    out
}

fn wait_log(d: &Daemon, text: &str, n: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if d.log_text().matches(text).count() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn scripts_file_flag_redirect_and_reply_once() {
    let (d, s) = daemon("");
    let script = r#"require ["fileinto", "imap4flags", "vacation", "copy", "mailbox"];
if header :contains "list-id" "rust" {
    fileinto :create :flags ["\\Flagged", "$Work"] "Lists.rust";
    stop;
}
if address :is "from" "boss@remote.test" {
    redirect :copy "assistant@remote.test";
    addflag "\\Flagged";
}
if header :contains "subject" "junk" { discard; stop; }
vacation :days 1 :subject "Away" "I am away until Monday.";
"#;
    let out = put(&d, "main", script, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = tern(d.dir.path(), &["sieve", "list", "alice@example.test"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "main *\n");

    send(
        &d,
        "list@remote.test",
        "Subject: weekly\r\nList-Id: Rust <rust.lists.remote.test>\r\n",
        "news",
    )
    .await;
    send(&d, "boss@remote.test", "Subject: meeting\r\n", "at ten").await;
    send(
        &d,
        "boss@remote.test",
        "Subject: meeting again\r\n",
        "at eleven",
    )
    .await;
    send(
        &d,
        "carol@remote.test",
        "Subject: offer\r\nPrecedence: bulk\r\n",
        "buy",
    )
    .await;
    send(&d, "dan@remote.test", "Subject: junk mail\r\n", "spam").await;
    // Neither a list post nor a bounce (<>) gets a vacation reply.
    send(
        &d,
        "erin@remote.test",
        "Subject: list post\r\nList-Id: <other.lists.remote.test>\r\n",
        "post",
    )
    .await;
    send(&d, "", "Subject: delivery report\r\n", "report").await;
    assert!(wait_log(&d, "sieve=", 7), "{}", d.log_text());

    // The redirects (original sender kept, loop guard added) and one vacation reply (from <>).
    let got = s[0].wait(3);
    // Both messages from the boss are redirected.
    let redirects: Vec<_> = got
        .iter()
        .filter(|m| m.rcpt_to.contains(&"assistant@remote.test".to_string()))
        .collect();
    assert_eq!(redirects.len(), 2, "{got:?}");
    assert_eq!(redirects[0].mail_from, "boss@remote.test");
    assert!(
        redirects[0]
            .data
            .contains("X-Sieve-Redirected-From: <alice@example.test>"),
        "{}",
        redirects[0].data
    );
    assert!(redirects[0].data.contains("Subject: meeting"));
    let replies: Vec<_> = got.iter().filter(|m| m.mail_from.is_empty()).collect();
    assert_eq!(replies.len(), 1, "{got:?}");
    assert_eq!(replies[0].rcpt_to, vec!["boss@remote.test".to_string()]);
    let r = &replies[0].data;
    assert!(
        r.contains("Subject: Away") && r.contains("Auto-Submitted: auto-replied"),
        "{r}"
    );
    assert!(
        r.contains("In-Reply-To: <") && r.contains("I am away until Monday."),
        "{r}"
    );
    // Nothing more: no second reply to boss, none to the bulk sender, the lists, <> or the discarded mail.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s[0].messages().len(), 3, "{:?}", s[0].messages());

    let view = imap_view(&d, &["INBOX", "Lists.rust"]).await;
    let inbox: Vec<_> = view.lines().filter(|l| l.starts_with("INBOX:")).collect();
    assert_eq!(
        inbox.len(),
        5,
        "boss twice, carol, erin, the report; junk discarded:\n{view}"
    );
    assert_eq!(
        inbox.iter().filter(|l| l.contains("\\Flagged")).count(),
        2,
        "{view}"
    );
    let lists: Vec<_> = view
        .lines()
        .filter(|l| l.starts_with("Lists.rust:"))
        .collect();
    assert_eq!(lists.len(), 1, "{view}");
    assert!(
        lists[0].contains("\\Flagged") && lists[0].contains("$Work"),
        "{view}"
    );
    let log = d.log_text();
    assert!(log.contains("sieve=fileinto:Lists.rust"), "{log}");
    assert!(log.contains("sieve=discard"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_scripts_fall_back_to_keep() {
    let (d, s) = daemon("");
    assert!(
        put(
            &d,
            "loop",
            "require \"include\";\ninclude \"loop\";\n",
            false
        )
        .status
        .success()
    );
    assert!(
        put(
            &d,
            "main",
            "require \"include\";\ninclude \"loop\";\ndiscard;\n",
            true
        )
        .status
        .success()
    );
    send(&d, "a@remote.test", "Subject: one\r\n", "x").await;
    assert!(wait_log(&d, "includes itself", 1), "{}", d.log_text());
    let redirects: String = (0..6)
        .map(|i| format!("redirect \"u{i}@remote.test\";\n"))
        .collect();
    assert!(put(&d, "main", &redirects, true).status.success());
    send(&d, "a@remote.test", "Subject: two\r\n", "x").await;
    assert!(wait_log(&d, "more than 4 redirects", 1), "{}", d.log_text());
    let view = imap_view(&d, &["INBOX"]).await;
    assert_eq!(view.lines().count(), 2, "both kept:\n{view}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        s[0].messages().is_empty(),
        "no redirect left: {:?}",
        s[0].messages()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_refuses_with_a_dsn_and_stores_nothing() {
    let (d, s) = daemon("");
    assert!(
        put(
            &d,
            "main",
            "require \"reject\";\nreject \"I do not want this.\";\n",
            true
        )
        .status
        .success()
    );
    send(&d, "a@remote.test", "Subject: unwanted\r\n", "x").await;
    let got = s[0].wait(1);
    assert_eq!(got.len(), 1, "{}", d.log_text());
    assert_eq!(got[0].mail_from, "");
    assert_eq!(got[0].rcpt_to, vec!["a@remote.test".to_string()]);
    assert!(
        got[0].data.contains("I do not want this."),
        "{}",
        got[0].data
    );
    assert!(got[0].data.contains("Status: 5.7.1"), "{}", got[0].data);
    let view = imap_view(&d, &["INBOX"]).await;
    assert_eq!(view.lines().count(), 0, "{view}");
}

#[test]
fn cli_refuses_scripts_that_do_not_compile() {
    let (d, _s) = daemon("");
    let out = put(
        &d,
        "bad",
        "require \"fileinto\";\nif headr \"a\" \"b\" { keep; }\n",
        false,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2, column 4: unknown test \"headr\""),
        "{err}"
    );
    let out = put(&d, "../x", "keep;\n", false);
    assert!(!out.status.success(), "a name with / is refused");
    assert!(put(&d, "good", "keep;\n", true).status.success());
    let out = tern(
        d.dir.path(),
        &["sieve", "delete", "alice@example.test", "good"],
    );
    assert!(!out.status.success(), "the active script cannot be deleted");
    assert!(
        tern(d.dir.path(), &["sieve", "deactivate", "alice@example.test"])
            .status
            .success()
    );
    assert!(
        tern(
            d.dir.path(),
            &["sieve", "delete", "alice@example.test", "good"]
        )
        .status
        .success()
    );
    let listed = tern(d.dir.path(), &["sieve", "list", "alice@example.test"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn ereject_refuses_at_data_while_the_session_is_open() {
    let (d, s) = daemon("");
    let script = "require \"ereject\";\nif header :contains \"subject\" \"spam\" { ereject \"No spam,\r\n please.\"; }\n";
    assert!(put(&d, "main", script, true).status.success());
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO remote.test").await;
    let msg =
        "From: <a@remote.test>\r\nTo: <alice@example.test>\r\nSubject: cheap spam\r\n\r\nx\r\n";
    let (code, text) = c
        .send_message("a@remote.test", "alice@example.test", msg)
        .await;
    assert_eq!(code, 550, "{text}");
    assert!(
        text.contains("5.7.1") && text.contains("No spam,  please."),
        "{text}"
    );
    // The session goes on, and other mail is delivered.
    let msg = "From: <a@remote.test>\r\nTo: <alice@example.test>\r\nSubject: hello\r\n\r\nx\r\n";
    let (code, text) = c
        .send_message("a@remote.test", "alice@example.test", msg)
        .await;
    assert_eq!(code, 250, "{text}");
    assert!(wait_log(&d, "sieve=keep", 1), "{}", d.log_text());
    let view = imap_view(&d, &["INBOX"]).await;
    assert_eq!(view.lines().count(), 1, "{view}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        s[0].messages().is_empty(),
        "no bounce after an SMTP refusal: {:?}",
        s[0].messages()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_scripts_run_around_the_users_and_reload_with_the_configuration() {
    let scripts = tempfile::tempdir().unwrap();
    let before = scripts.path().join("before.sieve");
    std::fs::write(
        &before,
        "require [\"fileinto\", \"mailbox\"];\nif header :is \"x-spam\" \"yes\" { fileinto :create \"Junk\"; stop; }\n",
    )
    .unwrap();
    let (d, _s) = daemon(&format!(
        "[sieve]\nbefore = [{:?}]\n",
        before.display().to_string()
    ));
    // The user's script files everything else; the admin's runs first and stops for spam.
    assert!(
        put(
            &d,
            "main",
            "require \"fileinto\";\nfileinto \"INBOX\";\n",
            true
        )
        .status
        .success()
    );
    send(&d, "a@remote.test", "Subject: one\r\nX-Spam: yes\r\n", "x").await;
    send(&d, "a@remote.test", "Subject: two\r\n", "x").await;
    assert!(wait_log(&d, "sieve=", 2), "{}", d.log_text());
    let view = imap_view(&d, &["INBOX", "Junk"]).await;
    assert_eq!(
        view.lines().filter(|l| l.starts_with("INBOX:")).count(),
        1,
        "{view}"
    );
    assert_eq!(
        view.lines().filter(|l| l.starts_with("Junk:")).count(),
        1,
        "{view}"
    );

    // A broken admin script refuses the reload with its line and column; the running one stays.
    std::fs::write(
        &before,
        "require \"fileinto\";\nif heder \"x\" \"y\" { stop; }\n",
    )
    .unwrap();
    let out = tern(d.dir.path(), &["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2, column 4: unknown test \"heder\""),
        "{err}"
    );
    send(
        &d,
        "a@remote.test",
        "Subject: three\r\nX-Spam: yes\r\n",
        "x",
    )
    .await;
    // A good one is taken by the reload: now nothing is filed into Junk, and List mail is.
    std::fs::write(
        &before,
        "require [\"fileinto\", \"mailbox\"];\nif exists \"list-id\" { fileinto :create \"Junk\"; stop; }\n",
    )
    .unwrap();
    let out = tern(d.dir.path(), &["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    send(&d, "a@remote.test", "Subject: four\r\nX-Spam: yes\r\n", "x").await;
    send(
        &d,
        "a@remote.test",
        "Subject: five\r\nList-Id: <l.remote.test>\r\n",
        "x",
    )
    .await;
    assert!(wait_log(&d, "sieve=", 5), "{}", d.log_text());
    let view = imap_view(&d, &["INBOX", "Junk"]).await;
    assert_eq!(
        view.lines().filter(|l| l.starts_with("INBOX:")).count(),
        2,
        "{view}"
    );
    assert_eq!(
        view.lines().filter(|l| l.starts_with("Junk:")).count(),
        3,
        "{view}"
    );
}

/// A message past the spool threshold (700 KB): the script sees its header section, the start of its
/// body and its whole size; fileinto with a flag and editheader keep the body whole from the spool file;
/// a redirect (a second link to the same spool file) reaches bob whole; no spool file is left.
#[tokio::test]
async fn scripts_work_on_spooled_messages() {
    let (d, _s) = daemon("");
    let out = put(
        &d,
        "big",
        "require [\"fileinto\", \"mailbox\", \"imap4flags\", \"editheader\", \"body\", \"copy\"];\n\
         if size :over 500K { addheader \"X-Big\" \"yes\"; }\n\
         if body :contains \"needle-at-the-start\" { fileinto :create :flags \"\\\\Flagged\" \"Big\"; }\n\
         redirect :copy \"bob@example.test\";\n",
        true,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut body = String::from("needle-at-the-start\r\n");
    for n in 0..9000 {
        body.push_str(&format!("{n} {}\r\n", "q".repeat(70)));
    }
    send(
        &d,
        "carol@remote.test",
        "Subject: spooled for sieve\r\n",
        &body,
    )
    .await;
    let want = format!("\n\n{}\n", body.replace("\r\n", "\n"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let files = |dir: std::path::PathBuf| -> Vec<std::path::PathBuf> {
        ["new", "cur"]
            .iter()
            .flat_map(|s| {
                std::fs::read_dir(dir.join(s))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|e| e.path())
            .collect()
    };
    let (mut filed, mut bobs) = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        filed = files(d.maildir("alice@example.test").join(".Big"));
        bobs = files(d.maildir("bob@example.test"));
        if !filed.is_empty() && !bobs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(filed.len(), 1, "filed into Big: {}", d.log_text());
    assert!(
        filed[0].to_string_lossy().ends_with(":2,F"),
        "{}",
        filed[0].display()
    );
    let text = std::fs::read_to_string(&filed[0]).unwrap();
    assert!(text.contains("X-Big: yes"), "size saw the whole message");
    assert!(text.ends_with(&want), "the filed copy is whole");
    assert_eq!(bobs.len(), 1, "redirected to bob: {}", d.log_text());
    let text = std::fs::read_to_string(&bobs[0]).unwrap();
    assert!(text.contains("X-Sieve-Redirected-From: <alice@example.test>"));
    assert!(
        text.contains("X-Big: yes"),
        "the redirect carries the edited header"
    );
    assert!(text.ends_with(&want), "the redirected copy is whole");
    let spool = d.dir.path().join("data").join("spool");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&spool).map(|r| r.count()).unwrap_or(0) > 0 && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "spool files left: {left:?}");
}
