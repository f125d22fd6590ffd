//! rspamd's HTTP protocol: the message with its envelope in request headers (IP, Helo, From, Rcpt, User,
//! Hostname) posted to /checkv2 of the normal worker, streamed in 64 KiB pieces (a spooled message is
//! never copied whole into memory), and the JSON answer read under a size limit: the action, the score,
//! the symbols, and the header changes rspamd's milter_headers module asks for.

use super::milter::FilterError;
use crate::config::{FilterAddress, FilterSettings};
use crate::queue::Body;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Frame};

/// The largest answer read.
const MAX_ANSWER: usize = 1024 * 1024;
const PIECE: usize = 64 * 1024;

/// What the session knew about the message's sender and recipients.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    pub ip: Option<std::net::IpAddr>,
    pub helo: String,
    pub hostname: Option<String>,
    pub from: String,
    pub rcpts: Vec<String>,
    pub user: Option<String>,
    /// The queue ID the message will have (`Queue-Id`).
    pub queue_id: String,
    /// The client's TLS version (`TLS-Version`), when it used TLS.
    pub tls_version: Option<String>,
}

/// rspamd's verdict.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    /// "no action", "greylist", "add header", "rewrite subject", "soft reject", "reject", and from
    /// force_actions "quarantine" and "discard".
    pub action: String,
    pub score: f64,
    pub required: f64,
    /// Symbols with their scores, highest first.
    pub symbols: Vec<(String, f64)>,
    pub add_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
    /// The rewritten Subject: for "rewrite subject".
    pub subject: Option<String>,
    /// The text for the SMTP reply, when rspamd gives one.
    pub smtp_message: Option<String>,
}

/// Reads /checkv2's JSON.
pub fn parse(json: &[u8]) -> Result<Verdict, String> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let action = v["action"]
        .as_str()
        .ok_or("no action in the answer")?
        .to_string();
    let mut symbols: Vec<(String, f64)> = v["symbols"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, s)| (k.clone(), s["score"].as_f64().unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default();
    symbols.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut add_headers = Vec::new();
    if let Some(h) = v["milter"]["add_headers"].as_object() {
        for (name, val) in h {
            // One value, or {"value": ..., "order": ...}, or a list of those.
            let values: Vec<&serde_json::Value> = match val {
                serde_json::Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for one in values {
                let text = one.as_str().or_else(|| one["value"].as_str()).unwrap_or("");
                add_headers.push((name.clone(), text.to_string()));
            }
        }
    }
    let remove_headers = v["milter"]["remove_headers"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    Ok(Verdict {
        action,
        score: v["score"].as_f64().unwrap_or(0.0),
        required: v["required_score"].as_f64().unwrap_or(0.0),
        symbols,
        add_headers,
        remove_headers,
        subject: v["subject"].as_str().map(str::to_string),
        smtp_message: v["messages"]["smtp_message"].as_str().map(str::to_string),
    })
}

/// The `X-Spamd-Result` header rspamd's own milter mode would add, for when it sent no headers.
pub fn result_header(v: &Verdict) -> String {
    let mut h = format!(
        "default: {} [{:.2} / {:.2}]",
        if v.action == "no action" || v.action == "greylist" {
            "False"
        } else {
            "True"
        },
        v.score,
        v.required
    );
    for (name, score) in v.symbols.iter().take(50) {
        h.push_str(&format!(";\r\n\t{name}({score:.2})"));
    }
    h
}

/// Header values go into a request header: no CR, LF or NUL.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Posts the message to /checkv2 within `content_timeout`.
pub async fn check(
    settings: &FilterSettings,
    env: &Envelope,
    body: &Body,
) -> Result<Verdict, FilterError> {
    let FilterAddress::Tcp(addr) = settings.address else {
        return Err(FilterError::Connect(std::io::Error::other(
            "rspamd is reached over TCP",
        )));
    };
    let connect = tokio::time::timeout(
        settings.connect_timeout,
        tokio::net::TcpStream::connect(addr),
    );
    let stream = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(FilterError::Connect(e)),
        Err(_) => return Err(FilterError::Timeout(settings.connect_timeout)),
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| FilterError::Io(std::io::Error::other(e)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // The message in pieces through a small channel: at most a few pieces in memory at once.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let owned = Body {
        head: body.head.clone(),
        tail: body.tail.clone(),
    };
    tokio::spawn(async move {
        let mapped = match owned.map() {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        for part in mapped.parts() {
            for piece in part.chunks(PIECE) {
                if tx
                    .send(Ok(Frame::data(Bytes::copy_from_slice(piece))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    let stream_body = Pieces(rx);
    let mut req = hyper::Request::builder()
        .method("POST")
        .uri("/checkv2")
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONTENT_LENGTH, body.len())
        .header("Helo", header_safe(&env.helo))
        .header("From", header_safe(&env.from));
    if let Some(ip) = env.ip {
        req = req.header("IP", ip.to_string());
    }
    if let Some(h) = &env.hostname {
        req = req.header("Hostname", header_safe(h));
    }
    if let Some(u) = &env.user {
        req = req.header("User", header_safe(u));
    }
    req = req.header("Queue-Id", header_safe(&env.queue_id));
    if let Some(v) = &env.tls_version {
        req = req.header("TLS-Version", header_safe(v));
    }
    for r in &env.rcpts {
        req = req.header("Rcpt", header_safe(r));
    }
    let req = req
        .body(stream_body)
        .map_err(|e| FilterError::Io(std::io::Error::other(e)))?;
    let exchange = async {
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| FilterError::Io(std::io::Error::other(e)))?;
        let status = rsp.status();
        let bytes = Limited::new(rsp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| FilterError::Io(std::io::Error::other(e.to_string())))?
            .to_bytes();
        if !status.is_success() {
            return Err(FilterError::Io(std::io::Error::other(format!(
                "rspamd answered HTTP {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))));
        }
        parse(&bytes).map_err(|e| FilterError::Io(std::io::Error::other(e)))
    };
    match tokio::time::timeout(settings.content_timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(FilterError::Timeout(settings.content_timeout)),
    }
}

/// The request body: the pieces the reading task sends.
struct Pieces(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn answers_are_read_with_their_header_changes() {
        let json = br#"{"is_skipped":false,"score":7.5,"required_score":15.0,"action":"add header",
            "symbols":{"A":{"name":"A","score":5.0},"B":{"name":"B","score":2.5}},
            "messages":{"smtp_message":"go away"},
            "milter":{"add_headers":{"X-Spam":{"value":"Yes","order":0},"X-Two":["a","b"]},"remove_headers":{"X-Spam":1}}}"#;
        let v = super::parse(json).unwrap();
        assert_eq!(v.action, "add header");
        assert_eq!(v.symbols[0], ("A".to_string(), 5.0));
        assert!(v.add_headers.contains(&("X-Spam".into(), "Yes".into())));
        assert!(v.add_headers.contains(&("X-Two".into(), "b".into())));
        assert_eq!(v.remove_headers, ["X-Spam"]);
        assert_eq!(v.smtp_message.as_deref(), Some("go away"));
        assert!(super::result_header(&v).starts_with("default: True [7.50 / 15.00];\r\n\tA(5.00)"));
        assert!(super::parse(b"{}").is_err());
        assert!(super::parse(b"<html>").is_err());
    }
}
