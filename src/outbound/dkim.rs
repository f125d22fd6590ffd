//! DKIM signing (RFC 6376, relaxed/relaxed) of mail from our domains, with mail-auth.
//!
//! Keys live in data_dir/dkim/<domain>/<selector>.pem (written by `tern dkim generate`) or are named in
//! `[dkim] keys`. The folder is looked at again whenever it changes, so a new key is used without a restart.

use crate::config::DkimKeyFile;
use base64::Engine;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// Header fields signed by default (absent ones are skipped by the signer).
pub const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
];

enum Key {
    Rsa(RsaKey<Sha256>),
    Ed25519(Ed25519Key),
}

/// A ready signer for one domain and selector.
enum Loaded {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

pub struct Dkim {
    dir: PathBuf,
    configured: Vec<DkimKeyFile>,
    headers: Vec<String>,
    /// Per domain: the folder's modification time when read, and the key found.
    cache: Mutex<HashMap<String, (Option<SystemTime>, Option<std::sync::Arc<Loaded>>)>>,
}

/// Reads a PEM private key of either kind.
fn load_key(pem: &str) -> Result<Key, String> {
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("not a PEM private key: {e}"))?;
    if let PrivateKeyDer::Pkcs8(p8) = &der
        && let Ok(k) = Ed25519Key::from_pkcs8_maybe_unchecked_der(p8.secret_pkcs8_der())
    {
        return Ok(Key::Ed25519(k));
    }
    RsaKey::<Sha256>::from_key_der(der)
        .map(Key::Rsa)
        .map_err(|e| e.to_string())
}

fn signer<T: mail_auth::common::crypto::SigningKey>(
    key: T,
    domain: &str,
    selector: &str,
    headers: &[String],
) -> DkimSigner<T, Done> {
    DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(headers.iter().cloned())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

impl Dkim {
    pub fn new(data_dir: &Path, configured: Vec<DkimKeyFile>, headers: Vec<String>) -> Dkim {
        let headers = if headers.is_empty() {
            DEFAULT_HEADERS.iter().map(|h| h.to_string()).collect()
        } else {
            headers
        };
        Dkim {
            dir: data_dir.join("dkim"),
            configured,
            headers,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The key for `domain`: a configured one first, else the newest file in data_dir/dkim/<domain>/.
    fn key_for(&self, domain: &str) -> Option<std::sync::Arc<Loaded>> {
        let dir = self.dir.join(domain);
        let mtime = std::fs::metadata(&dir).and_then(|m| m.modified()).ok();
        if let Ok(cache) = self.cache.lock()
            && let Some((seen, key)) = cache.get(domain)
            && *seen == mtime
        {
            return key.clone();
        }
        let loaded = self.read_key(domain, &dir).map(std::sync::Arc::new);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(domain.to_string(), (mtime, loaded.clone()));
        }
        loaded
    }

    fn read_key(&self, domain: &str, dir: &Path) -> Option<Loaded> {
        let mut candidates: Vec<(String, PathBuf)> = self
            .configured
            .iter()
            .filter(|k| k.domain == domain)
            .map(|k| (k.selector.clone(), k.path.clone()))
            .collect();
        if candidates.is_empty() {
            match std::fs::read_to_string(dir.join(ACTIVE)) {
                Ok(active) => {
                    let selector = active.trim();
                    if selector.is_empty() {
                        tracing::info!(
                            domain,
                            "no active dkim key (tern dkim activate): sending unsigned"
                        );
                        return None;
                    }
                    candidates.push((selector.to_string(), dir.join(format!("{selector}.pem"))));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // A folder from before `tern dkim activate`: its newest key signs, as it always did.
                    candidates.extend(newest_first(dir));
                }
                Err(e) => {
                    tracing::error!(domain, error = %e, "cannot read the active dkim selector; sending unsigned");
                    return None;
                }
            }
        }
        self.load_first(domain, candidates)
    }

    fn load_first(&self, domain: &str, candidates: Vec<(String, PathBuf)>) -> Option<Loaded> {
        for (selector, path) in candidates {
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|pem| load_key(&pem))
            {
                Ok(key) => {
                    tracing::info!(domain, selector = %selector, key = %path.display(), "dkim key loaded");
                    return Some(match key {
                        Key::Rsa(k) => Loaded::Rsa(signer(k, domain, &selector, &self.headers)),
                        Key::Ed25519(k) => {
                            Loaded::Ed25519(signer(k, domain, &selector, &self.headers))
                        }
                    });
                }
                Err(e) => {
                    tracing::error!(domain, key = %path.display(), error = %e, "dkim key unusable")
                }
            }
        }
        None
    }

    /// A DKIM-Signature header for `message` on behalf of `domain`, if we hold a key for it.
    pub fn sign(&self, domain: &str, message: &[u8]) -> Option<String> {
        self.sign_parts(domain, &[message])
    }

    /// As [`Self::sign`] for a message given in pieces (the header section first): hashed in one pass.
    pub fn sign_parts(&self, domain: &str, parts: &[&[u8]]) -> Option<String> {
        let loaded = self.key_for(domain)?;
        let result = match &*loaded {
            Loaded::Rsa(s) => s.sign_chained(parts.iter().copied()),
            Loaded::Ed25519(s) => s.sign_chained(parts.iter().copied()),
        };
        match result {
            Ok(signature) => Some(signature.to_header()),
            Err(e) => {
                tracing::error!(domain, error = %e, "dkim signing failed; sending unsigned");
                None
            }
        }
    }
}

/// The file in data_dir/dkim/<domain>/ naming the selector that signs (empty: none). A folder without it
/// predates `tern dkim activate`, and its newest key signs.
const ACTIVE: &str = "active";

/// The keys of a domain folder as (selector, path), newest first.
fn newest_first(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut files: Vec<(SystemTime, String, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let selector = path
                .file_name()?
                .to_str()?
                .strip_suffix(".pem")?
                .to_string();
            Some((e.metadata().ok()?.modified().ok()?, selector, path))
        })
        .collect();
    files.sort();
    files.into_iter().rev().map(|(_, s, p)| (s, p)).collect()
}

