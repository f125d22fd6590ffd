//! Relay benchmark: N messages over C connections into tern's relay listener (the client is in a trusted
//! network) for a remote domain, relayed by the outbound MTA to a sink on 127.0.0.2 found through an
//! in-process DNS server. Prints accepted and relayed messages/s.
//!
//!     cargo bench --bench relay_load
//!     BENCH_POSTFIX=1 cargo bench --bench relay_load     # Postfix relaying the same load to the same sink
//!
//! With BENCH_POSTFIX=1 (as root), ../shared/bench/postfix-local.sh starts a private Postfix on 127.0.0.1:2632
//! that relays to the same sink, and the same load is sent to it in the same run.

#[path = "../e2e/dns.rs"]
#[allow(dead_code)]
mod dns;
mod load;
#[path = "../e2e/sink.rs"]
#[allow(dead_code)]
mod sink;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Sends the load to `addr` and waits until the sink has `base + accepted` messages; prints one line.
fn measure(
    name: &str,
    addr: SocketAddr,
    sink: &sink::Sink,
    messages: usize,
    connections: usize,
    size: usize,
) {
    let base = sink.messages().len();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let started = Instant::now();
    let run = runtime.block_on(load::run(
        addr,
        messages,
        connections,
        "load@example.test",
        "user@sink.test",
        load::body(size),
    ));
    let accepted = run.latencies.len();
    let deadline = Instant::now() + Duration::from_secs(300);
    while sink.messages().len() < base + accepted && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let relayed = sink.messages().len() - base;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  {name:<8} accepted {accepted} ({} failed) at {:.0} msg/s, relayed {relayed} to the sink at {:.0} msg/s, p50 {:.1} ms",
        run.failures,
        accepted as f64 / run.elapsed.as_secs_f64(),
        relayed as f64 / secs,
        run.percentile(0.5).as_secs_f64() * 1e3
    );
}

fn main() {
    let messages = load::env("BENCH_MESSAGES", 2000);
    let size = load::env("BENCH_SIZE", 1024);
    let connections = load::env("BENCH_CONNECTIONS", 50);
    let sinks = sink::sinks(vec![sink::Behaviour::default()]);
    let sink = &sinks[0];
    let dns = dns::TestDns::start(vec![dns::Rr::A("sink.test", "127.0.0.2")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = load::write_config(
        dir.path(),
        &format!(
            "[submission]\ntrusted_networks = [\"127.0.0.0/8\"]\n[delivery]\nremote_port = {}\nallow_private_addresses = true\n{}",
            sink.addr.port(),
            dns.config()
        ),
    );
    println!(
        "relay_load: {messages} messages x {size} B over {connections} connections to a sink on {}",
        sink.addr
    );
    let (mut child, listeners) = load::start_tern(&config);
    measure("tern", listeners[0].1, sink, messages, connections, size);
    let rss = load::peak_rss_kb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "  tern peak RSS: {rss} kB; sink connections: {}",
        sink.state.connections.load(Ordering::SeqCst)
    );

    if std::env::var("BENCH_POSTFIX").is_ok() {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/bench/postfix-local.sh");
        let relay = format!("127.0.0.2:{}", sink.addr.port());
        let started = std::process::Command::new("bash")
            .arg(&script)
            .args(["start", "-n", "relaybench", "-p", "2632", "-r", &relay])
            .status()
            .is_ok_and(|s| s.success());
        if started {
            std::thread::sleep(Duration::from_secs(1));
            measure(
                "postfix",
                "127.0.0.1:2632".parse().expect("addr"),
                sink,
                messages,
                connections,
                size,
            );
            let _ = std::process::Command::new("bash")
                .arg(&script)
                .args(["stop", "-n", "relaybench"])
                .status();
        } else {
            println!("  postfix: could not start {}", script.display());
        }
    }
}
