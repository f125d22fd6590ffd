//! `tern doctor [DOMAIN] [--ip ADDR] [--probe ADDR:PORT] [--json]`: the DNS, certificate and reachability checks
//! of `tern::ops::doctor` for each local domain (or DOMAIN) and for the host, as text or JSON; exit status
//! 1 when any check fails (warnings do not).

use tern::config::{Config, ListenerKind};
use tern::ops::doctor::{Doctor, Finding, Status};

pub async fn run(
    cfg: &Config,
    domain: Option<String>,
    ip: Vec<std::net::IpAddr>,
    probe: Vec<std::net::SocketAddr>,
    json: bool,
) -> anyhow::Result<()> {
    let domains = super::local_domains(cfg, domain)?;
    let dns = tern::dns::Dns::new(cfg.nameservers.as_deref())?;
    let smtp_port = cfg
        .listeners
        .iter()
        .filter(|l| l.kind == ListenerKind::Relay)
        .flat_map(|l| &l.bind)
        .map(|a| a.port())
        .find(|p| *p != 0)
        .unwrap_or(25);
    let mut doctor = Doctor {
        cfg,
        dns,
        keys: tern::outbound::dkim::list(&cfg.data_dir, &cfg.dkim_keys),
        ips: tern::ops::zone::public_addresses(cfg, &ip),
        probes: probe,
    };
    if doctor.ips.is_empty() {
        doctor.ips = doctor.host_addresses().await.unwrap_or_default();
    }
    if doctor.probes.is_empty() {
        doctor.probes = doctor
            .ips
            .iter()
            .map(|ip| std::net::SocketAddr::new(*ip, smtp_port))
            .collect();
    }
    let mut sections: Vec<(String, Vec<Finding>)> = Vec::new();
    for d in &domains {
        sections.push((d.clone(), doctor.domain(d).await));
    }
    sections.push((format!("host {}", cfg.hostname), doctor.host().await));
    let failed = sections
        .iter()
        .flat_map(|(_, f)| f)
        .filter(|f| f.status == Status::Fail)
        .count();
    if json {
        let value = serde_json::json!({
            "ok": failed == 0,
            "failed": failed,
            "sections": sections
                .iter()
                .map(|(name, findings)| serde_json::json!({"name": name, "findings": findings}))
                .collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", tern::ops::doctor::report(&sections));
        if failed == 0 {
            println!("all checks passed");
        } else {
            println!("{failed} check(s) failed");
        }
    }
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