/// Writes the active selector (empty: none) atomically and durably: a temporary file, fsync, rename, and the
/// folder fsynced.
fn write_active(dir: &Path, selector: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(".{ACTIVE}.tmp"));
    let target = dir.join(ACTIVE);
    let e = |p: &Path| {
        let p = p.display().to_string();
        move |err: std::io::Error| format!("{p}: {err}")
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&tmp)
        .map_err(e(&tmp))?;
    f.write_all(format!("{selector}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(e(&tmp))?;
    std::fs::rename(&tmp, &target).map_err(e(&target))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(e(dir))
}

/// A key's state for `tern dkim list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub domain: String,
    pub selector: String,
    pub path: PathBuf,
    /// `active` (signs), `pending` (generated, waiting for `tern dkim activate`), `configured` (`[dkim] keys`)
    /// or `unusable` (the file cannot be read as a key).
    pub state: &'static str,
    /// `rsa` or `ed25519`.
    pub algorithm: &'static str,
    /// The TXT record to publish at `<selector>._domainkey.<domain>`, empty for an unusable key.
    pub record: String,
}

/// Every key under data_dir/dkim/ and in `[dkim] keys`, with its state and record.
pub fn list(data_dir: &Path, configured: &[DkimKeyFile]) -> Vec<KeyInfo> {
    let mut out = Vec::new();
    let root = data_dir.join("dkim");
    let mut domains: Vec<String> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    domains.sort();
    let info = |domain: &str, selector: &str, path: &Path, state: &'static str| {
        let (state, algorithm, record) = match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| public_record(&pem))
        {
            Ok((alg, record)) => (state, alg, record),
            Err(_) => ("unusable", "", String::new()),
        };
        KeyInfo {
            domain: domain.into(),
            selector: selector.into(),
            path: path.to_path_buf(),
            state,
            algorithm,
            record,
        }
    };
    for k in configured {
        out.push(info(&k.domain, &k.selector, &k.path, "configured"));
    }
    for domain in domains {
        let dir = root.join(&domain);
        let keys = newest_first(&dir);
        let active = match std::fs::read_to_string(dir.join(ACTIVE)) {
            Ok(a) => a.trim().to_string(),
            Err(_) => keys.first().map(|(s, _)| s.clone()).unwrap_or_default(),
        };
        let overridden = configured.iter().any(|k| k.domain == domain);
        let mut keys = keys;
        keys.sort();
        for (selector, path) in keys {
            let state = if selector == active && !overridden {
                "active"
            } else {
                "pending"
            };
            out.push(info(&domain, &selector, &path, state));
        }
    }
    out
}

