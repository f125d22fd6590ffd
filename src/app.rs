//! Builds every service from a [`Config`], binds the listeners, drops root privileges, and runs until
//! SIGTERM/SIGINT; SIGHUP reloads. Shutdown goes in order: stop accepting, let sessions finish (up to
//! `[server] shutdown_timeout_secs`), let deliveries in flight report.

use crate::checks::{Checks, greylist::Greylist};
use crate::config::{Config, ListenerKind};
use crate::directory::Directory;
use crate::dns::Dns;
use crate::inbound::submission::SubmissionPolicy;
use crate::inbound::throttle::AuthThrottle;
use crate::inbound::{self, Inbound, limits::ConnLimiter, policy::RecipientPolicy};
use crate::mailbox::MailboxStore;
use crate::ops::{control, systemd};
use crate::outbound::{Outbound, dkim::Dkim, tls::TlsClients};
use crate::queue::{DsnSettings, Queue};
use crate::smtp::server::{SessionConfig, SessionLimits};
use anyhow::Context;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

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
    lim.rlim_cur
}

/// What sessions share across reloads: state that must not reset (rate and failure counters, connection
/// slots) and the stores.
struct Shared {
    directory: Directory,
    store: Arc<dyn MailboxStore>,
    queue: Queue,
    dns: Dns,
    limiter: Arc<ConnLimiter>,
    submission: Arc<SubmissionPolicy>,
    throttle: Arc<AuthThrottle>,
    greylist: Option<Arc<Greylist>>,
    intake: Arc<crate::intake::Intake>,
    trusted_uids: Arc<Vec<u32>>,
    local_limits: Arc<ConnLimiter>,
    sieve: Arc<crate::local::sieve::SieveRunner>,
    local: Arc<crate::local::Local>,
    data_memory: Arc<tokio::sync::Semaphore>,
    /// The certificates every TLS listener presents (base pair, ACME), and the configuration built on them.
    certs: Arc<crate::tls::Certs>,
    tls: Arc<rustls::ServerConfig>,
    web: Arc<crate::web::Web>,
}

/// The per-listener contexts for `cfg`, with the TLS configuration `tls`.
fn contexts(
    cfg: &Config,
    shared: &Shared,
    tls: Arc<rustls::ServerConfig>,
) -> HashMap<ListenerKind, Arc<Inbound>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let policy = recipient_policy(cfg, &shared.directory, &shared.store);
    let checks = Arc::new(Checks::new(
        shared.dns.clone(),
        cfg.checks.clone(),
        cfg.hostname.clone(),
        shared.greylist.clone(),
    ));
    let kinds = [
        ListenerKind::Relay,
        ListenerKind::Submission,
        ListenerKind::Submissions,
        ListenerKind::Lmtp,
        ListenerKind::Local,
    ];
    kinds
        .into_iter()
        .map(|kind| {
            let (starttls, auth, require_auth) = match kind {
                ListenerKind::Relay => (true, cfg.submission.relay_auth, false),
                ListenerKind::Submission => (true, true, true),
                ListenerKind::Submissions => (false, true, true),
                // LMTP from another MTA on a trusted socket, and local programs through the sendmail socket.
                ListenerKind::Lmtp | ListenerKind::Local => (false, false, false),
                // Not SMTP: served by `access` (never in `kinds`).
                ListenerKind::Pop3
                | ListenerKind::Pop3s
                | ListenerKind::Imap
                | ListenerKind::Imaps
                | ListenerKind::ManageSieve
                | ListenerKind::Http
                | ListenerKind::Https => (false, false, false),
            };
            let l = &cfg.limits;
            let ctx = Arc::new(Inbound {
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
                        header_section: l.header_section,
                        junk_commands: l.junk_commands,
                    },
                    starttls,
                    auth,
                    require_auth,
                    lmtp: kind == ListenerKind::Lmtp,
                }),
                limits: cfg.limits.clone(),
                tls: Some(acceptor.clone()),
                policy: policy.clone(),
                submission: shared.submission.clone(),
                throttle: shared.throttle.clone(),
                directory: shared.directory.clone(),
                checks: (kind == ListenerKind::Relay).then(|| checks.clone()),
                queue: shared.queue.clone(),
                intake: shared.intake.clone(),
                limiter: shared.limiter.clone(),
                trusted_uids: shared.trusted_uids.clone(),
                origin: cfg.origin.clone(),
                local_limits: shared.local_limits.clone(),
                sieve: Some(shared.sieve.clone()),
                local: cfg.deliver_in_session.then(|| shared.local.clone()),
                data_memory: shared.data_memory.clone(),
                store: shared.store.clone(),
                filters: cfg
                    .filters
                    .iter()
                    .filter(|f| f.listeners.contains(&kind))
                    .map(|f| Arc::new(f.clone()))
                    .collect(),
            });
            (kind, ctx)
        })
        .collect()
}

