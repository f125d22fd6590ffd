//! What each request to the http and https listeners gets, by host name and path, without I/O: ACME
//! http-01 challenges (http only), the MTA-STS policy (https only, host mta-sts.<domain>), and mail client
//! autoconfiguration (both) for the local domains. Anything else is 404; a bad address is 400.

use super::autoconfig::{self, Site};
use super::mta_sts;
use crate::config::MtaStsSettings;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Http,
    Https,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Http => "http",
            Role::Https => "https",
            Role::Admin => "admin",
        }
    }
}

/// A request as the router sees it.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Lower case, without port or trailing dot.
    pub host: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Extra headers (Allow, Cache-Control, Content-Disposition).
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, body: &str) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", format!("{body}\n"))
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// What the router reads, swapped whole by a reload.
#[derive(Debug, Clone)]
pub struct Routes {
    pub site: Site,
    /// Local domains, lower case.
    pub domains: Vec<String>,
    pub mta_sts: Option<MtaStsSettings>,
}

/// Answers for pending http-01 challenges: token to key authorization.
pub trait Challenges {
    fn key_authorization(&self, token: &str) -> Option<String>;
}

/// Decodes %XX and `+` in a query value; None for invalid escapes or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The value of `name` in the query: None when absent, Some(None) when it does not decode.
fn query_value(query: &str, name: &str) -> Option<Option<String>> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| percent_decode(v))
}

/// An address a client may be configured for: a dot-atom local part (RFC 5322 atext) at a local domain.
/// Returns it with the domain in lower case.
fn client_address(raw: &str, domains: &[String]) -> Result<String, Reply> {
    let bad = || Reply::text(400, "not an address of this server's domains");
    let (local, domain) = raw.trim().rsplit_once('@').ok_or_else(bad)?;
    let domain = domain.to_ascii_lowercase();
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let ok_local = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| atext(c) || c == '.');
    if !ok_local || !domains.contains(&domain) {
        return Err(bad());
    }
    Ok(format!("{local}@{domain}"))
}

/// The local domain a host name speaks for: `autoconfig.<d>`, `autodiscover.<d>`, or `<d>` itself.
fn domain_of_host<'a>(host: &'a str, domains: &[String]) -> Option<&'a str> {
    let d = host
        .strip_prefix("autoconfig.")
        .or_else(|| host.strip_prefix("autodiscover."))
        .unwrap_or(host);
    domains.iter().any(|x| x == d).then_some(d)
}

