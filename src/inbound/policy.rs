//! Which recipients the relay listener accepts: users of the local domains and postmaster; anything else is
//! refused at RCPT time (no backscatter), and other domains are refused as relaying.

use crate::directory::Directory;
use crate::smtp::server::RcptVerdict;
use crate::smtp::{Domain, ForwardPath, Mailbox, Reply};

pub struct RecipientPolicy {
    pub local_domains: Vec<Domain>,
    pub postmaster: Mailbox,
    pub directory: Directory,
}

impl RecipientPolicy {
    pub async fn check(&self, forward_path: &ForwardPath) -> RcptVerdict {
        let mailbox = match forward_path {
            ForwardPath::Postmaster => return RcptVerdict::Accept(self.postmaster.clone()),
            ForwardPath::Mailbox(m) => m,
        };
        if !self.local_domains.contains(mailbox.domain()) {
            return RcptVerdict::Refuse(Reply::relay_denied(&mailbox.to_string()));
        }
        // RFC 5321 4.5.1: postmaster@ every domain we accept mail for.
        if mailbox.local_part().eq_ignore_ascii_case("postmaster") {
            return RcptVerdict::Accept(self.postmaster.clone());
        }
        match self.directory.lookup(mailbox).await {
            Ok(Some(canonical)) => RcptVerdict::Accept(canonical),
            Ok(None) => RcptVerdict::Refuse(Reply::unknown_user(&mailbox.to_string())),
            Err(e) => {
                tracing::error!(error = %e, to = %mailbox, "recipient lookup failed");
                RcptVerdict::Refuse(Reply::temporary_lookup_failure())
            }
        }
    }
}
