//! The command line's larger subcommands, one file each.

pub mod alias;
pub mod dkim;
pub mod doctor;
pub mod mailbox;
pub mod queue;
pub mod sieve;
pub mod user;

/// The local domains a command names: DOMAIN (which must be one of them), or all of them.
pub fn local_domains(
    cfg: &tern::config::Config,
    domain: Option<String>,
) -> anyhow::Result<Vec<String>> {
    Ok(match domain {
        Some(d) => {
            let d = d.to_lowercase();
            anyhow::ensure!(
                cfg.local_domains.iter().any(|l| l.as_str() == d),
                "{d:?} is not one of [domains] local"
            );
            vec![d]
        }
        None => cfg.local_domains.iter().map(|d| d.to_string()).collect(),
    })
}
