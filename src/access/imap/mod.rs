//! The IMAP listener: accepts connections (plain with STARTTLS, or implicit TLS), drives `Session` on the
//! blocking pool (the mailbox index does file I/O), checks passwords through `Access::login`, and waits in
//! IDLE for the mailbox's change notices.

pub mod cache;
mod session;

use super::Access;
use crate::config::ListenerKind;
use crate::shutdown::Shutdown;
use session::{Outcome, Session};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// During IDLE, how often the folder is looked at for changes made by other programs (in-process changes
/// wake the session at once).
const IDLE_POLL: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn serve(
    listener: TcpListener,
    kind: ListenerKind,
    access: Arc<Access>,
    shutdown: Shutdown,
) {
    super::listen::accept(
        listener,
        kind,
        access,
        shutdown,
        b"* BYE [UNAVAILABLE] too many connections, try again later\r\n",
        move |stream, peer, access, shutdown| handle(stream, peer, kind, access, shutdown),
    )
    .await;
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    access: Arc<Access>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let secure = access.is_secure_network(peer.ip());
    if kind == ListenerKind::Imaps {
        let Some(mut tls) = super::listen::handshake(&access, stream).await else {
            return Ok(());
        };
        let mut session = Session::new(access.clone(), true, secure, false);
        session.greeting();
        drive(session, &mut tls, peer, &access, shutdown).await?;
        return Ok(());
    }
    let mut stream = stream;
    let mut session = Session::new(access.clone(), false, secure, true);
    session.greeting();
    if let Some(mut session) = drive(session, &mut stream, peer, &access, shutdown.clone()).await? {
        let Some(mut tls) = super::listen::handshake(&access, stream).await else {
            return Ok(());
        };
        if session.buffered() > 0 {
            // Commands sent before the handshake are an injection attempt (RFC 9051 11.1): drop the session.
            tracing::warn!("data after STARTTLS before the handshake: closing");
            return Ok(());
        }
        session.tls_established();
        drive(session, &mut tls, peer, &access, shutdown).await?;
    }
    Ok(())
}

/// Runs the session on the blocking pool and hands it back with what it asks for.
async fn step(
    mut session: Session,
    f: impl FnOnce(&mut Session) -> Outcome + Send + 'static,
) -> std::io::Result<(Session, Outcome)> {
    tokio::task::spawn_blocking(move || {
        let o = f(&mut session);
        (session, o)
    })
    .await
    .map_err(std::io::Error::other)
}

async fn flush<S: AsyncWrite + Unpin>(
    session: &mut Session,
    stream: &mut S,
) -> std::io::Result<()> {
    if !session.out.is_empty() {
        stream.write_all(&session.out).await?;
        stream.flush().await?;
        session.out.clear();
    }
    Ok(())
}

/// Runs the session until it closes (None) or asks for TLS (the session back).
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    mut session: Session,
    stream: &mut S,
    peer: SocketAddr,
    access: &Arc<Access>,
    mut shutdown: Shutdown,
) -> std::io::Result<Option<Session>> {
    let mut buf = vec![0u8; 16 * 1024];
    let settings = access.settings.clone();
    flush(&mut session, stream).await?;
    let mut outcome = Outcome::Read;
    loop {
        match outcome {
            Outcome::Read => {
                flush(&mut session, stream).await?;
                let timeout = if session.logged() {
                    settings.imap_idle
                } else {
                    settings.imap_login_timeout
                };
                let n = tokio::select! {
                    r = tokio::time::timeout(timeout, stream.read(&mut buf)) => match r {
                        Ok(Ok(0)) => return Ok(None),
                        Ok(Ok(n)) => n,
                        Ok(Err(e)) => return Err(e),
                        Err(_) => {
                            tracing::info!("timeout");
                            let _ = stream.write_all(b"* BYE autologout: idle for too long\r\n").await;
                            return Ok(None);
                        }
                    },
                    _ = shutdown.fired() => {
                        let _ = stream.write_all(b"* BYE server shutting down\r\n").await;
                        return Ok(None);
                    }
                };
                session.receive(&buf[..n]);
                (session, outcome) = step(session, Session::process).await?;
            }
            Outcome::Continue => {
                flush(&mut session, stream).await?;
                (session, outcome) = step(session, Session::process).await?;
            }
            Outcome::Login(tag, credentials) => {
                flush(&mut session, stream).await?;
                let result = access.login(peer.ip(), credentials).await;
                (session, outcome) = step(session, move |s| {
                    s.logged_in(&tag, result);
                    s.process()
                })
                .await?;
            }
            Outcome::StartTls => {
                flush(&mut session, stream).await?;
                return Ok(Some(session));
            }
            Outcome::Close => {
                flush(&mut session, stream).await?;
                let _ = stream.shutdown().await;
                return Ok(None);
            }
            Outcome::Idle => {
                flush(&mut session, stream).await?;
                outcome = idle(&mut session, stream, access, &mut buf, &mut shutdown).await?;
                if matches!(outcome, Outcome::Close) {
                    continue;
                }
                (session, outcome) =
                    step(session, |s| s.idle_input().unwrap_or(Outcome::Read)).await?;
                if matches!(outcome, Outcome::Read) && session.idle_tag.is_some() {
                    outcome = Outcome::Idle;
                }
            }
        }
    }
}

/// Waits in IDLE until the client sends a line; meanwhile reports changes of the mailbox as they happen.
async fn idle<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session,
    stream: &mut S,
    access: &Arc<Access>,
    buf: &mut [u8],
    shutdown: &mut Shutdown,
) -> std::io::Result<Outcome> {
    let Some(index) = access.store.index() else {
        return Ok(Outcome::Close);
    };
    let Some(mailbox) = session.user_mailbox() else {
        return Ok(Outcome::Close);
    };
    let mut watch = index.watch(&mailbox);
    watch.mark_unchanged();
    let deadline = tokio::time::Instant::now() + access.settings.imap_idle;
    let mut poll = tokio::time::interval(IDLE_POLL);
    poll.tick().await;
    loop {
        let refresh = tokio::select! {
            r = stream.read(buf) => match r {
                Ok(0) => return Ok(Outcome::Close),
                Ok(n) => {
                    session.receive(&buf[..n]);
                    return Ok(Outcome::Read);
                }
                Err(e) => return Err(e),
            },
            changed = watch.changed() => changed.is_ok(),
            _ = poll.tick() => true,
            _ = tokio::time::sleep_until(deadline) => {
                let _ = stream.write_all(b"* BYE autologout: idle for too long\r\n").await;
                return Ok(Outcome::Close);
            }
            _ = shutdown.fired() => {
                let _ = stream.write_all(b"* BYE server shutting down\r\n").await;
                return Ok(Outcome::Close);
            }
        };
        if refresh {
            let s = std::mem::replace(session, Session::placeholder(access.clone()));
            let (s, _) = step(s, |s| {
                s.refresh(true);
                Outcome::Read
            })
            .await?;
            *session = s;
            if !session.out.is_empty() {
                stream.write_all(&session.out).await?;
                stream.flush().await?;
                session.out.clear();
            }
        }
    }
}
