//! The shipped configuration parses; bad configurations give golden error messages.

use super::*;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("/etc/tern/tern.toml")).map_err(|e| e.to_string())
}

const MINIMAL: &str = r#"
[server]
hostname = "mx.example.test"
[[listener]]
kind = "relay"
bind = ["127.0.0.1:2525"]
[domains]
local = ["example.test"]
postmaster = "admin@example.test"
"#;

#[test]
fn embedded_default_parses_with_data_at_the_repository_root() {
    let cfg = Config::parse(EMBEDDED_DEFAULT, Path::new("/src/tern/config/tern.toml")).unwrap();
    assert_eq!(cfg.data_dir, Path::new("/src/tern/data"));
    assert_eq!(cfg.listeners[0].bind[0].to_string(), "127.0.0.1:2525");
    assert!(cfg.listeners[0].bind[0].ip().is_loopback());
    assert_eq!(cfg.limits.connections_per_ip, 50);
    let kinds: Vec<_> = cfg
        .listeners
        .iter()
        .map(|l| (l.kind, l.bind[0].port()))
        .collect();
    assert_eq!(
        kinds,
        [
            (ListenerKind::Relay, 2525),
            (ListenerKind::Submission, 2587),
            (ListenerKind::Submissions, 2465),
            (ListenerKind::Pop3, 2110),
            (ListenerKind::Pop3s, 2995),
            (ListenerKind::Imap, 2143),
            (ListenerKind::Imaps, 2993),
            (ListenerKind::ManageSieve, 24190),
            (ListenerKind::Http, 2080),
            (ListenerKind::Https, 2443)
        ]
    );
    assert_eq!(
        cfg.sendmail_socket,
        Path::new("/src/tern/data/sendmail.sock")
    );
    assert!(cfg.tls_files.is_none());
}

#[test]
fn defaults_fill_in_and_relative_paths_resolve_against_the_file() {
    let cfg = parse(MINIMAL).unwrap();
    assert_eq!(cfg.data_dir, Path::new("/etc/tern/data"));
    assert_eq!(cfg.limits.message_size, 26214400);
    assert_eq!(cfg.limits.command_timeout, Duration::from_secs(300));
    assert!(cfg.to_toml().contains("data_dir = \"/etc/tern/data\""));
}

#[test]
fn golden_errors() {
    let cases = [
        (
            MINIMAL.replace(
                r#"bind = ["127.0.0.1:2525"]"#,
                r#"bind = ["127.0.0.1:2525", "127.0.0.1:99999"]"#,
            ),
            r#"/etc/tern/tern.toml: listener[0].bind[1]: "127.0.0.1:99999" is not a socket address"#,
        ),
        (
            MINIMAL.replace("mx.example.test", "mx..bad"),
            r#"/etc/tern/tern.toml: server.hostname: "mx..bad" is not a domain name"#,
        ),
        (
            MINIMAL.replace(
                r#"postmaster = "admin@example.test""#,
                r#"postmaster = "admin""#,
            ),
            r#"/etc/tern/tern.toml: domains.postmaster: "admin" is not an address"#,
        ),
        (
            MINIMAL.replace(
                r#"bind = ["127.0.0.1:2525"]"#,
                r#"bind = ["unix:/run/x.sock"]"#,
            ),
            "/etc/tern/tern.toml: listener[0].bind[0]: Unix sockets are for lmtp listeners only",
        ),
        (
            format!("{MINIMAL}[limits]\ncommand_line = 100\n"),
            "/etc/tern/tern.toml: limits.command_line: 100 is below RFC 5321's minimum of 512",
        ),
        (
            format!("{MINIMAL}[limits]\nspool_threshold_kib = 4\n"),
            "/etc/tern/tern.toml: limits.spool_threshold_kib: 4 is outside 64 to 16384",
        ),
        (
            format!("{MINIMAL}[tls]\ncert = \"c.pem\"\n"),
            "/etc/tern/tern.toml: tls.key: tls.cert is set, so tls.key is needed too",
        ),
        (
            format!("{MINIMAL}[submission]\ntrusted_networks = [\"10.0.0.0/8\", \"10.1/16\"]\n"),
            r#"/etc/tern/tern.toml: submission.trusted_networks[1]: "10.1/16" is not an address or CIDR network"#,
        ),
        (
            format!(
                "{MINIMAL}[[filter]]\nkind = \"rspamd\"\nurl = \"http://127.0.0.1:11333\"\nvirus = true\n"
            ),
            r#"/etc/tern/tern.toml: filter[0].virus: is for kind = "milter" filters (clamav-milter): rspamd's answer does not say whether a virus was found"#,
        ),
        (
            format!("{MINIMAL}[checks]\ndnsbl_action = \"defer\"\n"),
            "/etc/tern/tern.toml: checks.dnsbl_action: defer is not allowed here",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse(&text).unwrap_err(), want);
    }
}

