//! Aliases, catch-alls and domain aliases, in the user database.

use super::{Directory, DirectoryError};
use crate::smtp::{Domain, Mailbox};

/// One row of `tern alias list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// `local@domain`, `@domain` (catch-all) or, for a domain alias, `@alias.domain`.
    pub source: String,
    pub targets: Vec<String>,
}

/// What `tern alias add` was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasSpec {
    Address {
        source: Mailbox,
        targets: Vec<Mailbox>,
    },
    CatchAll {
        domain: Domain,
        targets: Vec<Mailbox>,
    },
    Domain {
        alias: Domain,
        target: Domain,
    },
}

impl AliasSpec {
    /// Parses `SOURCE TARGET...`: an address or `@domain` with target addresses, or `@domain @domain`.
    pub fn parse(
        source: &str,
        targets: &[String],
        local_domains: &[Domain],
    ) -> Result<AliasSpec, DirectoryError> {
        let bad = |s: &str| DirectoryError::BadAddress(s.to_string());
        if targets.is_empty() {
            return Err(DirectoryError::BadAlias(format!(
                "{source:?} needs at least one target"
            )));
        }
        if let Some(domain) = source.strip_prefix('@') {
            let domain = Domain::parse(&domain.to_lowercase(), true).map_err(|_| bad(source))?;
            if let [only] = targets
                && let Some(target) = only.strip_prefix('@')
            {
                let target = Domain::parse(&target.to_lowercase(), true).map_err(|_| bad(only))?;
                if !local_domains.contains(&target) {
                    return Err(DirectoryError::NotLocal {
                        address: only.clone(),
                        domain: target.to_string(),
                    });
                }
                if local_domains.contains(&domain) {
                    return Err(DirectoryError::BadAlias(format!(
                        "{domain} is already a local domain"
                    )));
                }
                return Ok(AliasSpec::Domain {
                    alias: domain,
                    target,
                });
            }
            if !local_domains.contains(&domain) {
                return Err(DirectoryError::NotLocal {
                    address: source.into(),
                    domain: domain.to_string(),
                });
            }
            return Ok(AliasSpec::CatchAll {
                domain,
                targets: parse_targets(targets)?,
            });
        }
        let source_box = Mailbox::parse(&source.to_lowercase(), true).map_err(|_| bad(source))?;
        if !local_domains.contains(source_box.domain()) {
            return Err(DirectoryError::NotLocal {
                address: source.into(),
                domain: source_box.domain().to_string(),
            });
        }
        Ok(AliasSpec::Address {
            source: source_box,
            targets: parse_targets(targets)?,
        })
    }
}

fn parse_targets(targets: &[String]) -> Result<Vec<Mailbox>, DirectoryError> {
    targets
        .iter()
        .flat_map(|t| t.split(','))
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            Mailbox::parse(t.trim(), true).map_err(|_| DirectoryError::BadAddress(t.to_string()))
        })
        .collect()
}

