//! Mail access listeners: users reading their mail (IMAP, POP3) and managing their Sieve scripts
//! (ManageSieve). They drive the sans-IO protocol cores over the mailbox store and the script store, log
//! in with the directory's argon2id passwords and share the failed-login throttle with submission.

pub mod imap;
mod listen;
pub mod managesieve;
pub mod pop3;

use crate::config::{AccessSettings, Cidr};
use crate::directory::Directory;
use crate::inbound::limits::ConnLimiter;
use crate::inbound::throttle::{AfterFailure, AuthThrottle, Begin};
use crate::log::Escaped;
use crate::mailbox::MailboxStore;
use crate::smtp::Mailbox;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// How often, and for how long each time, a login waits for the account's attempts in progress to finish
/// before it is refused (at most 5 s in all).
const BUSY_WAITS: u32 = 50;
const BUSY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// What the sessions of the access listeners share.
pub struct Access {
    pub hostname: String,
    pub settings: AccessSettings,
    pub store: Arc<dyn MailboxStore>,
    pub directory: Directory,
    pub throttle: Arc<AuthThrottle>,
    /// Swapped by a reload (SIGHUP, `tern reload`): new sessions use the new certificate.
    tls: std::sync::RwLock<tokio_rustls::TlsAcceptor>,
    pub limiter: Arc<ConnLimiter>,
    /// Logged-in sessions per user.
    sessions: Mutex<HashMap<String, usize>>,
    /// ENVELOPE and BODYSTRUCTURE of messages fetched lately (IMAP).
    pub structures: crate::access::imap::cache::StructureCache,
    /// Trains rspamd from moves into and out of Junk, when a controller is configured.
    pub trainer: Option<crate::filter::train::Trainer>,
}

/// Why a login was refused, with the POP3 response code it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong user or password (after the throttle's delay).
    Invalid,
    /// Blocked, or too many attempts in progress.
    Throttled,
    /// Too many sessions of this user.
    InUse,
    /// A server-side error.
    Temporary,
    /// The right password for a disabled account.
    Disabled,
}

/// A logged-in user; dropping it frees the user's session slot.
pub struct LoggedIn {
    pub mailbox: Mailbox,
    access: Arc<Access>,
}

impl Drop for LoggedIn {
    fn drop(&mut self) {
        let key = self.mailbox.to_string();
        let mut s = self
            .access
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = s.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                s.remove(&key);
            }
        }
    }
}

impl Access {
    pub fn new(
        hostname: String,
        settings: AccessSettings,
        store: Arc<dyn MailboxStore>,
        directory: Directory,
        throttle: Arc<AuthThrottle>,
        tls: tokio_rustls::TlsAcceptor,
        trainer: Option<crate::filter::train::Trainer>,
    ) -> Arc<Access> {
        let limiter = ConnLimiter::new(settings.max_connections, settings.max_connections_per_ip);
        let structures =
            crate::access::imap::cache::StructureCache::new(settings.imap_structure_cache);
        Arc::new(Access {
            hostname,
            settings,
            store,
            directory,
            throttle,
            tls: std::sync::RwLock::new(tls),
            limiter,
            sessions: Mutex::new(HashMap::new()),
            structures,
            trainer,
        })
    }

    /// The TLS configuration for the next handshake.
    pub fn tls(&self) -> tokio_rustls::TlsAcceptor {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A reloaded certificate and key, for sessions that start from now on.
    pub fn set_tls(&self, tls: tokio_rustls::TlsAcceptor) {
        *self.tls.write().unwrap_or_else(|p| p.into_inner()) = tls;
    }

    /// Whether a client may send a password without TLS.
    pub fn is_secure_network(&self, ip: IpAddr) -> bool {
        self.settings
            .secure_networks
            .iter()
            .any(|n: &Cidr| n.contains(ip))
    }

    /// Checks a login like submission does (throttled per client and account, argon2id on the blocking
    /// pool a few at a time, never logging the password) and takes a session slot of the user.
    pub async fn login(
        self: &Arc<Self>,
        ip: IpAddr,
        credentials: crate::sasl::Credentials,
    ) -> Result<LoggedIn, LoginError> {
        let user = credentials.username.to_lowercase();
        let shown = Escaped(&user);
        // A password verified moments ago (a client opening its parallel connections, a reconnect) is no
        // guess: it skips the attempts-in-progress count, though a block still holds.
        // When the account's attempts in progress are at their limit (a client opening many connections
        // at once before any login landed in the cache), wait a little for those to finish: the right
        // password is then a cache hit. Bounded: BUSY_WAITS x BUSY_PAUSE.
        let mut waits = 0;
        loop {
            if self
                .directory
                .verified_lately(&user, &credentials.password)
                .await
            {
                if self.throttle.blocked(ip, &user) {
                    tracing::warn!(user = %shown, "login refused: blocked");
                    return Err(LoginError::Throttled);
                }
                if let Ok(mailbox) = Mailbox::parse(&user, true) {
                    return self.open_session(mailbox, &shown);
                }
            }
            match self.throttle.begin(ip, &user) {
                Begin::Go => break,
                Begin::Busy if waits < BUSY_WAITS => {
                    waits += 1;
                    tokio::time::sleep(BUSY_PAUSE).await;
                }
                Begin::Busy => {
                    tracing::warn!(user = %shown, "login refused: too many attempts in progress");
                    return Err(LoginError::Temporary);
                }
                Begin::Blocked => {
                    tracing::warn!(user = %shown, "login refused: blocked");
                    return Err(LoginError::Throttled);
                }
            }
        }
        let verified = self.directory.login(&user, credentials.password).await;
        let mailbox = match verified {
            Ok(crate::directory::Login::Valid) => Mailbox::parse(&user, true).ok(),
            Ok(crate::directory::Login::Disabled) => {
                self.throttle.abandoned(ip, &user);
                tracing::warn!(user = %shown, "login refused: account disabled");
                return Err(LoginError::Disabled);
            }
            Ok(crate::directory::Login::Invalid) => None,
            Err(e) => {
                self.throttle.abandoned(ip, &user);
                tracing::error!(user = %shown, error = %e, "password check failed");
                return Err(LoginError::Temporary);
            }
        };
        let Some(mailbox) = mailbox else {
            let delay = match self.throttle.failed(ip, &user) {
                AfterFailure::Delay(d) => d,
                AfterFailure::Block => std::time::Duration::ZERO,
            };
            tracing::warn!(user = %shown, "login failed");
            tokio::time::sleep(delay).await;
            return Err(LoginError::Invalid);
        };
        self.throttle.succeeded(ip, &user);
        self.open_session(mailbox, &shown)
    }

    /// Takes a session slot of the user.
    fn open_session(
        self: &Arc<Self>,
        mailbox: Mailbox,
        shown: &Escaped<'_>,
    ) -> Result<LoggedIn, LoginError> {
        let key = mailbox.to_string();
        {
            let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let n = s.entry(key).or_insert(0);
            if *n >= self.settings.max_connections_per_user {
                tracing::warn!(user = %shown, sessions = *n, "login refused: too many sessions of this user");
                return Err(LoginError::InUse);
            }
            *n += 1;
        }
        tracing::info!(user = %shown, "logged in");
        Ok(LoggedIn {
            mailbox,
            access: self.clone(),
        })
    }
}
