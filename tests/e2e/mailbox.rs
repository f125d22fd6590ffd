//! Both mailbox stores (Maildir and SQLite), and moving mail between them and other servers: export to a
//! Maildir, import from a Maildir or an mbox file.

use crate::harness::{Daemon, Raw, tern};
use std::collections::BTreeMap;
use std::path::Path;

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A Maildir tree as (folder, new|cur, flags) → bodies, independent of file names.
fn snapshot(root: &Path) -> BTreeMap<(String, String, String), Vec<Vec<u8>>> {
    let mut out: BTreeMap<(String, String, String), Vec<Vec<u8>>> = BTreeMap::new();
    let mut folders = vec![("INBOX".to_string(), root.to_path_buf())];
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(f) = name.strip_prefix('.') {
            folders.push((f.to_string(), e.path()));
        }
    }
    for (folder, dir) in folders {
        for sub in ["new", "cur"] {
            for e in std::fs::read_dir(dir.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = e.file_name().to_string_lossy().to_string();
                let flags = name
                    .rsplit_once(":2,")
                    .map(|(_, f)| f.to_string())
                    .unwrap_or_default();
                out.entry((folder.clone(), sub.to_string(), flags))
                    .or_default()
                    .push(std::fs::read(e.path()).unwrap());
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn write(path: &Path, body: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

#[tokio::test]
async fn the_delivery_path_works_the_same_with_both_stores() {
    let mut bodies = Vec::new();
    for kind in ["maildir", "sqlite"] {
        // A small blob threshold puts the larger message in a content-addressed file (sqlite).
        let d = Daemon::start(&format!(
            "[store]\nkind = \"{kind}\"\nblob_threshold = 2000\n"
        ));
        let mut c = Raw::connect(d.addr).await;
        c.cmd("EHLO peer.test").await;
        let big = format!("Subject: big\r\n\r\n{}\r\n", "y".repeat(5000));
        // Past the 256 KiB spool threshold: it streams from its spool file into the store.
        let mut spooled = String::from("Subject: spooled\r\n\r\n");
        for n in 0..6000 {
            spooled.push_str(&format!(
                "{}{n} {}\r\n",
                if n % 9 == 0 { ".." } else { "" },
                "s".repeat(n % 120)
            ));
        }
        for msg in [
            "Subject: one\r\n\r\n..dotted\r\nGr\u{fc}\u{df}e\r\n",
            big.as_str(),
            spooled.as_str(),
        ] {
            assert_eq!(
                c.send_message("x@remote.test", "alice@example.test", msg)
                    .await
                    .0,
                250
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut list = String::new();
        while !list.contains("3 messages") && std::time::Instant::now() < deadline {
            list = ok(tern(
                d.dir.path(),
                &["mailbox", "list", "alice@example.test"],
            ));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(
            list.contains("INBOX") && list.contains("3 messages"),
            "{kind}: {list}"
        );
        let out = tempfile::tempdir().unwrap();
        ok(tern(
            d.dir.path(),
            &[
                "mailbox",
                "export",
                "alice@example.test",
                out.path().to_str().unwrap(),
            ],
        ));
        let snap = snapshot(out.path());
        let msgs = snap
            .get(&("INBOX".into(), "new".into(), String::new()))
            .expect("three new messages in the inbox");
        assert_eq!(msgs.len(), 3, "{kind}");
        // Compare what follows our Received: header: queue IDs and dates differ between the runs.
        let mut rest: Vec<Vec<u8>> = msgs
            .iter()
            .map(|m| {
                let text = String::from_utf8(m.clone()).unwrap();
                text.split_once("\nSubject:")
                    .map(|(_, r)| r.as_bytes().to_vec())
                    .unwrap()
            })
            .collect();
        rest.sort();
        bodies.push(rest);
        if kind == "sqlite" {
            assert!(d.dir.path().join("data/mailboxes.db").exists());
            let blobs = walk(&d.dir.path().join("data/blobs"));
            assert_eq!(blobs, 2, "the large messages are blob files");
        }
    }
    assert_eq!(bodies[0], bodies[1], "the stores return the same bytes");
    let all = String::from_utf8_lossy(&bodies[0].concat()).into_owned();
    assert!(all.contains(" one\n\n.dotted\nGr\u{fc}\u{df}e\n"));
    let mut want = String::from(" spooled\n\n");
    for n in 0..6000 {
        want.push_str(&format!(
            "{}{n} {}\n",
            if n % 9 == 0 { "." } else { "" },
            "s".repeat(n % 120)
        ));
    }
    assert!(
        all.contains(&want),
        "the spooled message whole, LF line ends, one dot"
    );
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                walk(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn export_then_import_round_trip_keeps_bytes_flags_and_folders() {
    // A Maildir as another server or a mail client left it.
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    // One keyword, $Work, as Dovecot records it (letter a).
    write(&s.join("dovecot-keywords"), b"0 $Work\n");
    write(
        &s.join("cur/1700000000.a.host:2,RSa"),
        b"Subject: read and replied\n\nhello\n",
    );
    write(
        &s.join("new/1700000001.b.host"),
        b"Subject: unread\n\nnew one\n",
    );
    write(
        &s.join(".Junk/cur/1700000002.c.host:2,S"),
        b"Subject: spam\n\nbuy\n",
    );
    std::fs::create_dir_all(s.join("tmp")).unwrap();
    std::fs::create_dir_all(s.join(".Junk/new")).unwrap();
    std::fs::create_dir_all(s.join(".Junk/tmp")).unwrap();
    let original = snapshot(s);

    for kind in ["sqlite", "maildir"] {
        let d = Daemon::start(&format!("[store]\nkind = \"{kind}\"\n"));
        ok(tern(
            d.dir.path(),
            &["mailbox", "import", "bob@example.test", s.to_str().unwrap()],
        ));
        let list = ok(tern(d.dir.path(), &["mailbox", "list", "bob@example.test"]));
        assert!(
            list.contains("INBOX") && list.contains("Junk"),
            "{kind}: {list}"
        );
        let out = tempfile::tempdir().unwrap();
        ok(tern(
            d.dir.path(),
            &[
                "mailbox",
                "export",
                "bob@example.test",
                out.path().to_str().unwrap(),
            ],
        ));
        assert_eq!(
            snapshot(out.path()),
            original,
            "{kind}: folders, new/cur, flags and bytes survive"
        );
    }
}

#[test]
fn mbox_import_undoes_from_quoting() {
    let d = Daemon::start("[store]\nkind = \"sqlite\"\n");
    let mbox = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        mbox.path(),
        "From alice@example.test Mon Nov 23 18:00:00 2026\nSubject: first\n\n>From the start of a line\nbody\n\n\
         From bob@example.test Tue Nov 24 09:30:00 2026\nSubject: second\n\n>>From quoted twice\n",
    )
    .unwrap();
    let out = ok(tern(
        d.dir.path(),
        &[
            "mailbox",
            "import",
            "alice@example.test",
            mbox.path().to_str().unwrap(),
        ],
    ));
    assert!(out.contains("imported 2 messages"), "{out}");
    let exp = tempfile::tempdir().unwrap();
    ok(tern(
        d.dir.path(),
        &[
            "mailbox",
            "export",
            "alice@example.test",
            exp.path().to_str().unwrap(),
        ],
    ));
    let snap = snapshot(exp.path());
    let bodies: Vec<String> = snap
        .values()
        .flatten()
        .map(|b| String::from_utf8_lossy(b).to_string())
        .collect();
    assert!(
        bodies
            .iter()
            .any(|b| b == "Subject: first\n\nFrom the start of a line\nbody\n"),
        "{bodies:?}"
    );
    assert!(
        bodies
            .iter()
            .any(|b| b == "Subject: second\n\n>From quoted twice\n"),
        "{bodies:?}"
    );
}
