//! One place decides what becomes of a message from every verdict about it: the client's blocklist
//! listing (`[checks] dnsbl_action = "junk"`), the SPF/DKIM/DMARC action, and the content filters (a
//! refusal, a discard, a quarantine, rspamd's action under tern's score thresholds). The gravest verdict
//! wins: refuse at SMTP time, defer, discard, deliver to Junk, deliver. Every verdict that is not
//! "deliver" is kept as a reason for the log line (`fate=junk reasons=dnsbl:zen.test,dmarc:p=quarantine`).
//! Sieve comes later, at delivery, and reads what was recorded here (spamtest's score, virustest's value).

use crate::smtp::Reply;

/// What a verdict asks for, gravest last.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Fate {
    #[default]
    Deliver,
    Junk,
    Discard,
    Defer(Reply),
    Refuse(Reply),
}

impl Fate {
    fn weight(&self) -> u8 {
        match self {
            Fate::Deliver => 0,
            Fate::Junk => 1,
            Fate::Discard => 2,
            Fate::Defer(_) => 3,
            Fate::Refuse(_) => 4,
        }
    }

    pub fn word(&self) -> &'static str {
        match self {
            Fate::Deliver => "deliver",
            Fate::Junk => "junk",
            Fate::Discard => "discard",
            Fate::Defer(_) => "defer",
            Fate::Refuse(_) => "refuse",
        }
    }

    /// A refusal by its code: 4xx defers, anything else refuses.
    pub fn refusal(reply: Reply) -> Fate {
        if reply.code / 100 == 4 {
            Fate::Defer(reply)
        } else {
            Fate::Refuse(reply)
        }
    }
}

/// The verdicts so far and the fate they add up to.
#[derive(Debug, Default)]
pub struct Decision {
    fate: Fate,
    reasons: Vec<String>,
}

impl Decision {
    /// One verdict from `source` ("dmarc:p=quarantine", "filter:milter:127.0.0.1:8890"). An equal one
    /// does not replace the first: the first refusal's reply is the one given.
    pub fn note(&mut self, source: impl Into<String>, fate: Fate) {
        if fate == Fate::Deliver {
            return;
        }
        self.reasons.push(source.into());
        if fate.weight() > self.fate.weight() {
            self.fate = fate;
        }
    }

    pub fn fate(&self) -> &Fate {
        &self.fate
    }

    /// The reply that ends the message now (refuse or defer): no later verdict is asked for.
    pub fn reply(&self) -> Option<&Reply> {
        match &self.fate {
            Fate::Refuse(r) | Fate::Defer(r) => Some(r),
            _ => None,
        }
    }

    /// The folder local copies go to: Junk, or None for the recipient's own choice (Sieve, INBOX).
    pub fn folder(&self) -> Option<&'static str> {
        (self.fate == Fate::Junk).then_some("Junk")
    }

    /// The reasons, comma-separated, for the log line ("" when every verdict said deliver).
    pub fn reasons(&self) -> String {
        self.reasons.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::reply::EnhancedCode;

    #[test]
    fn the_gravest_verdict_wins_and_every_reason_is_kept() {
        let mut d = Decision::default();
        assert_eq!(d.fate(), &Fate::Deliver);
        d.note("spf:pass", Fate::Deliver);
        assert_eq!(d.reasons(), "");
        d.note("dnsbl:zen.test", Fate::Junk);
        d.note("dmarc:p=quarantine", Fate::Junk);
        assert_eq!(d.folder(), Some("Junk"));
        assert!(d.reply().is_none());
        let first = Reply::new(451, EnhancedCode(4, 7, 1), "later");
        d.note("filter:a", Fate::refusal(first.clone()));
        d.note(
            "filter:b",
            Fate::refusal(Reply::new(451, EnhancedCode(4, 7, 1), "second")),
        );
        assert_eq!(d.reply(), Some(&first));
        let refused = Reply::new(550, EnhancedCode(5, 7, 1), "no");
        d.note("filter:c", Fate::refusal(refused.clone()));
        assert_eq!(d.fate(), &Fate::Refuse(refused));
        assert_eq!(d.folder(), None);
        assert_eq!(
            d.reasons(),
            "dnsbl:zen.test,dmarc:p=quarantine,filter:a,filter:b,filter:c"
        );
    }

    #[test]
    fn discard_outweighs_junk_but_not_a_refusal() {
        let mut d = Decision::default();
        d.note("filter:a", Fate::Discard);
        d.note("dnsbl:z", Fate::Junk);
        assert_eq!(d.fate().word(), "discard");
        d.note(
            "filter:b",
            Fate::refusal(Reply::new(554, EnhancedCode(5, 7, 1), "x")),
        );
        assert_eq!(d.fate().word(), "refuse");
    }
}
