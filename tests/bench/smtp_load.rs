//! Load benchmark: N messages of S bytes over C concurrent connections (one message per connection, as
//! Postfix's smtp-source does by default) into a tern daemon with fsync on, delivering to a Maildir.
//!
//! Prints accepted messages/s (250 after the final dot), delivered-to-Maildir messages/s (until every file is
//! in new/) and p50/p99 latency from the final dot to its 250.
//!
//!     cargo bench --bench smtp_load                      # 2000 x 1 KiB over 50 connections
//!     BENCH_MESSAGES=5000 BENCH_SIZE=102400 BENCH_CONNECTIONS=10 cargo bench --bench smtp_load
//!     BENCH_CONFIG='[delivery]
//!     local_workers = 16' cargo bench --bench smtp_load   # TOML appended to the daemon's configuration
//!
//! Compare with Postfix in the same run: ../shared/bench/compare-inbound.sh (see docs/benchmarks.md).

mod load;

use std::time::Instant;

fn main() {
    let messages = load::env("BENCH_MESSAGES", 2000);
    let size = load::env("BENCH_SIZE", 1024);
    let connections = load::env("BENCH_CONNECTIONS", 50);
    let extra = std::env::var("BENCH_CONFIG").unwrap_or_default();
    let dir = tempfile::tempdir().expect("tempdir");
    // The daemon never asks the machine's resolver: 127.0.0.1:9 answers nothing.
    let config = load::write_config(
        dir.path(),
        &format!("[dns]\nnameservers = [\"127.0.0.1:9\"]\n{extra}"),
    );
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["user", "add", "alice@example.test", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("tern");
    assert!(ok.success());
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
    let rss_kb = load::peak_rss_kb(child.id());
    let _ = child.kill();
    let _ = child.wait();

    println!(
        "smtp_load: {messages} messages x {size} B over {connections} connections (one message per connection), fsync on"
    );
    println!(
        "  accepted:  {accepted} in {:.2} s = {:.0} msg/s ({} failed)",
        run.elapsed.as_secs_f64(),
        accepted as f64 / run.elapsed.as_secs_f64(),
        run.failures
    );
    println!(
        "  delivered: {delivered} in {:.2} s = {:.0} msg/s into the Maildir",
        delivered_secs.as_secs_f64(),
        delivered as f64 / delivered_secs.as_secs_f64()
    );
    println!(
        "  latency after final dot: p50 {:.2} ms, p99 {:.2} ms",
        run.percentile(0.50).as_secs_f64() * 1e3,
        run.percentile(0.99).as_secs_f64() * 1e3
    );
    println!("  daemon peak RSS: {rss_kb} kB");
}
