//! Which recipients are accepted: users of the local domains and postmaster always (unknown users are
//! refused at RCPT time, so there is no backscatter); other domains only from clients that may relay.

use crate::directory::Directory;
use crate::smtp::server::RcptVerdict;
use crate::smtp::{Domain, ForwardPath, Mailbox, Reply};

pub struct RecipientPolicy {
    pub local_domains: Vec<Domain>,
    pub postmaster: Mailbox,
    pub directory: Directory,
    /// `+` for alice+tag@ delivering to alice@, if subaddressing is on.
    pub subaddress_separator: Option<String>,
}

impl RecipientPolicy {
    /// `may_relay`: the client authenticated, is a local program, or is in a trusted network.
    pub async fn check(&self, forward_path: &ForwardPath, may_relay: bool) -> RcptVerdict {
        let mailbox = match forward_path {
            ForwardPath::Postmaster => return RcptVerdict::Accept(self.postmaster.clone()),
            ForwardPath::Mailbox(m) => m,
        };
        if !self.local_domains.contains(mailbox.domain()) {
            return match may_relay {
                true => RcptVerdict::Accept(mailbox.clone()),
                false => RcptVerdict::Refuse(Reply::relay_denied(&mailbox.to_string())),
            };
        }
        // RFC 5321 4.5.1: postmaster@ every domain we accept mail for.
        if mailbox.local_part().eq_ignore_ascii_case("postmaster") {
            return RcptVerdict::Accept(self.postmaster.clone());
        }
        let base = self.subaddress_separator.as_deref().and_then(|sep| {
            let (user, _tag) = mailbox.local_part().split_once(sep)?;
            Mailbox::new(user, mailbox.domain().clone()).ok()
        });
        let found = match self.directory.lookup(mailbox).await {
            Ok(None) => match &base {
                Some(b) => self.directory.lookup(b).await,
                None => Ok(None),
            },
            other => other,
        };
        match found {
            Ok(Some(canonical)) => RcptVerdict::Accept(canonical),
            Ok(None) => RcptVerdict::Refuse(Reply::unknown_user(&mailbox.to_string())),
            Err(e) => {
                tracing::error!(error = %e, to = %mailbox, "recipient lookup failed");
                RcptVerdict::Refuse(Reply::temporary_lookup_failure())
            }
        }
    }
}