fn recipient_policy(
    cfg: &Config,
    directory: &Directory,
    store: &Arc<dyn MailboxStore>,
) -> Arc<RecipientPolicy> {
    Arc::new(RecipientPolicy {
        local_domains: cfg.local_domains.clone(),
        postmaster: cfg.postmaster.clone(),
        directory: directory.clone(),
        subaddress_separator: cfg.subaddress_separator.clone(),
        store: store.clone(),
    })
}

/// Creates data_dir (0750) or takes away what others may do in an existing one: it holds password hashes
/// and queued mail.
fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .with_context(|| format!("server.data_dir: cannot create {}", dir.display()))?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & 0o007 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o007))
            .with_context(|| format!("server.data_dir: cannot restrict {}", dir.display()))?;
        tracing::info!(data_dir = %dir.display(), old_mode = format!("{mode:o}"), "data_dir is no longer readable by other users");
    }
    // Databases made by an earlier version with a looser umask.
    for name in ["tern.db", "queue.db", "mailboxes.db", "greylist.db"] {
        for suffix in ["", "-wal", "-shm"] {
            let p = dir.join(format!("{name}{suffix}"));
            if let Ok(m) = std::fs::metadata(&p)
                && m.permissions().mode() & 0o007 != 0
            {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640));
            }
        }
    }
    Ok(())
}

pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    crate::ops::privileges::restrict_umask();
    let fds = raise_fd_limit();
    if (fds as usize) < cfg.limits.connections * 2 + 256 {
        tracing::warn!(
            open_files = fds,
            connections = cfg.limits.connections,
            "the open-file limit is low for limits.connections"
        );
    }
    // As root, everything that needs root happens first: the TLS key is read and the ports are bound.
    prepare_data_dir(&cfg.data_dir)?;
    let certs = crate::tls::Certs::new(
        crate::tls::load_base(cfg.tls_files.as_ref(), &cfg.data_dir, &cfg.hostname)?,
        &cfg.hostname,
    );
    let tls = crate::tls::server_config(&certs, &[]);
    log_certificate_warnings(&cfg);
    // The sendmail socket counts as the `local` listener.
    let mut kinds: Vec<&str> = cfg.listeners.iter().map(|l| l.kind.as_str()).collect();
    kinds.push(ListenerKind::Local.as_str());
    kinds.sort();
    kinds.dedup();
    crate::ops::metrics::declare_defaults(&kinds);
    let mut sockets = Vec::new();
    let mut bound = Vec::new();
    for (i, listener) in cfg.listeners.iter().enumerate() {
        for (j, addr) in listener.bind.iter().enumerate() {
            let socket = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "{}: listener[{i}].bind[{j}]: cannot listen on {addr}",
                    cfg.path.display()
                )
            })?;
            bound.push(socket.local_addr()?);
            sockets.push((listener.kind, socket));
        }
    }
    let admin_socket = match cfg.admin {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("admin.bind: cannot listen on {addr}"))?,
        ),
        None => None,
    };
    crate::ops::privileges::drop_to(
        cfg.user.as_deref(),
        cfg.group.as_deref(),
        cfg.allow_root,
        &[&cfg.data_dir],
    )?;

    let directory = Directory::open(&cfg.data_dir)
        .await?
        .with_parallel_checks(cfg.auth.parallel_checks)
        .with_login_cache(cfg.auth.login_cache);
    let dns = Dns::new(cfg.nameservers.as_deref())?;
    let dsn = DsnSettings {
        hostname: cfg.hostname.clone(),
        local_domains: cfg.local_domains.clone(),
        delay_warning: cfg.delivery.delay_warning,
    };
    let (queue, jobs) = Queue::open(&cfg.data_dir, cfg.queue.clone(), dsn).await?;
    let store = crate::mailbox::open(&cfg).await?;
    let intake = Arc::new(crate::intake::Intake {
        queue: queue.clone(),
        policy: recipient_policy(&cfg, &directory, &store),
        hostname: cfg.hostname.clone(),
        local_domains: cfg.local_domains.clone(),
    });
    let scripts = crate::sieve::store::ScriptStore::open(&cfg.data_dir, cfg.sieve.quota()).await?;
    let sieve = Arc::new(crate::local::sieve::SieveRunner::new(
        cfg.sieve.clone(),
        scripts.clone(),
        tokio::runtime::Handle::current(),
    ));
    let local = crate::local::Local::new(
        store.clone(),
        intake.clone(),
        directory.clone(),
        Some(sieve.clone()),
    );
    crate::local::start(cfg.local_workers, jobs.local, local.clone());
    // Who may send as anyone through the sendmail socket: root, the service user, trusted users.
    let mut trusted_uids = vec![0, crate::ops::privileges::service_uid(cfg.user.as_deref())];
    for name in &cfg.sendmail_trusted_users {
        match crate::ops::privileges::lookup_user(name) {
            Some((uid, _)) => trusted_uids.push(uid),
            None => tracing::warn!(user = %name, "sendmail.trusted_users: no such user; ignored"),
        }
    }
    let greylist = match cfg.checks.greylist {
        Some(g) => Some(Arc::new(Greylist::open(&cfg.data_dir, g).await?)),
        None => None,
    };
    let challenges = Arc::new(crate::web::HttpChallenges::default());
    let bound_kinds: Vec<(ListenerKind, std::net::SocketAddr)> = sockets
        .iter()
        .filter_map(|(k, s)| s.local_addr().ok().map(|a| (*k, a)))
        .collect();
    let web = crate::web::Web::new(
        &cfg,
        crate::web::services_of(&bound_kinds),
        queue.clone(),
        &certs,
        challenges.clone(),
    );
    let shared = Shared {
        certs: certs.clone(),
        tls: tls.clone(),
        web: web.clone(),
        directory: directory.clone(),
        store,
        queue: queue.clone(),
        dns: dns.clone(),
        limiter: ConnLimiter::new(cfg.limits.connections, cfg.limits.connections_per_ip),
        submission: Arc::new(SubmissionPolicy::new(
            cfg.submission.clone(),
            directory.clone(),
            cfg.subaddress_separator.clone(),
        )),
        throttle: Arc::new(AuthThrottle::new(cfg.auth.clone())),
        greylist,
        intake: intake.clone(),
        trusted_uids: Arc::new(trusted_uids),
        local_limits: ConnLimiter::new(cfg.sendmail_connections.0, cfg.sendmail_connections.1),
        sieve,
        local,
        data_memory: Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(cfg.limits.data_memory / 1024)
                .unwrap_or(usize::MAX)
                .clamp(64, tokio::sync::Semaphore::MAX_PERMITS),
        )),
    };
    let (trigger, shutdown) = crate::shutdown::channel();
    let mut senders: HashMap<ListenerKind, watch::Sender<Arc<Inbound>>> = HashMap::new();
    let mut receivers: HashMap<ListenerKind, watch::Receiver<Arc<Inbound>>> = HashMap::new();
    let access = crate::access::Access::new(
        cfg.hostname.clone(),
        cfg.access.clone(),
        shared.store.clone(),
        directory.clone(),
        shared.throttle.clone(),
        tokio_rustls::TlsAcceptor::from(tls.clone()),
        crate::filter::train::Trainer::start(&cfg.filters, &tokio::runtime::Handle::current()),
    );
    for (kind, ctx) in contexts(&cfg, &shared, tls) {
        let (tx, rx) = watch::channel(ctx);
        senders.insert(kind, tx);
        receivers.insert(kind, rx);
    }
    let mut tasks = Vec::new();
    for (kind, socket) in sockets {
        tracing::info!(kind = kind.as_str(), addr = %socket.local_addr()?, "listening");
        if let Some(role) = crate::web::role_of(kind) {
            tasks.push(tokio::spawn(crate::web::serve(
                socket,
                role,
                web.clone(),
                shutdown.clone(),
            )));
            continue;
        }
        if matches!(kind, ListenerKind::Imap | ListenerKind::Imaps) {
            tasks.push(tokio::spawn(crate::access::imap::serve(
                socket,
                kind,
                access.clone(),
                shutdown.clone(),
            )));
            continue;
        }
        if kind == ListenerKind::ManageSieve {
            tasks.push(tokio::spawn(crate::access::managesieve::serve(
                socket,
                kind,
                access.clone(),
                scripts.clone(),
                shutdown.clone(),
            )));
            continue;
        }
        if kind.is_access() {
            tasks.push(tokio::spawn(crate::access::pop3::serve(
                socket,
                kind,
                access.clone(),
                shutdown.clone(),
            )));
            continue;
        }
        tasks.push(tokio::spawn(inbound::serve(
            socket,
            receivers[&kind].clone(),
            shutdown.clone(),
        )));
    }
    for (i, listener) in cfg.listeners.iter().enumerate() {
        for path in &listener.unix {
            let socket = bind_unix_socket(path, 0o660)
                .with_context(|| format!("listener[{i}]: cannot listen on {}", path.display()))?;
            tracing::info!(kind = listener.kind.as_str(), path = %path.display(), "listening");
            tasks.push(tokio::spawn(inbound::serve_local(
                socket,
                receivers[&listener.kind].clone(),
                shutdown.clone(),
            )));
        }
    }
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
        bound,
    );
    crate::outbound::start(outbound, intake.clone(), jobs.remote);
    let control_path = control::socket_path(&cfg.data_dir);
    let control_socket = control::bind(&control_path)
        .with_context(|| format!("cannot listen on {}", control_path.display()))?;
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(4);
    tasks.push(tokio::spawn(control::serve(
        control_socket,
        intake.clone(),
        reload_tx,
        scripts.clone(),
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
        receivers[&ListenerKind::Local].clone(),
        shutdown.clone(),
    )));
    if let Some(socket) = admin_socket {
        tracing::info!(kind = "admin", addr = %socket.local_addr()?, "listening");
        tasks.push(tokio::spawn(crate::web::serve(
            socket,
            crate::web::route::Role::Admin,
            web.clone(),
            shutdown.clone(),
        )));
    }
    if let Some(g) = shared.greylist.clone() {
        tokio::spawn(expire_greylist(g));
    }
    if let Some(acme) = cfg.acme.clone() {
        tasks.push(crate::acme::start(
            acme,
            &cfg.data_dir,
            certs.clone(),
            challenges.clone(),
            shutdown.clone(),
        ));
    }
    tracing::info!(hostname = %cfg.hostname, data_dir = %cfg.data_dir.display(), version = env!("CARGO_PKG_VERSION"), "tern started");
    // The handlers exist before systemd (or a test) is told we are ready: a SIGHUP right after READY=1
    // must reload, not kill the process with the default action.
    let mut signals = Signals::new()?;
    systemd::ready();

    let mut current = cfg;
    loop {
        let answer = match signals.next(&mut reload_rx).await {
            Signal::Reload(answer) => answer,
            Signal::Stop => break,
        };
        systemd::reloading();
        // A refused reload says so to systemd (STATUS=) and to `tern reload`, which exits non-zero.
        let result = match reload(&current, &shared, &senders, &access) {
            Ok(new) => {
                current = new;
                systemd::ready();
                Ok(format!("reloaded {}", current.path.display()))
            }
            Err(reason) => {
                systemd::reload_refused(&reason);
                Err(reason)
            }
        };
        if let Some(answer) = answer {
            let _ = answer.send(result);
        }
    }
    systemd::stopping();
    let limiter = shared.limiter.clone();
    tracing::info!(
        sessions = limiter.active(),
        "shutting down: no new connections"
    );
    trigger.fire();
    for t in tasks {
        let _ = t.await;
    }
    let deadline = Instant::now() + current.shutdown_timeout;
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

