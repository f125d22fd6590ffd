//! `tern doctor` against the tests' DNS: a zone published as `tern dns` says passes (exit 0), and a broken
//! one gets, record by record, the message that names what is wrong (exit 1).

use crate::dns::{Rr, TestDns};
use crate::harness::{Daemon, TERN};
use std::path::Path;
use std::process::Command;

const DOMAINS: &str = "[domains]\nlocal = [\"example.test\", \"example.org\", \"uncovered.test\"]\npostmaster = \"admin@example.test\"\n";

fn doctor(config: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(TERN)
        .arg("doctor")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("tern doctor");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    let shown = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), json, shown)
}

/// Every finding of the report as "SECTION CHECK STATUS: detail".
fn lines(report: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for s in report["sections"].as_array().expect("sections") {
        for f in s["findings"].as_array().unwrap() {
            out.push(format!(
                "{} {} {}: {}",
                s["name"].as_str().unwrap(),
                f["check"].as_str().unwrap(),
                f["status"].as_str().unwrap(),
                f["detail"].as_str().unwrap()
            ));
        }
    }
    out
}

fn has(lines: &[String], prefix: &str, text: &str) -> bool {
    lines
        .iter()
        .any(|l| l.starts_with(prefix) && l.contains(text))
}

#[tokio::test]
async fn a_good_zone_passes_and_each_broken_record_is_named() {
    let good = TestDns::start(vec![
        Rr::Mx("example.test", 10, "mx.example.test"),
        Rr::A("mx.example.test", "192.0.2.10"),
        Rr::Ptr("192.0.2.10", "mx.example.test"),
        Rr::Txt("example.test".into(), "v=spf1 ip4:192.0.2.10 -all".into()),
        Rr::Txt(
            "_dmarc.example.test".into(),
            "v=DMARC1; p=none; rua=mailto:postmaster@example.test".into(),
        ),
        Rr::Txt(
            "_smtp._tls.example.test".into(),
            "v=TLSRPTv1; rua=mailto:postmaster@example.test".into(),
        ),
        Rr::A("autoconfig.example.test", "192.0.2.10"),
        Rr::A("autodiscover.example.test", "192.0.2.10"),
    ]);
    let work = tempfile::tempdir().unwrap();
    let status = Command::new("openssl")
        .current_dir(work.path())
        .args([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "key.pem", "-out", "cert.pem", "-subj", "/CN=mx.example.test", "-days", "60",
            "-addext", "subjectAltName=DNS:mx.example.test,DNS:mta-sts.example.test,DNS:mta-sts.example.org,DNS:mta-sts.uncovered.test",
        ])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    // A certificate for another name, ending in five days, for the broken configuration.
    let status = Command::new("openssl")
        .current_dir(work.path())
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "other-key.pem",
            "-out",
            "other-cert.pem",
            "-subj",
            "/CN=other.test",
            "-days",
            "5",
            "-addext",
            "subjectAltName=DNS:other.test",
        ])
        .output()
        .unwrap();
    assert!(status.status.success());
    let body = format!(
        "{DOMAINS}[[listener]]\nkind = \"https\"\nbind = [\"127.0.0.1:0\"]\n\
         [mta_sts]\nmode = \"testing\"\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        work.path().join("cert.pem").display(),
        work.path().join("key.pem").display()
    );
    let d = Daemon::start_with_dns(&format!("{body}{}", good.config()));
    let config = d.dir.path().join("tern.toml");
    let run = |args: &[&str]| {
        let out = crate::harness::tern(d.dir.path(), args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run(&[
        "dkim",
        "generate",
        "--domain",
        "example.test",
        "--selector",
        "s1",
    ]);
    run(&["dkim", "activate", "--domain", "example.test", "s1"]);
    let keys: serde_json::Value = serde_json::from_str(&run(&["dkim", "list", "--json"])).unwrap();
    let record = keys[0]["record"].as_str().unwrap().to_string();
    good.add(Rr::Txt("s1._domainkey.example.test".into(), record.clone()));
    let zone = run(&["dns", "example.test"]);
    let sts = zone
        .lines()
        .find(|l| l.starts_with("_mta-sts.example.test."))
        .and_then(|l| l.split('"').nth(1))
        .expect("tern dns prints the MTA-STS TXT")
        .to_string();
    good.add(Rr::Txt("_mta-sts.example.test".into(), sts.clone()));
    // The host's public address is 192.0.2.10 (documentation space: only looked up, never connected to);
    // the port check connects where --probe says, the relay listener on loopback.
    let probe = d.addr.to_string();

    let (code, report, text) = doctor(&config, &["example.test", "--probe", &probe, "--json"]);
    let found = lines(&report);
    assert_eq!(code, 0, "{text}");
    for (prefix, want) in [
        ("example.test MX ok", "10 mx.example.test"),
        ("example.test SPF ok", "passes for 192.0.2.10"),
        ("example.test DKIM ok", "s1 is published"),
        ("example.test DMARC ok", "p=none"),
        ("example.test TLS-RPT ok", "published"),
        ("example.test MTA-STS ok", "matches the policy served"),
        ("example.test AUTOCONFIG ok", "points to this host"),
        (
            "host mx.example.test PTR ok",
            "192.0.2.10 → mx.example.test → 192.0.2.10",
        ),
        ("host mx.example.test TLS warn", "self-signed"),
        ("host mx.example.test PORT25 ok", "220 mx.example.test"),
    ] {
        assert!(
            has(&found, prefix, want),
            "missing {prefix} … {want} in\n{}",
            found.join("\n")
        );
    }

    // The same server, resolving through a broken zone.
    let mut lookups = String::from("v=spf1");
    let mut broken_records = Vec::new();
    for i in 0..11 {
        lookups.push_str(&format!(" include:spf{i}.example.org"));
        broken_records.push(Rr::Txt(format!("spf{i}.example.org"), "v=spf1 -all".into()));
    }
    lookups.push_str(" -all");
    broken_records.extend([
        Rr::Mx("example.test", 10, "mx.elsewhere.test"),
        Rr::A("mx.example.test", "192.0.2.10"),
        Rr::Ptr("192.0.2.10", "other.test"),
        Rr::Txt("example.test".into(), "v=spf1 mx -all".into()),
        Rr::Txt("example.test".into(), "v=spf1 a -all".into()),
        Rr::Txt(
            "s1._domainkey.example.test".into(),
            "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAnotthekey".into(),
        ),
        Rr::Txt("_mta-sts.example.test".into(), "v=STSv1; id=old1".into()),
        Rr::Txt("example.org".into(), lookups),
        Rr::Txt("uncovered.test".into(), "v=spf1 ip4:192.0.2.1 -all".into()),
        Rr::Txt("_dmarc.uncovered.test".into(), "v=DMARC1; p=maybe".into()),
    ]);
    let broken = TestDns::start(broken_records);
    let text = std::fs::read_to_string(&config).unwrap();
    let broken_config = d.dir.path().join("broken.toml");
    std::fs::write(
        &broken_config,
        text.replace(&good.addr.to_string(), &broken.addr.to_string())
            .replace("cert.pem", "other-cert.pem")
            .replace("key.pem", "other-key.pem"),
    )
    .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, report, text) = doctor(
        &broken_config,
        &["--probe", &format!("127.0.0.1:{closed}"), "--json"],
    );
    assert_eq!(code, 1, "{text}");
    let found = lines(&report);
    for (prefix, want) in [
        (
            "example.test MX fail",
            "MX points elsewhere (10 mx.elsewhere.test)",
        ),
        ("example.test SPF fail", "2 SPF records"),
        ("example.test DKIM fail", "is not the active one"),
        ("example.test DMARC fail", "no DMARC record"),
        ("example.test TLS-RPT warn", "no TLS-RPT record"),
        (
            "example.test MTA-STS fail",
            &format!(
                "publishes id=old1 but the policy served now has id={}",
                sts.trim_start_matches("v=STSv1; id=")
            ),
        ),
        (
            "example.org SPF fail",
            "needs 11 DNS lookups, over the limit of 10",
        ),
        ("example.org DKIM fail", "no active DKIM key"),
        (
            "uncovered.test SPF fail",
            "gives fail for this host's address 192.0.2.10",
        ),
        ("uncovered.test DMARC fail", "has no valid p= tag"),
        (
            "host mx.example.test PTR fail",
            "names other.test, not mx.example.test",
        ),
        (
            "host mx.example.test PORT25 fail",
            "not reachable from this host",
        ),
        (
            "host mx.example.test TLS fail",
            "does not name mx.example.test (it names other.test)",
        ),
        (
            "host mx.example.test TLS fail",
            "does not name mta-sts.example.test",
        ),
        (
            "host mx.example.test TLS fail",
            "the certificate expires in ",
        ),
    ] {
        assert!(
            has(&found, prefix, want),
            "missing {prefix} … {want} in\n{}",
            found.join("\n")
        );
    }
    // The text form says the same, with the fix under each failure.
    let (code, _, text) = doctor(
        &broken_config,
        &["example.test", "--probe", &format!("127.0.0.1:{closed}")],
    );
    assert_eq!(code, 1);
    assert!(
        text.contains("FAIL  MX")
            && text.contains("fix: publish example.test. MX 10 mx.example.test."),
        "{text}"
    );
}
