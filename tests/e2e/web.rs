//! The http and https listeners: MTA-STS policy, Thunderbird autoconfig, Outlook Autodiscover and the Apple
//! profile, fetched with curl (name-based hosts through --resolve, SNI included) and parsed by Python's XML
//! and plist parsers; and what a stranger can do to them (oversized or slow requests, many connections).

use crate::harness::Daemon;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const WEB_LISTENERS: &str = r#"
[[listener]]
kind = "http"
bind = ["127.0.0.1:0"]
[[listener]]
kind = "https"
bind = ["127.0.0.1:0"]
[[listener]]
kind = "imaps"
bind = ["127.0.0.1:0"]
[[listener]]
kind = "submissions"
bind = ["127.0.0.1:0"]
[[listener]]
kind = "submission"
bind = ["127.0.0.1:0"]
"#;

/// curl with `host` resolving to the listener at `addr`; returns (status, body).
pub fn curl(
    scheme: &str,
    host: &str,
    addr: SocketAddr,
    path: &str,
    extra: &[&str],
) -> (u16, String) {
    let port = addr.port();
    let out = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("{scheme}://{host}:{port}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Runs Debian's python3 on `script` with `input` on stdin; returns stdout, asserting success.
fn python(script: &str, input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python: {}\n{input}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn mta_sts_policy_and_client_autoconfiguration() {
    let d = Daemon::start(&format!(
        "{WEB_LISTENERS}\n[mta_sts]\nmode = \"enforce\"\nmx = [\"mx.example.test\", \"*.backup.example.test\"]\nmax_age_secs = 86400\n"
    ));
    let (http, https) = (d.listener("http"), d.listener("https"));
    let (imaps, subs, sub) = (
        d.listener("imaps").port(),
        d.listener("submissions").port(),
        d.listener("submission").port(),
    );

    // MTA-STS: over HTTPS on mta-sts.<domain> only (RFC 8461 section 3.3).
    let (code, body) = curl(
        "https",
        "mta-sts.example.org",
        https,
        "/.well-known/mta-sts.txt",
        &[],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmx: *.backup.example.test\r\nmax_age: 86400\r\n"
    );
    assert_eq!(
        curl(
            "http",
            "mta-sts.example.org",
            http,
            "/.well-known/mta-sts.txt",
            &[]
        )
        .0,
        404
    );
    assert_eq!(
        curl(
            "https",
            "mta-sts.stranger.test",
            https,
            "/.well-known/mta-sts.txt",
            &[]
        )
        .0,
        404
    );

    // Thunderbird: the real listeners' ports, implicit TLS first, the address as login.
    let (code, xml) = curl(
        "http",
        "autoconfig.example.org",
        http,
        "/mail/config-v1.1.xml?emailaddress=alice%40example.org",
        &[],
    );
    assert_eq!(code, 200, "{xml}");
    let parsed = python(
        "import sys, xml.etree.ElementTree as E\nr = E.fromstring(sys.stdin.read())\np = r.find('emailProvider')\nprint(p.get('id'))\nfor s in list(p.findall('incomingServer')) + list(p.findall('outgoingServer')):\n    print(s.get('type'), s.findtext('hostname'), s.findtext('port'), s.findtext('socketType'), s.findtext('username'))\n",
        &xml,
    );
    assert_eq!(
        parsed,
        format!(
            "example.org\nimap mx.example.test {imaps} SSL alice@example.org\nsmtp mx.example.test {subs} SSL alice@example.org\nsmtp mx.example.test {sub} STARTTLS alice@example.org\n"
        )
    );
    let (code, xml) = curl(
        "https",
        "example.org",
        https,
        "/.well-known/autoconfig/mail/config-v1.1.xml",
        &[],
    );
    assert!(
        code == 200 && xml.contains("<username>%EMAILADDRESS%</username>"),
        "{code} {xml}"
    );

    // Outlook's Autodiscover POX, POSTed as Outlook does.
    let request = r#"<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>bob@example.org</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>"#;
    let (code, xml) = curl(
        "https",
        "autodiscover.example.org",
        https,
        "/Autodiscover/Autodiscover.xml",
        &["-H", "Content-Type: text/xml", "--data-binary", request],
    );
    assert_eq!(code, 200, "{xml}");
    let parsed = python(
        "import sys, xml.etree.ElementTree as E\nns = {'r': 'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a'}\nr = E.fromstring(sys.stdin.read())\nfor p in r.iterfind('.//r:Protocol', ns):\n    print(p.findtext('r:Type', namespaces=ns), p.findtext('r:Port', namespaces=ns), p.findtext('r:LoginName', namespaces=ns), p.findtext('r:Encryption', namespaces=ns))\n",
        &xml,
    );
    assert_eq!(
        parsed,
        format!(
            "IMAP {imaps} bob@example.org SSL\nSMTP {subs} bob@example.org SSL\nSMTP {sub} bob@example.org TLS\n"
        )
    );

    // The Apple profile, read by plistlib.
    let (code, plist) = curl(
        "https",
        "autoconfig.example.org",
        https,
        "/mail/config.mobileconfig?emailaddress=carol%40example.org",
        &[],
    );
    assert_eq!(code, 200, "{plist}");
    let parsed = python(
        "import sys, plistlib\np = plistlib.loads(sys.stdin.buffer.read())\na = p['PayloadContent'][0]\nprint(p['PayloadType'], a['PayloadType'], a['EmailAccountType'], a['IncomingMailServerPortNumber'], a['OutgoingMailServerPortNumber'], a['IncomingMailServerUsername'])\n",
        &plist,
    );
    assert_eq!(
        parsed,
        format!(
            "Configuration com.apple.mail.managed EmailTypeIMAP {imaps} {subs} carol@example.org\n"
        )
    );

    // Strangers: other domains, crafted addresses, unknown paths.
    for (path, want) in [
        ("/mail/config-v1.1.xml?emailaddress=x%40stranger.test", 400),
        (
            "/mail/config-v1.1.xml?emailaddress=a%0d%0aSet-Cookie:%20x%40example.org",
            400,
        ),
        (
            "/mail/config-v1.1.xml?emailaddress=%3Cscript%3E%40example.org",
            400,
        ),
        ("/../../etc/passwd", 404),
        ("/metrics", 404),
    ] {
        assert_eq!(
            curl("http", "autoconfig.example.org", http, path, &[]).0,
            want,
            "{path}"
        );
    }
    assert_eq!(
        curl(
            "http",
            "autoconfig.stranger.test",
            http,
            "/mail/config-v1.1.xml",
            &[]
        )
        .0,
        404
    );
    let lines = d.log_text();
    assert!(
        lines.contains("http request") && lines.contains("status=200"),
        "{lines}"
    );
}

#[tokio::test]
async fn oversized_slow_and_too_many_requests_are_cut_off() {
    let d = Daemon::start(&format!(
        "{WEB_LISTENERS}\n[http]\nheader_timeout_secs = 1\nmax_body_bytes = 1024\nmax_header_bytes = 8192\nmax_connections_per_ip = 3\n"
    ));
    let http = d.listener("http");
    let big = "x".repeat(4096);
    let (code, _) = curl(
        "http",
        "autodiscover.example.org",
        http,
        "/autodiscover/autodiscover.xml",
        &["--data-binary", &big],
    );
    assert_eq!(code, 413);
    let huge_header = format!("X-Junk: {}", "y".repeat(20_000));
    let (code, _) = curl(
        "http",
        "autoconfig.example.org",
        http,
        "/mail/config-v1.1.xml",
        &["-H", &huge_header],
    );
    assert_eq!(code, 431, "an oversized header section");

    // A client that says nothing is cut off once header_timeout_secs has passed.
    let mut silent = tokio::net::TcpStream::connect(http).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the server closes a silent connection")
        .unwrap_or(0);
    let _ = n;
    assert!(started.elapsed() < Duration::from_secs(5));

    // Per-client connection cap: the fourth connection is closed at once, while three idle ones are open.
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
        s.write_all(b"GET /mail/config-v1.1.xml HTTP/1.1\r\n")
            .await
            .unwrap();
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = tokio::net::TcpStream::connect(http).await.unwrap();
    let _ = fourth.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let n = tokio::time::timeout(Duration::from_millis(800), fourth.read(&mut buf))
        .await
        .expect("the connection over the cap is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    d.wait_log("connection refused: too many connections");
    drop(idle);
    // Once they are gone, the listener serves again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        curl(
            "http",
            "autoconfig.example.org",
            http,
            "/mail/config-v1.1.xml",
            &[]
        )
        .0,
        200
    );
}