pub fn answer(role: Role, routes: &Routes, challenges: &dyn Challenges, req: &Request) -> Reply {
    let get = matches!(req.method, "GET" | "HEAD");
    let path = req.path;
    let lower = path.to_ascii_lowercase();
    if let Some(token) = path.strip_prefix("/.well-known/acme-challenge/") {
        if role != Role::Http {
            return Reply::text(404, "not found");
        }
        if !get {
            return Reply::text(405, "GET only").header("Allow", "GET, HEAD");
        }
        return match challenges.key_authorization(token) {
            Some(k) => Reply::new(200, "application/octet-stream", k),
            None => Reply::text(404, "no such challenge"),
        };
    }
    if path == "/.well-known/mta-sts.txt" {
        let Some(policy) = &routes.mta_sts else {
            return Reply::text(404, "no MTA-STS policy is published here");
        };
        let for_domain = req
            .host
            .strip_prefix("mta-sts.")
            .is_some_and(|d| routes.domains.iter().any(|x| x == d));
        // RFC 8461 section 3.3: HTTPS only, on the mta-sts host of the policy domain.
        if role != Role::Https || !for_domain {
            return Reply::text(404, "not found");
        }
        if !get {
            return Reply::text(405, "GET only").header("Allow", "GET, HEAD");
        }
        return Reply::new(200, "text/plain", mta_sts::policy_text(policy));
    }
    if lower == "/autodiscover/autodiscover.xml" {
        if req.method != "POST" {
            return Reply::text(405, "Autodiscover is a POST").header("Allow", "POST");
        }
        let body = String::from_utf8_lossy(req.body);
        let Some(raw) = autoconfig::autodiscover_address(&body) else {
            return Reply::text(400, "no <EMailAddress> in the request");
        };
        return match client_address(raw, &routes.domains) {
            Ok(a) => Reply::new(
                200,
                "application/xml; charset=utf-8",
                autoconfig::autodiscover(&routes.site, &a),
            ),
            Err(r) => r,
        };
    }
    let thunderbird =
        path == "/mail/config-v1.1.xml" || path == "/.well-known/autoconfig/mail/config-v1.1.xml";
    let apple = path == "/mail/config.mobileconfig";
    if !(thunderbird || apple) {
        return Reply::text(404, "not found");
    }
    if !get {
        return Reply::text(405, "GET only").header("Allow", "GET, HEAD");
    }
    let address = match query_value(req.query, "emailaddress") {
        Some(Some(a)) => match client_address(&a, &routes.domains) {
            Ok(a) => Some(a),
            Err(r) => return r,
        },
        Some(None) => return Reply::text(400, "emailaddress is not percent-encoded UTF-8"),
        None => None,
    };
    let domain = match &address {
        Some(a) => a.rsplit_once('@').map(|(_, d)| d.to_string()),
        None => domain_of_host(req.host, &routes.domains).map(str::to_string),
    };
    let Some(domain) = domain else {
        return Reply::text(404, "not a domain of this server");
    };
    if thunderbird {
        return Reply::new(
            200,
            "application/xml; charset=utf-8",
            autoconfig::thunderbird(&routes.site, &domain, address.as_deref()),
        )
        .header("Cache-Control", "max-age=3600");
    }
    let Some(address) = address else {
        return Reply::text(400, "add ?emailaddress=you@domain");
    };
    match autoconfig::mobileconfig(&routes.site, &address) {
        Some(p) => Reply::new(200, "application/x-apple-aspen-config", p).header(
            "Content-Disposition",
            format!(
                "attachment; filename=\"{}.mobileconfig\"",
                address.replace(['"', '\\'], "_")
            ),
        ),
        None => Reply::text(404, "this server has no IMAP/POP3 and submission listeners"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ListenerKind, MtaStsMode};
    use crate::web::autoconfig::Service;

    struct One;
    impl Challenges for One {
        fn key_authorization(&self, token: &str) -> Option<String> {
            (token == "tok").then(|| "tok.thumb".to_string())
        }
    }

    fn routes() -> Routes {
        Routes {
            site: Site {
                hostname: "mx.example.org".into(),
                services: vec![
                    Service {
                        kind: ListenerKind::Imaps,
                        port: 993,
                    },
                    Service {
                        kind: ListenerKind::Submissions,
                        port: 465,
                    },
                ],
            },
            domains: vec!["example.org".into()],
            mta_sts: Some(MtaStsSettings {
                mode: MtaStsMode::Enforce,
                mx: vec!["mx.example.org".into()],
                max_age: 86400,
            }),
        }
    }

    fn get(role: Role, host: &str, path: &str, query: &str) -> Reply {
        answer(
            role,
            &routes(),
            &One,
            &Request {
                method: "GET",
                host,
                path,
                query,
                body: b"",
            },
        )
    }

    #[test]
    fn challenges_only_over_http() {
        let r = get(
            Role::Http,
            "mx.example.org",
            "/.well-known/acme-challenge/tok",
            "",
        );
        assert_eq!((r.status, r.body.as_str()), (200, "tok.thumb"));
        assert_eq!(
            get(Role::Http, "x", "/.well-known/acme-challenge/other", "").status,
            404
        );
        assert_eq!(
            get(Role::Https, "x", "/.well-known/acme-challenge/tok", "").status,
            404
        );
    }

    #[test]
    fn the_policy_only_over_https_on_its_host() {
        let r = get(
            Role::Https,
            "mta-sts.example.org",
            "/.well-known/mta-sts.txt",
            "",
        );
        assert_eq!(r.status, 200);
        assert!(r.body.contains("mode: enforce\r\n"));
        for (role, host) in [
            (Role::Http, "mta-sts.example.org"),
            (Role::Https, "mta-sts.other.test"),
            (Role::Https, "example.org"),
        ] {
            assert_eq!(get(role, host, "/.well-known/mta-sts.txt", "").status, 404);
        }
    }

    #[test]
    fn autoconfig_by_host_or_address_and_nothing_for_strangers() {
        let r = get(
            Role::Http,
            "autoconfig.example.org",
            "/mail/config-v1.1.xml",
            "",
        );
        assert_eq!(r.status, 200);
        assert!(r.body.contains("%EMAILADDRESS%"));
        let r = get(
            Role::Https,
            "mx.example.org",
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            "emailaddress=alice%40Example.ORG",
        );
        assert!(r.body.contains("<username>alice@example.org</username>"));
        for q in [
            "emailaddress=alice%40other.test",
            "emailaddress=%3Cx%3E%40example.org",
            "emailaddress=a%0d%0aX%40example.org",
            "emailaddress=%ZZ",
        ] {
            assert_eq!(
                get(
                    Role::Http,
                    "autoconfig.example.org",
                    "/mail/config-v1.1.xml",
                    q
                )
                .status,
                400,
                "{q}"
            );
        }
        assert_eq!(
            get(
                Role::Http,
                "autoconfig.other.test",
                "/mail/config-v1.1.xml",
                ""
            )
            .status,
            404
        );
        let r = get(
            Role::Https,
            "autoconfig.example.org",
            "/mail/config.mobileconfig",
            "emailaddress=bob%40example.org",
        );
        assert_eq!(r.status, 200);
        assert!(r.headers[0].1.contains("bob@example.org.mobileconfig"));
    }

    #[test]
    fn autodiscover_is_a_post() {
        let post = |body: &[u8]| {
            answer(
                Role::Https,
                &routes(),
                &One,
                &Request {
                    method: "POST",
                    host: "autodiscover.example.org",
                    path: "/Autodiscover/Autodiscover.xml",
                    query: "",
                    body,
                },
            )
        };
        let r = post(b"<Request><EMailAddress>carol@example.org</EMailAddress></Request>");
        assert_eq!(r.status, 200);
        assert!(r.body.contains("<LoginName>carol@example.org</LoginName>"));
        assert_eq!(post(b"<Request/>").status, 400);
        assert_eq!(
            get(Role::Https, "x", "/autodiscover/autodiscover.xml", "").status,
            405
        );
    }
}
