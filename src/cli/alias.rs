//! `tern alias` and `tern newaliases`: aliases in tern.db and an aliases file read into it.

use clap::Subcommand;
use std::path::PathBuf;
use tern::config::Config;
use tern::directory::Directory;

#[derive(Subcommand)]
pub enum AliasAction {
    /// SOURCE is local@domain or @domain (catch-all) with target addresses, or @alias.domain @local.domain.
    Add {
        source: String,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    Del {
        source: String,
    },
    List,
}

pub async fn alias(action: AliasAction, cfg: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    let dir = Directory::open(&cfg.data_dir).await?;
    match action {
        AliasAction::Add { source, targets } => {
            let spec =
                tern::directory::aliases::AliasSpec::parse(&source, &targets, &cfg.local_domains)?;
            dir.add_alias(&spec).await?;
            println!("added {source} -> {}", targets.join(","));
        }
        AliasAction::Del { source } => {
            anyhow::ensure!(dir.delete_alias(&source).await?, "no alias {source:?}");
            println!("deleted {source}");
        }
        AliasAction::List => {
            for a in dir.list_aliases().await? {
                println!("{}\t{}", a.source, a.targets.join(","));
            }
        }
    }
    Ok(())
}

/// `tern newaliases [FILE]`: the aliases file (default /etc/aliases) into the alias table.
pub async fn newaliases(file: Option<PathBuf>, cfg: Config) -> anyhow::Result<()> {
    let path = file.unwrap_or_else(|| PathBuf::from("/etc/aliases"));
    std::fs::create_dir_all(&cfg.data_dir)?;
    let dir = Directory::open(&cfg.data_dir).await?;
    let (added, warnings) =
        tern::directory::aliases_file::import(&dir, &path, &cfg.origin, &cfg.local_domains).await?;
    for w in &warnings {
        eprintln!("newaliases: {w}");
    }
    println!("{}: {added} aliases", path.display());
    Ok(())
}
