//! Metrics on prometheus-client, rendered in the OpenMetrics text format by the admin listener. Every
//! family is registered at start with its HELP and TYPE; the counters an admin alerts on have their
//! series from start (at 0) for each listener and transport, so that `rate()` and absence alerts work
//! before the first event. Scrape-time gauges (queue, deliveries in flight, process) are set when
//! /metrics is read.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Seconds, for the reply latency histogram (final dot to the reply).
const BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Counters: name (without `_total`) and help.
const COUNTERS: &[(&str, &str)] = &[
    ("tern_connections", "Connections accepted, by listener"),
    (
        "tern_messages_accepted",
        "Messages accepted (queued), by listener",
    ),
    (
        "tern_replies_refused",
        "Refusals sent to clients, by listener and RFC 3463 enhanced status code",
    ),
    (
        "tern_delivery_attempts",
        "Delivery attempts, by transport (local, remote) and result (sent, deferred, bounced)",
    ),
    (
        "tern_acme_failures",
        "ACME orders that failed (each is retried with backoff)",
    ),
];

/// Gauges set from outside (at scrape or when their value changes): name and help.
const GAUGES: &[(&str, &str)] = &[
    (
        "tern_queue_recipients",
        "Recipients in the queue, by transport and state",
    ),
    (
        "tern_deliveries_in_flight",
        "Messages handed to delivery and not yet reported",
    ),
    (
        "tern_queue_oldest_message_age_seconds",
        "Age of the oldest message in the queue (0 when empty)",
    ),
    (
        "tern_tls_certificate_expiry_timestamp_seconds",
        "notAfter of the TLS certificate the listeners present, by file",
    ),
    (
        "tern_connections_open",
        "Client connections open now, by listener",
    ),
    (
        "process_resident_memory_bytes",
        "Resident set size of the daemon",
    ),
    ("process_open_fds", "File descriptors open in the daemon"),
    (
        "process_start_time_seconds",
        "When the daemon started, Unix seconds",
    ),
];

struct Metrics {
    registry: Registry,
    counters: HashMap<&'static str, Family<Labels, Counter>>,
    gauges: HashMap<&'static str, Family<Labels, FloatGauge>>,
    latency: Histogram,
    cpu: Counter<f64, AtomicU64>,
    /// CPU seconds already added to `cpu`.
    cpu_seen: Mutex<f64>,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut registry = Registry::default();
        let mut counters = HashMap::new();
        for (name, help) in COUNTERS {
            let f = Family::<Labels, Counter>::default();
            registry.register(*name, *help, f.clone());
            counters.insert(*name, f);
        }
        let mut gauges = HashMap::new();
        for (name, help) in GAUGES {
            let f = Family::<Labels, FloatGauge>::default();
            registry.register(*name, *help, f.clone());
            gauges.insert(*name, f);
        }
        let latency = Histogram::new(BUCKETS);
        registry.register(
            "tern_reply_latency_seconds",
            "Time from the end of a message (final dot or last BDAT) to the reply",
            latency.clone(),
        );
        let cpu = Counter::<f64, AtomicU64>::default();
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time of the daemon",
            cpu.clone(),
        );
        registry.register(
            "tern_build",
            "The running build",
            Info::new(vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )]),
        );
        Metrics {
            registry,
            counters,
            gauges,
            latency,
            cpu,
            cpu_seen: Mutex::new(0.0),
        }
    })
}

