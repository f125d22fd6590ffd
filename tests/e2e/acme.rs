//! ACME against Debian's pebble (the ACME test server) on loopback, resolving the names it validates through
//! the tests' DNS: a failing challenge retried, issue, renewal (pebble's short validity), and the new
//! certificate presented to a verifying client on IMAPS and HTTPS without a restart.

use crate::dns::{Rr, TestDns};
use crate::harness::Daemon;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Pebble {
    child: Child,
    directory: String,
    management: u16,
}

impl Pebble {
    /// What pebble signs with (a new root each run), from its management interface, saved in `dir`.
    fn root(&self, dir: &Path) -> std::path::PathBuf {
        let root = dir.join("pebble-root.pem");
        let out = Command::new("curl")
            .args(["-sSk", "-o"])
            .arg(&root)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        root
    }
}

/// Waits (a minute at most) until the daemon has installed `n` certificates.
fn wait_issued(d: &Daemon, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while d
        .log_text()
        .matches("acme: certificate issued and installed")
        .count()
        < n
    {
        assert!(
            Instant::now() < deadline,
            "no certificate: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts pebble with its own HTTPS certificate (a CA made here, whose file tern gets as acme.ca_file),
/// validating http-01 on `http_port` and issuing certificates valid for `validity` seconds.
fn pebble(dir: &Path, dns: &TestDns, http_port: u16, validity: u64) -> Option<Pebble> {
    pebble_with(dir, dns, http_port, free_port(), validity)
}

/// As [`pebble`], validating tls-alpn-01 on `tls_port`.
fn pebble_with(
    dir: &Path,
    dns: &TestDns,
    http_port: u16,
    tls_port: u16,
    validity: u64,
) -> Option<Pebble> {
    if Command::new("pebble").arg("-h").output().is_err() {
        return None;
    }
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=pebble test CA",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "pebble.key",
            "-out",
            "pebble.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "pebble.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "pebble.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    let (port, management) = (free_port(), free_port());
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{port}"),
        "managementListenAddress": format!("127.0.0.1:{management}"),
        "certificate": dir.join("pebble.pem"),
        "privateKey": dir.join("pebble.key"),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
        "certificateValidityPeriod": validity,
    }});
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
    let child = Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .arg("-dnsserver")
        .arg(dns.addr.to_string())
        // Validation at once rather than after pebble's random sleeps; its random badNonce answers stay on.
        .env("PEBBLE_VA_NOSLEEP", "1")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn pebble");
    let p = Pebble {
        child,
        directory: format!("https://127.0.0.1:{port}/dir"),
        management,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "pebble did not start: {}",
            std::fs::read_to_string(dir.join("pebble.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(p)
}

/// The serial of the certificate presented at `port` for `name`, verified against `root` (None when
/// verification fails).
fn presented_serial(port: u16, name: &str, root: &Path, alpn: Option<&str>) -> Option<String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args([
            "-servername",
            name,
            "-verify_return_error",
            "-verify_hostname",
            name,
            "-CAfile",
        ])
        .arg(root)
        .stdin(Stdio::null());
    if let Some(a) = alpn {
        cmd.args(["-alpn", a]);
    }
    let out = cmd.output().expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !text.contains("Verify return code: 0 (ok)") {
        return None;
    }
    let pem_start = text.find("-----BEGIN CERTIFICATE-----")?;
    let pem_end = text.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text[pem_start..pem_end].as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test]
async fn certificates_are_issued_retried_renewed_and_swapped_without_restart() {
    // autoconfig.example.test is missing from DNS at first: its http-01 validation fails.
    let dns = TestDns::start(vec![
        Rr::A("mx.example.test", "127.0.0.1"),
        Rr::A("mta-sts.example.test", "127.0.0.1"),
    ]);
    let work = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let Some(pebble) = pebble(work.path(), &dns, http_port, 24) else {
        eprintln!("pebble is not installed (apt-get install pebble): ACME not tested");
        return;
    };
    let d = Daemon::start_with_dns(&format!(
        "[[listener]]\nkind = \"http\"\nbind = [\"127.0.0.1:{http_port}\"]\n\
         [[listener]]\nkind = \"https\"\nbind = [\"127.0.0.1:0\"]\n\
         [[listener]]\nkind = \"imaps\"\nbind = [\"127.0.0.1:0\"]\n\
         [acme]\nenabled = true\ndirectory_url = \"{}\"\nca_file = \"{}\"\n\
         names = [\"mx.example.test\", \"mta-sts.example.test\", \"autoconfig.example.test\"]\n\
         retry_secs = 1\n{}",
        pebble.directory,
        work.path().join("ca.pem").display(),
        dns.config()
    ));
    assert!(d.wait_log("acme: order failed"), "{}", d.log_text());
    let failed = d.log_text();
    assert!(failed.contains("autoconfig.example.test"), "{failed}");
    dns.add(Rr::A("autoconfig.example.test", "127.0.0.1"));
    wait_issued(&d, 1);
    let root = pebble.root(work.path());
    let imaps = d.listener("imaps").port();
    let https = d.listener("https").port();
    let first = presented_serial(imaps, "mx.example.test", &root, None).unwrap_or_else(|| {
        panic!(
            "IMAPS does not present a verified certificate\n{}",
            d.log_text()
        )
    });
    assert_eq!(
        presented_serial(https, "mta-sts.example.test", &root, None).as_deref(),
        Some(first.as_str()),
        "HTTPS presents the same certificate for the MTA-STS name"
    );
    // The files are the service's alone.
    for f in ["acme/cert.pem", "acme/key.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.dir.path().join("data").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // Valid for 24 s: renewed with a third of that left, and presented from the next handshake.
    let deadline = Instant::now() + Duration::from_secs(60);
    let renewed = loop {
        assert!(Instant::now() < deadline, "not renewed: {}", d.log_text());
        std::thread::sleep(Duration::from_millis(500));
        if d.log_text()
            .matches("acme: certificate issued and installed")
            .count()
            < 2
        {
            continue;
        }
        if let Some(s) = presented_serial(imaps, "mx.example.test", &root, None)
            && s != first
        {
            break s;
        }
    };
    assert_ne!(renewed, first);
    drop(pebble);
}

/// tls-alpn-01 (RFC 8737): pebble validates over the https listener, which answers the acme-tls/1
/// handshake with the challenge certificate and serves ordinary clients the normal one meanwhile.
#[tokio::test]
async fn tls_alpn_01_is_answered_on_the_https_listener() {
    let dns = TestDns::start(vec![Rr::A("mx.example.test", "127.0.0.1")]);
    let work = tempfile::tempdir().unwrap();
    let https_port = free_port();
    // pebble's tlsPort is the listener's port; its httpPort points nowhere.
    let Some(pebble) = pebble_with(work.path(), &dns, free_port(), https_port, 3600) else {
        eprintln!("pebble is not installed (apt-get install pebble): ACME not tested");
        return;
    };
    let d = Daemon::start_with_dns(&format!(
        "[[listener]]\nkind = \"https\"\nbind = [\"127.0.0.1:{https_port}\"]\n\
         [acme]\nenabled = true\ndirectory_url = \"{}\"\nca_file = \"{}\"\n\
         names = [\"mx.example.test\"]\nchallenge = \"tls-alpn-01\"\nretry_secs = 1\n{}",
        pebble.directory,
        work.path().join("ca.pem").display(),
        dns.config()
    ));
    wait_issued(&d, 1);
    assert!(d.log_text().contains("answered a tls-alpn-01 challenge"));
    let root = pebble.root(work.path());
    assert!(
        presented_serial(https_port, "mx.example.test", &root, Some("http/1.1")).is_some(),
        "the issued certificate is not presented: {}",
        d.log_text()
    );
}
