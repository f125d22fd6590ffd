//! Password hash schemes: argon2id is what tern writes; SHA512-CRYPT, SHA256-CRYPT and BLF-CRYPT (bcrypt)
//! are read as Dovecot stores them, so that users moved from Dovecot keep their passwords. A user whose
//! hash is one of those is re-hashed to argon2id at the next successful login.

use argon2::{Argon2, PasswordVerifier};
use thiserror::Error;

/// SHA-crypt rounds and bcrypt cost above which an imported hash is refused: a login must stay a bounded
/// amount of work (glibc's default is 5,000 rounds; Dovecot's BLF-CRYPT default cost is 5).
const MAX_SHA_CRYPT_ROUNDS: u64 = 1_000_000;
const MAX_BCRYPT_COST: u32 = 16;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SchemeError {
    #[error(
        "scheme {0} is not supported: import {{ARGON2ID}}, {{SHA512-CRYPT}}, {{SHA256-CRYPT}} or {{BLF-CRYPT}} hashes (reset the others with tern user passwd)"
    )]
    Unsupported(String),
    #[error("not a {scheme} hash: {reason}")]
    Malformed {
        scheme: &'static str,
        reason: String,
    },
    #[error("{scheme} hash costs more than a login may ({cost}; at most {max})")]
    TooCostly {
        scheme: &'static str,
        cost: u64,
        max: u64,
    },
}

/// Which algorithm a stored hash is, from its Modular Crypt Format prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Argon2id,
    Sha512Crypt,
    Sha256Crypt,
    Bcrypt,
}

impl Scheme {
    pub fn of(stored: &str) -> Option<Scheme> {
        if stored.starts_with("$argon2id$") {
            Some(Scheme::Argon2id)
        } else if stored.starts_with("$6$") {
            Some(Scheme::Sha512Crypt)
        } else if stored.starts_with("$5$") {
            Some(Scheme::Sha256Crypt)
        } else if ["$2y$", "$2b$", "$2a$"]
            .iter()
            .any(|p| stored.starts_with(p))
        {
            Some(Scheme::Bcrypt)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scheme::Argon2id => "ARGON2ID",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::Bcrypt => "BLF-CRYPT",
        }
    }
}

/// A hash as Dovecot writes it (`{SHA512-CRYPT}$6$...`, or the bare crypt string) checked and turned into
/// what the users table stores: the Modular Crypt Format string itself.
pub fn import(hash: &str) -> Result<String, SchemeError> {
    let hash = hash.trim();
    let (declared, mcf) = match hash.strip_prefix('{').and_then(|h| h.split_once('}')) {
        Some((scheme, rest)) => (Some(scheme.to_ascii_uppercase()), rest),
        None => (None, hash),
    };
    let scheme = Scheme::of(mcf).ok_or_else(|| {
        SchemeError::Unsupported(
            declared
                .clone()
                .unwrap_or_else(|| "without a {SCHEME} prefix".into()),
        )
    })?;
    if let Some(d) = &declared {
        let agrees = match scheme {
            Scheme::Argon2id => d == "ARGON2ID",
            Scheme::Sha512Crypt => d == "SHA512-CRYPT" || d == "CRYPT",
            Scheme::Sha256Crypt => d == "SHA256-CRYPT" || d == "CRYPT",
            Scheme::Bcrypt => d == "BLF-CRYPT" || d == "CRYPT",
        };
        if !agrees {
            return Err(SchemeError::Unsupported(format!(
                "{{{d}}} with a {} value",
                scheme.name()
            )));
        }
    }
    let bad = |reason: String| SchemeError::Malformed {
        scheme: scheme.name(),
        reason,
    };
    if mcf
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ':')
    {
        return Err(bad("spaces, colons or control characters".into()));
    }
    match scheme {
        Scheme::Argon2id => {
            argon2::PasswordHash::new(mcf).map_err(|e| bad(e.to_string()))?;
        }
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
            let fields: Vec<&str> = mcf.split('$').skip(2).collect();
            let rounds = match fields.first().and_then(|f| f.strip_prefix("rounds=")) {
                Some(r) => r.parse::<u64>().map_err(|_| bad(format!("rounds={r}")))?,
                None => 5000,
            };
            if rounds > MAX_SHA_CRYPT_ROUNDS {
                return Err(SchemeError::TooCostly {
                    scheme: scheme.name(),
                    cost: rounds,
                    max: MAX_SHA_CRYPT_ROUNDS,
                });
            }
            if !(2..=3).contains(&fields.len()) {
                return Err(bad("expected $id$[rounds=N$]salt$hash".into()));
            }
        }
        Scheme::Bcrypt => {
            let cost: u32 = mcf
                .get(4..6)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| bad("no cost".into()))?;
            if cost > MAX_BCRYPT_COST {
                return Err(SchemeError::TooCostly {
                    scheme: scheme.name(),
                    cost: u64::from(cost),
                    max: u64::from(MAX_BCRYPT_COST),
                });
            }
            if mcf.len() != 60 {
                return Err(bad(format!("{} characters, not 60", mcf.len())));
            }
        }
    }
    Ok(mcf.to_string())
}

