//! `[sieve]`: whether users' scripts run at delivery, the admin's scripts before and after them (compiled
//! here, so that a broken one stops the start or the reload with its line and column), and the limits.

use super::{ConfigError, Validator, raw};
use crate::sieve::{Limits, Program, store::Quota};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SieveSettings {
    pub enabled: bool,
    pub before: Vec<(PathBuf, Arc<Program>)>,
    pub after: Vec<(PathBuf, Arc<Program>)>,
    pub global_dir: Option<PathBuf>,
    pub limits: Limits,
    pub max_scripts: usize,
    pub max_script_bytes: usize,
}

impl SieveSettings {
    pub fn quota(&self) -> Quota {
        Quota {
            max_scripts: self.max_scripts,
            max_script_bytes: self.max_script_bytes,
            max_redirects: self.limits.max_redirects,
        }
    }
}

impl Validator {
    pub(super) fn sieve(
        &self,
        s: &raw::RawSieve,
        separator: Option<&str>,
    ) -> Result<SieveSettings, ConfigError> {
        let load =
            |key: &str, files: &[String]| -> Result<Vec<(PathBuf, Arc<Program>)>, ConfigError> {
                let mut out = Vec::new();
                for (i, f) in files.iter().enumerate() {
                    let path = self.resolve(f);
                    let source = std::fs::read_to_string(&path).map_err(|e| {
                        self.err(
                            format!("sieve.{key}[{i}]"),
                            format!("{}: {e}", path.display()),
                        )
                    })?;
                    let program = crate::sieve::compile(&source).map_err(|e| {
                        self.err(
                            format!("sieve.{key}[{i}]"),
                            format!("{}: {e}", path.display()),
                        )
                    })?;
                    out.push((path, Arc::new(program)));
                }
                Ok(out)
            };
        let before = load("before", &s.before)?;
        let after = load("after", &s.after)?;
        let global_dir = (!s.global_dir.is_empty()).then(|| self.resolve(&s.global_dir));
        if s.vacation_min_secs > s.vacation_max_days.saturating_mul(86_400) {
            return Err(self.err(
                "sieve.vacation_min_secs",
                format!(
                    "{} is longer than vacation_max_days ({})",
                    s.vacation_min_secs, s.vacation_max_days
                ),
            ));
        }
        if s.max_run_ms == 0 {
            return Err(self.err("sieve.max_run_ms", "0 would stop every script at once"));
        }
        let separator = separator.and_then(|s| s.chars().next()).unwrap_or('+');
        Ok(SieveSettings {
            enabled: s.enabled,
            before,
            after,
            global_dir,
            limits: Limits {
                max_actions: s.max_actions.max(1),
                max_redirects: s.max_redirects,
                max_include_depth: s.max_include_depth,
                max_time: Duration::from_millis(s.max_run_ms),
                max_steps: 100_000,
                vacation_default: s.vacation_default_days.saturating_mul(86_400),
                vacation_min: s.vacation_min_secs,
                vacation_max: s.vacation_max_days.saturating_mul(86_400),
                separator,
            },
            max_scripts: s.max_scripts.max(1),
            max_script_bytes: s.max_script_bytes.max(64),
        })
    }
}
