//! Delivery with a Sieve script beside delivery without one: the same load (N messages of S bytes over C
//! connections, fsync on) into two fresh daemons, the second with a 20-rule script active for the
//! recipient (19 tests that do not match, on headers, addresses, envelope, size and body, and implicit keep),
//! so both deliver into the same place and the difference is the script's cost.
//!
//!     cargo bench --bench sieve_load                      # 2000 x 1 KiB over 50 connections
//!     BENCH_MESSAGES=5000 BENCH_SIZE=10240 cargo bench --bench sieve_load

mod load;

use std::time::Instant;

const SCRIPT: &str = r#"require ["fileinto", "envelope", "imap4flags", "relational", "comparator-i;ascii-numeric",
    "variables", "body", "subaddress", "regex"];
if header :contains "subject" "[rust-users]" { fileinto "Lists.rust"; stop; }
if header :contains "list-id" "dev.lists.example.org" { fileinto "Lists.dev"; stop; }
if address :is :domain "from" "facebook.example" { fileinto "Social"; stop; }
if address :is :domain "from" "linkedin.example" { fileinto "Social"; stop; }
if header :matches "subject" "*invoice*#*" { fileinto "Invoices"; stop; }
if address :is "from" ["boss@example.org", "ceo@example.org"] { addflag "\\Flagged"; }
if envelope :detail "to" "shop" { fileinto "Shopping"; stop; }
if header :is "x-spam-flag" "YES" { fileinto "Junk"; stop; }
if header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "5" { fileinto "Junk"; stop; }
if exists "x-github-reason" { fileinto "GitHub"; stop; }
if header :contains "from" "notifications@" { fileinto "Notifications"; stop; }
if size :over 5M { fileinto "Large"; stop; }
if header :regex "subject" "^\\[JIRA\\] \\(([A-Z]+)-[0-9]+\\)" { fileinto "Jira.${1}"; stop; }
if address :localpart :is "to" "newsletter" { fileinto "News"; stop; }
if header :contains "precedence" "bulk" { fileinto "Bulk"; stop; }
if anyof (header :contains "subject" "webinar", header :contains "subject" "unsubscribe") { fileinto "Promo"; stop; }
if allof (address :domain "from" "example.net", header :contains "subject" "report") { fileinto "Reports"; stop; }
if header :count "gt" :comparator "i;ascii-numeric" "received" "30" { discard; stop; }
if body :text :contains "this is not a drill" { addflag "$Urgent"; }
if header :contains "subject" "tern-benchmark-never-matches" { fileinto "Never"; }
"#;

struct Figures {
    accepted_per_s: f64,
    delivered_per_s: f64,
    p50_ms: f64,
    failed: usize,
    rss_kb: String,
    /// The daemon's CPU time (user + system) per delivered message, in microseconds.
    cpu_us: f64,
}

/// User + system CPU seconds a process has used (/proc/PID/stat fields 14 and 15).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields counted from the state (field 3): utime is field 14, stime 15.
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

fn one(messages: usize, size: usize, connections: usize, script: Option<&str>) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load::write_config(dir.path(), "[dns]\nnameservers = [\"127.0.0.1:9\"]\n");
    let tern = |args: &[&str]| {
        let ok = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("tern");
        assert!(ok.success(), "{args:?}");
    };
    tern(&["user", "add", "alice@example.test"]);
    if let Some(s) = script {
        let file = dir.path().join("rules.sieve");
        std::fs::write(&file, s).expect("script");
        tern(&[
            "sieve",
            "put",
            "alice@example.test",
            "rules",
            &file.display().to_string(),
            "--activate",
        ]);
    }
    let (mut child, listeners) = load::start_tern(&config);
    let addr = listeners[0].1;
    let maildir = dir.path().join("data/mail/example.test/alice/new");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let run = runtime.block_on(load::run(
        addr,
        messages,
        connections,
        "load@bench.test",
        "alice@example.test",
        load::body(size),
    ));
    let accepted = run.latencies.len();
    let delivered = load::wait_count(&maildir, accepted);
    let delivered_secs = started.elapsed();
    assert_eq!(delivered, accepted, "every message lands in INBOX");
    let rss_kb = load::peak_rss_kb(child.id());
    let cpu = cpu_secs(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Figures {
        accepted_per_s: accepted as f64 / run.elapsed.as_secs_f64(),
        delivered_per_s: delivered as f64 / delivered_secs.as_secs_f64(),
        p50_ms: run.percentile(0.50).as_secs_f64() * 1e3,
        failed: run.failures,
        rss_kb,
        cpu_us: cpu * 1e6 / delivered.max(1) as f64,
    }
}

/// The interpreter alone, in this process: microseconds per run of SCRIPT on the benchmark's message.
fn interpreter_us(size: usize) -> f64 {
    let program = tern::sieve::compile(SCRIPT).expect("script compiles");
    let mut message = b"From: <load@bench.test>\r\nTo: <alice@example.test>\r\n".to_vec();
    message.extend_from_slice(&load::body(size));
    let envelope = tern::sieve::Envelope {
        from: "load@bench.test".into(),
        to: "alice@example.test".into(),
    };
    let limits = tern::sieve::Limits::default();
    let runs = 20_000;
    let started = Instant::now();
    for _ in 0..runs {
        let out = tern::sieve::interp::run(
            &[&program],
            &message,
            &envelope,
            &[],
            &tern::sieve::interp::Detached,
            &limits,
        );
        assert!(out.error.is_none());
    }
    started.elapsed().as_secs_f64() * 1e6 / runs as f64
}

fn main() {
    let messages = load::env("BENCH_MESSAGES", 2000);
    let size = load::env("BENCH_SIZE", 1024);
    let connections = load::env("BENCH_CONNECTIONS", 50);
    let rounds = load::env("BENCH_ROUNDS", 2);
    println!(
        "sieve_load: {messages} messages x {size} B over {connections} connections, fsync on, {rounds} rounds each"
    );
    println!(
        "  interpreter alone: {:.1} us per run of the 20-rule script (one core)",
        interpreter_us(size)
    );
    let mut without = Vec::new();
    let mut with = Vec::new();
    // Alternated, so that a machine getting busier does not favour one side.
    for _ in 0..rounds {
        without.push(one(messages, size, connections, None));
        with.push(one(messages, size, connections, Some(SCRIPT)));
    }
    let best = |v: &[Figures]| v.iter().map(|f| f.delivered_per_s).fold(0.0, f64::max);
    for (name, v) in [("no script", &without), ("20-rule script", &with)] {
        for f in v.iter() {
            println!(
                "  {name:>15}: accepted {:.0} msg/s ({} failed), delivered {:.0} msg/s, p50 {:.2} ms, daemon CPU {:.0} us/msg, peak RSS {} kB",
                f.accepted_per_s, f.failed, f.delivered_per_s, f.p50_ms, f.cpu_us, f.rss_kb
            );
        }
    }
    let cpu = |v: &[Figures]| v.iter().map(|f| f.cpu_us).fold(f64::MAX, f64::min);
    println!(
        "  daemon CPU per message, least of each: {:.0} vs {:.0} us: the script adds {:.0} us",
        cpu(&without),
        cpu(&with),
        cpu(&with) - cpu(&without)
    );
    let (a, b) = (best(&without), best(&with));
    println!(
        "  delivered, best of each: {a:.0} vs {b:.0} msg/s: the script costs {:.1}%",
        (1.0 - b / a) * 100.0
    );
}
