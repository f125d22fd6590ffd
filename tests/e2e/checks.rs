//! Inbound checks on the relay listener: SPF, DKIM (fixtures signed by python3-dkim and by mail-auth), DMARC
//! actions, ARC recorded, blocklists, greylisting, forged Authentication-Results, subaddressing, FCrDNS.

use crate::dns::{Rr, TestDns};
use crate::harness::{Daemon, Raw};

const FIXTURE: &str = include_str!("../fixtures/signed-by-dkimpy.eml");
const FIXTURE_KEY: &str = include_str!("../fixtures/dkim/fixture.dns");

fn zone() -> Vec<Rr> {
    vec![
        Rr::Txt("sender.test".into(), "v=spf1 ip4:127.0.0.0/8 -all".into()),
        Rr::Txt(
            "fixture._domainkey.sender.test".into(),
            FIXTURE_KEY.trim().to_string(),
        ),
        Rr::Txt("_dmarc.sender.test".into(), "v=DMARC1; p=reject".into()),
        Rr::Txt("strict.test".into(), "v=spf1 -all".into()),
        Rr::Txt("_dmarc.strict.test".into(), "v=DMARC1; p=reject".into()),
        Rr::Txt("quarantine.test".into(), "v=spf1 -all".into()),
        Rr::Txt(
            "_dmarc.quarantine.test".into(),
            "v=DMARC1; p=quarantine".into(),
        ),
        Rr::Txt("nodmarc.test".into(), "v=spf1 -all".into()),
        Rr::A("mail.sender.test", "127.0.0.5"),
        Rr::A("1.0.0.127.bl.test", "127.0.0.2"),
        Rr::A("5.0.0.127.bl.test", "127.0.0.2"),
    ]
}

/// A daemon whose checks apply to loopback clients too (they are skipped by default).
fn daemon(extra: &str) -> Daemon {
    let dns = TestDns::start(zone());
    let mut d = Daemon::start_with_dns(&format!(
        "[checks]\nskip_networks = []\n{extra}\n{}",
        dns.config()
    ));
    d.dns = Some(dns);
    d
}

/// Sends `message` (CRLF) from `from` to `to`; returns the final reply.
async fn send(d: &Daemon, from: &str, to: &str, message: &str) -> (u16, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.5:0".parse().unwrap()).unwrap();
    let mut c = Raw::from_stream(socket.connect(d.addr).await.unwrap());
    assert_eq!(c.reply().await.0, 220);
    c.cmd("EHLO mail.sender.test").await;
    let (code, text) = c.cmd(&format!("MAIL FROM:<{from}>")).await;
    assert_eq!(code, 250, "{text}");
    let (code, text) = c.cmd(&format!("RCPT TO:<{to}>")).await;
    if code != 250 {
        return (code, text);
    }
    assert_eq!(c.cmd("DATA").await.0, 354);
    let mut data = String::new();
    for line in message.split_inclusive("\r\n") {
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
    }
    c.send(format!("{data}.\r\n").as_bytes()).await;
    c.reply().await
}

fn read_one(d: &Daemon, user: &str) -> String {
    let files = d.wait_delivered(user, 1);
    assert_eq!(files.len(), 1, "{}", d.log_text());
    std::fs::read_to_string(&files[0]).unwrap()
}

