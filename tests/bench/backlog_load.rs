//! Backlog benchmark: N messages queued for a remote domain whose MX stalls every session, tern killed
//! (SIGKILL) with all of them queued, then restarted with the MX answering again and `tern queue flush`
//! run. Prints how long the restart took to deliver its first message and all of them, and tern's peak
//! resident memory before and after the restart.
//!
//!     cargo bench --bench backlog_load                       # 50,000 x 1 KiB
//!     BENCH_MESSAGES=10000 BENCH_SIZE=102400 cargo bench --bench backlog_load

#[path = "../e2e/dns.rs"]
#[allow(dead_code)]
mod dns;
mod load;
#[path = "../e2e/sink.rs"]
#[allow(dead_code)]
mod sink;

use std::time::{Duration, Instant};

fn main() {
    let messages = load::env("BENCH_MESSAGES", 50_000);
    let size = load::env("BENCH_SIZE", 1024);
    let connections = load::env("BENCH_CONNECTIONS", 50);
    // First an MX that accepts connections and never answers: every delivery waits.
    let stalled = sink::sinks(vec![sink::Behaviour {
        stall_secs: 3600,
        ..sink::Behaviour::default()
    }])
    .remove(0);
    let port = stalled.addr.port();
    let dns = dns::TestDns::start(vec![dns::Rr::A("sink.test", "127.0.0.2")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load::write_config(
        dir.path(),
        &format!(
            "[submission]\ntrusted_networks = [\"127.0.0.0/8\"]\n[delivery]\nremote_port = {port}\n\
             allow_private_addresses = true\nmax_connections = 4\n{}",
            dns.config()
        ),
    );
    println!(
        "backlog_load: {messages} messages x {size} B queued for a stalled MX, then kill -9 and restart"
    );
    let (mut child, listeners) = load::start_tern(&config);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let run = runtime.block_on(load::run(
        listeners[0].1,
        messages,
        connections,
        "load@example.test",
        "user@sink.test",
        load::body(size),
    ));
    let queued = run.latencies.len();
    let rss_before = load::peak_rss_kb(child.id());
    println!(
        "  queued {queued} ({} failed) at {:.0} msg/s; peak RSS while queueing: {rss_before} kB",
        run.failures,
        queued as f64 / run.elapsed.as_secs_f64()
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(stalled);
    std::thread::sleep(Duration::from_millis(500));

    // The MX answers again; tern starts with everything queued and is told to flush.
    let sink = sink::Sink::start("127.0.0.2", port, sink::Behaviour::default()).expect("sink");
    let started = Instant::now();
    let (mut child, _) = load::start_tern(&config);
    let up = started.elapsed();
    let flush = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["queue", "flush", "--config"])
        .arg(&config)
        .output()
        .expect("tern queue flush");
    assert!(
        flush.status.success(),
        "{}",
        String::from_utf8_lossy(&flush.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first = None;
    // Messages stuck in the stalled sessions at the kill may arrive twice (no reply ever came): count
    // at least `queued`.
    while sink.messages().len() < queued && Instant::now() < deadline {
        if first.is_none() && !sink.messages().is_empty() {
            first = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let all = started.elapsed();
    let rss_after = load::peak_rss_kb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "  restart: up in {:.2} s, first delivery after {:.2} s, {} of {queued} delivered in {:.1} s ({:.0} msg/s)",
        up.as_secs_f64(),
        first.unwrap_or(all).as_secs_f64(),
        sink.messages().len(),
        all.as_secs_f64(),
        sink.messages().len() as f64 / all.as_secs_f64()
    );
    println!("  peak RSS after the restart: {rss_after} kB");
}
