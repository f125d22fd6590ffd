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
    if let Some(acme) = &cfg.acme {
        if !public {
            out.push("[acme] is on but every listener is on loopback: the CA cannot reach this server to validate it".into());
        }
        let (kind, port) = match acme.challenge {
            super::Challenge::Http01 => (super::ListenerKind::Http, 80),
            super::Challenge::TlsAlpn01 => (super::ListenerKind::Https, 443),
        };
        let ports: Vec<u16> = cfg
            .listeners
            .iter()
            .filter(|l| l.kind == kind)
            .flat_map(|l| &l.bind)
            .map(|a| a.port())
            .collect();
        if !ports.contains(&port) {
            out.push(format!(
                "[acme] challenge is answered on the {} listener, which is not on port {port} ({ports:?}): public CAs validate on port {port} only (forward it there)",
                kind.as_str()
            ));
        }
    }
    if cfg.tls_files.is_none() && cfg.acme.is_none() && public {
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
    if cfg
        .mta_sts
        .as_ref()
        .is_some_and(|m| m.mode == super::MtaStsMode::Enforce)
        && cfg.acme.is_none()
        && cfg.tls_files.is_none()
    {
        out.push("[mta_sts] mode = \"enforce\" with a self-signed certificate: senders that honour the policy cannot deliver here".into());
    }
    out
}
