//! Running Sieve at final delivery: the admin's scripts before and after the user's active one, on the
//! blocking pool beside the mailbox writes, and turning the run's actions into a plan local delivery
//! carries out: copies to store (with their folders and flags), redirects and a vacation reply to queue,
//! a refusal to report, duplicate keys to remember once the copies are stored.

use crate::config::SieveSettings;
use crate::mailbox::MailboxStore;
use crate::mailbox::index::{Flags, flag};
use crate::sieve::ast::{Location, Program};
use crate::sieve::store::ScriptStore;
use crate::sieve::vacation::Reply;
use crate::sieve::{Action, Envelope, Environment};
use crate::smtp::Mailbox;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Times a message may have been redirected by Sieve before it is only kept.
pub const MAX_REDIRECT_HOPS: usize = 5;

/// Folders a mailbox may have before `fileinto :create` stops making new ones.
pub const MAX_FOLDERS: usize = 1000;

/// What the sieve stage needs, shared by the delivery workers.
pub struct SieveRunner {
    /// Replaced whole by a reload; each run reads one version.
    settings: std::sync::RwLock<Arc<SieveSettings>>,
    pub scripts: ScriptStore,
    pub handle: tokio::runtime::Handle,
    /// `include :global` scripts: path → (modification time, program).
    globals: Mutex<HashMap<PathBuf, (std::time::SystemTime, Arc<Program>)>>,
}

/// One copy to store.
#[derive(Debug)]
pub struct Copy {
    /// `None`: the recipient's default folder (INBOX, or Junk for quarantined mail).
    pub folder: Option<String>,
    pub flags: Flags,
}

/// What a run decided for one recipient.
#[derive(Debug, Default)]
pub struct Plan {
    pub copies: Vec<Copy>,
    /// The message as editheader left it (LF line endings), for the copies and redirects; of a spooled
    /// message only its header section (the tail on disk follows it unchanged).
    pub edited: Option<Vec<u8>>,
    pub redirects: Vec<Mailbox>,
    pub vacation: Option<Reply>,
    /// Refused by reject/ereject, with the reason (one line).
    pub reject: Option<String>,
    /// The refusal was ereject's (which prefers an SMTP reply).
    pub extended: bool,
    pub duplicates: Vec<(String, u64)>,
    /// `fileinto:Lists,redirect:a@b`, for the delivery log line.
    pub summary: String,
}

impl SieveRunner {
    pub fn new(
        settings: SieveSettings,
        scripts: ScriptStore,
        handle: tokio::runtime::Handle,
    ) -> Self {
        SieveRunner {
            settings: std::sync::RwLock::new(Arc::new(settings)),
            scripts,
            handle,
            globals: Mutex::new(HashMap::new()),
        }
    }

    /// The settings now in force.
    pub fn settings(&self) -> Arc<SieveSettings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// New `[sieve]` settings (a reload): the next runs use them.
    pub fn set_settings(&self, settings: SieveSettings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }

    /// Runs the scripts for one recipient (blocking: call it from the blocking pool). `None` when no
    /// script applies: plain delivery.
    pub fn plan(
        &self,
        store: &dyn MailboxStore,
        mailbox: &Mailbox,
        forward_path: &str,
        reverse_path: &str,
        body: &crate::queue::Body,
        checks: &str,
    ) -> Option<Plan> {
        let settings = self.settings();
        if !settings.enabled {
            return None;
        }
        let user = mailbox.to_string().to_lowercase();
        let personal = match self.handle.block_on(self.scripts.active(&user)) {
            Ok(p) => p,
            Err(e) => {
                // A script that no longer compiles (or storage trouble) never loses mail: keep.
                tracing::warn!(mailbox = %mailbox, error = %e, "sieve: cannot load the active script; keeping the message");
                None
            }
        };
        if personal.is_none() && settings.before.is_empty() && settings.after.is_empty() {
            return None;
        }
        let mut programs: Vec<&Program> = settings.before.iter().map(|(_, p)| &**p).collect();
        if let Some(p) = &personal {
            programs.push(p);
        }
        programs.extend(settings.after.iter().map(|(_, p)| &**p));
        let env = DeliveryEnv {
            runner: self,
            store,
            mailbox,
            user: &user,
            folders: std::cell::OnceCell::new(),
            spam: spam_of_checks(checks),
            virus: virus_of_checks(checks),
        };
        let envelope = Envelope {
            from: reverse_path.to_string(),
            to: forward_path.to_string(),
        };
        // A spooled message is seen through its header section and the start of its body (the body test
        // reads no further anyway); the size test sees the whole size.
        let prefix;
        let message: &[u8] = match &body.tail {
            None => &body.head,
            Some(_) => {
                let want = body.head.len() + crate::sieve::message::BODY_LIMIT;
                prefix = match body.prefix(want) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(mailbox = %mailbox, error = %e, "sieve: cannot read the spooled message; keeping it");
                        return None;
                    }
                };
                &prefix
            }
        };
        let mut outcome = crate::sieve::interp::run_sized(
            &programs,
            message,
            body.len() as u64,
            &envelope,
            &[mailbox.to_string()],
            &env,
            &settings.limits,
        );
        if let Some(e) = &outcome.error {
            tracing::warn!(mailbox = %mailbox, error = %crate::log::Escaped(e), "sieve: runtime error; keeping the message");
        }
        // An edited spooled message: keep the new header section; the tail follows it from disk.
        if body.tail.is_some()
            && let Some(e) = outcome.edited.as_mut()
        {
            let rest = message.len() - body.head.len();
            e.truncate(e.len().saturating_sub(rest));
        }
        let mut plan = Plan {
            summary: outcome.summary(),
            duplicates: outcome.duplicates.clone(),
            edited: outcome.edited.as_deref().map(crate::mailbox::lf),
            ..Plan::default()
        };
        // Mail already redirected by this user came back: a loop (RFC 5228 section 4.2 asks for a guard).
        // So is mail that has been redirected MAX_REDIRECT_HOPS times already: a chain through several
        // users (each with :copy and several redirects) must not fan out without end.
        let marker = format!("<{user}>");
        let mut hops = 0;
        let mut mine = false;
        for (name, field) in crate::message::fields(message) {
            if name.eq_ignore_ascii_case(b"X-Sieve-Redirected-From") {
                hops += 1;
                mine |= String::from_utf8_lossy(field)
                    .to_lowercase()
                    .contains(&marker);
            }
        }
        let looped = mine || hops >= MAX_REDIRECT_HOPS;
        for action in outcome.actions {
            match action {
                Action::Store {
                    folder,
                    flags,
                    create,
                    special_use,
                    ..
                } => {
                    let folder = self.target_folder(&env, &folder, create, special_use.as_deref());
                    plan.copies.push(Copy {
                        folder,
                        flags: index_flags(&flags),
                    });
                }
                Action::Redirect { address } => {
                    if looped {
                        tracing::warn!(mailbox = %mailbox, to = %address, "sieve: redirect loop; keeping the message instead");
                        if !plan.copies.iter().any(|c| c.folder.is_none()) {
                            plan.copies.push(Copy {
                                folder: None,
                                flags: Flags::default(),
                            });
                        }
                        continue;
                    }
                    match Mailbox::parse(&address, true) {
                        Ok(m) => plan.redirects.push(m),
                        Err(e) => {
                            tracing::warn!(mailbox = %mailbox, to = %crate::log::Escaped(&address), error = %e, "sieve: redirect address refused")
                        }
                    }
                }
                Action::Reject { reason, extended } => {
                    plan.extended = extended;
                    let line: String = reason
                        .split(['\r', '\n'])
                        .filter(|l| !l.trim().is_empty())
                        .collect::<Vec<_>>()
                        .join(" ")
                        .chars()
                        .filter(|c| !c.is_control())
                        .map(|c| if c.is_ascii() { c } else { '?' })
                        .take(200)
                        .collect();
                    plan.reject = Some(if line.is_empty() {
                        "rejected by the recipient's filter".into()
                    } else {
                        line
                    });
                }
                Action::Vacation(r) => plan.vacation = Some(r),
            }
        }
        Some(plan)
    }

    /// The reason to refuse at SMTP time, when the recipient's scripts use ereject and decide so for this
    /// message. Scripts without ereject cost one lookup of the active script's version.
    pub async fn smtp_refusal(
        self: &Arc<Self>,
        store: Arc<dyn MailboxStore>,
        mailbox: &Mailbox,
        forward_path: &str,
        reverse_path: &str,
        message: &crate::queue::Body,
    ) -> Option<String> {
        let settings = self.settings();
        if !settings.enabled {
            return None;
        }
        let uses = |p: &Program| p.requires.iter().any(|r| r == "ereject");
        let personal = self
            .scripts
            .active(&mailbox.to_string().to_lowercase())
            .await
            .ok()
            .flatten();
        let wanted = personal.as_deref().is_some_and(uses)
            || settings.before.iter().any(|(_, p)| uses(p))
            || settings.after.iter().any(|(_, p)| uses(p));
        if !wanted {
            return None;
        }
        let (runner, mailbox, forward_path, reverse_path, message) = (
            self.clone(),
            mailbox.clone(),
            forward_path.to_string(),
            reverse_path.to_string(),
            message.clone(),
        );
        let plan = tokio::task::spawn_blocking(move || {
            runner.plan(
                &*store,
                &mailbox,
                &forward_path,
                &reverse_path,
                &message,
                "",
            )
        })
        .await
        .ok()
        .flatten()?;
        match (plan.reject, plan.extended) {
            (Some(reason), true) => Some(reason),
            _ => None,
        }
    }

    /// Where a store goes: INBOX is the default folder; a folder that does not exist is INBOX unless the
    /// script said :create (RFC 5490 section 3.2), or a folder with the special use it named (RFC 8579).
    fn target_folder(
        &self,
        env: &DeliveryEnv,
        folder: &str,
        create: bool,
        special_use: Option<&str>,
    ) -> Option<String> {
        if let Some(u) = special_use
            && let Some(f) = env.folder_with_use(u)
        {
            return Some(f);
        }
        let name = match crate::sieve::interp::folder_of(folder) {
            Ok(n) => n,
            Err(_) => return None,
        };
        if name == "INBOX" {
            return None;
        }
        let encoded = crate::imap::utf7::encode(&name);
        if env.exists(&encoded) || (create && env.list().len() < MAX_FOLDERS) {
            Some(encoded)
        } else if create {
            // Folder names can come from the message (`fileinto :create "${1}"`): a stranger must not be
            // able to fill a mailbox with folders.
            tracing::warn!(mailbox = %env.mailbox, folder = %crate::log::Escaped(folder), "sieve: the mailbox has {MAX_FOLDERS} folders; stored in INBOX instead of creating another");
            None
        } else {
            tracing::info!(mailbox = %env.mailbox, folder = %crate::log::Escaped(folder), "sieve: no such folder; stored in INBOX");
            None
        }
    }

    fn global(&self, name: &str) -> Result<Option<Arc<Program>>, String> {
        let settings = self.settings();
        let Some(dir) = &settings.global_dir else {
            return Ok(None);
        };
        if !crate::sieve::store::valid_name(name) {
            return Err(format!("{name:?} is not a script name"));
        }
        let path = dir.join(format!("{name}.sieve"));
        let modified = match std::fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if let Ok(g) = self.globals.lock()
            && let Some((m, p)) = g.get(&path)
            && *m == modified
        {
            return Ok(Some(p.clone()));
        }
        let source =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let program = Arc::new(
            crate::sieve::compile(&source).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        if let Ok(mut g) = self.globals.lock() {
            g.insert(path, (modified, program.clone()));
        }
        Ok(Some(program))
    }
}

