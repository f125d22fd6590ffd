//! Certificates from an ACME CA (RFC 8555) through instant-acme: one account and one certificate covering
//! `[acme] names`, kept under data_dir/acme/ (0600), ordered at start when missing, renewed when the time
//! left falls under `renew_before` (or a third of the lifetime, for short-lived certificates), and installed
//! into the shared [`Certs`] so that every TLS listener presents it from the next handshake. A failed order
//! is retried after `retry`, doubling up to six hours; badNonce answers are retried inside instant-acme.

use crate::config::{AcmeSettings, Challenge};
use crate::shutdown::Shutdown;
use crate::tls::{Certs, Entry};
use crate::web::HttpChallenges;
use anyhow::Context;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// The least wait after the CA answers rateLimited.
const RATE_LIMIT_WAIT: Duration = Duration::from_secs(3600);

/// Whether the CA refused with urn:ietf:params:acme:error:rateLimited.
fn rate_limited(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<instant_acme::Error>().is_some_and(|e| {
            matches!(e, instant_acme::Error::Api(p) if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited"))
        })
    })
}
/// However far the renewal is, the task looks again this often (a clock jump, a config reload).
const RECHECK: Duration = Duration::from_secs(3600);

/// Where the account and the certificate live.
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(data_dir: &Path) -> Paths {
        Paths {
            dir: data_dir.join("acme"),
        }
    }
    /// One account per directory URL: switching from a staging CA to production makes a new one.
    fn account(&self, directory_url: &str) -> PathBuf {
        let d = ring::digest::digest(&ring::digest::SHA256, directory_url.as_bytes());
        let tag: String = d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("account-{tag}.json"))
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

/// When `e` should be renewed: `renew_before` ahead of its end, or with a third of its life left if that
/// comes first (a 90-day certificate renews at 30 days; one valid for minutes, after two thirds of them).
pub fn renew_at(e: &Entry, renew_before: Duration) -> i64 {
    let lifetime = (e.not_after - e.not_before).max(0);
    let ahead = (renew_before.as_secs() as i64).min(lifetime / 3);
    e.not_after - ahead
}

/// The certificate on disk, if it loads and covers exactly `names`.
fn load_current(paths: &Paths, names: &[String]) -> Option<Entry> {
    let (cert, key) = (paths.cert(), paths.key());
    if !cert.exists() {
        return None;
    }
    match crate::tls::load_pair(&cert, &key) {
        Ok(e) => {
            let mut have = e.names.clone();
            let mut want = names.to_vec();
            have.sort();
            want.sort();
            if have == want {
                Some(e)
            } else {
                tracing::info!(have = ?have, want = ?want, "acme: the certificate on disk covers other names; ordering a new one");
                // Still presented until its replacement arrives.
                None
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "acme: the certificate on disk does not load; ordering a new one");
            None
        }
    }
}

/// Starts the task that keeps the certificate current; it loads the one on disk before returning.
pub fn start(
    settings: AcmeSettings,
    data_dir: &Path,
    certs: Arc<Certs>,
    http: Arc<HttpChallenges>,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    let paths = Paths::new(data_dir);
    let current = load_current(&paths, &settings.names);
    if let Some(e) = &current {
        certs.install(e.clone());
        expiry_gauge(&paths, e);
    } else if let Ok(stale) = crate::tls::load_pair(&paths.cert(), &paths.key()) {
        certs.install(stale);
    }
    tokio::spawn(keep_current(
        settings, paths, certs, http, current, shutdown,
    ))
}

fn expiry_gauge(paths: &Paths, e: &Entry) {
    crate::ops::metrics::set_gauge(
        "tern_tls_certificate_expiry_timestamp_seconds",
        &[("cert", &paths.cert().display().to_string())],
        e.not_after as f64,
    );
}

async fn keep_current(
    settings: AcmeSettings,
    paths: Paths,
    certs: Arc<Certs>,
    http: Arc<HttpChallenges>,
    mut current: Option<Entry>,
    mut shutdown: Shutdown,
) {
    let mut failures: u32 = 0;
    loop {
        let now = crate::clock::unix_now() as i64;
        let due = current
            .as_ref()
            .map_or(now, |e| renew_at(e, settings.renew_before));
        if due > now {
            let wait = Duration::from_secs((due - now) as u64).min(RECHECK);
            tracing::debug!(renew_in_secs = due - now, "acme: certificate is current");
            tokio::select! {
                _ = tokio::time::sleep(wait) => continue,
                _ = shutdown.fired() => return,
            }
        }
        let started = std::time::Instant::now();
        let attempt = tokio::select! {
            r = order(&settings, &paths, &certs, &http) => r,
            _ = shutdown.fired() => return,
        };
        match attempt {
            Ok(entry) => {
                tracing::info!(
                    names = ?entry.names,
                    not_after = %crate::clock::rfc5322_date(entry.not_after.max(0) as u64),
                    secs = started.elapsed().as_secs_f64(),
                    "acme: certificate issued and installed"
                );
                certs.install(entry.clone());
                expiry_gauge(&paths, &entry);
                current = Some(entry);
                failures = 0;
            }
            Err(e) => {
                let mut wait = settings
                    .retry
                    .saturating_mul(1u32 << failures.min(16))
                    .min(MAX_BACKOFF);
                // RFC 8555 section 6.6: a rate limit lasts hours; asking again sooner only extends it.
                if rate_limited(&e) {
                    wait = wait.max(RATE_LIMIT_WAIT);
                }
                failures += 1;
                crate::ops::metrics::inc("tern_acme_failures_total", &[]);
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in_secs = wait.as_secs(),
                    attempt = failures,
                    "acme: order failed"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.fired() => return,
                }
            }
        }
    }
}

