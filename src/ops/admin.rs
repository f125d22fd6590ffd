//! The admin HTTP listener (`[admin] bind`, loopback by default): `GET /metrics` (OpenMetrics text, which Prometheus reads) and
//! `GET /healthz`. A deliberately tiny HTTP/1.1 server: one request per connection, bounded reads.

use crate::queue::Queue;
use crate::shutdown::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Requests served at once; further connections wait in the listen queue.
const MAX_CONNECTIONS: usize = 16;
/// Longest a request may take from accept to the end of the answer.
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(15);

pub async fn serve(listener: TcpListener, queue: Queue, mut shutdown: Shutdown) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A slot first, then accept: a client that opens connections and says nothing holds at most 16.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.fired() => return,
        };
        if let Ok((stream, _)) = accepted {
            let queue = queue.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_DEADLINE, handle(stream, queue)).await;
                drop(permit);
            });
        }
    }
}

async fn handle(mut stream: TcpStream, queue: Queue) {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    let head = loop {
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read(&mut buf[len..]),
        )
        .await;
        match read {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => return,
            Ok(Ok(n)) => len += n,
        }
        if let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            break String::from_utf8_lossy(&buf[..end]).to_string();
        }
        if len == buf.len() {
            return;
        }
    };
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, kind, body) = match (method, path) {
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/metrics") => {
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
            (
                "200 OK",
                crate::ops::metrics::CONTENT_TYPE,
                crate::ops::metrics::render(&gauges),
            )
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
