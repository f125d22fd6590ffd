//! Inbound SMTP: accept loops, connection limits, sessions over TCP and TLS, and the recipient policy.
//!
//! `serve` takes a bound listener and a shutdown signal (tests bind port 0); each connection runs in its own
//! task, inside a tracing span that carries the client address, so its errors stay in its log lines.

mod connection;
pub mod limits;
pub mod policy;
pub mod submission;
pub mod throttle;
pub mod trace;

use crate::config::{Limits, ListenerKind};
use crate::queue::Queue;
use crate::shutdown::Shutdown;
use crate::smtp::Reply;
use crate::smtp::server::SessionConfig;
use limits::ConnLimiter;
use policy::RecipientPolicy;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tracing::Instrument;

/// Everything a listener's sessions share.
pub struct Inbound {
    pub kind: ListenerKind,
    pub hostname: String,
    pub session: Arc<SessionConfig>,
    pub limits: Limits,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub policy: Arc<RecipientPolicy>,
    pub submission: Arc<submission::SubmissionPolicy>,
    pub throttle: Arc<throttle::AuthThrottle>,
    pub directory: crate::directory::Directory,
    /// SPF/DKIM/DMARC, blocklists and greylisting for mail from other MTAs (relay listener).
    pub checks: Option<Arc<crate::checks::Checks>>,
    pub queue: Queue,
    pub limiter: Arc<ConnLimiter>,
}

/// Accepts connections until shutdown. Each connection takes the context current when it arrives, so a
/// reload (SIGHUP) applies to new sessions while established ones go on unchanged.
pub async fn serve(
    listener: TcpListener,
    contexts: tokio::sync::watch::Receiver<Arc<Inbound>>,
    mut shutdown: Shutdown,
) {
    let kind = contexts.borrow().kind.as_str();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.fired() => return,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: log, back off, and go on accepting.
                tracing::warn!(listener = kind, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = contexts.borrow().clone();
        let span = tracing::info_span!("smtp", listener = kind, client_ip = %peer.ip(), client_port = peer.port());
        match ctx.limiter.try_acquire(peer.ip()) {
            Ok(slot) => {
                tokio::spawn(
                    connection::handle(ctx.clone(), stream, peer, slot, shutdown.clone())
                        .instrument(span),
                );
            }
            Err(over) => {
                let mut out = Vec::new();
                Reply::too_many_connections(over.scope()).write_to(&mut out);
                tokio::spawn(
                    async move {
                        tracing::warn!(
                            limit = over.scope(),
                            "connection refused: too many connections"
                        );
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(5),
                            stream.write_all(&out),
                        )
                        .await;
                    }
                    .instrument(span),
                );
            }
        }
    }
}

/// Accepts local programs on the sendmail socket until shutdown.
/// Accepts local programs on a Unix socket (sendmail, LMTP) until shutdown.
pub async fn serve_local(
    listener: tokio::net::UnixListener,
    contexts: tokio::sync::watch::Receiver<Arc<Inbound>>,
    mut shutdown: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.fired() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let ctx = contexts.borrow().clone();
                let uid = stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
                let span = tracing::info_span!("local", listener = ctx.kind.as_str(), uid);
                tokio::spawn(
                    connection::handle_local(ctx, stream, uid, shutdown.clone()).instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "sendmail socket: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
