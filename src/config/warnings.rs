//! Settings that start but are unwise outside a test machine, for `tern check-config`.

use super::Config;

/// What `tern check-config` warns about: settings that start but are unwise outside a test machine.
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let public = cfg
        .listeners
        .iter()
        .flat_map(|l| &l.bind)
        .any(|a| !a.ip().is_loopback());
    if cfg.allow_root && cfg.user.is_none() {
        out.push("server.allow_root = true: the daemon keeps running as root; set server.user for production".into());
    }
    if cfg.tls_files.is_none() && public {
        out.push(
            "no [tls] cert and key: listeners outside loopback present a self-signed certificate (mail clients warn, MTA-STS checks fail)"
                .into(),
        );
    }
    if !public
        && cfg
            .local_domains
            .iter()
            .any(|d| !d.as_str().ends_with(".test") && !d.as_str().ends_with(".localhost"))
    {
        out.push("every listener is on loopback, but the local domains look public: no other server can reach this one".into());
    }
    out
}