/// The algorithm and TXT record of a private key in PEM (PKCS#1 or PKCS#8 RSA, PKCS#8 Ed25519).
fn public_record(pem: &str) -> Result<(&'static str, String), String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let rsa = rsa::RsaPrivateKey::from_pkcs1_pem(pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(pem));
    if let Ok(key) = rsa {
        let public = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| e.to_string())?;
        return Ok((
            "rsa",
            format!("v=DKIM1; k=rsa; p={}", b64(public.as_bytes())),
        ));
    }
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string())?;
    let key = Ed25519Key::from_pkcs8_der(der.secret_der()).map_err(|e| e.to_string())?;
    Ok((
        "ed25519",
        format!("v=DKIM1; k=ed25519; p={}", b64(&key.public_key())),
    ))
}

/// `tern dkim activate`: `selector` signs for `domain` from now on (the running daemon notices the folder
/// change). Refused unless the key is there and loads.
pub fn activate(data_dir: &Path, domain: &str, selector: &str) -> Result<PathBuf, String> {
    let dir = data_dir.join("dkim").join(domain);
    let path = dir.join(format!("{selector}.pem"));
    let pem = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (tern dkim list shows the keys there are)",
            path.display()
        )
    })?;
    load_key(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
    write_active(&dir, selector)?;
    Ok(path)
}

/// `tern dkim generate`: a new key under data_dir/dkim/<domain>/<selector>.pem and the TXT record to publish.
pub fn generate(
    data_dir: &Path,
    domain: &str,
    selector: &str,
    algorithm: &str,
) -> Result<(PathBuf, String), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (pem, record) = match algorithm {
        "ed25519" => {
            let pkcs8 = Ed25519Key::generate_pkcs8().map_err(|e| e.to_string())?;
            let key = Ed25519Key::from_pkcs8_der(&pkcs8).map_err(|e| e.to_string())?;
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                wrap(&b64(&pkcs8))
            );
            (
                pem,
                format!("v=DKIM1; k=ed25519; p={}", b64(&key.public_key())),
            )
        }
        "rsa" => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::pkcs8::EncodePublicKey;
            let key =
                rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| e.to_string())?;
            let pem = key
                .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(|e| e.to_string())?
                .to_string();
            let public = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| e.to_string())?;
            (pem, format!("v=DKIM1; k=rsa; p={}", b64(public.as_bytes())))
        }
        other => return Err(format!("algorithm {other:?} is not one of rsa, ed25519")),
    };
    let dir = data_dir.join("dkim").join(domain);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // A new key signs only once activated: a folder without the active file (older than it, or new) gets
    // one naming what signs now (its newest key, or nothing).
    if !dir.join(ACTIVE).exists() {
        let current = newest_first(&dir)
            .into_iter()
            .next()
            .map(|(s, _)| s)
            .unwrap_or_default();
        write_active(&dir, &current)?;
    }
    let path = dir.join(format!("{selector}.pem"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(pem.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, record))
}

/// The TXT record as DNS zone text: character-strings of at most 255 octets (RFC 1035 3.3.14).
pub fn zone_text(record: &str) -> String {
    let parts: Vec<String> = record
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    parts.join(" ")
}

fn wrap(b64: &str) -> String {
    b64.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}