/// Sieve flag names as the mailbox index has them: system flags by name, other valid atoms as keywords
/// (RFC 5232 section 3: an invalid flag is ignored; \Recent cannot be set).
pub fn index_flags(flags: &[String]) -> Flags {
    let mut out = Flags::default();
    for f in flags {
        if let Some((bit, _)) = flag::NAMES.iter().find(|(_, n)| n.eq_ignore_ascii_case(f)) {
            out.system |= bit;
        } else if !f.starts_with('\\')
            && f.len() <= 64
            && f.bytes()
                .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b))
            && !out.has_keyword(f)
        {
            out.keywords.push(f.clone());
        }
    }
    out
}

struct DeliveryEnv<'a> {
    runner: &'a SieveRunner,
    store: &'a dyn MailboxStore,
    mailbox: &'a Mailbox,
    user: &'a str,
    folders: std::cell::OnceCell<Vec<crate::mailbox::index::FolderEntry>>,
    /// rspamd's score and required score, as tern's filter recorded them in the message's checks.
    spam: Option<(f64, f64)>,
    /// virustest's value from the virus scanners' verdict, as recorded in the checks.
    virus: Option<u8>,
}

/// The `score=S/R` an rspamd filter wrote into the checks summary (tern's own record, not a header a sender
/// could forge).
fn spam_of_checks(checks: &str) -> Option<(f64, f64)> {
    checks
        .split([' ', ','])
        .filter_map(|t| t.strip_prefix("score="))
        .find_map(|v| {
            let (s, r) = v.split_once('/')?;
            Some((s.parse().ok()?, r.parse().ok()?))
        })
}

