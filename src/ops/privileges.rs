//! Running as root only as long as needed: the listeners are bound (ports below 1024) and the TLS key read,
//! then the process becomes `[server] user` and `group` before it reads a client's byte.
//!
//! Users and groups are looked up through NSS (nix's getpwnam_r/getgrnam_r), so LDAP or systemd-userdb
//! accounts work as in /etc/passwd. setgid/setuid are nix's, which change every thread of the process.

use nix::unistd::{Gid, Group, Uid, User};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("server.user: no user {0:?} on this system")]
    NoUser(String),
    #[error("server.group: no group {0:?} on this system")]
    NoGroup(String),
    #[error(
        "running as root: set server.user (the account to run as), or server.allow_root = true"
    )]
    Root,
    #[error("cannot switch to {what}: {source}")]
    Switch { what: String, source: nix::Error },
    #[error("cannot make data_dir {path} for the service user: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

/// The uid and primary gid of `user`.
pub fn lookup_user(user: &str) -> Option<(u32, u32)> {
    User::from_name(user)
        .ok()
        .flatten()
        .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
}

/// The login name of a uid, if the user database knows it.
pub fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

fn lookup_group(group: &str) -> Option<u32> {
    Group::from_name(group)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Whether the process runs as root.
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

/// The uid the daemon serves as: `[server] user` when started as root with one, else its own.
pub fn service_uid(user: Option<&str>) -> u32 {
    match user {
        Some(u) if is_root() => lookup_user(u).map_or(0, |(uid, _)| uid),
        _ => Uid::effective().as_raw(),
    }
}

/// Files are created 0640 and folders 0750 at most, whatever umask the daemon was started with: queue,
/// databases and mailboxes are nobody else's business.
pub fn restrict_umask() {
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::from_bits_truncate(0o027));
    umask(old | Mode::from_bits_truncate(0o027));
}

/// A state-changing command (`tern user add`, `dkim generate`, `mailbox import`...) run by root: it runs
/// as `[server] user`, so that nothing it writes under data_dir is owned by root and unreadable to the
/// daemon. data_dir is made (and given to the account) first if it does not exist yet. Without a
/// configured user the command stays as it was started.
pub fn become_service_user(
    user: Option<&str>,
    group: Option<&str>,
    data_dir: &Path,
) -> Result<(), PrivilegeError> {
    let Some(name) = user.filter(|_| is_root()) else {
        return Ok(());
    };
    let (uid, gid) = account(name, group)?;
    if !data_dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o750)
            .recursive(true)
            .create(data_dir)
            .map_err(|source| PrivilegeError::DataDir {
                path: data_dir.display().to_string(),
                source,
            })?;
    }
    // data_dir and its databases may have been made by root (an earlier run as root, a first start that
    // refused): they become the account's, as the daemon's own start does for the whole tree. Only the
    // top level here, so that a command stays quick on a large mail store.
    chown_levels(data_dir, uid, gid, 1);
    switch(name, uid, gid)
}

/// The uid and gid `[server] user` and `group` name.
fn account(user: &str, group: Option<&str>) -> Result<(u32, u32), PrivilegeError> {
    let (uid, user_gid) = lookup_user(user).ok_or_else(|| PrivilegeError::NoUser(user.into()))?;
    let gid = match group {
        Some(g) => lookup_group(g).ok_or_else(|| PrivilegeError::NoGroup(g.into()))?,
        None => user_gid,
    };
    Ok((uid, gid))
}

/// Becomes uid:gid for good, with no supplementary groups.
fn switch(user: &str, uid: u32, gid: u32) -> Result<(), PrivilegeError> {
    let err = |what: &str| {
        let what = what.to_string();
        move |source| PrivilegeError::Switch { what, source }
    };
    nix::unistd::setgroups(&[]).map_err(err("no supplementary groups"))?;
    nix::unistd::setgid(Gid::from_raw(gid)).map_err(err(&format!("group {gid}")))?;
    nix::unistd::setuid(Uid::from_raw(uid)).map_err(err(&format!("user {user}")))?;
    Ok(())
}

/// When running as root: hands `owned` paths to the account, then drops to it for good.
pub fn drop_to(
    user: Option<&str>,
    group: Option<&str>,
    allow_root: bool,
    owned: &[&Path],
) -> Result<(), PrivilegeError> {
    if !is_root() {
        return Ok(());
    }
    let Some(user) = user else {
        return if allow_root {
            Ok(())
        } else {
            Err(PrivilegeError::Root)
        };
    };
    let (uid, gid) = account(user, group)?;
    for path in owned {
        chown_tree(path, uid, gid);
    }
    switch(user, uid, gid)?;
    tracing::info!(user, uid, gid, "dropped root privileges");
    Ok(())
}

/// Gives a folder (and what is in it) to uid:gid, so the daemon can still write there after the switch.
///
/// Runs as root over a folder the service user could write to on an earlier run, so nothing in it is
/// trusted: symbolic links are never followed (the link itself is changed, its target never), and a file
/// with more than one hard link is left alone (it may be a link to /etc/shadow).
fn chown_tree(path: &Path, uid: u32, gid: u32) {
    chown_levels(path, uid, gid, usize::MAX);
}

/// [`chown_tree`] down to `levels` below `path` (0: the path alone).
fn chown_levels(path: &Path, uid: u32, gid: u32, levels: usize) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let ft = meta.file_type();
    if ft.is_file() && meta.nlink() > 1 {
        tracing::warn!(path = %path.display(), links = meta.nlink(), "not changing the owner of a file with several hard links");
        return;
    }
    let _ = std::os::unix::fs::lchown(path, Some(uid), Some(gid));
    if ft.is_dir()
        && levels > 0
        && let Ok(entries) = std::fs::read_dir(path)
    {
        for e in entries.flatten() {
            chown_levels(&e.path(), uid, gid, levels - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chown_tree_never_follows_a_link_nor_touches_a_hard_link() {
        use std::os::unix::fs::MetadataExt;
        if !super::is_root() {
            return;
        }
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("root-owned");
        std::fs::write(&target, b"secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("link")).unwrap();
        std::fs::hard_link(&target, dir.path().join("hard")).unwrap();
        std::fs::write(dir.path().join("own"), b"x").unwrap();
        super::chown_tree(dir.path(), 65534, 65534);
        assert_eq!(std::fs::metadata(&target).unwrap().uid(), 0);
        assert_eq!(
            std::fs::metadata(dir.path().join("own")).unwrap().uid(),
            65534
        );
        assert_eq!(
            std::fs::symlink_metadata(dir.path().join("link"))
                .unwrap()
                .uid(),
            65534
        );
    }
}