/// Whether `password` matches `stored`, and whether the hash should be replaced by argon2id (it is another
/// scheme). A hash of no known scheme matches nothing.
pub fn verify(stored: &str, password: &[u8]) -> (bool, bool) {
    match Scheme::of(stored) {
        Some(Scheme::Argon2id) => (
            Argon2::default().verify_password(password, stored).is_ok(),
            false,
        ),
        Some(Scheme::Sha512Crypt | Scheme::Sha256Crypt) => {
            use sha_crypt::PasswordVerifier as _;
            let ok = sha_crypt::ShaCrypt::default()
                .verify_password(password, stored)
                .is_ok();
            (ok, true)
        }
        Some(Scheme::Bcrypt) => (bcrypt::verify(password, stored).unwrap_or(false), true),
        None => (false, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // glibc's crypt(3) (through Python's crypt module), password "pencil".
    const SHA512: &str = "$6$rounds=10000$saltsalt$TKr1KzjiqlbJm0YOSAgmiEjNquFJj1Xbp.C2cN8u0itOiHJLPj/TkgftAiEFS4ac19scB3t3c8E01baf0QWBI1";
    const SHA256: &str = "$5$saltsalt$hl9BvcGsj7AkON13nbqeQHDgRpHyFxt7WDzLoS.OCQ/";

    #[test]
    fn imported_hashes_verify_and_ask_for_a_rehash() {
        for h in [SHA512, SHA256] {
            let stored = import(&format!(
                "{{{}}}{h}",
                if h.starts_with("$6$") {
                    "SHA512-CRYPT"
                } else {
                    "SHA256-CRYPT"
                }
            ))
            .unwrap();
            assert_eq!(stored, h);
            assert_eq!(verify(&stored, b"pencil"), (true, true), "{h}");
            assert_eq!(verify(&stored, b"pencil2"), (false, true), "{h}");
        }
        let blf = bcrypt::hash_with_salt("pencil", 5, *b"0123456789abcdef")
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let stored = import(&format!("{{BLF-CRYPT}}{blf}")).unwrap();
        assert_eq!(verify(&stored, b"pencil"), (true, true));
        assert_eq!(verify(&stored, b"other"), (false, true));
        let argon = {
            use argon2::PasswordHasher;
            Argon2::default()
                .hash_password(b"pencil")
                .unwrap()
                .to_string()
        };
        let stored = import(&format!("{{ARGON2ID}}{argon}")).unwrap();
        assert_eq!(verify(&stored, b"pencil"), (true, false));
    }

    #[test]
    fn other_and_malformed_hashes_are_refused() {
        assert!(matches!(
            import("{PLAIN}pencil"),
            Err(SchemeError::Unsupported(_))
        ));
        assert!(matches!(
            import("{SSHA}abcdef"),
            Err(SchemeError::Unsupported(_))
        ));
        assert!(matches!(
            import("$1$md5crypt$x"),
            Err(SchemeError::Unsupported(_))
        ));
        assert!(matches!(
            import(&format!("{{BLF-CRYPT}}{SHA512}")),
            Err(SchemeError::Unsupported(_))
        ));
        assert!(matches!(
            import("{SHA512-CRYPT}$6$rounds=999999999$salt$abc"),
            Err(SchemeError::TooCostly { .. })
        ));
        assert!(matches!(
            import("$6$a$b$c$d"),
            Err(SchemeError::Malformed { .. })
        ));
        assert!(matches!(
            import("$2y$31$abc"),
            Err(SchemeError::TooCostly { .. })
        ));
        assert!(import("$6$salt:x$abc").is_err());
        assert_eq!(verify("garbage", b"pencil"), (false, false));
        assert_eq!(verify("$6$saltsalt$broken", b"pencil"), (false, true));
        // The specification's own example (Drepper, "Unix crypt using SHA-256 and SHA-512").
        assert_eq!(
            verify(
                "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
                b"Hello world!"
            ),
            (true, true)
        );
    }
}
