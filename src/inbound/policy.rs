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

impl RecipientPolicy {
    /// `may_relay`: the client authenticated, is a local program, or is in a trusted network.
    pub async fn check(&self, forward_path: &ForwardPath, may_relay: bool) -> RcptVerdict {
        match self.resolve(forward_path, may_relay).await {
            Ok(verdict) => verdict,
            Err(e) => {
                tracing::error!(error = %e, to = %forward_path, "recipient lookup failed");
                RcptVerdict::Refuse(Reply::temporary_lookup_failure())
            }
        }
    }

    async fn resolve(
        &self,
        forward_path: &ForwardPath,
        may_relay: bool,
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
            if let Some((user, quota)) = self.directory.lookup_with_quota(candidate).await? {
                return Ok(self.within_quota(user, quota).await);
            }
            if let Some(targets) = self.directory.alias(candidate).await? {
                return Ok(RcptVerdict::Accept(targets));
            }
        }
        if let Some(targets) = self.directory.catch_all(mailbox.domain()).await? {
            return Ok(RcptVerdict::Accept(targets));
        }
        Ok(RcptVerdict::Refuse(Reply::unknown_user(&given.to_string())))
    }

    /// 452 4.2.2 when the user's mailbox is already full (a later delivery that overflows it is deferred).
    async fn within_quota(&self, user: Mailbox, quota: crate::directory::Quota) -> RcptVerdict {
        let Some(quota) = quota else {
            return RcptVerdict::Accept(vec![user]);
        };
        let store = self.store.clone();
        let probe = user.clone();
        let usage = tokio::task::spawn_blocking(move || store.usage(&probe)).await;
        match usage {
            Ok(Ok(u)) if u.exceeds(quota, 0) => {
                RcptVerdict::Refuse(Reply::over_quota(&user.to_string()))
            }
            _ => RcptVerdict::Accept(vec![user]),
        }
    }
}
