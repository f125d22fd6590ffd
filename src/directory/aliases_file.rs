//! The aliases file of sendmail and Postfix (`/etc/aliases`, aliases(5)), read by `tern newaliases` into the
//! alias table: `name: target, target`, continuation lines that start with white space, `#` comments,
//! `:include:/path` lists. Program (`"|cmd"`) and file (`/path`) targets are refused: tern delivers to
//! mailboxes only.

use std::path::Path;

/// One alias: the local name and its targets, bare names not yet qualified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAlias {
    pub name: String,
    pub targets: Vec<String>,
    /// The line it starts on, for messages.
    pub line: usize,
}

/// Most `:include:` files read for one aliases file (and the depth they may nest to).
const MAX_INCLUDES: usize = 32;

/// Parses `text` (from `path`); returns the aliases and a warning per target left out.
pub fn parse(text: &str, path: &Path) -> (Vec<FileAlias>, Vec<String>) {
    let mut aliases = Vec::new();
    let mut warnings = Vec::new();
    let mut includes = 0;
    // Join continuation lines first.
    let mut entries: Vec<(usize, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, last)) = entries.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
                continue;
            }
        }
        entries.push((i + 1, line.to_string()));
    }
    for (line, entry) in entries {
        let Some((name, rest)) = entry.split_once(':') else {
            warnings.push(format!(
                "{}:{line}: no \"name:\" at the start; skipped",
                path.display()
            ));
            continue;
        };
        let name = name.trim().trim_matches('"').to_lowercase();
        if name.is_empty() || name.contains(char::is_whitespace) {
            warnings.push(format!(
                "{}:{line}: {name:?} is not an alias name; skipped",
                path.display()
            ));
            continue;
        }
        let mut targets = Vec::new();
        for t in split_targets(rest) {
            expand(
                &t,
                path,
                line,
                &mut targets,
                &mut warnings,
                &mut includes,
                0,
            );
        }
        if targets.is_empty() {
            warnings.push(format!(
                "{}:{line}: {name} has no usable target; skipped",
                path.display()
            ));
            continue;
        }
        aliases.push(FileAlias {
            name,
            targets,
            line,
        });
    }
    (aliases, warnings)
}

fn split_targets(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
            }
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn expand(
    target: &str,
    path: &Path,
    line: usize,
    out: &mut Vec<String>,
    warnings: &mut Vec<String>,
    includes: &mut usize,
    depth: usize,
) {
    let bare = target.trim_matches('"');
    if let Some(file) = bare.strip_prefix(":include:") {
        *includes += 1;
        if *includes > MAX_INCLUDES || depth > 4 {
            warnings.push(format!(
                "{}:{line}: too many :include: files; {file} left out",
                path.display()
            ));
            return;
        }
        match std::fs::read_to_string(file.trim()) {
            Ok(text) => {
                for l in text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                {
                    for t in split_targets(l) {
                        expand(&t, path, line, out, warnings, includes, depth + 1);
                    }
                }
            }
            Err(e) => warnings.push(format!("{}:{line}: :include:{file}: {e}", path.display())),
        }
        return;
    }
    if bare.starts_with('|') || bare.starts_with('/') {
        warnings.push(format!(
            "{}:{line}: {bare:?} is a program or file target; tern delivers to mailboxes only, left out",
            path.display()
        ));
        return;
    }
    out.push(bare.to_lowercase());
}

/// Reads the aliases file at `path` into the alias table: names become name@<origin>, bare targets too; a
/// target that is another alias of the file is replaced by that alias's targets (the table resolves one
/// level), up to 8 levels and without loops. Returns how many aliases were written and the warnings.
pub async fn import(
    directory: &super::Directory,
    path: &Path,
    origin: &crate::smtp::Domain,
    local_domains: &[crate::smtp::Domain],
) -> Result<(usize, Vec<String>), super::DirectoryError> {
    use std::collections::HashMap;
    let text = std::fs::read_to_string(path)
        .map_err(|e| super::DirectoryError::BadAlias(format!("{}: {e}", path.display())))?;
    let (aliases, mut warnings) = parse(&text, path);
    let origin = origin.to_string();
    let q = |n: &str| crate::sendmail::qualify(n, &origin);
    let table: HashMap<String, Vec<String>> = aliases
        .iter()
        .map(|a| (q(&a.name), a.targets.iter().map(|t| q(t)).collect()))
        .collect();
    fn flatten(
        t: &str,
        table: &HashMap<String, Vec<String>>,
        seen: &mut Vec<String>,
        out: &mut Vec<String>,
        warnings: &mut Vec<String>,
    ) {
        match table.get(t) {
            Some(next) if seen.len() < 8 && !seen.iter().any(|s| s == t) => {
                seen.push(t.to_string());
                for n in next {
                    flatten(n, table, seen, out, warnings);
                }
                seen.pop();
            }
            Some(_) => warnings.push(format!(
                "{t}: alias loop or chain deeper than 8; left as it is"
            )),
            None if !out.iter().any(|o| o == t) => out.push(t.to_string()),
            None => {}
        }
    }
    let mut added = 0;
    for a in &aliases {
        let source = q(&a.name);
        let mut targets = Vec::new();
        flatten(
            &source,
            &table,
            &mut Vec::new(),
            &mut targets,
            &mut warnings,
        );
        let spec = match super::aliases::AliasSpec::parse(&source, &targets, local_domains) {
            Ok(s) => s,
            Err(e) => {
                warnings.push(format!("{}:{}: {e}; skipped", path.display(), a.line));
                continue;
            }
        };
        directory.delete_alias(&source).await?;
        directory.add_alias(&spec).await?;
        added += 1;
    }
    Ok((added, warnings))
}

#[cfg(test)]
mod tests {
    #[test]
    fn debian_style_aliases_with_continuations_includes_and_refused_targets() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("team.list");
        std::fs::write(&list, "carol\n# comment\ndave@remote.test, erin\n").unwrap();
        let text = format!(
            "# /etc/aliases\nmailer-daemon: postmaster\npostmaster: root\nroot: alice@example.test\n\
             team: bob,\n  :include:{}\nlogs: \"|/usr/bin/logger\", /var/log/mail.txt\n",
            list.display()
        );
        let (aliases, warnings) = super::parse(&text, std::path::Path::new("/etc/aliases"));
        let find = |n: &str| {
            aliases
                .iter()
                .find(|a| a.name == n)
                .map(|a| a.targets.clone())
        };
        assert_eq!(find("root").unwrap(), ["alice@example.test"]);
        assert_eq!(
            find("team").unwrap(),
            ["bob", "carol", "dave@remote.test", "erin"]
        );
        assert_eq!(find("logs"), None);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("program or file")));
    }
}
