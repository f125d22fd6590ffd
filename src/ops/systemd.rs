//! systemd's notify protocol (sd_notify(3)): READY=1 once every listener is bound, RELOADING=1 with
//! MONOTONIC_USEC around a reload, STOPPING=1 at shutdown. A no-op when NOTIFY_SOCKET is not set.

use std::os::unix::net::UnixDatagram;

fn send(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (Linux).
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| socket.send_to_addr(message.as_bytes(), &a))
    } else {
        socket.send_to(message.as_bytes(), &path)
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid clock id and a writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

pub fn ready() {
    send("READY=1\nSTATUS=accepting mail");
}

pub fn reloading() {
    send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

/// A reload was refused: the running configuration stays, and systemd's status line says why.
pub fn reload_refused(reason: &str) {
    let reason: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    send(&format!(
        "READY=1\nSTATUS=reload refused, running configuration kept: {reason}"
    ));
}

pub fn stopping() {
    send("STOPPING=1\nSTATUS=shutting down");
}
