//! Running as a service: metrics and health over HTTP, SIGHUP reload, JSON logs, systemd notification,
//! dropping root privileges.

use crate::harness::{Daemon, Raw, TERN, config_text};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn metrics_and_health_over_http() {
    let d = Daemon::start("");
    let admin = d.listener("admin");
    let health = http_get(admin, "/healthz").await;
    assert!(
        health.starts_with("HTTP/1.1 200 OK") && health.ends_with("ok\n"),
        "{health}"
    );
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO peer.test").await;
    assert_eq!(
        c.send_message(
            "x@remote.test",
            "alice@example.test",
            "Subject: m\r\n\r\nx\r\n"
        )
        .await
        .0,
        250
    );
    c.cmd("MAIL FROM:<x@remote.test>").await;
    assert_eq!(c.cmd("RCPT TO:<nobody@example.test>").await.0, 550);
    d.wait_delivered("alice@example.test", 1);
    std::thread::sleep(Duration::from_millis(200));
    let m = http_get(admin, "/metrics").await;
    for want in [
        "tern_connections_total{listener=\"relay\"} 1",
        "tern_messages_accepted_total{listener=\"relay\"} 1",
        "tern_replies_refused_total{listener=\"relay\",code=\"5.1.1\"} 1",
        "tern_delivery_attempts_total{transport=\"local\",result=\"sent\"} 1",
        "tern_reply_latency_seconds_count 1",
        "tern_deliveries_in_flight",
        // Every family with HELP and TYPE, from start: an alert on a counter works before its first event.
        "# HELP tern_connections Connections accepted, by listener.\n",
        "# TYPE tern_delivery_attempts counter",
        "tern_delivery_attempts_total{transport=\"remote\",result=\"bounced\"} 0",
        "tern_messages_accepted_total{listener=\"local\"} 0",
        "tern_connections_open{listener=\"relay\"} 1.0",
        "tern_queue_oldest_message_age_seconds 0.0",
        "tern_tls_certificate_expiry_timestamp_seconds{cert=\"",
        "tern_build_info{version=\"",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "# EOF",
    ] {
        assert!(m.contains(want), "missing {want:?} in\n{m}");
    }
    assert!(http_get(admin, "/nope").await.starts_with("HTTP/1.1 404"));
}

#[tokio::test]
async fn sighup_reloads_for_new_sessions_and_refuses_a_bad_config() {
    let d = Daemon::start("[limits]\nmessage_size = 1000\n");
    let mut old = Raw::connect(d.addr).await;
    assert!(old.cmd("EHLO a.test").await.1.contains("SIZE 1000"));
    let config = d.dir.path().join("tern.toml");
    std::fs::write(&config, config_text("[limits]\nmessage_size = 5000\n")).unwrap();
    d.signal(1);
    assert!(d.wait_log("reloaded"), "{}", d.log_text());
    let mut new = Raw::connect(d.addr).await;
    assert!(
        new.cmd("EHLO b.test").await.1.contains("SIZE 5000"),
        "new sessions see the new limit"
    );
    assert_eq!(old.cmd("NOOP").await.0, 250, "established sessions go on");
    // A configuration that does not validate is refused, and the running one stays.
    std::fs::write(&config, config_text("[limits]\nmessage_size = 0\n")).unwrap();
    d.signal(1);
    assert!(d.wait_log("reload refused"), "{}", d.log_text());
    assert!(
        d.log_text()
            .contains("limits.message_size: must be greater than 0")
    );
    let mut third = Raw::connect(d.addr).await;
    assert!(third.cmd("EHLO c.test").await.1.contains("SIZE 5000"));
    // Keys that need a restart are named.
    std::fs::write(
        &config,
        config_text("[limits]\nmessage_size = 5000\nconnections = 10\n"),
    )
    .unwrap();
    d.signal(1);
    assert!(d.wait_log("key=\"limits.connections\""), "{}", d.log_text());
}

#[test]
fn json_logs_are_one_object_per_line() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text("").replace("level = \"info\"", "level = \"info\"\nformat = \"json\"");
    std::fs::write(dir.path().join("tern.toml"), text).unwrap();
    let mut child = Command::new(TERN)
        .args(["serve", "--config"])
        .arg(dir.path().join("tern.toml"))
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in stderr.lines().take(50) {
        let line = line.unwrap();
        let started = line.contains("tern started");
        seen.push(line);
        if started {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter()
            .any(|l| l.contains("\"message\":\"tern started\"")),
        "{seen:?}"
    );
    for l in &seen {
        assert!(
            l.starts_with('{') && l.ends_with('}'),
            "not a JSON object: {l}"
        );
    }
}

