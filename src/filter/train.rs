//! Training rspamd from what users do: a message moved (or copied) into Junk over IMAP is sent to the
//! controller's /learnspam, one moved out of Junk (not to Trash) to /learnham. Lessons wait in a bounded
//! queue and go one at a time, off the IMAP session's path; a full queue drops the lesson with a log line,
//! never slows the user down.

use crate::config::FilterSettings;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use std::net::SocketAddr;

/// Lessons waiting at most.
const QUEUE: usize = 64;

#[derive(Debug)]
struct Lesson {
    spam: bool,
    message: Vec<u8>,
    user: String,
}

#[derive(Debug, Clone)]
pub struct Trainer {
    tx: tokio::sync::mpsc::Sender<Lesson>,
}

impl Trainer {
    /// A trainer for the first rspamd filter with a controller, if any.
    pub fn start(filters: &[FilterSettings], runtime: &tokio::runtime::Handle) -> Option<Trainer> {
        let f = filters.iter().find(|f| f.controller.is_some())?.clone();
        let addr = f.controller?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Lesson>(QUEUE);
        runtime.spawn(async move {
            while let Some(lesson) = rx.recv().await {
                let what = if lesson.spam { "spam" } else { "ham" };
                let started = std::time::Instant::now();
                match learn(&f, addr, &lesson).await {
                    Ok(answer) => tracing::info!(user = %lesson.user, learned = what, answer = %answer, secs = started.elapsed().as_secs_f64(), "rspamd trained from a Junk move"),
                    Err(e) => tracing::warn!(user = %lesson.user, learned = what, error = %e, "rspamd training failed"),
                }
            }
        });
        Some(Trainer { tx })
    }

    /// Queues a lesson; false (and a log line) when the queue is full.
    pub fn learn(&self, spam: bool, message: Vec<u8>, user: &str) -> bool {
        let lesson = Lesson {
            spam,
            message,
            user: user.to_string(),
        };
        match self.tx.try_send(lesson) {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(user = %user, "rspamd training queue full: lesson dropped");
                false
            }
        }
    }
}

async fn learn(f: &FilterSettings, addr: SocketAddr, lesson: &Lesson) -> Result<String, String> {
    let run = async {
        let stream = tokio::time::timeout(f.connect_timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::builder()
            .method("POST")
            .uri(if lesson.spam {
                "/learnspam"
            } else {
                "/learnham"
            })
            .header(hyper::header::HOST, addr.to_string())
            .header(
                "Deliver-To",
                lesson.user.replace(|c: char| c.is_control(), ""),
            );
        if let Some(p) = &f.controller_password {
            req = req.header("Password", p.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(lesson.message.clone())))
            .map_err(|e| e.to_string())?;
        let rsp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = rsp.status();
        let body = Limited::new(rsp.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        // "already learned" comes as an error status but is not a failure.
        if status.is_success() || text.contains("already learned") {
            Ok(text)
        } else {
            Err(format!("HTTP {status}: {text}"))
        }
    };
    tokio::time::timeout(f.content_timeout, run)
        .await
        .map_err(|_| "no answer in time".to_string())?
}
