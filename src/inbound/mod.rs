//! Inbound SMTP: accept loops, connection limits, sessions over TCP and TLS, and the recipient policy.
//!
//! `serve` takes a bound listener and a shutdown signal (tests bind port 0); each connection runs in its own
//! task, inside a tracing span that carries the client address, so its errors stay in its log lines.

mod connection;
pub use connection::LocalSender;
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
    pub intake: Arc<crate::intake::Intake>,
    pub limiter: Arc<ConnLimiter>,
    /// Uids that may send as anyone through the sendmail socket (root, the service user, trusted users).
    pub trusted_uids: Arc<Vec<u32>>,
    /// The domain a local user's login name is qualified with (the first local domain).
    pub origin: crate::smtp::Domain,
    /// Sessions on the sendmail socket: in total and per Unix user.
    pub local_limits: Arc<ConnLimiter>,
    /// Users' Sieve scripts, for ereject while the session is still open (RFC 5429 section 2.1).
    pub sieve: Option<Arc<crate::local::sieve::SieveRunner>>,
    /// `[delivery] deliver_in_session`: a message for local recipients only is written to their
    /// mailboxes before the 250 instead of being queued first.
    pub local: Option<Arc<crate::local::Local>>,
    /// `[limits] data_memory` in KiB permits, shared by every session of every listener: message content
    /// held while it arrives.
    pub data_memory: Arc<tokio::sync::Semaphore>,
    pub store: Arc<dyn crate::mailbox::MailboxStore>,
    /// The content filters (`[[filter]]`) this listener's mail passes through, in order.
    pub filters: Vec<Arc<crate::config::FilterSettings>>,
}

impl Inbound {
    /// Who a sendmail-socket peer is: its login name, its own address, whether it may use any sender.
    pub fn local_sender(&self, uid: u32) -> LocalSender {
        let name = crate::ops::privileges::user_name(uid);
        let address = name
            .as_deref()
            .map(|n| format!("{}@{}", n.to_lowercase(), self.origin))
            .filter(|a| crate::smtp::Mailbox::parse(a, false).is_ok());
        LocalSender {
            uid,
            name,
            address,
            trusted: self.trusted_uids.contains(&uid),
        }
    }

    /// MAIL FROM on the sendmail socket: a trusted user may give any sender (`-f`), the null one included;
    /// anyone else only their own address (or a subaddress of it), as Postfix maps a uid to a sender.
    pub fn local_sender_refusal(
        &self,
        local: &LocalSender,
        reverse_path: &crate::smtp::ReversePath,
    ) -> Option<Reply> {
        if local.trusted {
            return None;
        }
        let who = local
            .name
            .clone()
            .unwrap_or_else(|| format!("uid {}", local.uid));
        let claimed = reverse_path.to_string();
        match &local.address {
            Some(own) if !claimed.is_empty() && self.submission.owns(own, &claimed) => None,
            _ => Some(Reply::local_sender_refused(&claimed, &who)),
        }
    }

    /// Whether the message's one From: address belongs to `own`.
    pub fn from_owned_by(&self, body: &[u8], own: &str) -> bool {
        if crate::message::count(body, "From") != 1 {
            return false;
        }
        mail_parser::MessageParser::new()
            .parse_headers(crate::message::header_block(body))
            .and_then(|h| {
                let list = h.from()?;
                let only = (list.iter().count() == 1).then(|| list.first())??;
                only.address().map(|a| self.submission.owns(own, a))
            })
            .unwrap_or(false)
    }
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
        let (stream, peer) = match accepted {
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
            Err(over) => refuse_connection(stream, over, span),
        }
    }
}

/// Answers a connection over a limit with 421 4.7.0 (within 5 s) and closes it, in a task of its own.
fn refuse_connection<S: tokio::io::AsyncWrite + Unpin + Send + 'static>(
    mut stream: S,
    over: limits::Over,
    span: tracing::Span,
) {
    let mut out = Vec::new();
    Reply::too_many_connections(over.scope()).write_to(&mut out);
    tokio::spawn(
        async move {
            tracing::warn!(
                limit = over.scope(),
                "connection refused: too many connections"
            );
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.write_all(&out))
                .await;
        }
        .instrument(span),
    );
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
                // One slot per connection, counted per Unix user (as an address in 0.0.0.0/8 that no
                // TCP peer has), so that one local user cannot take every session.
                let key = std::net::IpAddr::V4(std::net::Ipv4Addr::from(uid & 0x00ff_ffff));
                let slot = match ctx.local_limits.try_acquire(key) {
                    Ok(slot) => slot,
                    Err(over) => {
                        refuse_connection(stream, over, span);
                        continue;
                    }
                };
                let sender = ctx.local_sender(uid);
                let shutdown = shutdown.clone();
                tokio::spawn(
                    async move {
                        connection::handle_local(ctx, stream, sender, shutdown).await;
                        drop(slot);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "sendmail socket: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