#[test]
fn systemd_is_told_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    std::fs::write(dir.path().join("tern.toml"), config_text("")).unwrap();
    let mut child = Command::new(TERN)
        .args(["serve", "--config"])
        .arg(dir.path().join("tern.toml"))
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let mut recv = || {
        let n = notify.recv(&mut buf).expect("a notification");
        let m = String::from_utf8_lossy(&buf[..n]).to_string();
        eprintln!("notify: {m:?}");
        m
    };
    assert!(recv().starts_with("READY=1"));
    Command::new("kill")
        .args(["-1", &child.id().to_string()])
        .status()
        .unwrap();
    let reloading = recv();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert!(recv().starts_with("READY=1"));
    // `tern reload` (the unit's ExecReload): success, then a refusal that exits non-zero with the reason and
    // tells systemd in STATUS= instead of claiming a fresh start.
    let config = dir.path().join("tern.toml");
    let reload = || {
        Command::new(TERN)
            .args(["reload", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(recv().starts_with("RELOADING=1"));
    assert!(recv().starts_with("READY=1\nSTATUS=accepting mail"));
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        good.replace("[domains]", "[limits]\nmessage_size = 0\n[domains]"),
    )
    .unwrap();
    let out = reload();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("limits.message_size"),
        "{err}"
    );
    assert!(recv().starts_with("RELOADING=1"));
    let status = recv();
    assert!(
        status.contains("STATUS=reload refused") && status.contains("message_size"),
        "{status}"
    );
    std::fs::write(&config, good).unwrap();
    Command::new("kill")
        .args(["-15", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(recv().starts_with("STOPPING=1"));
    assert!(child.wait().unwrap().success());
}

#[test]
fn root_is_dropped_for_the_configured_user_and_refused_without_one() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: skipping the privilege drop test");
        return;
    }
    let has_nobody = std::fs::read_to_string("/etc/passwd")
        .is_ok_and(|p| p.lines().any(|l| l.starts_with("nobody:")));
    if !has_nobody {
        eprintln!("no user nobody: skipping the privilege drop test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = config_text("").replace("allow_root = true", "");
    std::fs::write(dir.path().join("tern.toml"), &text).unwrap();
    let out = Command::new(TERN)
        .args(["serve", "--config"])
        .arg(dir.path().join("tern.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("running as root: set server.user"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The temp folder must be reachable by the unprivileged account.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = config_text("").replace("allow_root = true", "user = \"nobody\"");
    std::fs::write(dir.path().join("tern.toml"), &text).unwrap();
    let out = Command::new(TERN)
        .args(["user", "add", "alice@example.test", "--config"])
        .arg(dir.path().join("tern.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Run by root, the command ran as the service user: data_dir and the database it made are nobody's,
    // not root's, before the daemon ever started.
    use std::os::unix::fs::MetadataExt;
    for made in ["data", "data/tern.db"] {
        let uid = std::fs::metadata(dir.path().join(made)).unwrap().uid();
        assert_eq!(uid, 65534, "{made} is owned by uid {uid}");
    }
    let out = Command::new(TERN)
        .args([
            "dkim",
            "generate",
            "--domain",
            "example.test",
            "--selector",
            "s1",
            "--algorithm",
            "ed25519",
            "--config",
        ])
        .arg(dir.path().join("tern.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = std::fs::metadata(dir.path().join("data/dkim/example.test/s1.pem")).unwrap();
    assert_eq!((key.uid(), key.mode() & 0o777), (65534, 0o600));
    let d = Daemon::spawn(dir);
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Raw::connect(d.addr).await;
        c.cmd("EHLO peer.test").await;
        assert_eq!(
            c.send_message(
                "x@remote.test",
                "alice@example.test",
                "Subject: unprivileged\r\n\r\nx\r\n"
            )
            .await
            .0,
            250
        );
    });
    assert_eq!(
        d.wait_delivered("alice@example.test", 1).len(),
        1,
        "{}",
        d.log_text()
    );
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: skipping");
        return;
    };
    assert!(out.status.success());
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tern.service"))
        .unwrap();
    for want in [
        "Type=notify",
        "User=tern",
        "StateDirectory=tern",
        "RuntimeDirectory=tern",
        "RuntimeDirectoryMode=0755",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(want), "{want}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tern.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/tern", TERN)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn queue_and_user_lists_have_json_for_scripts() {
    let d = Daemon::start("");
    let out = crate::harness::tern(d.dir.path(), &["user", "list", "--json"]);
    let users: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(users.as_array().unwrap().len(), 2);
    assert_eq!(users[0]["address"], "alice@example.test");
    let out = crate::harness::tern(d.dir.path(), &["queue", "list", "--json"]);
    let queue: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(queue.as_array().unwrap().is_empty());
}