fn owned(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Adds one to a counter (`tern_..._total`) with these labels. An unknown name is a bug, caught in tests.
pub fn inc(name: &'static str, pairs: &[(&str, &str)]) {
    let family = metrics().counters.get(name.trim_end_matches("_total"));
    debug_assert!(family.is_some(), "unregistered counter {name}");
    if let Some(f) = family {
        f.get_or_create(&owned(pairs)).inc();
    }
}

/// Makes the series of a counter exist (at 0) before its first event.
pub fn declare(name: &'static str, pairs: &[(&str, &str)]) {
    if let Some(f) = metrics().counters.get(name.trim_end_matches("_total")) {
        let _ = f.get_or_create(&owned(pairs));
    }
}

/// The series each listener and transport has from start.
pub fn declare_defaults(listeners: &[&str]) {
    for l in listeners {
        declare("tern_connections_total", &[("listener", l)]);
        declare("tern_messages_accepted_total", &[("listener", l)]);
        set_gauge("tern_connections_open", &[("listener", l)], 0.0);
    }
    for t in ["local", "remote"] {
        for r in ["sent", "deferred", "bounced"] {
            declare(
                "tern_delivery_attempts_total",
                &[("transport", t), ("result", r)],
            );
        }
    }
}

/// Sets a gauge series.
pub fn set_gauge(name: &'static str, pairs: &[(&str, &str)], value: f64) {
    let family = metrics().gauges.get(name);
    debug_assert!(family.is_some(), "unregistered gauge {name}");
    if let Some(f) = family {
        f.get_or_create(&owned(pairs)).set(value);
    }
}

/// Forgets every series of a gauge (before setting the ones that exist now).
pub fn clear_gauge(name: &'static str) {
    if let Some(f) = metrics().gauges.get(name) {
        f.clear();
    }
}

/// One open client connection of a listener, counted in `tern_connections_open` until dropped.
pub struct OpenConnection(&'static str);

pub fn connection_opened(listener: &'static str) -> OpenConnection {
    if let Some(f) = metrics().gauges.get("tern_connections_open") {
        f.get_or_create(&owned(&[("listener", listener)])).inc();
    }
    OpenConnection(listener)
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(f) = metrics().gauges.get("tern_connections_open") {
            f.get_or_create(&owned(&[("listener", self.0)])).dec();
        }
    }
}

/// Records the time from the final dot to the reply.
pub fn observe_reply_latency(seconds: f64) {
    metrics().latency.observe(seconds);
}

/// The process gauges from /proc/self (Linux).
fn read_process() {
    let m = metrics();
    let page = 4096.0;
    let ticks = 100.0;
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
        && let Some(rss) = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<f64>().ok())
    {
        set_gauge("process_resident_memory_bytes", &[], rss * page);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        set_gauge("process_open_fds", &[], fds.count() as f64);
    }
    // /proc/self/stat: fields after the command's closing parenthesis; utime, stime are 14 and 15,
    // starttime 22 (clock ticks since boot).
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some((_, rest)) = stat.rsplit_once(')')
    {
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        if f.len() > 19 {
            let cpu = (f[11] + f[12]) / ticks;
            if let Ok(mut seen) = m.cpu_seen.lock()
                && cpu > *seen
            {
                m.cpu.inc_by(cpu - *seen);
                *seen = cpu;
            }
            let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
            });
            if let Some(boot) = boot {
                set_gauge("process_start_time_seconds", &[], boot + f[19] / ticks);
            }
        }
    }
}

/// Everything in the OpenMetrics text format, with `extra` gauge values (name, labels, value) replacing
/// what those families held.
pub fn render(extra: &[GaugeValue]) -> String {
    read_process();
    let mut names: Vec<&'static str> = extra.iter().map(|(n, _, _)| *n).collect();
    names.dedup();
    for n in names {
        clear_gauge(n);
    }
    for (name, pairs, v) in extra {
        let l: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        set_gauge(name, &l, *v);
    }
    let mut out = String::new();
    if encode(&mut out, &metrics().registry).is_err() {
        return "# cannot encode the metrics\n".into();
    }
    out
}

/// A scrape-time gauge value: family, labels, value.
pub type GaugeValue<'a> = (&'static str, Vec<(&'a str, String)>, f64);

/// The Content-Type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    #[test]
    fn renders_counters_gauges_and_the_histogram_with_help() {
        super::declare_defaults(&["relay"]);
        super::inc("tern_connections_total", &[("listener", "relay")]);
        super::inc("tern_connections_total", &[("listener", "relay")]);
        super::observe_reply_latency(0.003);
        let open = super::connection_opened("relay");
        let text = super::render(&[(
            "tern_queue_recipients",
            vec![("state", "queued".to_string())],
            7.0,
        )]);
        for want in [
            "# HELP tern_connections Connections accepted, by listener.\n",
            "# TYPE tern_connections counter",
            "tern_connections_total{listener=\"relay\"} 2",
            "tern_messages_accepted_total{listener=\"relay\"} 0",
            "tern_delivery_attempts_total{transport=\"remote\",result=\"bounced\"} 0",
            "tern_queue_recipients{state=\"queued\"} 7",
            "tern_connections_open{listener=\"relay\"} 1",
            "tern_reply_latency_seconds_bucket{le=\"0.005\"} 1",
            "tern_build_info{version=\"",
            "process_resident_memory_bytes ",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want}:\n{text}");
        }
        drop(open);
        let text = super::render(&[]);
        assert!(
            text.contains("tern_connections_open{listener=\"relay\"} 0"),
            "{text}"
        );
    }
}
