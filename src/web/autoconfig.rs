//! Mail client autoconfiguration documents describing tern's real listeners, with the user's address as
//! login: Thunderbird's autoconfig (config-v1.1.xml), Outlook's Autodiscover POX answer, and an unsigned Apple
//! configuration profile (.mobileconfig) for iOS and macOS Mail. Implicit TLS comes first (RFC 8314).

use crate::config::ListenerKind;

/// A client-facing listener: its kind and the port clients reach it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    pub kind: ListenerKind,
    pub port: u16,
}

/// What the documents are made from.
#[derive(Debug, Clone)]
pub struct Site {
    /// The name clients connect to (server.hostname).
    pub hostname: String,
    pub services: Vec<Service>,
}

/// The protocol, whether TLS is implicit, and the rank (lower first) of each kind clients use.
fn role(kind: ListenerKind) -> Option<(&'static str, bool, u8)> {
    Some(match kind {
        ListenerKind::Imaps => ("imap", true, 0),
        ListenerKind::Imap => ("imap", false, 1),
        ListenerKind::Pop3s => ("pop3", true, 2),
        ListenerKind::Pop3 => ("pop3", false, 3),
        ListenerKind::Submissions => ("smtp", true, 4),
        ListenerKind::Submission => ("smtp", false, 5),
        _ => return None,
    })
}

impl Site {
    /// (protocol, implicit TLS, port), best first.
    fn offered(&self) -> Vec<(&'static str, bool, u16)> {
        let mut v: Vec<(u8, &'static str, bool, u16)> = self
            .services
            .iter()
            .filter_map(|s| role(s.kind).map(|(p, tls, rank)| (rank, p, tls, s.port)))
            .collect();
        v.sort();
        v.dedup_by_key(|e| e.0);
        v.into_iter()
            .map(|(_, p, tls, port)| (p, tls, port))
            .collect()
    }
}

/// Escapes text for XML character data and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Thunderbird's config-v1.1.xml for `domain`; `address` (when the client sent one) becomes the login, else
/// the placeholder Thunderbird fills in with what the user typed.
pub fn thunderbird(site: &Site, domain: &str, address: Option<&str>) -> String {
    let user = address.map_or("%EMAILADDRESS%".to_string(), xml_escape);
    let domain = xml_escape(domain);
    let host = xml_escape(&site.hostname);
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  <emailProvider id=\"{domain}\">\n    <domain>{domain}</domain>\n    <displayName>{domain}</displayName>\n    <displayShortName>{domain}</displayShortName>\n"
    );
    for (proto, tls, port) in site.offered() {
        let (tag, kind) = match proto {
            "smtp" => ("outgoingServer", "smtp"),
            p => ("incomingServer", p),
        };
        let socket = if tls { "SSL" } else { "STARTTLS" };
        x.push_str(&format!(
            "    <{tag} type=\"{kind}\">\n      <hostname>{host}</hostname>\n      <port>{port}</port>\n      <socketType>{socket}</socketType>\n      <authentication>password-cleartext</authentication>\n      <username>{user}</username>\n    </{tag}>\n"
        ));
    }
    x.push_str("  </emailProvider>\n</clientConfig>\n");
    x
}

/// The address in an Autodiscover POX request (`<EMailAddress>` of
/// http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006), as written.
pub fn autodiscover_address(body: &str) -> Option<&str> {
    let start = body.find("<EMailAddress>")? + "<EMailAddress>".len();
    let len = body[start..].find("</EMailAddress>")?;
    Some(body[start..start + len].trim())
}

/// The Autodiscover POX answer (responseschema 2006a) for `address`.
pub fn autodiscover(site: &Site, address: &str) -> String {
    let user = xml_escape(address);
    let host = xml_escape(&site.hostname);
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n  <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n    <User>\n",
    );
    x.push_str(&format!(
        "      <DisplayName>{user}</DisplayName>\n    </User>\n    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n"
    ));
    for (proto, tls, port) in site.offered() {
        let kind = match proto {
            "imap" => "IMAP",
            "pop3" => "POP3",
            _ => "SMTP",
        };
        let encryption = if tls { "SSL" } else { "TLS" };
        x.push_str(&format!(
            "      <Protocol>\n        <Type>{kind}</Type>\n        <Server>{host}</Server>\n        <Port>{port}</Port>\n        <LoginName>{user}</LoginName>\n        <DomainRequired>off</DomainRequired>\n        <SPA>off</SPA>\n        <SSL>on</SSL>\n        <Encryption>{encryption}</Encryption>\n        <AuthRequired>on</AuthRequired>\n      </Protocol>\n"
        ));
    }
    x.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
    x
}

