//! The certificates every TLS listener presents, chosen per handshake (SNI): the base pair (`[tls]` files or
//! the self-signed bootstrap) and those ACME issued, swapped in place so that a renewal or a reload reaches
//! SMTP, submission, IMAP, POP3, ManageSieve and HTTPS without a restart. During an RFC 8737 tls-alpn-01
//! challenge it also answers `acme-tls/1` handshakes with the challenge certificate.

use super::check::{covers, leaf_from_der};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The ALPN protocol of tls-alpn-01 validation (RFC 8737 section 6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// One certificate chain with its key and the DNS names it covers.
#[derive(Clone)]
pub struct Entry {
    pub names: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl Entry {
    /// From a DER chain (leaf first) and its private key; a key that does not match the leaf is refused.
    pub fn new(
        chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Entry, rustls::Error> {
        let leaf = chain
            .first()
            .ok_or(rustls::Error::NoCertificatesPresented)?;
        let facts = leaf_from_der(leaf).map_err(rustls::Error::General)?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider)?;
        Ok(Entry {
            names: facts.names,
            not_before: facts.not_before,
            not_after: facts.not_after,
            key: Arc::new(certified),
        })
    }

    pub fn covers(&self, host: &str) -> bool {
        self.names.iter().any(|n| covers(n, host))
    }
}

/// What every TLS listener's resolver reads.
#[derive(Debug)]
pub struct Certs {
    hostname: String,
    base: RwLock<Entry>,
    issued: RwLock<Vec<Entry>>,
    /// tls-alpn-01 challenge certificates by the name being validated.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Certs {
    pub fn new(base: Entry, hostname: &str) -> Arc<Certs> {
        Arc::new(Certs {
            hostname: hostname.to_ascii_lowercase(),
            base: RwLock::new(base),
            issued: RwLock::new(Vec::new()),
            challenges: RwLock::new(HashMap::new()),
        })
    }

    /// A reload's base pair.
    pub fn set_base(&self, base: Entry) {
        *self.base.write().unwrap_or_else(|p| p.into_inner()) = base;
    }

    /// Adds an issued certificate, replacing any earlier one for the same first name.
    pub fn install(&self, entry: Entry) {
        let mut issued = self.issued.write().unwrap_or_else(|p| p.into_inner());
        issued.retain(|e| e.names.first() != entry.names.first());
        issued.push(entry);
    }

    /// The issued certificates (for the expiry gauge and the doctor).
    pub fn issued(&self) -> Vec<Entry> {
        self.issued
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_challenge(&self, name: &str, key: Option<Arc<CertifiedKey>>) {
        let mut c = self.challenges.write().unwrap_or_else(|p| p.into_inner());
        match key {
            Some(k) => c.insert(name.to_ascii_lowercase(), k),
            None => c.remove(&name.to_ascii_lowercase()),
        };
    }

    /// The certificate for a handshake naming `sni` (None: no SNI, as many MTAs send).
    pub fn choose(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let issued = self.issued.read().unwrap_or_else(|p| p.into_inner());
        let base = self.base.read().unwrap_or_else(|p| p.into_inner());
        let host = sni.unwrap_or(&self.hostname);
        if let Some(e) = issued.iter().find(|e| e.covers(host)) {
            return e.key.clone();
        }
        if base.covers(host) {
            return base.key.clone();
        }
        // A name nobody covers: the certificate for the host name, issued before self-made.
        match issued.iter().find(|e| e.covers(&self.hostname)) {
            Some(e) => e.key.clone(),
            None => base.key.clone(),
        }
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // Only the validation server asks for acme-tls/1, and only the challenge certificate answers it.
            let name = sni?;
            return self
                .challenges
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .cloned();
        }
        Some(self.choose(sni.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(names: &[&str]) -> Entry {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        Entry::new(
            vec![c.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into()),
        )
        .unwrap()
    }

    #[test]
    fn sni_picks_the_covering_certificate_and_falls_back_to_the_host_name() {
        let base = entry(&["mx.example.org"]);
        let certs = Certs::new(base.clone(), "mx.example.org");
        assert!(Arc::ptr_eq(&certs.choose(None), &base.key));
        let issued = entry(&["mx.example.org", "mta-sts.example.org"]);
        certs.install(issued.clone());
        assert!(Arc::ptr_eq(&certs.choose(None), &issued.key));
        assert!(Arc::ptr_eq(
            &certs.choose(Some("mta-sts.example.org")),
            &issued.key
        ));
        assert!(Arc::ptr_eq(&certs.choose(Some("other.test")), &issued.key));
        let renewed = entry(&["mx.example.org", "mta-sts.example.org"]);
        certs.install(renewed.clone());
        assert_eq!(certs.issued().len(), 1);
        assert!(Arc::ptr_eq(&certs.choose(None), &renewed.key));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let a = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".to_string()]).unwrap();
        let e = Entry::new(
            vec![a.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(b.signing_key.serialize_der().into()),
        )
        .unwrap_err();
        assert!(matches!(e, rustls::Error::InconsistentKeys(_)), "{e:?}");
    }
}
