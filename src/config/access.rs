//! `[access]`: who may log in to mail access without TLS, and the limits of those sessions.

use super::{Cidr, ConfigError, Validator, raw};
use std::time::Duration;

/// Mail access sessions (POP3, IMAP, ManageSieve).
#[derive(Debug, Clone)]
pub struct AccessSettings {
    pub secure_networks: Vec<Cidr>,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_connections_per_user: usize,
    pub pop3_idle: Duration,
    pub bad_commands: usize,
    pub imap_idle: Duration,
    pub imap_login_timeout: Duration,
    pub imap_command_line: usize,
    pub imap_literal_size: usize,
    /// Bytes of parsed message structure kept for IMAP FETCH.
    pub imap_structure_cache: usize,
    pub managesieve_idle: Duration,
}

impl Validator {
    pub(super) fn access(&self, a: &raw::RawAccess) -> Result<AccessSettings, ConfigError> {
        let mut secure_networks = Vec::new();
        for (i, n) in a.secure_networks.iter().enumerate() {
            secure_networks.push(Cidr::parse(n).ok_or_else(|| {
                self.err(
                    format!("access.secure_networks[{i}]"),
                    format!("{n:?} is not an address or CIDR network"),
                )
            })?);
        }
        if a.pop3_idle_secs < 600 {
            return Err(self.err(
                "access.pop3_idle_secs",
                format!("{} is below RFC 1939's 600", a.pop3_idle_secs),
            ));
        }
        if a.imap_idle_secs < 1800 {
            return Err(self.err(
                "access.imap_idle_secs",
                format!("{} is below RFC 9051's 30 minutes (1800)", a.imap_idle_secs),
            ));
        }
        if a.imap_command_line < 1024 {
            return Err(self.err(
                "access.imap_command_line",
                format!(
                    "{} is too short for IMAP commands (at least 1024)",
                    a.imap_command_line
                ),
            ));
        }
        Ok(AccessSettings {
            secure_networks,
            max_connections: a.max_connections.max(1),
            max_connections_per_ip: a.max_connections_per_ip.max(1),
            max_connections_per_user: a.max_connections_per_user.max(1),
            pop3_idle: Duration::from_secs(a.pop3_idle_secs),
            bad_commands: a.bad_commands.max(1),
            imap_idle: Duration::from_secs(a.imap_idle_secs),
            imap_login_timeout: Duration::from_secs(a.imap_login_timeout_secs.max(1)),
            imap_command_line: a.imap_command_line,
            imap_literal_size: a.imap_literal_size.max(1024),
            imap_structure_cache: a.imap_structure_cache_mb.min(1 << 20) * 1024 * 1024,
            managesieve_idle: Duration::from_secs(a.managesieve_idle_secs.max(1)),
        })
    }
}
