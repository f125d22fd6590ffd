//! The admin listener's answers (`[admin] bind`, loopback by default, served by `web`): `GET /metrics`
//! (OpenMetrics text, which Prometheus reads) with the gauges read at scrape time, and `GET /healthz`.

use crate::queue::Queue;

/// The OpenMetrics text of every family, with the queue gauges read now.
pub async fn metrics_text(queue: &Queue) -> String {
    let mut gauges: Vec<crate::ops::metrics::GaugeValue> = Vec::new();
    if let Ok(counts) = queue.counts().await {
        for ((transport, state), n) in counts {
            gauges.push((
                "tern_queue_recipients",
                vec![("transport", transport), ("state", state)],
                n as f64,
            ));
        }
    }
    if let Ok(oldest) = queue.oldest_received().await {
        let age = oldest.map_or(0, |t| crate::clock::unix_now().saturating_sub(t));
        gauges.push(("tern_queue_oldest_message_age_seconds", vec![], age as f64));
    }
    gauges.push(("tern_deliveries_in_flight", vec![], queue.inflight() as f64));
    crate::ops::metrics::render(&gauges)
}
