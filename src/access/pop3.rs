//! The POP3 listener: accepts connections (plain with STLS, or implicit TLS), drives `pop3::Session`, and
//! answers its questions from the mailbox index (the one IMAP uses). The maildrop is the user's INBOX as it was at login.

use super::{Access, LoggedIn, LoginError};
use crate::config::ListenerKind;
use crate::pop3::{Action, DropMessage, Pop3Config, Session};
use crate::shutdown::Shutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub async fn serve(
    listener: TcpListener,
    kind: ListenerKind,
    access: Arc<Access>,
    shutdown: Shutdown,
) {
    let cfg = Arc::new(Pop3Config {
        hostname: access.hostname.clone(),
        starttls: kind == ListenerKind::Pop3,
        bad_commands: access.settings.bad_commands,
    });
    super::listen::accept(
        listener,
        kind,
        access,
        shutdown,
        b"-ERR [SYS/TEMP] too many connections, try again later\r\n",
        move |stream, peer, access, shutdown| {
            let cfg = cfg.clone();
            async move { handle(stream, peer, kind, &access, cfg, shutdown).await }
        },
    )
    .await;
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    access: &Arc<Access>,
    cfg: Arc<Pop3Config>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let secure = access.is_secure_network(peer.ip());
    if kind == ListenerKind::Pop3s {
        let Some(mut tls) = super::listen::handshake(access, stream).await else {
            return Ok(());
        };
        let mut session = Session::new(cfg, true, secure);
        tls.write_all(&session.greeting()).await?;
        drive(&mut session, &mut tls, peer, access, shutdown).await?;
        return Ok(());
    }
    let mut stream = stream;
    let mut session = Session::new(cfg, false, secure);
    stream.write_all(&session.greeting()).await?;
    if drive(&mut session, &mut stream, peer, access, shutdown.clone()).await? {
        let Some(mut tls) = super::listen::handshake(access, stream).await else {
            return Ok(());
        };
        session.tls_established();
        drive(&mut session, &mut tls, peer, access, shutdown).await?;
    }
    Ok(())
}

/// Runs the session until it closes (false) or asks for TLS (true).
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session,
    stream: &mut S,
    peer: SocketAddr,
    access: &Arc<Access>,
    mut shutdown: Shutdown,
) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 4096];
    let mut out: Vec<u8> = Vec::new();
    let mut user: Option<LoggedIn> = None;
    let idle = access.settings.pop3_idle;
    loop {
        while let Some(action) = session.poll() {
            match action {
                Action::Send(bytes) => out.extend_from_slice(&bytes),
                Action::Authenticate(credentials) => {
                    let verdict = match access.login(peer.ip(), credentials).await {
                        Ok(logged) => match maildrop(access, &logged).await {
                            Ok(drop) => {
                                user = Some(logged);
                                Ok(drop)
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "cannot read the maildrop");
                                Err("[SYS/TEMP] cannot open the maildrop, try again later"
                                    .to_string())
                            }
                        },
                        Err(LoginError::Invalid) => {
                            Err("[AUTH] invalid user name or password".into())
                        }
                        Err(LoginError::Throttled) => {
                            Err("[LOGIN-DELAY] too many failed logins, try again later".into())
                        }
                        Err(LoginError::InUse) => {
                            Err("[IN-USE] too many sessions of this user".into())
                        }
                        Err(LoginError::Temporary) => Err("[SYS/TEMP] try again later".into()),
                        Err(LoginError::Disabled) => Err("[AUTH] account disabled".into()),
                    };
                    session.auth_verdict(verdict);
                }
                Action::Retrieve { uid, lines } => {
                    let message = match &user {
                        Some(u) => read(access, u, uid).await,
                        None => None,
                    };
                    session.retrieved(message.as_deref(), lines);
                    // A large message goes out before the next one is read.
                    if out.len() > 64 * 1024 {
                        stream.write_all(&out).await?;
                        out.clear();
                    }
                }
                Action::Update(uids) => {
                    let result = match (&user, uids.is_empty()) {
                        (_, true) | (None, _) => Ok(()),
                        (Some(u), false) => remove(access, u, uids.clone()).await,
                    };
                    if let (Some(u), Ok(())) = (&user, &result) {
                        tracing::info!(user = %u.mailbox, deleted = uids.len(), "maildrop updated");
                    }
                    session.updated(result);
                }
                Action::StartTls => {
                    stream.write_all(&out).await?;
                    stream.flush().await?;
                    return Ok(true);
                }
                Action::Close => {
                    stream.write_all(&out).await?;
                    stream.flush().await?;
                    let _ = stream.shutdown().await;
                    return Ok(false);
                }
            }
        }
        match super::listen::flush_and_read(
            stream,
            &mut out,
            &mut buf,
            idle,
            &mut shutdown,
            b"-ERR autologout: idle for too long\r\n",
            b"-ERR [SYS/TEMP] server shutting down\r\n",
        )
        .await?
        {
            Some(n) => session.receive(&buf[..n]),
            None => return Ok(false),
        }
    }
}

