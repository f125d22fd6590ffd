//! One SMTP connection: drives `smtp::server::Session` over TCP, TLS or the local sendmail socket, applies
//! timeouts, answers the session's questions (sender, recipient, credentials, storing the message) and
//! upgrades to TLS on STARTTLS.

mod judge;
mod store;

use super::Inbound;
use super::limits::Slot;
use super::submission::{Reservation, UserPolicy};
use super::throttle::{AfterFailure, Begin};
use super::trace::TlsInfo;
use crate::config::ListenerKind;
use crate::directory::Login;
use crate::log::Escaped;
use crate::shutdown::Shutdown;
use crate::smtp::Reply;
use crate::smtp::server::{Action, RcptVerdict, Session};
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
    /// A local program through the sendmail socket, known by its Unix user (SO_PEERCRED).
    Local(LocalSender),
}

/// The Unix user behind a sendmail-socket connection and what it may claim as sender.
#[derive(Debug, Clone)]
pub struct LocalSender {
    pub uid: u32,
    /// The login name, when the user database knows the uid.
    pub name: Option<String>,
    /// The user's own address at the origin domain (`name@<first local domain>`), as Postfix maps it.
    pub address: Option<String>,
    /// root, the service user or one of `[sendmail] trusted_users`: may send as anyone (`-f`).
    pub trusted: bool,
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
    /// The current transaction's SIZE= (0 when not given), for quotas at RCPT.
    declared_size: u64,
    /// The current transaction's place in the user's hourly limit, taken at MAIL.
    reservation: Option<Reservation>,
    /// The quotas of the accounts the current transaction's RCPTs accepted, as read then.
    rcpt_quotas: crate::inbound::policy::Quotas,
    /// The quotas of the local mailboxes the current message goes to, as read for its quota check: what
    /// delivery in the session measures against.
    quotas: crate::local::Quotas,
    /// What the connection checks found out about the client (relay listener).
    client: Option<crate::checks::Client>,
    /// Since when the session has not completed a message.
    idle_since: tokio::time::Instant,
    /// The content filters' connections for this session.
    filters: Option<crate::filter::Filters>,
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
    let _open = crate::ops::metrics::connection_opened(ctx.kind.as_str());
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
        declared_size: 0,
        reservation: None,
        rcpt_quotas: Default::default(),
        quotas: Default::default(),
        client: None,
        idle_since: tokio::time::Instant::now(),
        filters: None,
    };
    if let (ListenerKind::Relay, Some(checks)) = (conn.ctx.kind, conn.ctx.checks.clone()) {
        match Box::pin(checks.connect(peer.ip())).await {
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
    if !conn.ctx.filters.is_empty() {
        let facts = crate::filter::Facts {
            hostname: conn.ctx.hostname.clone(),
            daemon: conn.ctx.kind.as_str().to_string(),
            client: Some(peer),
            client_name: conn
                .client
                .as_ref()
                .and_then(|c| c.rdns.clone())
                .unwrap_or_else(|| format!("[{}]", peer.ip())),
            tls_version: None,
            auth_user: None,
        };
        conn.filters = Box::pin(crate::filter::Filters::connect(&conn.ctx.filters, facts)).await;
    }
    let result = if implicit_tls {
        // RFC 8314: TLS from the first byte; the greeting comes inside it.
        match Box::pin(conn.handshake(stream)).await {
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
    if let Some(f) = conn.filters.take() {
        f.quit().await;
    }
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
        && let Some(mut tls) = Box::pin(conn.handshake(stream)).await
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
    sender: LocalSender,
    shutdown: Shutdown,
) {
    tracing::info!(uid = sender.uid, user = %sender.name.as_deref().unwrap_or("-"), trusted = sender.trusted, "connect");
    let mut conn = Conn {
        ctx,
        peer: Peer::Local(sender),
        tls: None,
        slot: None,
        shutdown,
        messages: 0,
        user: None,
        recipients: 0,
        reverse_path: String::new(),
        declared_size: 0,
        reservation: None,
        rcpt_quotas: Default::default(),
        quotas: Default::default(),
        client: None,
        idle_since: tokio::time::Instant::now(),
        filters: None,
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

/// Keeps `held` equal (in KiB) to what the message being received holds; when the shared budget has no
/// room for its growth, the message is shed (read to its end, then 452 4.3.1) rather than waited for:
/// sessions waiting on each other for memory would never finish.
fn account_data_memory(
    session: &mut Session,
    budget: &Arc<tokio::sync::Semaphore>,
    held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let want = u32::try_from(session.message_memory().div_ceil(1024)).unwrap_or(u32::MAX);
    let have = held.as_ref().map_or(0, |p| p.num_permits() as u32);
    if want == 0 {
        *held = None;
    } else if want > have {
        match budget.clone().try_acquire_many_owned(want - have) {
            Ok(more) => match held {
                Some(p) => p.merge(more),
                None => *held = Some(more),
            },
            Err(_) => {
                tracing::warn!(
                    octets = session.message_memory(),
                    "message refused for now: [limits] data_memory_mb is in use by other sessions"
                );
                session.shed_message();
                *held = None;
            }
        }
    }
}

/// Octets read from the client at a time: commands are short, and a session waiting for its next command
/// holds only this much (10,000 idle sessions hold 10,000 of them); message content comes in larger reads.
const COMMAND_READ: usize = 1024;
const DATA_READ: usize = 32 * 1024;

/// Moves the content of a message being received to its spool file once it passes `[limits]
/// spool_threshold_kib`, in
/// pieces of about that size: a session holds at most that much content in memory, whatever the message's
/// size. A spool file that cannot be written sheds the message (452 4.3.1 at its end).
async fn spool_content(
    session: &mut Session,
    conn: &Conn,
    spool: &mut Option<(u64, crate::queue::spool::SpoolWriter)>,
) {
    let threshold = conn.ctx.limits.spool_threshold;
    let Some((seq, pending)) = session.content_pending() else {
        // Between messages: a file left from a refused or abandoned one is removed.
        *spool = None;
        return;
    };
    if spool.as_ref().is_some_and(|(s, _)| *s != seq) {
        *spool = None;
    }
    // Taken before the next read could push it past the threshold: the buffer never doubles past it.
    if pending + DATA_READ < threshold {
        return;
    }
    if spool.is_none() {
        match conn.ctx.queue.spool().writer() {
            Ok(w) => *spool = Some((seq, w)),
            Err(e) => {
                tracing::error!(dir = %conn.ctx.queue.spool().dir().display(), error = %e, "cannot create a spool file; message refused with 452");
                session.shed_message();
                return;
            }
        }
    }
    if let Some((_, writer)) = spool.as_mut()
        && let Err(e) = Box::pin(writer.write(session.take_content())).await
    {
        tracing::error!(error = %e, "cannot write a spool file; message refused with 452");
        session.shed_message();
        *spool = None;
    }
}

async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session,
    stream: &mut S,
    conn: &mut Conn,
) -> std::io::Result<Next> {
    let mut out = Vec::with_capacity(512);
    // Read into the spare capacity (never zeroed): each read takes up to its capacity.
    let mut buf: Vec<u8> = Vec::with_capacity(COMMAND_READ);
    let limits = conn.ctx.limits.clone();
    // A command must be complete within command_timeout of the previous one, however slowly its bytes
    // trickle in; a message's data within message_timeout, with no gap longer than data_timeout.
    let mut last_command = tokio::time::Instant::now();
    let mut data_started: Option<tokio::time::Instant> = None;
    // A session must complete a message every session_idle, or it is holding a slot for nothing.
    let mut idle_since = conn.idle_since;
    // This session's share of [limits] data_memory: what the message being received holds.
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    // The spool file of the message being received, once it outgrew the spool threshold, with the message's
    // number (a file left from a refused message is never joined to the next one).
    let mut spool: Option<(u64, crate::queue::spool::SpoolWriter)> = None;
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
                    // A transaction that ended without a message gives its reservation back.
                    conn.reservation = None;
                    let refusal = match (&conn.user, &conn.peer) {
                        // Never accept what cannot be stored: first the disk, then the user's limits.
                        _ if !conn.ctx.queue.has_room() => Some(Reply::insufficient_storage()),
                        (Some(user), _) => {
                            match conn
                                .ctx
                                .submission
                                .check_mail(user, &reverse_path, params.size)
                            {
                                Ok(r) => {
                                    conn.reservation = Some(r);
                                    None
                                }
                                Err(reply) => Some(reply),
                            }
                        }
                        (None, Peer::Local(local)) if conn.ctx.kind == ListenerKind::Local => {
                            conn.ctx.local_sender_refusal(local, &reverse_path)
                        }
                        (None, Peer::Local(_)) => None,
                        (None, Peer::Tcp(_)) => None,
                    };
                    // The content filters hear of the sender only once tern would accept it.
                    let refusal = match (refusal, conn.filters.as_mut()) {
                        (None, Some(filters)) => {
                            filters.set_session(
                                conn.user.as_ref().map(|u| u.address.clone()),
                                conn.tls.as_ref().map(|t| t.version.clone()),
                            );
                            let mut args = Vec::new();
                            if let Some(size) = params.size {
                                args.push(format!("SIZE={size}"));
                            }
                            Box::pin(filters.mail(session.helo(), &reverse_path.to_string(), args))
                                .await
                        }
                        (refusal, _) => refusal,
                    };
                    match &refusal {
                        Some(r) => {
                            tracing::info!(helo = %Escaped(session.helo()), from = %reverse_path, reply = %r.summary(), "sender refused")
                        }
                        None => {
                            conn.recipients = 0;
                            conn.rcpt_quotas.clear();
                            conn.reverse_path = reverse_path.to_string();
                            conn.declared_size = params.size.unwrap_or(0) as u64;
                        }
                    }
                    session.sender_verdict(refusal);
                }
                Action::CheckRecipient(fp) => {
                    let verdict = match conn.user.as_ref().map(|u| u.max_recipients) {
                        Some(max) if conn.recipients >= max => {
                            RcptVerdict::Refuse(Reply::user_too_many_recipients(max))
                        }
                        _ => match Box::pin(conn.ctx.policy.check_noting(
                            &fp,
                            conn.may_relay(),
                            conn.declared_size,
                            &mut conn.rcpt_quotas,
                        ))
                        .await
                        {
                            RcptVerdict::Accept(mailboxes) => {
                                Box::pin(conn.greylist(&fp.to_string(), mailboxes)).await
                            }
                            refused => refused,
                        },
                    };
                    let verdict = match (verdict, conn.filters.as_mut()) {
                        (RcptVerdict::Accept(mailboxes), Some(filters)) => {
                            match Box::pin(filters.rcpt(&fp.to_string())).await {
                                Some(reply) => RcptVerdict::Refuse(reply),
                                None => RcptVerdict::Accept(mailboxes),
                            }
                        }
                        (verdict, _) => verdict,
                    };
                    match &verdict {
                        RcptVerdict::Refuse(r) => {
                            tracing::info!(helo = %Escaped(session.helo()), from = %Escaped(&conn.reverse_path), to = %fp, reply = %r.summary(), "recipient refused")
                        }
                        RcptVerdict::Accept(_) => conn.recipients += 1,
                    }
                    session.recipient_verdict(verdict);
                }
                Action::Authenticate(credentials) => {
                    let verdict = Box::pin(conn.authenticate(credentials)).await;
                    session.auth_verdict(verdict);
                }
                Action::Message(envelope, rest) => {
                    let body = match spool.take() {
                        Some((seq, writer)) if seq == session.content_seq() => {
                            Box::pin(writer.finish(rest, limits.header_section)).await
                        }
                        _ => Ok(crate::queue::Body::memory(rest)),
                    };
                    let body = match body {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::error!(error = %e, "spool file not written; message refused with 451");
                            if session.is_lmtp() {
                                let n = envelope.recipients.len().max(1);
                                session.message_stored_each(vec![Reply::queue_write_failed(); n]);
                            } else {
                                session.message_stored(Reply::queue_write_failed());
                            }
                            continue;
                        }
                    };
                    if session.is_lmtp() {
                        let replies =
                            Box::pin(conn.store_lmtp(*envelope, body, session.is_tls())).await;
                        session.message_stored_each(replies);
                        continue;
                    }
                    let started = std::time::Instant::now();
                    let reply = Box::pin(conn.store(*envelope, body, session.is_tls())).await;
                    crate::ops::metrics::observe_reply_latency(started.elapsed().as_secs_f64());
                    if reply.code < 400 {
                        idle_since = tokio::time::Instant::now();
                        conn.idle_since = idle_since;
                    }
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
        spool_content(session, conn, &mut spool).await;
        account_data_memory(session, &conn.ctx.data_memory, &mut held);
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
            (last_command + limits.command_timeout).min(idle_since + limits.session_idle)
        };
        let idle_cut = !in_data && deadline == idle_since + limits.session_idle;
        let want = if in_data || session.content_pending().is_some() {
            DATA_READ
        } else {
            COMMAND_READ
        };
        buf.clear();
        if buf.capacity() != want {
            buf = Vec::with_capacity(want);
        }
        let mut shutdown = conn.shutdown.clone();
        tokio::select! {
            read = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => match read {
                Ok(Ok(0)) => return Ok(Next::Closed),
                Ok(Ok(n)) => session.receive(&buf[..n]),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    let mut r = Vec::new();
                    if idle_cut {
                        tracing::info!(idle_secs = limits.session_idle.as_secs(), "session closed: no mail within session_idle_secs");
                        Reply::session_too_long(&conn.ctx.hostname).write_to(&mut r);
                    } else {
                        tracing::info!(in_data, "timeout");
                        Reply::timeout(&conn.ctx.hostname).write_to(&mut r);
                    }
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
            Peer::Local(_) => true,
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
            Peer::Local(_) => None,
        }
    }

    /// Whether the client is in `[submission] trusted_networks` (relays without AUTH).
    fn trusted_network(&self) -> bool {
        self.client_ip().is_some_and(|ip| {
            self.ctx
                .submission
                .settings
                .trusted_networks
                .iter()
                .any(|n| n.contains(ip))
        })
    }

    /// Checks credentials with throttling; never logs the password. The attempt is counted before the
    /// password is checked (parallel attempts cannot all run), and checks run a few at a time.
    async fn authenticate(&mut self, c: crate::sasl::Credentials) -> Result<String, Reply> {
        let Some(ip) = self.client_ip() else {
            return Err(Reply::auth_failed());
        };
        let throttle = &self.ctx.throttle;
        let user = c.username.to_lowercase();
        let shown = Escaped(&user);
        if throttle.blocked(ip, &user) {
            tracing::warn!(user = %shown, "authentication refused: blocked after repeated failures");
            return Err(Reply::auth_throttled());
        }
        match throttle.begin(ip, &user) {
            Begin::Go => {}
            Begin::Blocked => {
                tracing::warn!(user = %shown, "authentication refused: blocked after repeated failures");
                return Err(Reply::auth_throttled());
            }
            Begin::Busy => {
                tracing::warn!(user = %shown, "authentication refused for now: too many attempts in progress");
                return Err(Reply::auth_temporary_failure());
            }
        }
        match self.ctx.directory.login(&user, c.password).await {
            Ok(Login::Disabled) => {
                // The password was right: not a failure to throttle, and nothing is tried further.
                throttle.abandoned(ip, &user);
                tracing::warn!(user = %shown, "authentication refused: account disabled");
                Err(Reply::account_disabled())
            }
            Ok(Login::Valid) => match self.ctx.submission.user(&user).await {
                Ok(policy) => {
                    throttle.succeeded(ip, &user);
                    tracing::info!(user = %shown, "authenticated");
                    self.user = Some(policy);
                    Ok(user)
                }
                Err(e) => {
                    throttle.abandoned(ip, &user);
                    tracing::error!(user = %shown, error = %e, "cannot load user settings");
                    Err(Reply::auth_temporary_failure())
                }
            },
            Ok(Login::Invalid) => match throttle.failed(ip, &user) {
                AfterFailure::Delay(d) => {
                    tracing::warn!(user = %shown, delay_ms = d.as_millis() as u64, "authentication failed");
                    tokio::time::sleep(d).await;
                    Err(Reply::auth_failed())
                }
                AfterFailure::Block => {
                    tracing::warn!(user = %shown, "authentication failed; client and account blocked");
                    Err(Reply::auth_throttled())
                }
            },
            Err(e) => {
                throttle.abandoned(ip, &user);
                tracing::error!(user = %shown, error = %e, "password check failed");
                Err(Reply::auth_temporary_failure())
            }
        }
    }
}
