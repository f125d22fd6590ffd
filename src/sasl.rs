//! SMTP AUTH mechanisms (RFC 4954): PLAIN (RFC 4616) and LOGIN, as a pure exchange of base64 lines.
//!
//! This module only decodes what the client says; checking the password is `directory`'s job, and throttling
//! failed logins is `inbound`'s. Decoded passwords never reach a log line.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    pub fn parse(name: &str) -> Option<Mechanism> {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Some(Mechanism::Plain),
            "LOGIN" => Some(Mechanism::Login),
            _ => None,
        }
    }
}

/// What the client proved: an identity and a password to check.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslError {
    /// The client sent `*` (RFC 4954 4).
    Cancelled,
    /// Not base64, not UTF-8, or not the mechanism's format.
    Malformed(&'static str),
}

/// The next step of an exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send `334 <challenge>` and wait for a line.
    Challenge(String),
    Done(Credentials),
    Failed(SaslError),
}

/// One authentication exchange in progress.
#[derive(Debug, Clone)]
pub enum Exchange {
    Plain,
    LoginUser,
    LoginPassword { username: String },
}

fn decode(line: &str) -> Result<String, SaslError> {
    let line = line.trim();
    if line == "*" {
        return Err(SaslError::Cancelled);
    }
    // RFC 4954 4: "=" is an empty initial response.
    if line == "=" {
        return Ok(String::new());
    }
    let bytes = STANDARD
        .decode(line)
        .map_err(|_| SaslError::Malformed("not base64"))?;
    String::from_utf8(bytes).map_err(|_| SaslError::Malformed("not UTF-8"))
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`.
fn plain(message: &str) -> Step {
    let mut parts = message.split('\0');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(authzid), Some(authcid), Some(password), None) if !authcid.is_empty() => {
            // Acting as someone else (an authzid other than the login) is not offered.
            if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(authcid) {
                return Step::Failed(SaslError::Malformed(
                    "authorization identity differs from the login",
                ));
            }
            Step::Done(Credentials {
                username: authcid.to_string(),
                password: password.to_string(),
            })
        }
        _ => Step::Failed(SaslError::Malformed(
            "PLAIN response is not authzid NUL authcid NUL passwd",
        )),
    }
}

impl Exchange {
    /// Starts an exchange, with the initial response if the AUTH command carried one.
    pub fn start(mechanism: Mechanism, initial: Option<&str>) -> (Option<Exchange>, Step) {
        match (mechanism, initial) {
            (Mechanism::Plain, None) => (Some(Exchange::Plain), Step::Challenge(String::new())),
            (Mechanism::Plain, Some(ir)) => {
                (None, decode(ir).map_or_else(Step::Failed, |m| plain(&m)))
            }
            (Mechanism::Login, None) => (
                Some(Exchange::LoginUser),
                Step::Challenge(STANDARD.encode("Username:")),
            ),
            (Mechanism::Login, Some(ir)) => match decode(ir) {
                Ok(username) => (
                    Some(Exchange::LoginPassword { username }),
                    Step::Challenge(STANDARD.encode("Password:")),
                ),
                Err(e) => (None, Step::Failed(e)),
            },
        }
    }

    /// Feeds one client line; returns the exchange to keep (if any) and the next step.
    pub fn respond(self, line: &str) -> (Option<Exchange>, Step) {
        let decoded = match decode(line) {
            Ok(d) => d,
            Err(e) => return (None, Step::Failed(e)),
        };
        match self {
            Exchange::Plain => (None, plain(&decoded)),
            Exchange::LoginUser => (
                Some(Exchange::LoginPassword { username: decoded }),
                Step::Challenge(STANDARD.encode("Password:")),
            ),
            Exchange::LoginPassword { username } => (
                None,
                Step::Done(Credentials {
                    username,
                    password: decoded,
                }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    #[test]
    fn plain_with_and_without_initial_response() {
        let (_, step) = Exchange::start(Mechanism::Plain, Some(&b64("\0alice@example.test\0pw")));
        assert_eq!(
            step,
            Step::Done(Credentials {
                username: "alice@example.test".into(),
                password: "pw".into()
            })
        );
        let (ex, step) = Exchange::start(Mechanism::Plain, None);
        assert_eq!(step, Step::Challenge(String::new()));
        let (_, step) = ex
            .unwrap()
            .respond(&b64("alice@example.test\0alice@example.test\0pw"));
        assert!(matches!(step, Step::Done(_)));
    }

    #[test]
    fn login_asks_for_username_then_password() {
        let (ex, step) = Exchange::start(Mechanism::Login, None);
        assert_eq!(step, Step::Challenge("VXNlcm5hbWU6".into()));
        let (ex, step) = ex.unwrap().respond(&b64("bob@example.test"));
        assert_eq!(step, Step::Challenge("UGFzc3dvcmQ6".into()));
        let (_, step) = ex.unwrap().respond(&b64("secret"));
        assert_eq!(
            step,
            Step::Done(Credentials {
                username: "bob@example.test".into(),
                password: "secret".into()
            })
        );
    }

    #[test]
    fn cancel_garbage_and_foreign_authzid() {
        let (ex, _) = Exchange::start(Mechanism::Login, None);
        assert_eq!(
            ex.unwrap().respond("*").1,
            Step::Failed(SaslError::Cancelled)
        );
        assert!(matches!(
            Exchange::start(Mechanism::Plain, Some("!!!")).1,
            Step::Failed(SaslError::Malformed(_))
        ));
        let other = b64("admin@example.test\0alice@example.test\0pw");
        assert!(matches!(
            Exchange::start(Mechanism::Plain, Some(&other)).1,
            Step::Failed(_)
        ));
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials {
            username: "a".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
