//! One SMTP connection: drives `smtp::server::Session` over a TCP or TLS stream, applies timeouts, answers the
//! session's questions (recipient verdicts, storing the message) and upgrades to TLS on STARTTLS.

use super::Inbound;
use super::limits::Slot;
use super::trace::{self, TlsInfo};
use crate::queue::{QueuedMessage, QueuedRecipient};
use crate::shutdown::Shutdown;
use crate::smtp::Reply;
use crate::smtp::server::{Action, Envelope, RcptVerdict, Session};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

enum Next {
    StartTls,
    Closed,
}

struct Conn {
    ctx: Arc<Inbound>,
    peer: SocketAddr,
    tls: Option<TlsInfo>,
    slot: Option<Slot>,
    shutdown: Shutdown,
    messages: usize,
}

pub(super) async fn handle(
    ctx: Arc<Inbound>,
    mut stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    shutdown: Shutdown,
) {
    tracing::info!("connect");
    let mut session = Session::new(ctx.session.clone());
    let mut conn = Conn {
        ctx,
        peer,
        tls: None,
        slot: Some(slot),
        shutdown,
        messages: 0,
    };
    let mut greeting = Vec::new();
    session.greeting().write_to(&mut greeting);
    let result = match stream.write_all(&greeting).await {
        Ok(()) => drive(&mut session, &mut stream, &mut conn).await,
        Err(e) => Err(e),
    };
    let result = match (result, conn.ctx.tls.clone()) {
        (Ok(Next::StartTls), Some(acceptor)) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(mut tls)) => {
                    let (_, state) = tls.get_ref();
                    conn.tls = Some(TlsInfo {
                        version: state
                            .protocol_version()
                            .map(|v| tls_version_name(v))
                            .unwrap_or_default(),
                        cipher: state
                            .negotiated_cipher_suite()
                            .map(|c| format!("{:?}", c.suite()))
                            .unwrap_or_default(),
                    });
                    if let Some(t) = &conn.tls {
                        tracing::info!(version = %t.version, cipher = %t.cipher, "tls established");
                    }
                    session.tls_established();
                    drive(&mut session, &mut tls, &mut conn).await
                }
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "tls handshake failed");
                    Ok(Next::Closed)
                }
                Err(_) => {
                    tracing::info!("tls handshake timed out");
                    Ok(Next::Closed)
                }
            }
        }
        (other, _) => other,
    };
    match result {
        Ok(_) => tracing::info!(messages = conn.messages, "disconnect"),
        Err(e) => tracing::info!(messages = conn.messages, error = %e, "disconnect"),
    }
}

fn tls_version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => format!("{other:?}"),
    }
}

async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session,
    stream: &mut S,
    conn: &mut Conn,
) -> std::io::Result<Next> {
    let mut out = Vec::with_capacity(512);
    let mut buf = vec![0u8; 8192];
    let limits = conn.ctx.limits.clone();
    loop {
        while let Some(action) = session.poll() {
            match action {
                Action::Reply(r) => r.write_to(&mut out),
                Action::CheckRecipient(fp) => {
                    let verdict = conn.ctx.policy.check(&fp).await;
                    if let RcptVerdict::Refuse(r) = &verdict {
                        tracing::info!(to = %fp, reply = %r.summary(), "recipient refused");
                    }
                    session.recipient_verdict(verdict);
                }
                Action::Message(envelope, body) => {
                    let reply = conn.store(*envelope, body, session.is_tls()).await;
                    session.message_stored(reply);
                }
                Action::StartTls => {
                    stream.write_all(&out).await?;
                    stream.flush().await?;
                    return Ok(Next::StartTls);
                }
                Action::Close => {
                    // Free the slot before the client sees the close, so that it can connect again at once.
                    conn.slot.take();
                    stream.write_all(&out).await?;
                    stream.flush().await?;
                    let _ = stream.shutdown().await;
                    return Ok(Next::Closed);
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            stream.flush().await?;
            out.clear();
        }
        let in_data = session.in_data();
        let timeout = if in_data {
            limits.data_timeout
        } else {
            limits.command_timeout
        };
        let mut shutdown = conn.shutdown.clone();
        tokio::select! {
            read = tokio::time::timeout(timeout, stream.read(&mut buf)) => match read {
                Ok(Ok(0)) => return Ok(Next::Closed),
                Ok(Ok(n)) => session.receive(&buf[..n]),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    tracing::info!(in_data, "timeout");
                    let mut r = Vec::new();
                    Reply::timeout(&conn.ctx.hostname).write_to(&mut r);
                    let _ = stream.write_all(&r).await;
                    return Ok(Next::Closed);
                }
            },
            // A session between commands is told to come back later; one sending a message may finish it.
            _ = shutdown.fired(), if !in_data && !session.in_transaction() => {
                let mut r = Vec::new();
                Reply::shutting_down(&conn.ctx.hostname).write_to(&mut r);
                let _ = stream.write_all(&r).await;
                return Ok(Next::Closed);
            }
        }
    }
}

impl Conn {
    /// Commits the message to the queue; the reply is 250 only once it is on stable storage.
    async fn store(&mut self, env: Envelope, body: Vec<u8>, tls_on: bool) -> Reply {
        let queue = &self.ctx.queue;
        let id = queue.next_id();
        let tls = if tls_on { self.tls.as_ref() } else { None };
        let trace = trace::received(
            &env.helo,
            self.peer,
            tls,
            &self.ctx.hostname,
            env.protocol,
            id,
        );
        let size = body.len();
        let recipients: Vec<QueuedRecipient> = env
            .recipients
            .iter()
            .enumerate()
            .map(|(i, r)| QueuedRecipient {
                idx: i as u32,
                forward_path: r.forward_path.to_string(),
                mailbox: r.mailbox.to_string(),
                notify: r.params.notify.map(|n| n.to_param()),
                orcpt: r.params.orcpt.clone(),
                attempts: 0,
            })
            .collect();
        let to: Vec<&str> = recipients.iter().map(|r| r.forward_path.as_str()).collect();
        let to = to.join(",");
        let message = QueuedMessage {
            id,
            received_at: id.unix_secs(),
            reverse_path: env.reverse_path.to_string(),
            body_type: env.params.body.as_str().to_string(),
            smtputf8: env.params.smtputf8,
            ret: env.params.ret.map(|r| r.as_str().to_string()),
            envid: env.params.envid.clone(),
            trace,
            body,
            recipients,
        };
        match queue.enqueue(message).await {
            Ok(()) => {
                self.messages += 1;
                tracing::info!(queue_id = %id, from = %env.reverse_path, to = %to, size, protocol = env.protocol, "message accepted");
                Reply::queued(&id.to_string())
            }
            Err(e) => {
                tracing::error!(queue_id = %id, from = %env.reverse_path, to = %to, error = %e, "message not queued");
                Reply::queue_write_failed()
            }
        }
    }
}