/// SIGHUP: the configuration file, TLS certificate and key again, for new sessions; an invalid configuration
/// is refused and the running one stays. Users, aliases and DKIM keys are read live and need no reload.
fn reload(
    current: &Config,
    shared: &Shared,
    senders: &HashMap<ListenerKind, watch::Sender<Arc<Inbound>>>,
    access: &crate::access::Access,
) -> Result<Config, String> {
    let new = match Config::load(&current.path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: the configuration does not validate; the running one stays");
            return Err(format!("the configuration does not validate: {e}"));
        }
    };
    let restart_only = [
        ("server.data_dir", current.data_dir != new.data_dir),
        (
            "server.user/group",
            current.user != new.user || current.group != new.group,
        ),
        (
            "listener",
            format!("{:?}", current.listeners) != format!("{:?}", new.listeners),
        ),
        ("store", current.store != new.store),
        (
            "sendmail.socket",
            current.sendmail_socket != new.sendmail_socket,
        ),
        ("admin.bind", current.admin != new.admin),
        ("acme", current.acme != new.acme),
        (
            "http",
            format!("{:?}", current.http) != format!("{:?}", new.http),
        ),
        ("dns", current.nameservers != new.nameservers),
        (
            "log",
            current.log_level != new.log_level || current.log_json != new.log_json,
        ),
        (
            "limits.connections",
            current.limits.connections != new.limits.connections,
        ),
        (
            "limits.connections_per_ip",
            current.limits.connections_per_ip != new.limits.connections_per_ip,
        ),
        (
            "submission",
            format!("{:?}", current.submission) != format!("{:?}", new.submission),
        ),
        (
            "auth",
            format!("{:?}", current.auth) != format!("{:?}", new.auth),
        ),
        (
            "queue/delivery",
            format!("{:?}{:?}", current.queue, current.delivery)
                != format!("{:?}{:?}", new.queue, new.delivery),
        ),
    ];
    for (key, changed) in restart_only {
        if changed {
            tracing::warn!(
                key,
                "changed in the configuration, but takes effect only after a restart"
            );
        }
    }
    let base = match crate::tls::load_base(new.tls_files.as_ref(), &new.data_dir, &new.hostname) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "reload refused: the TLS certificate or key cannot be loaded; the running ones stay");
            return Err(format!("the TLS certificate or key cannot be loaded: {e}"));
        }
    };
    log_certificate_warnings(&new);
    // The gauge was reset for the base certificate: the ACME one is still presented.
    for e in shared.certs.issued() {
        crate::ops::metrics::set_gauge(
            "tern_tls_certificate_expiry_timestamp_seconds",
            &[(
                "cert",
                &crate::acme::Paths::new(&new.data_dir)
                    .cert()
                    .display()
                    .to_string(),
            )],
            e.not_after as f64,
        );
    }
    shared.certs.set_base(base);
    shared.web.reload(&new);
    access.set_tls(tokio_rustls::TlsAcceptor::from(shared.tls.clone()));
    shared.sieve.set_settings(new.sieve.clone());
    for (kind, ctx) in contexts(&new, shared, shared.tls.clone()) {
        if let Some(tx) = senders.get(&kind) {
            let _ = tx.send(ctx);
        }
    }
    tracing::info!(config = %new.path.display(), "reloaded: configuration and TLS certificate apply to new sessions");
    Ok(new)
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
async fn expire_greylist(greylist: Arc<Greylist>) {
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        match greylist.expire(crate::clock::unix_now()).await {
            Ok(n) if n > 0 => tracing::info!(expired = n, "greylist: old triplets forgotten"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "greylist: expiry failed"),
        }
    }
}

