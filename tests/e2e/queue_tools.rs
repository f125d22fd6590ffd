//! `tern queue` as an admin uses it on a queue with deferred mail: summary, show, human ages, and bulk
//! hold/release/delete/bounce by domain, sender and age, over the running daemon's control socket.

use crate::dns::{Rr, TestDns};
use crate::harness::tern;
use crate::outbound::{dsns, queue_list, send, sender, wait_queue};
use crate::sink::sinks;

fn run(d: &crate::harness::Daemon, args: &[&str]) -> (bool, String, String) {
    let out = tern(d.dir.path(), args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bulk_operations_take_exactly_the_selected_messages() {
    // Both MX hosts are down (nothing listens on 127.0.0.2/3 at that port): every message stays deferred.
    let port = sinks(vec![crate::sink::Behaviour::default()])[0]
        .addr
        .port();
    let dns = TestDns::start(vec![
        Rr::A("slow.test", "127.0.0.2"),
        Rr::A("stuck.test", "127.0.0.3"),
    ]);
    let d = sender(dns, port, "");
    send(&d, &["a@slow.test"], "slow one");
    send(&d, &["b@slow.test", "c@stuck.test"], "slow and stuck");
    send(&d, &["d@stuck.test"], "stuck only");
    let list = wait_queue(&d, |l| l.matches("attempts 1").count() == 4);
    assert_eq!(list.matches("attempts 1").count(), 4, "{list}");
    // Ages and next attempts as people read them, not Unix seconds.
    assert!(
        list.lines().filter(|l| l.contains(" age ")).all(|l| {
            let age = l
                .split(" age ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            age.ends_with('s') && age.trim_end_matches('s').parse::<u64>().is_ok()
        }),
        "{list}"
    );
    assert!(list.contains("next in "), "{list}");
    let ids: Vec<String> = list
        .lines()
        .filter(|l| !l.starts_with(' '))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "{list}");

    // qshape-like summary: messages per destination, the busiest first.
    let (ok, summary, err) = run(&d, &["queue", "summary"]);
    assert!(ok, "{err}");
    let row = |name: &str| -> Vec<u64> {
        summary
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in\n{summary}"))
            .split_whitespace()
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect()
    };
    assert_eq!(row("TOTAL")[0], 3, "{summary}");
    assert_eq!(row("slow.test")[..2], [2, 2], "{summary}");
    assert_eq!(row("stuck.test")[..2], [2, 2], "{summary}");
    let (_, json, _) = run(&d, &["queue", "summary", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).expect(&json);
    assert_eq!(v[0]["domain"], "TOTAL");
    assert_eq!(v[0]["total"], 3);

    // show: envelope and header section; --body adds the body.
    let first = &ids[0];
    let (ok, shown, err) = run(&d, &["queue", "show", first]);
    assert!(ok, "{err}");
    assert!(
        shown.contains("ago)") && shown.contains("Subject: slow one"),
        "{shown}"
    );
    assert!(!shown.contains("Hello from tern."), "{shown}");
    let (_, full, _) = run(&d, &["queue", "show", first, "--body"]);
    assert!(full.contains("Hello from tern."), "{full}");

    // Refusals: no argument at all, or an ID with a selection, or a bad age; nothing is touched.
    for args in [
        &["queue", "delete"][..],
        &["queue", "bounce"],
        &["queue", "delete", first, "--domain", "slow.test"],
        &["queue", "hold", "--older", "3 parsecs"],
        &["queue", "hold", "--sender", "nobody"],
    ] {
        let (ok, _, err) = run(&d, args);
        assert!(!ok, "{args:?} succeeded");
        assert!(!err.is_empty(), "{args:?} said nothing");
    }
    assert_eq!(
        queue_list(&d)
            .lines()
            .filter(|l| !l.starts_with(' '))
            .count(),
        3
    );

    // Hold by domain: the two messages with a recipient at slow.test.
    let (ok, out, err) = run(&d, &["queue", "hold", "--domain", "SLOW.test"]);
    assert!(ok, "{err}");
    assert!(out.contains("2 of 2 messages done"), "{out}");
    let list = queue_list(&d);
    let held: Vec<&str> = list.lines().filter(|l| l.contains("HELD")).collect();
    assert_eq!(held.len(), 2, "{list}");
    assert!(held.iter().all(|l| !l.starts_with(&ids[2])), "{list}");
    // An age no message has reached selects nothing.
    let (ok, out, _) = run(
        &d,
        &["queue", "release", "--domain", "slow.test", "--older", "1h"],
    );
    assert!(ok && out.contains("no message"), "{out}");
    // Release by sender takes only the held ones.
    let (ok, out, err) = run(
        &d,
        &["queue", "release", "--sender", "<alice@example.test>"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("2 of 2 messages done"), "{out}");
    assert!(!queue_list(&d).contains("HELD"));

    // Delete by domain: stuck.test's two messages go; the slow-only one stays.
    let (ok, out, err) = run(&d, &["queue", "delete", "--domain", "stuck.test"]);
    assert!(ok, "{err}");
    assert!(out.contains("2 of 2 messages done"), "{out}");
    let list = queue_list(&d);
    assert_eq!(
        list.lines().filter(|l| !l.starts_with(' ')).count(),
        1,
        "{list}"
    );
    assert!(list.starts_with(&ids[0]), "{list}");

    // Bounce by sender domain: alice gets one DSN for the last message, and the queue is empty of it.
    let (ok, _, err) = run(&d, &["queue", "bounce", "--sender", "@example.test"]);
    assert!(ok, "{err}");
    let got = dsns(&d, 1);
    assert!(got[0].contains("a@slow.test"), "{}", got[0]);
    let list = wait_queue(&d, |l| !l.contains("a@slow.test"));
    assert!(!list.contains("a@slow.test"), "{list}");
}

/// `tern trace`: a message's whole history by queue ID or Message-ID, from its arrival through a deferred
/// attempt (with the relay and its reply) to the delivery, and a bounce with the DSN it sent.
#[test]
fn trace_tells_the_history_of_a_message() {
    let sink = sinks(vec![crate::sink::Behaviour {
        fail_data: 1,
        ..Default::default()
    }]);
    let dns = TestDns::start(vec![
        Rr::A("retry.test", "127.0.0.2"),
        Rr::A("never.test", "127.0.0.3"),
    ]);
    let d = sender(
        dns,
        sink[0].addr.port(),
        "[queue]\nretry_base_secs = 1\nretry_max_secs = 1\n",
    );
    crate::outbound::send_raw(
        &d,
        &["rcpt@retry.test"],
        "From: Alice <alice@example.test>\nMessage-ID: <trace-me@example.test>\nSubject: traced\n\nbody\n",
    );
    assert_eq!(sink[0].wait(1).len(), 1, "{}", d.log_text());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let by_header = loop {
        let (_, out, _) = run(&d, &["trace", "<trace-me@example.test>"]);
        if out.contains("status=sent") || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let lines: Vec<&str> = by_header.lines().collect();
    let id = lines[0].trim();
    let kinds: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().nth(6).unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["received", "delivery", "delivery"], "{by_header}");
    assert!(
        lines[1].contains("from=<alice@example.test> to=<rcpt@retry.test>")
            && lines[1].contains("origin=local"),
        "{by_header}"
    );
    assert!(
        lines[2].contains("status=deferred")
            && lines[2].contains("relay=retry.test[127.0.0.2]")
            && lines[2].contains("451"),
        "{by_header}"
    );
    assert!(
        lines[3].contains("status=sent") && lines[3].contains("reply=\"250"),
        "{by_header}"
    );
    // By queue ID, the same; as JSON for scripts.
    let (ok, by_id, _) = run(&d, &["trace", id]);
    assert!(ok && by_id == by_header, "{by_id}");
    let (_, json, _) = run(&d, &["trace", id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);

    // Held, then bounced by the administrator: both in the trace, with the DSN's queue ID.
    send(&d, &["x@never.test"], "never");
    let list = wait_queue(&d, |l| {
        l.contains("x@never.test") && l.contains("attempts 1")
    });
    let id = list
        .lines()
        .find(|l| !l.starts_with(' '))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(run(&d, &["queue", "hold", &id]).0);
    assert!(run(&d, &["queue", "bounce", &id]).0);
    dsns(&d, 1);
    let (_, t, _) = run(&d, &["trace", &id]);
    assert!(t.contains("admin    held by the administrator"), "{t}");
    assert!(
        t.contains("status=bounced") && t.contains("returned to sender by the administrator"),
        "{t}"
    );
    let dsn_line = t
        .lines()
        .find(|l| l.contains(" dsn "))
        .unwrap_or_else(|| panic!("{t}"));
    let dsn_id = dsn_line.split_whitespace().last().unwrap();
    let (_, dsn_trace, _) = run(&d, &["trace", dsn_id]);
    assert!(dsn_trace.contains("origin=generated"), "{dsn_trace}");
    // Unknown keys say so and fail.
    let (ok, _, err) = run(&d, &["trace", "<nobody@nowhere>"]);
    assert!(!ok && err.contains("nothing known"), "{err}");
}