fn builder(settings: &AcmeSettings) -> anyhow::Result<instant_acme::AccountBuilder> {
    Ok(match &settings.ca_file {
        Some(f) => Account::builder_with_root(f)
            .with_context(|| format!("acme.ca_file {}", f.display()))?,
        None => Account::builder().context("the system's root certificates")?,
    })
}

/// The account for `directory_url`, made and saved the first time.
async fn account(settings: &AcmeSettings, paths: &Paths) -> anyhow::Result<Account> {
    let file = paths.account(&settings.directory_url);
    if let Ok(text) = std::fs::read_to_string(&file) {
        let credentials: AccountCredentials = serde_json::from_str(&text)
            .with_context(|| format!("{}: not ACME account credentials", file.display()))?;
        return builder(settings)?
            .from_credentials(credentials)
            .await
            .with_context(|| format!("the account in {}", file.display()));
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder(settings)?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory_url.clone(),
            None,
        )
        .await
        .with_context(|| format!("creating an account at {}", settings.directory_url))?;
    make_dir(&paths.dir)?;
    crate::tls::write_new(
        &file,
        serde_json::to_string(&credentials)?.as_bytes(),
        0o600,
    )?;
    tracing::info!(directory = %settings.directory_url, id = account.id(), "acme: account created");
    Ok(account)
}

fn make_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Clears what a challenge left in place, whatever way the order ends.
struct Pending<'a> {
    certs: &'a Certs,
    http: &'a HttpChallenges,
    tokens: Vec<String>,
    names: Vec<String>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.http.set(t, None);
        }
        for n in &self.names {
            self.certs.set_challenge(n, None);
        }
    }
}

/// A tls-alpn-01 challenge certificate for `name` (RFC 8737 section 3).
fn alpn_certificate(name: &str, digest: &[u8]) -> anyhow::Result<Arc<rustls::sign::CertifiedKey>> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    // Not through Entry::new: its key check parses the certificate with webpki, which refuses the critical
    // acmeIdentifier extension this certificate exists to carry.
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(
            key.serialize_der().into(),
        ))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// One order from start to installed files.
async fn order(
    settings: &AcmeSettings,
    paths: &Paths,
    certs: &Certs,
    http: &HttpChallenges,
) -> anyhow::Result<Entry> {
    let account = account(settings, paths).await?;
    let identifiers: Vec<Identifier> = settings
        .names
        .iter()
        .map(|n| Identifier::Dns(n.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .context("new order")?;
    let mut pending = Pending {
        certs,
        http,
        tokens: Vec::new(),
        names: Vec::new(),
    };
    let kind = match settings.challenge {
        Challenge::Http01 => ChallengeType::Http01,
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = order.authorizations();
    while let Some(result) = authorizations.next().await {
        let mut authz = result.context("authorization")?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => anyhow::bail!("authorization for {} is {other:?}", authz.identifier()),
        }
        let name = authz.identifier().to_string();
        let mut challenge = authz
            .challenge(kind.clone())
            .ok_or_else(|| anyhow::anyhow!("the CA offers no {kind:?} challenge for {name}"))?;
        let key_authorization = challenge.key_authorization();
        match kind {
            ChallengeType::TlsAlpn01 => {
                let cert = alpn_certificate(&name, key_authorization.digest().as_ref())?;
                certs.set_challenge(&name, Some(cert));
                pending.names.push(name.clone());
            }
            _ => {
                http.set(
                    &challenge.token,
                    Some(key_authorization.as_str().to_string()),
                );
                pending.tokens.push(challenge.token.clone());
            }
        }
        challenge
            .set_ready()
            .await
            .with_context(|| format!("challenge for {name}"))?;
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(500))
        .timeout(Duration::from_secs(120));
    let status = order
        .poll_ready(&retries)
        .await
        .context("waiting for validation")?;
    if status != OrderStatus::Ready {
        let why = order
            .state()
            .error
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        anyhow::bail!("the order is {status:?} after validation {why}");
    }
    drop(pending);
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(settings.names.clone())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await.context("finalize")?;
    let chain = order
        .poll_certificate(&retries)
        .await
        .context("waiting for the certificate")?;
    make_dir(&paths.dir)?;
    // Key first: a crash between the two leaves a new key beside the old certificate, which fails to
    // load and is ordered again, never a certificate without its key.
    crate::tls::write_new(&paths.key(), key.serialize_pem().as_bytes(), 0o600)?;
    crate::tls::write_new(&paths.cert(), chain.as_bytes(), 0o600)?;
    Ok(crate::tls::load_pair(&paths.cert(), &paths.key())?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn renewal_comes_at_thirty_days_or_a_third_of_the_life() {
        let c = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let mut e = crate::tls::Entry::new(
            vec![c.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into()),
        )
        .unwrap();
        let day = 86_400;
        e.not_before = 0;
        e.not_after = 90 * day;
        let thirty = std::time::Duration::from_secs(30 * 86_400);
        assert_eq!(super::renew_at(&e, thirty), 60 * day);
        e.not_after = 300;
        assert_eq!(super::renew_at(&e, thirty), 200);
    }
}