#[test]
fn unknown_keys_are_refused_with_the_key_named() {
    let e = parse(&format!("{MINIMAL}[limits]\nmesage_size = 5\n")).unwrap_err();
    assert!(e.starts_with("/etc/tern/tern.toml: "), "{e}");
    assert!(e.contains("mesage_size"), "{e}");
    let e = parse("[server]\nhostname = 5\n").unwrap_err();
    assert!(e.contains("hostname") || e.contains("string"), "{e}");
}

/// docs/configuration.md describes every key of the configuration, in its section: the documentation
/// cannot drift from the structs.
#[test]
fn every_configuration_key_is_documented() {
    let docs = include_str!("../../docs/configuration.md");
    let cfg = Config::parse(EMBEDDED_DEFAULT, Path::new("/src/tern/config/tern.toml")).unwrap();
    let value: toml::Value = toml::from_str(&cfg.to_toml()).unwrap();
    let section = |name: &str| -> &str {
        let header = format!("## [{name}]");
        let start = docs
            .find(&header)
            .unwrap_or_else(|| panic!("no section {header} in docs/configuration.md"));
        let rest = &docs[start + header.len()..];
        &rest[..rest.find("\n## ").unwrap_or(rest.len())]
    };
    for (table, content) in value.as_table().unwrap() {
        let name = if table == "listener" {
            "[listener]"
        } else {
            table.as_str()
        };
        let text = section(name);
        let keys: Vec<&String> = match content {
            toml::Value::Table(t) => t.keys().collect(),
            toml::Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_table())
                .flat_map(|t| t.keys())
                .collect(),
            _ => continue,
        };
        for key in keys {
            assert!(
                text.contains(&format!("`{key}`")),
                "docs/configuration.md [{table}] does not describe `{key}`"
            );
        }
    }
}

#[test]
fn acme_and_mta_sts_are_validated_and_warned_about() {
    let e = parse(&format!("{MINIMAL}[acme]\nenabled = true\n")).unwrap_err();
    assert_eq!(
        e,
        "/etc/tern/tern.toml: acme.challenge: http-01 is answered on a [[listener]] of kind \"http\", and there is none"
    );
    let e = parse(&format!("{MINIMAL}[mta_sts]\nmode = \"strict\"\n")).unwrap_err();
    assert!(e.contains("mta_sts.mode: \"strict\" is not"), "{e}");
    let e = parse(&format!(
        "{MINIMAL}[mta_sts]\nmx = [\"mx.example.test\\nmode: none\"]\n"
    ))
    .unwrap_err();
    assert!(e.contains("mta_sts.mx[0]"), "{e}");
    let e = parse(&format!(
        "{MINIMAL}[[listener]]\nkind = \"http\"\nbind = [\"127.0.0.1:2080\"]\n[acme]\nenabled = true\nnames = [\"*.example.test\"]\n"
    ))
    .unwrap_err();
    assert!(e.contains("dns-01"), "{e}");
    let cfg = parse(&format!(
        "{MINIMAL}[[listener]]\nkind = \"http\"\nbind = [\"127.0.0.1:2080\"]\n[acme]\nenabled = true\n[mta_sts]\n"
    ))
    .unwrap();
    let acme = cfg.acme.as_ref().unwrap();
    assert_eq!(
        acme.names,
        [
            "mx.example.test",
            "mta-sts.example.test",
            "autoconfig.example.test"
        ]
    );
    assert_eq!(acme.contact, ["mailto:admin@example.test"]);
    assert_eq!(cfg.mta_sts.as_ref().unwrap().mx, ["mx.example.test"]);
    let w = super::warnings(&cfg);
    assert!(w.iter().any(|w| w.contains("the CA cannot reach")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("not on port 80")), "{w:?}");
}
