//! Builds every service from a [`Config`], binds the listeners, runs until SIGTERM/SIGINT, then shuts down in
//! order: stop accepting, let sessions finish (up to a deadline), let deliveries in flight report.

use crate::checks::Checks;
use crate::config::{Config, ListenerKind};
use crate::directory::Directory;
use crate::dns::Dns;
use crate::inbound::submission::SubmissionPolicy;
use crate::inbound::throttle::AuthThrottle;
use crate::inbound::{self, Inbound, limits::ConnLimiter, policy::RecipientPolicy};
use crate::ops::control;
use crate::outbound::{Outbound, dkim::Dkim, tls::TlsClients};
use crate::queue::{DsnSettings, Queue};
use crate::smtp::server::{SessionConfig, SessionLimits};
use anyhow::Context;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long sessions may take to finish after shutdown begins.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Raises the open-file limit to its hard maximum: every connection, Maildir write and database needs one.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, writable rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    lim.rlim_cur as u64
}

pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let fds = raise_fd_limit();
    if (fds as usize) < cfg.limits.connections * 2 + 256 {
        tracing::warn!(
            open_files = fds,
            connections = cfg.limits.connections,
            "the open-file limit is low for limits.connections"
        );
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("server.data_dir: cannot create {}", cfg.data_dir.display()))?;
    let tls = crate::tls::server_config(cfg.tls_files.as_ref(), &cfg.data_dir, &cfg.hostname)?;
    let directory = Directory::open(&cfg.data_dir).await?;
    let dns = Dns::new(cfg.nameservers.as_deref())?;
    let dsn = DsnSettings {
        hostname: cfg.hostname.clone(),
        local_domains: cfg.local_domains.clone(),
        delay_warning: cfg.delivery.delay_warning,
    };
    let (queue, jobs) = Queue::open(&cfg.data_dir, cfg.queue.clone(), dsn).await?;
    let store = crate::mailbox::open(&cfg).await?;
    crate::local::start(
        cfg.local_workers,
        jobs.local,
        store.clone(),
        queue.clone(),
        directory.clone(),
    );

    let (trigger, shutdown) = crate::shutdown::channel();
    let limiter = ConnLimiter::new(cfg.limits.connections, cfg.limits.connections_per_ip);
    let policy = Arc::new(RecipientPolicy {
        local_domains: cfg.local_domains.clone(),
        postmaster: cfg.postmaster.clone(),
        directory: directory.clone(),
        subaddress_separator: cfg.subaddress_separator.clone(),
        store: store.clone(),
    });
    let greylist = match cfg.checks.greylist {
        Some(g) => Some(crate::checks::greylist::Greylist::open(&cfg.data_dir, g).await?),
        None => None,
    };
    let checks = Arc::new(Checks::new(
        dns.clone(),
        cfg.checks.clone(),
        cfg.hostname.clone(),
        greylist,
    ));
    let submission = Arc::new(SubmissionPolicy::new(
        cfg.submission.clone(),
        directory.clone(),
    ));
    let throttle = Arc::new(AuthThrottle::new(cfg.auth.clone()));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let context = |kind: ListenerKind| {
        let (starttls, auth, require_auth) = match kind {
            ListenerKind::Relay => (true, cfg.submission.relay_auth, false),
            ListenerKind::Submission => (true, true, true),
            ListenerKind::Submissions => (false, true, true),
            // LMTP from another MTA on a trusted socket, and local programs through the sendmail socket.
            ListenerKind::Lmtp | ListenerKind::Local => (false, false, false),
        };
        let l = &cfg.limits;
        Arc::new(Inbound {
            kind,
            hostname: cfg.hostname.clone(),
            session: Arc::new(SessionConfig {
                hostname: cfg.hostname.clone(),
                limits: SessionLimits {
                    message_size: l.message_size,
                    recipients: l.recipients,
                    command_line: l.command_line,
                    text_line: l.text_line,
                    errors: l.errors,
                },
                starttls,
                auth,
                require_auth,
                lmtp: kind == ListenerKind::Lmtp,
            }),
            limits: cfg.limits.clone(),
            tls: Some(acceptor.clone()),
            policy: policy.clone(),
            submission: submission.clone(),
            throttle: throttle.clone(),
            directory: directory.clone(),
            checks: (kind == ListenerKind::Relay).then(|| checks.clone()),
            queue: queue.clone(),
            limiter: limiter.clone(),
        })
    };
    let mut tasks = Vec::new();
    let mut bound = Vec::new();
    for (i, listener) in cfg.listeners.iter().enumerate() {
        let ctx = context(listener.kind);
        for (j, addr) in listener.bind.iter().enumerate() {
            let socket = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "{}: listener[{i}].bind[{j}]: cannot listen on {addr}",
                    cfg.path.display()
                )
            })?;
            let local = socket.local_addr()?;
            bound.push(local);
            tracing::info!(kind = listener.kind.as_str(), addr = %local, "listening");
            tasks.push(tokio::spawn(inbound::serve(
                socket,
                ctx.clone(),
                shutdown.clone(),
            )));
        }
        for path in &listener.unix {
            let socket = bind_unix_socket(path, 0o660)
                .with_context(|| format!("listener[{i}]: cannot listen on {}", path.display()))?;
            tracing::info!(kind = listener.kind.as_str(), path = %path.display(), "listening");
            tasks.push(tokio::spawn(inbound::serve_local(
                socket,
                ctx.clone(),
                shutdown.clone(),
            )));
        }
    }
    let own_addresses: Vec<std::net::SocketAddr> = bound.clone();
    let tls_clients = TlsClients::new(cfg.delivery.ca_file.as_deref())
        .map_err(|e| anyhow::anyhow!("delivery.ca_file: {e}"))?;
    let outbound = Outbound::new(
        cfg.hostname.clone(),
        cfg.delivery.clone(),
        dns,
        queue.clone(),
        tls_clients,
        Dkim::new(
            &cfg.data_dir,
            cfg.dkim_keys.clone(),
            cfg.dkim_headers.clone(),
        ),
        cfg.local_domains.clone(),
        own_addresses,
    );
    crate::outbound::start(outbound, jobs.remote);
    let control_path = control::socket_path(&cfg.data_dir);
    let control_socket = control::bind(&control_path)
        .with_context(|| format!("cannot listen on {}", control_path.display()))?;
    tasks.push(tokio::spawn(control::serve(
        control_socket,
        queue.clone(),
        shutdown.clone(),
    )));
    // Any local user may write to the sendmail socket, as any local user may run sendmail.
    let sendmail = bind_unix_socket(&cfg.sendmail_socket, 0o666).with_context(|| {
        format!(
            "sendmail.socket: cannot listen on {}",
            cfg.sendmail_socket.display()
        )
    })?;
    tracing::info!(socket = %cfg.sendmail_socket.display(), "listening for tern sendmail");
    tasks.push(tokio::spawn(inbound::serve_local(
        sendmail,
        context(ListenerKind::Local),
        shutdown.clone(),
    )));
    if checks.greylist.is_some() {
        tokio::spawn(expire_greylist(checks.clone()));
    }
    tracing::info!(hostname = %cfg.hostname, data_dir = %cfg.data_dir.display(), version = env!("CARGO_PKG_VERSION"), "tern started");

    wait_for_signal().await?;
    tracing::info!(
        sessions = limiter.active(),
        "shutting down: no new connections"
    );
    trigger.fire();
    for t in tasks {
        let _ = t.await;
    }
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while limiter.active() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Deliveries in flight report within a moment; anything unreported is still queued on disk.
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.inflight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tracing::info!(
        sessions_left = limiter.active(),
        deliveries_left = queue.inflight(),
        "tern stopped"
    );
    Ok(())
}

/// Binds a Unix socket, replacing a stale one from an earlier run, with the given permissions.
fn bind_unix_socket(path: &std::path::Path, mode: u32) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(
            meta.file_type().is_socket(),
            "{} exists and is not a socket",
            path.display()
        );
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Forgets old greylisting triplets once an hour.
async fn expire_greylist(checks: Arc<Checks>) {
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        if let Some(g) = &checks.greylist {
            match g.expire(crate::clock::unix_now()).await {
                Ok(n) if n > 0 => tracing::info!(expired = n, "greylist: old triplets forgotten"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "greylist: expiry failed"),
            }
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
