//! Counters and one latency histogram, rendered in the Prometheus text format by the admin listener.
//! Global and lock-light: a counter update is one short mutex hold on a small map.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

/// Seconds, for the reply latency histogram (final dot to the reply).
const BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
struct Registry {
    counters: BTreeMap<(&'static str, String), u64>,
    latency_buckets: [u64; BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Registry::default()))
}

fn labels(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', " ")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Adds one to a counter with these labels.
pub fn inc(name: &'static str, pairs: &[(&str, &str)]) {
    if let Ok(mut r) = registry().lock() {
        *r.counters.entry((name, labels(pairs))).or_default() += 1;
    }
}

/// Records the time from the final dot to the reply.
pub fn observe_reply_latency(seconds: f64) {
    if let Ok(mut r) = registry().lock() {
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                r.latency_buckets[i] += 1;
            }
        }
        r.latency_count += 1;
        r.latency_sum += seconds;
    }
}

/// Everything in the Prometheus text format, plus `extra` gauges (name, labels, value).
pub fn render(extra: &[(&str, Vec<(&str, String)>, u64)]) -> String {
    let Ok(r) = registry().lock() else {
        return String::new();
    };
    let mut out = String::new();
    let mut last = "";
    for ((name, l), v) in &r.counters {
        if *name != last {
            out.push_str(&format!("# TYPE {name} counter\n"));
            last = name;
        }
        if l.is_empty() {
            out.push_str(&format!("{name} {v}\n"));
        } else {
            out.push_str(&format!("{name}{{{l}}} {v}\n"));
        }
    }
    let mut last = "";
    for (name, pairs, v) in extra {
        if *name != last {
            out.push_str(&format!("# TYPE {name} gauge\n"));
            last = name;
        }
        let l: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        out.push_str(&format!("{name}{{{}}} {v}\n", labels(&l)));
    }
    out.push_str("# TYPE tern_reply_latency_seconds histogram\n");
    for (i, b) in BUCKETS.iter().enumerate() {
        out.push_str(&format!(
            "tern_reply_latency_seconds_bucket{{le=\"{b}\"}} {}\n",
            r.latency_buckets[i]
        ));
    }
    out.push_str(&format!(
        "tern_reply_latency_seconds_bucket{{le=\"+Inf\"}} {}\n",
        r.latency_count
    ));
    out.push_str(&format!(
        "tern_reply_latency_seconds_sum {}\n",
        r.latency_sum
    ));
    out.push_str(&format!(
        "tern_reply_latency_seconds_count {}\n",
        r.latency_count
    ));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_counters_gauges_and_the_histogram() {
        super::inc("tern_test_total", &[("listener", "relay")]);
        super::inc("tern_test_total", &[("listener", "relay")]);
        super::observe_reply_latency(0.003);
        let text = super::render(&[(
            "tern_queue_recipients",
            vec![("state", "queued".to_string())],
            7,
        )]);
        assert!(
            text.contains("tern_test_total{listener=\"relay\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tern_queue_recipients{state=\"queued\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("tern_reply_latency_seconds_bucket{le=\"0.005\"}"),
            "{text}"
        );
    }
}