#[tokio::test]
async fn pass_pass_pass_lands_in_the_inbox_with_the_results_header() {
    let d = daemon("");
    let (code, text) = send(&d, "news@sender.test", "alice@example.test", FIXTURE).await;
    assert_eq!(code, 250, "{text}");
    let got = read_one(&d, "alice@example.test");
    let ar: String = got
        .lines()
        .skip_while(|l| !l.starts_with("Authentication-Results:"))
        .take_while(|l| !l.starts_with("DKIM-Signature"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        ar.starts_with("Authentication-Results: mx.example.test;"),
        "{got}"
    );
    for want in [
        "dkim=pass",
        "header.d=sender.test",
        "header.s=fixture",
        "spf=pass",
        "smtp.mailfrom=news@sender.test",
        "dmarc=pass",
        "header.from=sender.test",
        "arc=none",
    ] {
        assert!(ar.contains(want), "missing {want}: {ar}");
    }
    // Forward-confirmed reverse DNS cannot be shown on loopback: the resolver answers 127.in-addr.arpa
    // itself (RFC 6761), so the name stays "unknown" here.
    assert!(got.contains("(unknown [127.0.0.5])"), "{got}");
    let log = d.log_text();
    assert!(
        log.contains("checks=\"spf=pass dkim=pass dmarc=pass"),
        "verdict in the log lines: {log}"
    );
}

#[tokio::test]
async fn a_forged_from_with_p_reject_is_refused_at_data() {
    let d = daemon("");
    let msg = "From: CEO <ceo@strict.test>\r\nSubject: wire money\r\n\r\nnow\r\n";
    let (code, text) = send(&d, "attacker@strict.test", "alice@example.test", msg).await;
    assert_eq!(code, 550, "{text}");
    assert!(
        text.starts_with("550 5.7.1") && text.contains("strict.test") && text.contains("p=reject"),
        "{text}"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(d.delivered("alice@example.test").is_empty());
}

#[tokio::test]
async fn p_quarantine_lands_in_the_junk_folder() {
    let d = daemon("");
    let msg = "From: x@quarantine.test\r\nSubject: suspicious\r\n\r\nhello\r\n";
    assert_eq!(
        send(&d, "x@quarantine.test", "alice@example.test", msg)
            .await
            .0,
        250
    );
    let junk = d.maildir("alice@example.test").join(".Junk");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(junk.join("new"))
        .map(|e| e.count())
        .unwrap_or(0)
        == 0
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let files: Vec<_> = std::fs::read_dir(junk.join("new"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1);
    assert!(
        junk.join("maildirfolder").exists()
            && junk.join("cur").is_dir()
            && junk.join("tmp").is_dir()
    );
    assert!(
        d.delivered("alice@example.test").is_empty(),
        "not in the inbox"
    );
    let text = std::fs::read_to_string(files[0].path()).unwrap();
    assert!(
        text.contains("dmarc=fail") && text.contains("policy.dmarc=quarantine"),
        "{text}"
    );
}

#[tokio::test]
async fn a_body_altered_after_signing_fails_dkim() {
    let d = daemon("");
    let altered = FIXTURE.replace(
        "an independent DKIM implementation",
        "a forged implementation",
    );
    assert_eq!(
        send(&d, "news@sender.test", "alice@example.test", &altered)
            .await
            .0,
        250
    );
    let got = read_one(&d, "alice@example.test");
    assert!(!got.contains("dkim=pass"), "{got}");
    assert!(
        got.contains("dkim=neutral") || got.contains("dkim=fail"),
        "{got}"
    );
    // Still aligned SPF: DMARC passes through SPF, so it is delivered.
    assert!(
        got.contains("spf=pass") && got.contains("dmarc=pass"),
        "{got}"
    );
}

#[tokio::test]
async fn an_spf_fail_without_dmarc_is_delivered_with_the_header_by_default() {
    let d = daemon("");
    let msg = "From: x@nodmarc.test\r\nSubject: spf\r\n\r\nhello\r\n";
    assert_eq!(
        send(&d, "x@nodmarc.test", "alice@example.test", msg)
            .await
            .0,
        250
    );
    let got = read_one(&d, "alice@example.test");
    assert!(
        got.contains("spf=fail") && got.contains("smtp.mailfrom=x@nodmarc.test"),
        "{got}"
    );
    // Configured to reject instead:
    let d = daemon("spf_fail = \"reject\"\n");
    let (code, text) = send(&d, "x@nodmarc.test", "alice@example.test", msg).await;
    assert!(code == 550 && text.contains("SPF"), "{text}");
}

#[tokio::test]
async fn a_message_signed_by_mail_auth_passes() {
    use mail_auth::common::crypto::Ed25519Key;
    use mail_auth::common::headers::HeaderWriter;
    use mail_auth::dkim::DkimSigner;
    let pkcs8 = Ed25519Key::generate_pkcs8().unwrap();
    let key = Ed25519Key::from_pkcs8_der(&pkcs8).unwrap();
    let public =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.public_key());
    let d = daemon("");
    d.dns.as_ref().unwrap().add(Rr::Txt(
        "ed._domainkey.sender.test".into(),
        format!("v=DKIM1; k=ed25519; p={public}"),
    ));
    let body = "From: news@sender.test\r\nSubject: ed25519\r\nMessage-ID: <e@sender.test>\r\n\r\nsigned by mail-auth\r\n";
    let sig = DkimSigner::from_key(key)
        .domain("sender.test")
        .selector("ed")
        .headers(["From", "Subject", "Message-ID"])
        .sign(body.as_bytes())
        .unwrap();
    let msg = format!("{}{body}", sig.to_header());
    assert_eq!(
        send(&d, "news@sender.test", "alice@example.test", &msg)
            .await
            .0,
        250
    );
    let got = read_one(&d, "alice@example.test");
    assert!(
        got.contains("dkim=pass") && got.contains("header.s=ed"),
        "{got}"
    );
}

#[tokio::test]
async fn a_blocklisted_client_is_refused_at_connection_time() {
    let d = daemon("dnsbl = [\"bl.test\"]\n");
    let mut c = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(
        crate::harness::IO_TIMEOUT,
        tokio::io::AsyncReadExt::read(&mut c, &mut buf),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("554 5.7.1 Client host [127.0.0.1] blocked using bl.test"),
        "{text}"
    );
    // The allow list skips the blocklist.
    let d = daemon("dnsbl = [\"bl.test\"]\nallow = [\"127.0.0.1\"]\n");
    let mut c = Raw::connect(d.addr).await;
    assert_eq!(c.cmd("NOOP").await.0, 250);
}

/// Files in a folder's new/, waited for up to 10 s.
fn wait_files(dir: &std::path::Path, n: usize) -> Vec<std::path::PathBuf> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let files: Vec<_> = std::fs::read_dir(dir.join("new"))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if files.len() >= n || std::time::Instant::now() > deadline {
            return files;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test]
async fn with_dnsbl_action_junk_a_listed_client_is_greeted_and_one_decision_weighs_every_verdict() {
    let d = daemon("dnsbl = [\"bl.test\"]\ndnsbl_action = \"junk\"\n");
    // Listed (127.0.0.5 is in bl.test), otherwise clean: Junk, for the listing alone.
    let (code, text) = send(&d, "news@sender.test", "alice@example.test", FIXTURE).await;
    assert_eq!(code, 250, "{text}");
    let junk = d.maildir("alice@example.test").join(".Junk");
    assert_eq!(wait_files(&junk, 1).len(), 1, "{}", d.log_text());
    assert!(
        d.wait_log("fate=junk reasons=dnsbl:bl.test "),
        "{}",
        d.log_text()
    );
    // Listed and failing DMARC p=quarantine: both reasons are named.
    let msg = "From: x@quarantine.test\r\nSubject: suspicious\r\n\r\nhello\r\n";
    let (code, _) = send(&d, "x@quarantine.test", "alice@example.test", msg).await;
    assert_eq!(code, 250);
    assert_eq!(wait_files(&junk, 2).len(), 2);
    assert!(
        d.wait_log("fate=junk reasons=\"dnsbl:bl.test,dmarc:p=quarantine\""),
        "{}",
        d.log_text()
    );
    // A refusal outweighs the listing: p=reject is refused, with its reasons.
    let msg = "From: x@strict.test\r\nSubject: forged\r\n\r\nhello\r\n";
    let (code, text) = send(&d, "x@strict.test", "alice@example.test", msg).await;
    assert_eq!(code, 550, "{text}");
    assert!(
        d.wait_log("fate=refuse reasons=\"dnsbl:bl.test,dmarc:p=reject\""),
        "{}",
        d.log_text()
    );
    assert_eq!(wait_files(&junk, 3).len(), 2);
    assert!(d.delivered("alice@example.test").is_empty());
    // 127.0.0.6 is not listed: an unlisted client's clean mail goes to the inbox, fate=deliver.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.6:0".parse().unwrap()).unwrap();
    let mut c = Raw::from_stream(socket.connect(d.addr).await.unwrap());
    assert_eq!(c.reply().await.0, 220);
    c.cmd("EHLO mail.sender.test").await;
    let (code, _) = c
        .send_message("news@sender.test", "bob@example.test", FIXTURE)
        .await;
    assert_eq!(code, 250);
    assert_eq!(d.wait_delivered("bob@example.test", 1).len(), 1);
    assert!(d.wait_log("fate=deliver reasons="), "{}", d.log_text());
    // The listing counts with SPF/DKIM/DMARC turned off too.
    let d = daemon("enabled = false\ndnsbl = [\"bl.test\"]\ndnsbl_action = \"junk\"\n");
    let (code, _) = send(&d, "news@sender.test", "alice@example.test", FIXTURE).await;
    assert_eq!(code, 250);
    let junk = d.maildir("alice@example.test").join(".Junk");
    assert_eq!(wait_files(&junk, 1).len(), 1, "{}", d.log_text());
    assert!(
        d.wait_log("fate=junk reasons=dnsbl:bl.test "),
        "{}",
        d.log_text()
    );
}

#[tokio::test]
async fn greylisting_defers_a_new_triplet_then_accepts_the_retry() {
    let d = daemon("[greylist]\nenabled = true\ndelay_secs = 0\n");
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO mail.sender.test").await;
    c.cmd("MAIL FROM:<news@sender.test>").await;
    let (code, text) = c.cmd("RCPT TO:<alice@example.test>").await;
    assert_eq!(code, 451, "{text}");
    assert!(text.starts_with("451 4.7.1"), "{text}");
    c.cmd("RSET").await;
    c.cmd("MAIL FROM:<news@sender.test>").await;
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.test>").await.0,
        250,
        "the retry is accepted"
    );
}

#[tokio::test]
async fn forged_authentication_results_claiming_our_name_are_removed() {
    let d = daemon("");
    let msg = "Authentication-Results: mx.example.test; dkim=pass header.d=forged.test\r\n\
               Authentication-Results: elsewhere.test; spf=pass\r\nFrom: x@nodmarc.test\r\nSubject: forged\r\n\r\nx\r\n";
    assert_eq!(
        send(&d, "x@nodmarc.test", "alice@example.test", msg)
            .await
            .0,
        250
    );
    let got = read_one(&d, "alice@example.test");
    assert!(!got.contains("forged.test"), "{got}");
    assert_eq!(
        got.matches("Authentication-Results: mx.example.test")
            .count(),
        1,
        "{got}"
    );
    assert!(
        got.contains("Authentication-Results: elsewhere.test"),
        "other servers' results are kept: {got}"
    );
}

#[tokio::test]
async fn subaddresses_deliver_to_the_user() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.addr).await;
    c.cmd("EHLO peer.test").await;
    let (code, _) = c
        .send_message(
            "x@remote.test",
            "alice+lists@example.test",
            "Subject: tagged\r\n\r\nx\r\n",
        )
        .await;
    assert_eq!(code, 250);
    let got = read_one(&d, "alice@example.test");
    assert!(got.contains("for <alice+lists@example.test>"), "{got}");
    c.cmd("MAIL FROM:<x@remote.test>").await;
    assert_eq!(c.cmd("RCPT TO:<nobody+x@example.test>").await.0, 550);
}