/// Who wants a reload answered: `tern reload` over the control socket (SIGHUP has nobody to tell).
type ReloadAnswer = tokio::sync::oneshot::Sender<Result<String, String>>;

enum Signal {
    Reload(Option<ReloadAnswer>),
    Stop,
}

/// The signals the daemon acts on, registered once for its whole life (none is lost between two waits).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self, requests: &mut tokio::sync::mpsc::Receiver<ReloadAnswer>) -> Signal {
        tokio::select! {
            _ = self.term.recv() => { tracing::info!("SIGTERM received"); Signal::Stop }
            _ = self.int.recv() => { tracing::info!("SIGINT received"); Signal::Stop }
            _ = self.hup.recv() => { tracing::info!("SIGHUP received: reloading"); Signal::Reload(None) }
            Some(answer) = requests.recv() => { tracing::info!("reload requested over the control socket"); Signal::Reload(Some(answer)) }
        }
    }
}

/// An expiring, expired or misnamed certificate is logged at start and at each reload (the self-signed
/// bootstrap is not reported as self-signed here: the configuration warnings say so once).
fn log_certificate_warnings(cfg: &Config) {
    let public = cfg
        .listeners
        .iter()
        .flat_map(|l| &l.bind)
        .any(|a| !a.ip().is_loopback());
    for w in crate::tls::certificate_warnings(
        cfg.tls_files.as_ref(),
        &cfg.data_dir,
        &cfg.hostname,
        public && cfg.tls_files.is_some(),
    ) {
        tracing::warn!("{w}");
    }
    let cert = cfg
        .tls_files
        .as_ref()
        .map(|(c, _)| c.clone())
        .unwrap_or_else(|| crate::tls::self_signed_paths(&cfg.data_dir).0);
    crate::ops::metrics::clear_gauge("tern_tls_certificate_expiry_timestamp_seconds");
    if let Ok(leaf) = crate::tls::check::leaf_of(&cert) {
        crate::ops::metrics::set_gauge(
            "tern_tls_certificate_expiry_timestamp_seconds",
            &[("cert", &cert.display().to_string())],
            leaf.not_after as f64,
        );
    }
}
