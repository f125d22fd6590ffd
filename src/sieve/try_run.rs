//! `tern sieve test`: a script run on a message file, outside the daemon, printing the actions it would
//! take (the normalized form the differential tests compare with Pigeonhole's sieve-test). Included
//! scripts are `NAME.sieve` files beside the script; only INBOX exists; nothing is remembered.

use super::ast::{Location, Program};
use super::interp::{Envelope, Environment, Limits};
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct FileEnv {
    dir: PathBuf,
}

impl Environment for FileEnv {
    fn mailbox_exists(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case("INBOX")
    }
    fn special_use_exists(&self, _mailbox: Option<&str>, _uses: &[String]) -> bool {
        false
    }
    fn include(&self, _location: Location, name: &str) -> Result<Option<Arc<Program>>, String> {
        if !super::store::valid_name(name) {
            return Err(format!("{name:?} is not a script name"));
        }
        let path = self.dir.join(format!("{name}.sieve"));
        match std::fs::read_to_string(&path) {
            Ok(s) => super::compile(&s)
                .map(|p| Some(Arc::new(p)))
                .map_err(|e| e.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
    fn seen(&self, _key: &str) -> bool {
        false
    }
    fn spam_score(&self, _percent: bool) -> Option<String> {
        None
    }
    fn virus_score(&self) -> Option<String> {
        None
    }
    fn now(&self) -> i64 {
        crate::clock::unix_now() as i64
    }
}

/// The normalized action lines, or `error compile` (with the error for standard error).
pub fn run_files(
    script: &Path,
    message: &Path,
    from: &str,
    to: &str,
) -> Result<(Vec<String>, Option<String>), String> {
    let source =
        std::fs::read_to_string(script).map_err(|e| format!("{}: {e}", script.display()))?;
    let raw = std::fs::read(message).map_err(|e| format!("{}: {e}", message.display()))?;
    let program = match super::compile(&source) {
        Ok(p) => p,
        Err(e) => return Ok((vec!["error compile".into()], Some(e.to_string()))),
    };
    let raw = crate::mailbox::crlf(&raw);
    let env = FileEnv {
        dir: script.parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    let envelope = Envelope {
        from: from.trim_matches(['<', '>']).to_string(),
        to: to.trim_matches(['<', '>']).to_string(),
    };
    let outcome = super::interp::run(
        &[&program],
        &raw,
        &envelope,
        std::slice::from_ref(&envelope.to),
        &env,
        &Limits::default(),
    );
    let mut lines = super::normalized(&outcome);
    lines.dedup();
    Ok((lines, outcome.error))
}