fn join(targets: &[Mailbox]) -> String {
    targets
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn split(targets: &str) -> Vec<Mailbox> {
    targets
        .split(',')
        .filter_map(|t| Mailbox::parse(t, true).ok())
        .collect()
}

impl Directory {
    pub async fn add_alias(&self, spec: &AliasSpec) -> Result<(), DirectoryError> {
        let now = crate::clock::unix_now() as i64;
        let result = match spec {
            AliasSpec::Address { source, targets } => {
                sqlx::query("INSERT INTO aliases (address, targets, created_at) VALUES (?, ?, ?)")
                    .bind(source.to_string().to_lowercase())
                    .bind(join(targets))
                    .bind(now)
                    .execute(&self.pool)
                    .await
            }
            AliasSpec::CatchAll { domain, targets } => {
                sqlx::query("INSERT INTO aliases (address, targets, created_at) VALUES (?, ?, ?)")
                    .bind(format!("@{domain}"))
                    .bind(join(targets))
                    .bind(now)
                    .execute(&self.pool)
                    .await
            }
            AliasSpec::Domain { alias, target } => {
                sqlx::query("INSERT INTO domain_aliases (alias, target) VALUES (?, ?)")
                    .bind(alias.to_string())
                    .bind(target.to_string())
                    .execute(&self.pool)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(DirectoryError::Exists(format!("{spec:?}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes an alias, catch-all (`@domain`) or domain alias (`@alias.domain`); returns whether one existed.
    pub async fn delete_alias(&self, source: &str) -> Result<bool, DirectoryError> {
        let key = source.to_lowercase();
        let a = sqlx::query("DELETE FROM aliases WHERE address = ?")
            .bind(&key)
            .execute(&self.pool)
            .await?;
        let d = match key.strip_prefix('@') {
            Some(domain) => sqlx::query("DELETE FROM domain_aliases WHERE alias = ?")
                .bind(domain)
                .execute(&self.pool)
                .await?
                .rows_affected(),
            None => 0,
        };
        Ok(a.rows_affected() + d > 0)
    }

    pub async fn list_aliases(&self) -> Result<Vec<Alias>, DirectoryError> {
        let mut out: Vec<Alias> = sqlx::query_as::<_, (String, String)>(
            "SELECT address, targets FROM aliases ORDER BY address",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(source, targets)| Alias {
            source,
            targets: targets.split(',').map(str::to_string).collect(),
        })
        .collect();
        let domains: Vec<(String, String)> =
            sqlx::query_as("SELECT alias, target FROM domain_aliases ORDER BY alias")
                .fetch_all(&self.pool)
                .await?;
        out.extend(domains.into_iter().map(|(a, t)| Alias {
            source: format!("@{a}"),
            targets: vec![format!("@{t}")],
        }));
        Ok(out)
    }

    /// The targets of an alias address, if it is one.
    pub async fn alias(&self, address: &Mailbox) -> Result<Option<Vec<Mailbox>>, DirectoryError> {
        let key = address.to_string().to_lowercase();
        let t: Option<String> = sqlx::query_scalar("SELECT targets FROM aliases WHERE address = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(t.map(|t| split(&t)))
    }

    /// The catch-all targets of a domain, if it has one.
    pub async fn catch_all(&self, domain: &Domain) -> Result<Option<Vec<Mailbox>>, DirectoryError> {
        let t: Option<String> = sqlx::query_scalar("SELECT targets FROM aliases WHERE address = ?")
            .bind(format!("@{domain}"))
            .fetch_optional(&self.pool)
            .await?;
        Ok(t.map(|t| split(&t)))
    }

    /// The local domain that `domain` is an alias of.
    pub async fn domain_alias(&self, domain: &Domain) -> Result<Option<Domain>, DirectoryError> {
        let t: Option<String> =
            sqlx::query_scalar("SELECT target FROM domain_aliases WHERE alias = ?")
                .bind(domain.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(t.and_then(|t| Domain::parse(&t, true).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_forms() {
        let local = [Domain::parse("example.test", false).unwrap()];
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(
            matches!(AliasSpec::parse("team@example.test", &t(&["a@example.test,b@remote.test"]), &local), Ok(AliasSpec::Address { targets, .. }) if targets.len() == 2)
        );
        assert!(matches!(
            AliasSpec::parse("@example.test", &t(&["a@example.test"]), &local),
            Ok(AliasSpec::CatchAll { .. })
        ));
        assert!(matches!(
            AliasSpec::parse("@example.org", &t(&["@example.test"]), &local),
            Ok(AliasSpec::Domain { .. })
        ));
        assert!(AliasSpec::parse("x@other.test", &t(&["a@example.test"]), &local).is_err());
        assert!(AliasSpec::parse("@example.test", &t(&["@example.test"]), &local).is_err());
        assert!(AliasSpec::parse("x@example.test", &[], &local).is_err());
    }
}