/// A message's UIDL from the mailbox index: its UID and the folder's UIDVALIDITY, as Dovecot's default
/// `pop3_uidl_format` (%08Xu%08Xv) writes them, so that POP3 clients moved over from Dovecot with their
/// Maildir (same dovecot-uidlist, same UIDs) do not download everything again.
fn uidl(uid: u32, uidvalidity: u32) -> String {
    format!("{uid:08X}{uidvalidity:08X}")
}

/// The (UID, UIDVALIDITY) in a UIDL made by [`uidl`].
fn uid_of(uidl: &str) -> Option<(u32, u32)> {
    if uidl.len() != 16 {
        return None;
    }
    let uid = u32::from_str_radix(uidl.get(..8)?, 16).ok()?;
    let validity = u32::from_str_radix(uidl.get(8..)?, 16).ok()?;
    Some((uid, validity))
}

/// The UIDs of these UIDLs that still name messages of INBOX: a folder made anew since the login (another
/// UIDVALIDITY) has other messages under the same UIDs.
fn current_uids(
    index: &dyn crate::mailbox::index::MailIndex,
    mailbox: &crate::smtp::Mailbox,
    uidls: &[String],
) -> Result<Vec<u32>, String> {
    let snap = index
        .snapshot(mailbox, "INBOX", false)
        .map_err(|e| e.to_string())?;
    Ok(uidls
        .iter()
        .filter_map(|u| uid_of(u))
        .filter(|(_, v)| *v == snap.uidvalidity)
        .map(|(u, _)| u)
        .collect())
}

async fn maildrop(access: &Arc<Access>, user: &LoggedIn) -> Result<Vec<DropMessage>, String> {
    if access.store.index().is_some() {
        let (store, mailbox) = (access.store.clone(), user.mailbox.clone());
        // INBOX as it is now, without taking \Recent from IMAP sessions.
        let snap = tokio::task::spawn_blocking(move || match store.index() {
            Some(index) => index
                .snapshot(&mailbox, "INBOX", false)
                .map_err(|e| e.to_string()),
            None => Err("no mailbox index".to_string()),
        })
        .await
        .map_err(|e| e.to_string())??;
        return Ok(snap
            .messages
            .iter()
            .map(|m| DropMessage {
                uid: uidl(m.uid, snap.uidvalidity),
                size: m.size,
            })
            .collect());
    }
    let (store, mailbox) = (access.store.clone(), user.mailbox.clone());
    let entries = tokio::task::spawn_blocking(move || store.entries(&mailbox, "INBOX"))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(entries
        .into_iter()
        .map(|e| DropMessage {
            uid: e.uid,
            size: e.size,
        })
        .collect())
}

async fn read(access: &Arc<Access>, user: &LoggedIn, uid: String) -> Option<Vec<u8>> {
    let (store, mailbox) = (access.store.clone(), user.mailbox.clone());
    let read = tokio::task::spawn_blocking(move || match store.index() {
        Some(index) => match current_uids(index, &mailbox, std::slice::from_ref(&uid))?.first() {
            Some(n) => index.read(&mailbox, "INBOX", *n).map_err(|e| e.to_string()),
            None => Ok(None),
        },
        None => store
            .read(&mailbox, "INBOX", &uid)
            .map_err(|e| e.to_string()),
    });
    match read.await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot read a message");
            None
        }
        Err(_) => None,
    }
}

async fn remove(access: &Arc<Access>, user: &LoggedIn, uids: Vec<String>) -> Result<(), String> {
    let (store, mailbox) = (access.store.clone(), user.mailbox.clone());
    tokio::task::spawn_blocking(move || match store.index() {
        Some(index) => {
            let uids = current_uids(index, &mailbox, &uids)?;
            index
                .expunge(&mailbox, "INBOX", &uids)
                .map_err(|e| e.to_string())
        }
        None => store
            .remove(&mailbox, "INBOX", &uids)
            .map_err(|e| e.to_string()),
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    #[test]
    fn uidls_are_dovecots_default_form() {
        assert_eq!(super::uidl(26, 0x5F1A2B3C), "0000001A5F1A2B3C");
        assert_eq!(super::uid_of("0000001A5F1A2B3C"), Some((26, 0x5F1A2B3C)));
        assert_eq!(super::uid_of("1700000000.M1P2Q3.mx"), None);
        assert_eq!(super::uid_of("zzzzzzzz5F1A2B3C"), None);
    }
}
