//! One SMTP connection: drives `smtp::server::Session` over TCP, TLS or the local sendmail socket, applies
//! timeouts, answers the session's questions (sender, recipient, credentials, storing the message) and
//! upgrades to TLS on STARTTLS.

use super::Inbound;
use super::limits::Slot;
use super::submission::{UserPolicy, is_local};
use super::throttle::AfterFailure;
use super::trace::{self, TlsInfo};
use crate::config::ListenerKind;
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

/// Who is at the other end.
#[derive(Debug, Clone)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A local program through the sendmail socket, known by its Unix user.
    Local {
        uid: u32,
    },
}

enum Next {
    StartTls,
    Closed,
}

struct Conn {
    ctx: Arc<Inbound>,
    peer: Peer,
    tls: Option<TlsInfo>,
    slot: Option<Slot>,
    shutdown: Shutdown,
    messages: usize,
    /// The authenticated user's policy, after AUTH.
    user: Option<UserPolicy>,
    /// Recipients accepted in the current transaction.
    recipients: usize,
    /// The current transaction's reverse-path (for greylisting).
    reverse_path: String,
    /// What the connection checks found out about the client (relay listener).
    client: Option<crate::checks::Client>,
}

pub(super) async fn handle(
    ctx: Arc<Inbound>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    shutdown: Shutdown,
) {
    tracing::info!("connect");
    crate::ops::metrics::inc("tern_connections_total", &[("listener", ctx.kind.as_str())]);
    let implicit_tls = ctx.kind == ListenerKind::Submissions;
    let mut conn = Conn {
        ctx,
        peer: Peer::Tcp(peer),
        tls: None,
        slot: Some(slot),
        shutdown,
        messages: 0,
        user: None,
        recipients: 0,
        reverse_path: String::new(),
        client: None,
    };
    if let (ListenerKind::Relay, Some(checks)) = (conn.ctx.kind, conn.ctx.checks.clone()) {
        match checks.connect(peer.ip()).await {
            Ok(client) => conn.client = Some(client),
            Err(reply) => {
                tracing::warn!(reply = %reply.summary(), "connection refused");
                let mut out = Vec::new();
                reply.write_to(&mut out);
                let mut stream = stream;
                let _ = stream.write_all(&out).await;
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
    let result = if implicit_tls {
        // RFC 8314: TLS from the first byte; the greeting comes inside it.
        match conn.handshake(stream).await {
            Some(mut tls) => {
                let mut session = Session::new_tls(conn.ctx.session.clone());
                match greet(&session, &mut tls).await {
                    Ok(()) => drive(&mut session, &mut tls, &mut conn).await.map(|_| ()),
                    Err(e) => Err(e),
                }
            }
            None => Ok(()),
        }
    } else {
        plain_then_starttls(stream, &mut conn).await
    };
    match result {
        Ok(()) => tracing::info!(messages = conn.messages, "disconnect"),
        Err(e) => tracing::info!(messages = conn.messages, error = %e, "disconnect"),
    }
}

async fn greet<S: AsyncWrite + Unpin>(session: &Session, stream: &mut S) -> std::io::Result<()> {
    let mut greeting = Vec::new();
    session.greeting().write_to(&mut greeting);
    stream.write_all(&greeting).await?;
    stream.flush().await
}

async fn plain_then_starttls(mut stream: TcpStream, conn: &mut Conn) -> std::io::Result<()> {
    let mut session = Session::new(conn.ctx.session.clone());
    greet(&session, &mut stream).await?;
    if let Next::StartTls = drive(&mut session, &mut stream, conn).await?
        && let Some(mut tls) = conn.handshake(stream).await
    {
        session.tls_established();
        drive(&mut session, &mut tls, conn).await?;
    }
    Ok(())
}

/// A session from a local program on the sendmail socket: no TLS, no AUTH, trusted to relay.
pub(super) async fn handle_local<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: Arc<Inbound>,
    mut stream: S,
    uid: u32,
    shutdown: Shutdown,
) {
    let user = crate::sendmail::user_name(uid);
    tracing::info!(uid, user = %user, "connect");
    let mut conn = Conn {
        ctx,
        peer: Peer::Local { uid },
        tls: None,
        slot: None,
        shutdown,
        messages: 0,
        user: None,
        recipients: 0,
        reverse_path: String::new(),
        client: None,
    };
    let mut session = Session::new(conn.ctx.session.clone());
    let result = match greet(&session, &mut stream).await {
        Ok(()) => drive(&mut session, &mut stream, &mut conn)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::info!(error = %e, "local submission ended");
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
    // A command must be complete within command_timeout of the previous one, however slowly its bytes
    // trickle in; a message's data within message_timeout, with no gap longer than data_timeout.
    let mut last_command = tokio::time::Instant::now();
    let mut data_started: Option<tokio::time::Instant> = None;
    loop {
        while let Some(action) = session.poll() {
            last_command = tokio::time::Instant::now();
            match action {
                Action::Reply(r) => {
                    if r.code >= 400 {
                        let code = r
                            .enhanced
                            .map_or_else(|| r.code.to_string(), |e| e.to_string());
                        crate::ops::metrics::inc(
                            "tern_replies_refused_total",
                            &[("listener", conn.ctx.kind.as_str()), ("code", &code)],
                        );
                    }
                    r.write_to(&mut out)
                }
                Action::CheckSender(reverse_path, params) => {
                    let refusal = match &conn.user {
                        // Never accept what cannot be stored: first the disk, then the user's limits.
                        _ if !conn.ctx.queue.has_room() => Some(Reply::insufficient_storage()),
                        Some(user) => {
                            conn.ctx
                                .submission
                                .check_mail(user, &reverse_path, params.size)
                        }
                        None => None,
                    };
                    match &refusal {
                        Some(r) => {
                            tracing::info!(from = %reverse_path, reply = %r.summary(), "sender refused")
                        }
                        None => {
                            conn.recipients = 0;
                            conn.reverse_path = reverse_path.to_string();
                        }
                    }
                    session.sender_verdict(refusal);
                }
                Action::CheckRecipient(fp) => {
                    let verdict = match conn.user.as_ref().map(|u| u.max_recipients) {
                        Some(max) if conn.recipients >= max => {
                            RcptVerdict::Refuse(Reply::user_too_many_recipients(max))
                        }
                        _ => match conn.ctx.policy.check(&fp, conn.may_relay()).await {
                            RcptVerdict::Accept(mailboxes) => {
                                conn.greylist(&fp.to_string(), mailboxes).await
                            }
                            refused => refused,
                        },
                    };
                    match &verdict {
                        RcptVerdict::Refuse(r) => {
                            tracing::info!(to = %fp, reply = %r.summary(), "recipient refused")
                        }
                        RcptVerdict::Accept(_) => conn.recipients += 1,
                    }
                    session.recipient_verdict(verdict);
                }
                Action::Authenticate(credentials) => {
                    let verdict = conn.authenticate(credentials).await;
                    session.auth_verdict(verdict);
                }
                Action::Message(envelope, body) if session.is_lmtp() => {
                    let replies = conn.store_lmtp(*envelope, body, session.is_tls()).await;
                    session.message_stored_each(replies);
                }
                Action::Message(envelope, body) => {
                    let started = std::time::Instant::now();
                    let reply = conn.store(*envelope, body, session.is_tls()).await;
                    crate::ops::metrics::observe_reply_latency(started.elapsed().as_secs_f64());
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
        let now = tokio::time::Instant::now();
        let deadline = if in_data {
            let started = *data_started.get_or_insert(now);
            (now + limits.data_timeout).min(started + limits.message_timeout)
        } else {
            data_started = None;
            last_command + limits.command_timeout
        };
        let mut shutdown = conn.shutdown.clone();
        tokio::select! {
            read = tokio::time::timeout_at(deadline, stream.read(&mut buf)) => match read {
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
    async fn handshake(
        &mut self,
        stream: TcpStream,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let acceptor = self.ctx.tls.clone()?;
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                let (_, state) = tls.get_ref();
                let info = TlsInfo {
                    version: state
                        .protocol_version()
                        .map(tls_version_name)
                        .unwrap_or_default(),
                    cipher: state
                        .negotiated_cipher_suite()
                        .map(|c| format!("{:?}", c.suite()))
                        .unwrap_or_default(),
                };
                tracing::info!(version = %info.version, cipher = %info.cipher, "tls established");
                self.tls = Some(info);
                Some(tls)
            }
            Ok(Err(e)) => {
                tracing::info!(error = %e, "tls handshake failed");
                None
            }
            Err(_) => {
                tracing::info!("tls handshake timed out");
                None
            }
        }
    }

    /// Greylisting for unauthenticated mail from outside (when configured): the accepted recipient, or 451.
    async fn greylist(&self, recipient: &str, mailboxes: Vec<crate::smtp::Mailbox>) -> RcptVerdict {
        let (Some(checks), Some(client)) = (&self.ctx.checks, &self.client) else {
            return RcptVerdict::Accept(mailboxes);
        };
        let Some(greylist) = &checks.greylist else {
            return RcptVerdict::Accept(mailboxes);
        };
        if client.allowed || self.user.is_some() || self.may_relay() {
            return RcptVerdict::Accept(mailboxes);
        }
        let now = crate::clock::unix_now();
        match greylist
            .check(client.ip, &self.reverse_path, recipient, now)
            .await
        {
            Ok(crate::checks::greylist::Decision::Pass) => RcptVerdict::Accept(mailboxes),
            Ok(crate::checks::greylist::Decision::Defer) => {
                RcptVerdict::Refuse(Reply::greylisted())
            }
            Err(e) => {
                // A broken greylist database must not stop mail: accept and say so.
                tracing::error!(error = %e, "greylist lookup failed; accepting");
                RcptVerdict::Accept(mailboxes)
            }
        }
    }

    /// Relaying to other domains: authenticated users, local programs, and configured trusted networks.
    fn may_relay(&self) -> bool {
        // LMTP is final delivery: never a relay (RFC 2033 4.1).
        if self.ctx.kind == ListenerKind::Lmtp {
            return false;
        }
        match &self.peer {
            Peer::Local { .. } => true,
            Peer::Tcp(addr) => {
                self.user.is_some()
                    || self
                        .ctx
                        .submission
                        .settings
                        .trusted_networks
                        .iter()
                        .any(|n| n.contains(addr.ip()))
            }
        }
    }

    fn client_ip(&self) -> Option<std::net::IpAddr> {
        match &self.peer {
            Peer::Tcp(a) => Some(a.ip()),
            Peer::Local { .. } => None,
        }
    }

    /// Checks credentials with throttling; never logs the password.
    async fn authenticate(&mut self, c: crate::sasl::Credentials) -> Result<String, Reply> {
        let Some(ip) = self.client_ip() else {
            return Err(Reply::auth_failed());
        };
        let throttle = &self.ctx.throttle;
        let user = c.username.to_lowercase();
        if throttle.blocked(ip, &user) {
            tracing::warn!(user = %user, "authentication refused: blocked after repeated failures");
            return Err(Reply::auth_throttled());
        }
        match self.ctx.directory.verify_password(&user, c.password).await {
            Ok(true) => match self.ctx.submission.user(&user).await {
                Ok(policy) => {
                    throttle.succeeded(&user);
                    tracing::info!(user = %user, "authenticated");
                    self.user = Some(policy);
                    Ok(user)
                }
                Err(e) => {
                    tracing::error!(user = %user, error = %e, "cannot load user settings");
                    Err(Reply::auth_temporary_failure())
                }
            },
            Ok(false) => match throttle.failed(ip, &user) {
                AfterFailure::Delay(d) => {
                    tracing::warn!(user = %user, delay_ms = d.as_millis() as u64, "authentication failed");
                    tokio::time::sleep(d).await;
                    Err(Reply::auth_failed())
                }
                AfterFailure::Block => {
                    tracing::warn!(user = %user, "authentication failed; client and account blocked");
                    Err(Reply::auth_throttled())
                }
            },
            Err(e) => {
                tracing::error!(user = %user, error = %e, "password check failed");
                Err(Reply::auth_temporary_failure())
            }
        }
    }

    /// LMTP: one reply per recipient. A recipient whose mailbox this message would overflow gets 452 4.2.2;
    /// the others share one durable queue entry and its 250.
    async fn store_lmtp(&mut self, env: Envelope, body: Vec<u8>, tls_on: bool) -> Vec<Reply> {
        let mut replies: Vec<Option<Reply>> = vec![None; env.recipients.len()];
        let mut keep = Vec::new();
        for (i, r) in env.recipients.iter().enumerate() {
            match self.over_quota(&r.mailboxes, body.len() as u64).await {
                Some(reply) => {
                    tracing::info!(to = %r.forward_path, reply = %reply.summary(), "recipient refused after data");
                    replies[i] = Some(reply);
                }
                None => keep.push(i),
            }
        }
        if !keep.is_empty() {
            let mut accepted = env.clone();
            accepted.recipients = keep.iter().map(|&i| env.recipients[i].clone()).collect();
            let reply = self.store(accepted, body, tls_on).await;
            for i in keep {
                replies[i] = Some(reply.clone());
            }
        }
        replies
            .into_iter()
            .map(|r| r.unwrap_or_else(Reply::queue_write_failed))
            .collect()
    }

    /// 452 4.2.2 if a message of `size` octets would overflow the quota of one of these mailboxes.
    async fn over_quota(&self, mailboxes: &[crate::smtp::Mailbox], size: u64) -> Option<Reply> {
        for m in mailboxes {
            let Ok(Some(quota)) = self.ctx.directory.quota(&m.to_string()).await else {
                continue;
            };
            let store = self.ctx.policy.store.clone();
            let probe = m.clone();
            if let Ok(Ok(usage)) = tokio::task::spawn_blocking(move || store.usage(&probe)).await
                && usage.exceeds(quota, size)
            {
                return Some(Reply::over_quota(&m.to_string()));
            }
        }
        None
    }

    /// Commits the message to the queue; the reply is 250 only once it is on stable storage.
    async fn store(&mut self, env: Envelope, body: Vec<u8>, tls_on: bool) -> Reply {
        let mut checks_summary = String::new();
        let mut folder = "";
        let body = match &self.user {
            Some(user) => match self
                .ctx
                .submission
                .check_content(user, &self.ctx.hostname, body)
            {
                Ok(b) => b,
                Err(reply) => {
                    tracing::info!(from = %env.reverse_path, reply = %reply.summary(), "message refused");
                    return reply;
                }
            },
            // Mail from outside: SPF, DKIM, ARC, DMARC; refused, quarantined or delivered with the verdict.
            None if self.client.as_ref().is_some_and(|c| !c.skipped)
                && self.ctx.checks.as_ref().is_some_and(|c| c.enabled()) =>
            {
                let (Some(checks), Some(client)) = (self.ctx.checks.clone(), self.client.clone())
                else {
                    return Reply::queue_write_failed();
                };
                let verdict = checks
                    .message(&client, &env.helo, &env.reverse_path.to_string(), &body)
                    .await;
                if let Some(reply) = &verdict.reply {
                    tracing::info!(from = %env.reverse_path, checks = %verdict.summary, reply = %reply.summary(), "message refused");
                    return reply.clone();
                }
                checks_summary = verdict.summary.clone();
                if verdict.action == crate::config::CheckAction::Junk {
                    folder = "Junk";
                }
                checks.rewrite(body, &verdict.header)
            }
            // A local program is trusted with any sender, but its message gets the same fix-ups.
            None if matches!(self.peer, Peer::Local { .. }) => {
                self.ctx.submission.fix_up(&self.ctx.hostname, body)
            }
            None => body,
        };
        let queue = &self.ctx.queue;
        let id = queue.next_id();
        let trace = match &self.peer {
            Peer::Tcp(addr) => {
                let tls = if tls_on { self.tls.as_ref() } else { None };
                let hide = self.user.is_some() && self.ctx.submission.settings.hide_client_ip;
                let rdns = self.client.as_ref().and_then(|c| c.rdns.as_deref());
                trace::received(
                    &env.helo,
                    (!hide).then_some(*addr),
                    rdns,
                    tls,
                    &self.ctx.hostname,
                    env.protocol,
                    id,
                )
            }
            Peer::Local { uid, .. } => trace::received_local(*uid, &self.ctx.hostname, id),
        };
        let size = body.len();
        let local_domains = &self.ctx.policy.local_domains;
        // One queue recipient per target: an alias that fans out gives several, all under its forward-path.
        let recipients: Vec<QueuedRecipient> = env
            .recipients
            .iter()
            .flat_map(|r| r.mailboxes.iter().map(move |m| (r, m)))
            .enumerate()
            .map(|(i, (r, m))| {
                let local = is_local(m, local_domains);
                QueuedRecipient {
                    idx: i as u32,
                    forward_path: r.forward_path.to_string(),
                    mailbox: m.to_string(),
                    transport: if local { "local" } else { "remote" }.to_string(),
                    notify: r.params.notify.map(|n| n.to_param()),
                    orcpt: r.params.orcpt.clone(),
                    attempts: 0,
                    delay_notified: false,
                    folder: if local {
                        folder.to_string()
                    } else {
                        String::new()
                    },
                }
            })
            .collect();
        let to: Vec<&str> = recipients.iter().map(|r| r.forward_path.as_str()).collect();
        let to = to.join(",");
        let remote = recipients
            .iter()
            .filter(|r| r.transport == "remote")
            .count();
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
            checks: checks_summary.clone(),
            recipients,
        };
        let auth = env.auth.as_deref().unwrap_or("");
        match queue.enqueue(message).await {
            Ok(()) => {
                self.messages += 1;
                crate::ops::metrics::inc(
                    "tern_messages_accepted_total",
                    &[("listener", self.ctx.kind.as_str())],
                );
                if let Some(user) = &self.user {
                    self.ctx.submission.record_sent(user);
                }
                tracing::info!(queue_id = %id, from = %env.reverse_path, to = %to, size, protocol = env.protocol,
                    sasl_user = auth, remote, checks = %checks_summary, folder, "message accepted");
                Reply::queued(&id.to_string())
            }
            Err(e) => {
                tracing::error!(queue_id = %id, from = %env.reverse_path, to = %to, error = %e, "message not queued");
                Reply::queue_write_failed()
            }
        }
    }
}
