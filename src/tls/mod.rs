//! rustls server configuration: certificate and key from `[tls]`, or a self-signed pair for server.hostname made
//! once in data_dir/tls/ on first start (so that STARTTLS works out of the box; remote MTAs use opportunistic
//! TLS and do not verify it, RFC 7435).

pub mod certs;
pub mod check;

pub use certs::{Certs, Entry};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("cannot make a self-signed certificate for {hostname:?}: {reason}")]
    Generate { hostname: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Where the self-signed pair lives.
pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Loads `files`, or the self-signed pair (made now if missing): the base certificate of [`Certs`].
pub fn load_base(
    files: Option<&(PathBuf, PathBuf)>,
    data_dir: &Path,
    hostname: &str,
) -> Result<Entry, TlsError> {
    let (cert, key) = match files {
        Some((c, k)) => (c.clone(), k.clone()),
        None => {
            let (c, k) = self_signed_paths(data_dir);
            // The folder may have been writable by the service user on an earlier run while this one runs as
            // root: a link planted there must not make root write (or read) a file elsewhere.
            for p in [c.parent().unwrap_or(data_dir), c.as_path(), k.as_path()] {
                if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(file_err(
                        p,
                        "is a symbolic link; the self-signed pair is kept in real files (set [tls] cert and key to use other files)",
                    ));
                }
            }
            if std::fs::symlink_metadata(&c).is_err() || std::fs::symlink_metadata(&k).is_err() {
                make_self_signed(&c, &k, hostname)?;
                tracing::info!(cert = %c.display(), "made a self-signed TLS certificate for {hostname}");
            }
            (c, k)
        }
    };
    load_pair(&cert, &key)
}

/// A PEM chain and its PEM private key.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Entry, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    Entry::new(chain, key_der).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => file_err(
            key,
            format!(
                "this private key does not belong to the certificate in {}",
                cert.display()
            ),
        ),
        rustls::Error::General(reason) => file_err(cert, reason),
        e => TlsError::Rustls(e),
    })
}

/// A server configuration whose certificate is chosen by `certs` at each handshake, offering `alpn`.
pub fn server_config(certs: &Arc<Certs>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn make_self_signed(cert: &Path, key: &Path, hostname: &str) -> Result<(), TlsError> {
    let generated =
        rcgen::generate_simple_self_signed(vec![hostname.to_string()]).map_err(|e| {
            TlsError::Generate {
                hostname: hostname.into(),
                reason: e.to_string(),
            }
        })?;
    if let Some(dir) = cert.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| file_err(dir, e))?;
    }
    write_new(key, generated.signing_key.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert, generated.cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

/// Writes a file under a fresh name (O_CREAT|O_EXCL|O_NOFOLLOW, so an existing file or link there is never
/// opened), with `mode` whatever the umask, fsynced, then renamed over `path`: a link at `path` is replaced
/// itself, its target is never written.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover from a crash (or a planted link): remove_file unlinks the name, never a target.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| file_err(&tmp, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|_| f.write_all(bytes))
        .and_then(|_| f.sync_all())
        .map_err(|e| file_err(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))?;
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// What [`check::warnings`] says of the certificate the daemon presents (`files`, or the self-signed pair).
pub fn certificate_warnings(
    files: Option<&(PathBuf, PathBuf)>,
    data_dir: &Path,
    hostname: &str,
    public_listeners: bool,
) -> Vec<String> {
    let cert = files
        .map(|(c, _)| c.clone())
        .unwrap_or_else(|| self_signed_paths(data_dir).0);
    match check::leaf_of(&cert) {
        Ok(leaf) => check::warnings(
            &leaf,
            &cert,
            hostname,
            public_listeners,
            crate::clock::unix_now() as i64,
        ),
        Err(e) => vec![format!("cannot read the TLS certificate: {e}")],
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn self_signed_pair_is_made_once_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        super::load_base(None, dir.path(), "mx.example.test").unwrap();
        let (cert, key) = super::self_signed_paths(dir.path());
        let first = std::fs::read(&cert).unwrap();
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        super::load_base(None, dir.path(), "mx.example.test").unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), first);
    }

    #[test]
    fn a_planted_link_is_refused_and_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let (cert, key) = super::self_signed_paths(&dir.path().join("data"));
        std::fs::create_dir_all(cert.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&victim, &key).unwrap();
        let e = super::load_base(None, &dir.path().join("data"), "mx.example.test").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn missing_files_name_the_path() {
        let files = ("/nonexistent/c.pem".into(), "/nonexistent/k.pem".into());
        let e = super::load_base(Some(&files), std::path::Path::new("/tmp"), "mx").unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/c.pem: "), "{e}");
    }
}
