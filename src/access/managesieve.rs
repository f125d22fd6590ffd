//! The ManageSieve listener (RFC 5804): accepts connections (plain with STARTTLS; the protocol has no
//! implicit-TLS port), drives `managesieve::Session`, logs in through `Access` (the throttle and session caps
//! of IMAP and POP3) and runs script operations against the user's scripts in `sieve::store`.

use super::{Access, LoggedIn, LoginError};
use crate::config::ListenerKind;
use crate::log::Escaped;
use crate::managesieve::{
    Action, Done, LoginRefusal, MAX_LINE, ManageSieveConfig, Refusal, ScriptOp, Session,
};
use crate::shutdown::Shutdown;
use crate::sieve::store::{ScriptStore, StoreError};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub async fn serve(
    listener: TcpListener,
    kind: ListenerKind,
    access: Arc<Access>,
    scripts: ScriptStore,
    shutdown: Shutdown,
) {
    let cfg = Arc::new(ManageSieveConfig {
        hostname: access.hostname.clone(),
        starttls: true,
        bad_commands: access.settings.bad_commands,
        max_line: MAX_LINE,
        max_script: scripts.max_script_bytes(),
        sieve_extensions: crate::sieve::capability(),
        max_redirects: scripts.max_redirects(),
    });
    super::listen::accept(
        listener,
        kind,
        access,
        shutdown,
        crate::managesieve::BUSY,
        move |stream, peer, access, shutdown| {
            let (cfg, scripts) = (cfg.clone(), scripts.clone());
            async move { handle(stream, peer, &access, &scripts, cfg, shutdown).await }
        },
    )
    .await;
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    access: &Arc<Access>,
    scripts: &ScriptStore,
    cfg: Arc<ManageSieveConfig>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let secure = access.is_secure_network(peer.ip());
    let mut stream = stream;
    let mut session = Session::new(cfg, false, secure);
    stream.write_all(&session.greeting()).await?;
    let mut user = None;
    let to_tls = drive(
        &mut session,
        &mut stream,
        peer,
        access,
        scripts,
        &mut user,
        shutdown.clone(),
    )
    .await?;
    if to_tls {
        let Some(mut tls) = super::listen::handshake(access, stream).await else {
            return Ok(());
        };
        session.tls_established();
        drive(
            &mut session,
            &mut tls,
            peer,
            access,
            scripts,
            &mut user,
            shutdown,
        )
        .await?;
    }
    Ok(())
}

/// Runs the session until it closes (false) or asks for TLS (true).
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut Session,
    stream: &mut S,
    peer: SocketAddr,
    access: &Arc<Access>,
    scripts: &ScriptStore,
    user: &mut Option<LoggedIn>,
    mut shutdown: Shutdown,
) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 8192];
    let mut out: Vec<u8> = Vec::new();
    let idle = access.settings.managesieve_idle;
    loop {
        while let Some(action) = session.poll() {
            match action {
                Action::Send(bytes) => out.extend_from_slice(&bytes),
                Action::Authenticate(credentials) => {
                    let verdict = match access.login(peer.ip(), credentials).await {
                        Ok(logged) => {
                            let owner = logged.mailbox.to_string();
                            *user = Some(logged);
                            Ok(owner)
                        }
                        Err(LoginError::Invalid) => Err(LoginRefusal::Invalid),
                        Err(LoginError::Throttled) => Err(LoginRefusal::Throttled),
                        Err(LoginError::InUse) => Err(LoginRefusal::InUse),
                        Err(LoginError::Temporary) => Err(LoginRefusal::Temporary),
                        Err(LoginError::Disabled) => Err(LoginRefusal::Disabled),
                    };
                    session.auth_verdict(verdict);
                }
                Action::Script(op) => {
                    let result = match user.as_ref() {
                        Some(u) => run(scripts, &u.mailbox.to_string(), op).await,
                        // The session asks only once authenticated; were it otherwise, refuse.
                        None => Err(Refusal::TryLater),
                    };
                    session.script_done(result);
                    // A large script goes out before the next command is read.
                    if out.len() > 64 * 1024 {
                        stream.write_all(&out).await?;
                        out.clear();
                    }
                }
                Action::Unauthenticated => {
                    if let Some(u) = user.take() {
                        tracing::info!(user = %u.mailbox, "unauthenticated");
                    }
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
            &crate::managesieve::bye_idle(),
            &crate::managesieve::bye_shutdown(),
        )
        .await?
        {
            Some(n) => session.receive(&buf[..n]),
            None => return Ok(false),
        }
    }
}

/// One script operation for `user`, logged with what it did (never the script's text).
async fn run(scripts: &ScriptStore, user: &str, op: ScriptOp) -> Result<Done, Refusal> {
    let shown = Escaped(user);
    let result = match &op {
        ScriptOp::List => scripts
            .list(user)
            .await
            .map(|list| Done::Listed(list.into_iter().map(|s| (s.name, s.active)).collect())),
        ScriptOp::Get { name } => scripts.get(user, name).await.map(Done::Script),
        ScriptOp::Put { name, script } => {
            let r = scripts.put(user, name, script).await;
            if r.is_ok() {
                tracing::info!(user = %shown, script = %Escaped(name), size = script.len(), "script stored");
            }
            r.map(|()| Done::Done)
        }
        ScriptOp::Check { script } => scripts.check(script).map(|()| Done::Done),
        ScriptOp::HaveSpace { name, size } => scripts
            .have_space(user, name, *size as usize)
            .await
            .map(|()| Done::Done),
        ScriptOp::SetActive { name } => {
            let r = scripts.set_active(user, name.as_deref()).await;
            if r.is_ok() {
                let active = name.as_deref().unwrap_or("");
                tracing::info!(user = %shown, script = %Escaped(active), "active script set");
            }
            r.map(|()| Done::Done)
        }
        ScriptOp::Delete { name } => {
            let r = scripts.delete(user, name).await;
            if r.is_ok() {
                tracing::info!(user = %shown, script = %Escaped(name), "script deleted");
            }
            r.map(|()| Done::Done)
        }
        ScriptOp::Rename { from, to } => {
            let r = scripts.rename(user, from, to).await;
            if r.is_ok() {
                tracing::info!(user = %shown, script = %Escaped(from), to = %Escaped(to), "script renamed");
            }
            r.map(|()| Done::Done)
        }
    };
    result.map_err(refusal)
}

/// The store's refusals as the protocol core knows them (one exhaustive match: a new store error must be
/// given its response here).
fn refusal(e: StoreError) -> Refusal {
    match e {
        StoreError::NotFound(name) => Refusal::Nonexistent(name),
        StoreError::Exists(name) => Refusal::AlreadyExists(name),
        StoreError::Active(name) => Refusal::Active(name),
        e @ StoreError::BadName(_) => Refusal::BadName(e.to_string()),
        StoreError::Compile(e) => Refusal::Invalid(e.to_string()),
        StoreError::TooManyScripts(n) => Refusal::TooManyScripts(n),
        StoreError::TooLarge(n) => Refusal::TooLarge(n),
        StoreError::Storage(why) => {
            tracing::error!(error = %why, "script storage failed");
            Refusal::TryLater
        }
    }
}
