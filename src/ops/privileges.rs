//! Running as root only as long as needed: the listeners are bound (ports below 1024) and the TLS key read,
//! then the process becomes `[server] user` and `group` before it reads a client's byte.

use std::ffi::CString;
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
    Switch {
        what: String,
        source: std::io::Error,
    },
}

/// The uid and primary gid of `user` (from the system's user database).
fn lookup_user(user: &str) -> Option<(u32, u32)> {
    let name = CString::new(user).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read before any other call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null result of getpwnam.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn lookup_group(group: &str) -> Option<u32> {
    let name = CString::new(group).ok()?;
    // SAFETY: as for getpwnam.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    if gr.is_null() {
        return None;
    }
    // SAFETY: non-null result of getgrnam.
    unsafe { Some((*gr).gr_gid) }
}

/// When running as root: hands `owned` paths to the account, then drops to it for good.
pub fn drop_to(
    user: Option<&str>,
    group: Option<&str>,
    allow_root: bool,
    owned: &[&Path],
) -> Result<(), PrivilegeError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let Some(user) = user else {
        return if allow_root {
            Ok(())
        } else {
            Err(PrivilegeError::Root)
        };
    };
    let (uid, user_gid) = lookup_user(user).ok_or_else(|| PrivilegeError::NoUser(user.into()))?;
    let gid = match group {
        Some(g) => lookup_group(g).ok_or_else(|| PrivilegeError::NoGroup(g.into()))?,
        None => user_gid,
    };
    for path in owned {
        chown_tree(path, uid, gid);
    }
    let err = |what: &str| PrivilegeError::Switch {
        what: what.to_string(),
        source: std::io::Error::last_os_error(),
    };
    // SAFETY: plain system calls on integers; failure is checked.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(err("no supplementary groups"));
        }
        if libc::setgid(gid) != 0 {
            return Err(err(&format!("group {gid}")));
        }
        if libc::setuid(uid) != 0 {
            return Err(err(&format!("user {user}")));
        }
    }
    tracing::info!(user, uid, gid, "dropped root privileges");
    Ok(())
}

/// Gives a folder (and what is in it) to uid:gid, so the daemon can still write there after the switch.
fn chown_tree(path: &Path, uid: u32, gid: u32) {
    let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
    if path.is_dir()
        && let Ok(entries) = std::fs::read_dir(path)
    {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                chown_tree(&p, uid, gid);
            } else {
                let _ = std::os::unix::fs::lchown(&p, Some(uid), Some(gid));
            }
        }
    }
}
