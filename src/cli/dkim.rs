//! `tern dkim`: keys made, listed and activated per domain, with the DNS record each needs.

use clap::Subcommand;
use tern::config::Config;

#[derive(Subcommand)]
pub enum DkimAction {
    /// Make a signing key for a domain and print the DNS TXT record to publish; it signs once activated.
    Generate {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        selector: String,
        #[arg(long, default_value = "rsa", value_parser = ["rsa", "ed25519"])]
        algorithm: String,
    },
    /// Sign the domain's mail with this selector from now on (publish its TXT record first); the running
    /// daemon switches at its next message.
    Activate {
        #[arg(long)]
        domain: String,
        selector: String,
    },
    /// Every key: domain, selector, state (active, pending, configured, unusable) and the TXT record.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn dkim(action: DkimAction, cfg: Config) -> anyhow::Result<()> {
    use tern::outbound::dkim;
    let local = |domain: &str| -> anyhow::Result<String> {
        let domain = domain.to_lowercase();
        anyhow::ensure!(
            cfg.local_domains.iter().any(|d| d.as_str() == domain),
            "{domain:?} is not one of [domains] local"
        );
        Ok(domain)
    };
    let valid_selector = |selector: &str| -> anyhow::Result<()> {
        anyhow::ensure!(
            !selector.is_empty()
                && selector.len() <= 63
                && selector
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{selector:?} is not a DKIM selector (letters, digits, - and _)"
        );
        Ok(())
    };
    match action {
        DkimAction::Generate {
            domain,
            selector,
            algorithm,
        } => {
            let domain = local(&domain)?;
            valid_selector(&selector)?;
            let (path, record) = dkim::generate(&cfg.data_dir, &domain, &selector, &algorithm)
                .map_err(anyhow::Error::msg)?;
            println!("# key written to {}", path.display());
            println!("# 1. publish this TXT record:");
            println!(
                "{selector}._domainkey.{domain}. IN TXT {}",
                dkim::zone_text(&record)
            );
            println!(
                "# 2. once it resolves (dig +short TXT {selector}._domainkey.{domain}), sign with it:"
            );
            println!("#    tern dkim activate --domain {domain} {selector}");
        }
        DkimAction::Activate { domain, selector } => {
            let domain = local(&domain)?;
            valid_selector(&selector)?;
            if cfg.dkim_keys.iter().any(|k| k.domain == domain) {
                eprintln!(
                    "warning: [dkim] keys names a key for {domain}; it signs instead, whatever is active here"
                );
            }
            let path =
                dkim::activate(&cfg.data_dir, &domain, &selector).map_err(anyhow::Error::msg)?;
            println!(
                "{domain}: {selector} ({}) signs from now on; keep the previous selector's record published for a few days",
                path.display()
            );
        }
        DkimAction::List { json } => {
            let keys = dkim::list(&cfg.data_dir, &cfg.dkim_keys);
            if json {
                let v: Vec<serde_json::Value> = keys
                    .iter()
                    .map(|k| {
                        serde_json::json!({
                            "domain": k.domain, "selector": k.selector, "state": k.state,
                            "algorithm": k.algorithm, "path": k.path, "record": k.record,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            if keys.is_empty() {
                println!("no DKIM keys (tern dkim generate --domain D --selector S)");
            }
            for k in keys {
                println!(
                    "{}  {}  {}  {}  {}",
                    k.domain,
                    k.selector,
                    k.state,
                    if k.algorithm.is_empty() {
                        "-"
                    } else {
                        k.algorithm
                    },
                    k.path.display()
                );
                if !k.record.is_empty() {
                    println!(
                        "    {}._domainkey.{}. IN TXT {}",
                        k.selector,
                        k.domain,
                        dkim::zone_text(&k.record)
                    );
                }
            }
        }
    }
    Ok(())
}
