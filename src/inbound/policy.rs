//! Which recipients are accepted: users of the local domains and postmaster always (unknown users are
//! refused at RCPT time, so there is no backscatter); other domains only from clients that may relay.

use crate::directory::{Directory, DirectoryError};
use crate::smtp::server::RcptVerdict;
use crate::smtp::{Domain, ForwardPath, Mailbox, Reply};

pub struct RecipientPolicy {
    pub local_domains: Vec<Domain>,
    pub postmaster: Mailbox,
    pub directory: Directory,
    /// `+` for alice+tag@ delivering to alice@, if subaddressing is on.
    pub subaddress_separator: Option<String>,
    /// For quota checks at RCPT time.
    pub store: std::sync::Arc<dyn crate::mailbox::MailboxStore>,
}

/// Whether a message fits a mailbox's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Fits,
    /// Not now (the mailbox is too full): 452 4.2.2.
    Full,
    /// Never: the message alone is bigger than the quota: 552 5.2.2.
    TooBig,
}

/// Local accounts' quotas as a transaction's RCPTs found them, by lowercase address.
pub type Quotas = std::collections::HashMap<String, crate::directory::Quota>;

impl RecipientPolicy {
    /// `may_relay`: the client authenticated, is a local program, or is in a trusted network. `size`: the
    /// octets the client announced (SIZE=), 0 when it did not: a mailbox that cannot take them is refused now
    /// rather than accepted and bounced later.
    pub async fn check(
        &self,
        forward_path: &ForwardPath,
        may_relay: bool,
        size: u64,
    ) -> RcptVerdict {
        self.check_noting(forward_path, may_relay, size, &mut Quotas::new())
            .await
    }

    /// [`Self::check`], noting in `seen` the quota of each local account accepted directly (not through
    /// an alias), by lowercase address: the end of DATA measures the message against it without asking
    /// the directory again.
    pub async fn check_noting(
        &self,
        forward_path: &ForwardPath,
        may_relay: bool,
        size: u64,
        seen: &mut Quotas,
    ) -> RcptVerdict {
        match self
            .resolve(forward_path, may_relay, Some(size), seen)
            .await
        {
            Ok(verdict) => verdict,
            Err(e) => {
                tracing::error!(error = %e, to = %forward_path, "recipient lookup failed");
                RcptVerdict::Refuse(Reply::temporary_lookup_failure())
            }
        }
    }

    /// For a message tern itself generates (a DSN): resolved like a RCPT from a client that may relay, with
    /// no quota check (delivery defers it if the mailbox is full).
    pub async fn resolve_for_generated(
        &self,
        forward_path: &ForwardPath,
    ) -> Result<RcptVerdict, DirectoryError> {
        self.resolve(forward_path, true, None, &mut Quotas::new())
            .await
    }

    async fn resolve(
        &self,
        forward_path: &ForwardPath,
        may_relay: bool,
        quota_size: Option<u64>,
        seen: &mut Quotas,
    ) -> Result<RcptVerdict, DirectoryError> {
        let given = match forward_path {
            ForwardPath::Postmaster => {
                return Ok(RcptVerdict::Accept(vec![self.postmaster.clone()]));
            }
            ForwardPath::Mailbox(m) => m,
        };
        // A domain alias delivers like its target domain.
        let mut mailbox = given.clone();
        if !self.local_domains.contains(mailbox.domain()) {
            match self.directory.domain_alias(mailbox.domain()).await? {
                Some(target) => {
                    mailbox = Mailbox::new(mailbox.local_part(), target)
                        .map_err(|_| DirectoryError::BadAddress(given.to_string()))?
                }
                None if may_relay => return Ok(RcptVerdict::Accept(vec![given.clone()])),
                None => return Ok(RcptVerdict::Refuse(Reply::relay_denied(&given.to_string()))),
            }
        }
        // RFC 5321 4.5.1: postmaster@ every domain we accept mail for.
        if mailbox.local_part().eq_ignore_ascii_case("postmaster") {
            return Ok(RcptVerdict::Accept(vec![self.postmaster.clone()]));
        }
        let base = self.subaddress_separator.as_deref().and_then(|sep| {
            let (user, _tag) = mailbox.local_part().split_once(sep)?;
            Mailbox::new(user, mailbox.domain().clone()).ok()
        });
        for candidate in std::iter::once(&mailbox).chain(base.as_ref()) {
            if let Some((user, quota, disabled)) =
                self.directory.lookup_with_quota(candidate).await?
            {
                if disabled {
                    return Ok(RcptVerdict::Refuse(Reply::mailbox_disabled(
                        &given.to_string(),
                    )));
                }
                seen.insert(user.to_string().to_lowercase(), quota);
                let Some(size) = quota_size else {
                    return Ok(RcptVerdict::Accept(vec![user]));
                };
                return Ok(match self.fit(&user, quota, size).await {
                    Fit::Fits => RcptVerdict::Accept(vec![user]),
                    Fit::Full => RcptVerdict::Refuse(Reply::over_quota(&user.to_string())),
                    Fit::TooBig => RcptVerdict::Refuse(Reply::exceeds_quota(&user.to_string())),
                });
            }
            if let Some(targets) = self.directory.alias(candidate).await? {
                return self.without_disabled(targets, given).await;
            }
        }
        if let Some(targets) = self.directory.catch_all(mailbox.domain()).await? {
            return self.without_disabled(targets, given).await;
        }
        Ok(RcptVerdict::Refuse(Reply::unknown_user(&given.to_string())))
    }

    /// An alias's or catch-all's targets less the disabled local accounts among them; refused with
    /// 550 5.2.1 when that leaves none.
    async fn without_disabled(
        &self,
        targets: Vec<Mailbox>,
        given: &Mailbox,
    ) -> Result<RcptVerdict, DirectoryError> {
        let mut kept = Vec::with_capacity(targets.len());
        for t in targets {
            let disabled = self.local_domains.contains(t.domain())
                && self
                    .directory
                    .lookup_with_quota(&t)
                    .await?
                    .is_some_and(|(_, _, disabled)| disabled);
            if !disabled {
                kept.push(t);
            }
        }
        if kept.is_empty() {
            return Ok(RcptVerdict::Refuse(Reply::mailbox_disabled(
                &given.to_string(),
            )));
        }
        Ok(RcptVerdict::Accept(kept))
    }

    /// The one quota rule, for RCPT, the end of DATA and LMTP: whether `size` more octets (and one more
    /// message) fit `user`'s quota. A store error lets the message through: delivery checks again.
    pub async fn fit(&self, user: &Mailbox, quota: crate::directory::Quota, size: u64) -> Fit {
        let Some(quota) = quota else {
            return Fit::Fits;
        };
        if quota.0.is_some_and(|b| size > b) {
            return Fit::TooBig;
        }
        let store = self.store.clone();
        let probe = user.clone();
        match tokio::task::spawn_blocking(move || store.usage(&probe)).await {
            Ok(Ok(u)) if u.exceeds(quota, size) => Fit::Full,
            _ => Fit::Fits,
        }
    }

    /// [`Self::fit`] for a mailbox whose quota is not at hand (local users only; others always fit).
    pub async fn fit_mailbox(&self, mailbox: &Mailbox, size: u64) -> Fit {
        match self.directory.lookup_with_quota(mailbox).await {
            Ok(Some((user, quota, _))) => self.fit(&user, quota, size).await,
            _ => Fit::Fits,
        }
    }
}