/// The `virus=N` tern recorded from the filters marked `virus = true` (RFC 5235 virustest: 1 clean, 5
/// infected).
fn virus_of_checks(checks: &str) -> Option<u8> {
    checks
        .split([' ', ','])
        .find_map(|t| t.strip_prefix("virus=")?.parse().ok())
        .filter(|v| *v <= 5)
}

/// RFC 5235: spamtest's 1 (not spam) to 10 (spam) from score / required; with :percent, 0 to 100.
fn spamtest_value((score, required): (f64, f64), percent: bool) -> String {
    let ratio = if required > 0.0 {
        (score / required).clamp(0.0, 1.0)
    } else if score > 0.0 {
        1.0
    } else {
        0.0
    };
    if percent {
        format!("{}", (ratio * 100.0).round() as u32)
    } else {
        format!("{}", 1 + (ratio * 9.0).round() as u32)
    }
}

impl DeliveryEnv<'_> {
    fn list(&self) -> &[crate::mailbox::index::FolderEntry] {
        self.folders.get_or_init(|| {
            self.store
                .index()
                .and_then(|i| i.list(self.mailbox).ok())
                .unwrap_or_default()
        })
    }

    /// Whether a folder (its index name, modified UTF-7) exists.
    fn exists(&self, encoded: &str) -> bool {
        encoded == "INBOX" || self.list().iter().any(|f| f.exists && f.name == encoded)
    }

    fn folder_with_use(&self, attribute: &str) -> Option<String> {
        self.list()
            .iter()
            .find(|f| {
                f.exists
                    && f.special_use
                        .is_some_and(|u| u.attribute().eq_ignore_ascii_case(attribute))
            })
            .map(|f| f.name.clone())
    }
}

impl Environment for DeliveryEnv<'_> {
    fn mailbox_exists(&self, name: &str) -> bool {
        match crate::sieve::interp::folder_of(name) {
            Ok(n) => self.exists(&crate::imap::utf7::encode(&n)),
            Err(_) => false,
        }
    }

    fn special_use_exists(&self, mailbox: Option<&str>, uses: &[String]) -> bool {
        match mailbox {
            None => uses.iter().all(|u| self.folder_with_use(u).is_some()),
            Some(m) => {
                let Ok(n) = crate::sieve::interp::folder_of(m) else {
                    return false;
                };
                let encoded = crate::imap::utf7::encode(&n);
                self.list().iter().any(|f| {
                    f.exists
                        && f.name == encoded
                        && uses.iter().all(|u| {
                            f.special_use
                                .is_some_and(|s| s.attribute().eq_ignore_ascii_case(u))
                        })
                })
            }
        }
    }

    fn include(&self, location: Location, name: &str) -> Result<Option<Arc<Program>>, String> {
        match location {
            Location::Personal => self
                .runner
                .handle
                .block_on(self.runner.scripts.personal(self.user, name))
                .map_err(|e| e.to_string()),
            Location::Global => self.runner.global(name),
        }
    }

    fn seen(&self, key: &str) -> bool {
        self.runner
            .handle
            .block_on(self.runner.scripts.seen(self.user, key, self.now()))
            .unwrap_or(false)
    }

    fn spam_score(&self, percent: bool) -> Option<String> {
        self.spam.map(|s| spamtest_value(s, percent))
    }

    fn virus_score(&self) -> Option<String> {
        self.virus.map(|v| v.to_string())
    }

    fn now(&self) -> i64 {
        crate::clock::unix_now() as i64
    }
}

#[cfg(test)]
mod spamtest_tests {
    #[test]
    fn rspamd_scores_become_spamtest_values() {
        let checks = "spf=pass filter=milter:127.0.0.1:1:continue,rspamd:127.0.0.1:2:add_header score=7.50/15.00";
        let s = super::spam_of_checks(checks).unwrap();
        assert_eq!(s, (7.5, 15.0));
        assert_eq!(super::spamtest_value(s, false), "6");
        assert_eq!(super::spamtest_value(s, true), "50");
        assert_eq!(super::spamtest_value((30.0, 15.0), false), "10");
        assert_eq!(super::spamtest_value((-2.0, 15.0), false), "1");
        assert_eq!(super::spam_of_checks("spf=pass"), None);
        assert_eq!(
            super::virus_of_checks("spf=pass filter=milter:127.0.0.1:1:continue virus=1"),
            Some(1)
        );
        assert_eq!(super::virus_of_checks("spf=pass virus=9"), None);
        assert_eq!(super::virus_of_checks("spf=pass"), None);
    }
}