/// A UUID (version 8, RFC 9562) derived from `seed`, stable across requests so that installing the profile
/// again replaces it rather than adding a second account.
fn uuid_from(seed: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// An unsigned configuration profile with one com.apple.mail.managed account for `address`; None when
/// tern has no incoming or no outgoing listener to describe.
pub fn mobileconfig(site: &Site, address: &str) -> Option<String> {
    let offered = site.offered();
    let incoming = offered.iter().find(|o| o.0 != "smtp")?;
    let outgoing = offered.iter().find(|o| o.0 == "smtp")?;
    let user = xml_escape(address);
    let host = xml_escape(&site.hostname);
    let reverse: Vec<&str> = site.hostname.rsplit('.').collect();
    let ident = xml_escape(&reverse.join("."));
    let bool_tag = |b: bool| if b { "<true/>" } else { "<false/>" };
    let account_type = if incoming.0 == "imap" {
        "EmailTypeIMAP"
    } else {
        "EmailTypePOP"
    };
    Some(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>PayloadContent</key>
  <array>
    <dict>
      <key>EmailAccountDescription</key><string>{user}</string>
      <key>EmailAccountType</key><string>{account_type}</string>
      <key>EmailAddress</key><string>{user}</string>
      <key>IncomingMailServerAuthentication</key><string>EmailAuthPassword</string>
      <key>IncomingMailServerHostName</key><string>{host}</string>
      <key>IncomingMailServerPortNumber</key><integer>{in_port}</integer>
      <key>IncomingMailServerUseSSL</key>{in_tls}
      <key>IncomingMailServerUsername</key><string>{user}</string>
      <key>OutgoingMailServerAuthentication</key><string>EmailAuthPassword</string>
      <key>OutgoingMailServerHostName</key><string>{host}</string>
      <key>OutgoingMailServerPortNumber</key><integer>{out_port}</integer>
      <key>OutgoingMailServerUseSSL</key>{out_tls}
      <key>OutgoingMailServerUsername</key><string>{user}</string>
      <key>OutgoingPasswordSameAsIncomingPassword</key><true/>
      <key>PayloadDescription</key><string>Mail account {user}</string>
      <key>PayloadDisplayName</key><string>{user}</string>
      <key>PayloadIdentifier</key><string>{ident}.mail.account</string>
      <key>PayloadType</key><string>com.apple.mail.managed</string>
      <key>PayloadUUID</key><string>{account_uuid}</string>
      <key>PayloadVersion</key><integer>1</integer>
    </dict>
  </array>
  <key>PayloadDisplayName</key><string>Mail: {user}</string>
  <key>PayloadIdentifier</key><string>{ident}.mail</string>
  <key>PayloadRemovalDisallowed</key><false/>
  <key>PayloadType</key><string>Configuration</string>
  <key>PayloadUUID</key><string>{profile_uuid}</string>
  <key>PayloadVersion</key><integer>1</integer>
</dict>
</plist>
"#,
        in_port = incoming.2,
        // Apple's UseSSL also covers STARTTLS: Mail upgrades when the server offers it.
        in_tls = bool_tag(true),
        out_port = outgoing.2,
        out_tls = bool_tag(true),
        account_uuid = uuid_from(&format!("account {address}")),
        profile_uuid = uuid_from(&format!("profile {address}")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site {
            hostname: "mx.example.org".into(),
            services: vec![
                Service {
                    kind: ListenerKind::Submission,
                    port: 587,
                },
                Service {
                    kind: ListenerKind::Imaps,
                    port: 993,
                },
                Service {
                    kind: ListenerKind::Relay,
                    port: 25,
                },
                Service {
                    kind: ListenerKind::Submissions,
                    port: 465,
                },
            ],
        }
    }

    #[test]
    fn implicit_tls_first_and_relay_never_offered() {
        assert_eq!(
            site().offered(),
            vec![
                ("imap", true, 993),
                ("smtp", true, 465),
                ("smtp", false, 587)
            ]
        );
    }

    #[test]
    fn addresses_are_escaped_and_found() {
        let x = thunderbird(&site(), "example.org", Some("a&b@example.org"));
        assert!(
            x.contains("<username>a&amp;b@example.org</username>"),
            "{x}"
        );
        assert!(!x.contains(":25<") && !x.contains(">25<"));
        let body = "<Autodiscover><Request><EMailAddress> alice@example.org </EMailAddress></Request></Autodiscover>";
        assert_eq!(autodiscover_address(body), Some("alice@example.org"));
        assert_eq!(autodiscover_address("<EMailAddress>x"), None);
        let u = uuid_from("x");
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "8");
    }
}
