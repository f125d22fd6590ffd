//! What a filter's verdict does to the message: a milter's end-of-message changes (headers through the
//! cleaned edits of `milter::edit`, recipients, sender, body, quarantine) and rspamd's action and score,
//! with the thresholds an admin set in tern.

use super::{Outcome, header_end, rspamd};
use crate::milter::edit::{self, Change};
use crate::milter::{Response, actions};
use crate::queue::Body;
use crate::smtp::Reply;
use crate::smtp::reply::EnhancedCode;

/// The action taken on rspamd's verdict: its own, or with `reject_score` / `junk_score` set in tern, the
/// tier the score falls in (soft reject and greylist, rspamd's policies rather than scores, stay).
pub fn decide(action: &str, score: f64, junk: Option<f64>, reject: Option<f64>) -> &str {
    if matches!(action, "soft reject" | "greylist") {
        return action;
    }
    let spam_tier = matches!(action, "add header" | "rewrite subject");
    match reject {
        Some(r) if score >= r => return "reject",
        Some(_) if action == "reject" => {
            // Under tern's reject threshold: at most Junk.
            return match junk {
                Some(j) if score < j => "no action",
                _ => "add header",
            };
        }
        None if action == "reject" => return "reject",
        _ => {}
    }
    match junk {
        Some(j) if score >= j => {
            if spam_tier {
                action
            } else {
                "add header"
            }
        }
        Some(_) => "no action",
        None => action,
    }
}

/// rspamd's action on the message: refuse (reject 554, soft reject and greylist 451), discard, or deliver
/// with its headers; "add header", "rewrite subject" and "quarantine" deliver to Junk.
pub(super) fn apply_rspamd(
    name: &str,
    body: Body,
    v: &rspamd::Verdict,
    max_size: usize,
    out: &mut Outcome,
) -> Body {
    let text = |default: &str| {
        v.smtp_message
            .clone()
            .unwrap_or_else(|| default.to_string())
    };
    match v.action.as_str() {
        "reject" => {
            out.refused = Some(Reply::refused_by_filter(&text("Spam message rejected")));
            return body;
        }
        "soft reject" => {
            out.refused = Some(Reply::new(
                451,
                EnhancedCode(4, 7, 1),
                text("Try again later"),
            ));
            return body;
        }
        "greylist" => {
            out.refused = Some(Reply::new(
                451,
                EnhancedCode(4, 7, 1),
                text("Greylisted, try again later"),
            ));
            return body;
        }
        "add header" | "rewrite subject" | "quarantine" => {
            out.quarantine = Some(format!("{name}: {} (score {:.2})", v.action, v.score));
        }
        // rspamd's own "discard" (force_actions): accepted and dropped, as a milter's discard.
        "discard" => {
            out.discard = true;
            return body;
        }
        "no action" => {}
        other => {
            tracing::warn!(filter = %name, action = %crate::log::Escaped(other), "rspamd gave an action tern does not know; delivered as \"no action\"");
        }
    }
    let mut changes = Vec::new();
    for h in &v.remove_headers {
        changes.push(Response::ChgHeader(1, h.clone(), String::new()));
    }
    if v.add_headers.is_empty() {
        changes.push(Response::AddHeader(
            "X-Spamd-Result".into(),
            rspamd::result_header(v),
        ));
        if out.quarantine.is_some() {
            changes.push(Response::AddHeader("X-Spam".into(), "Yes".into()));
        }
    }
    for (n, val) in &v.add_headers {
        changes.push(Response::AddHeader(n.clone(), val.clone()));
    }
    if v.action == "rewrite subject"
        && let Some(s) = &v.subject
    {
        changes.push(Response::ChgHeader(1, "Subject".into(), s.clone()));
    }
    apply_changes(
        name,
        actions::ADDHDRS | actions::CHGHDRS,
        body,
        changes,
        max_size,
        out,
    )
}

/// Applies one filter's end-of-message changes it was allowed to make.
pub(super) fn apply_changes(
    name: &str,
    allowed: u32,
    body: Body,
    changes: Vec<Response>,
    max_size: usize,
    out: &mut Outcome,
) -> Body {
    let mut header_changes = Vec::new();
    let mut new_body: Option<Vec<u8>> = None;
    let refuse = |what: &str| {
        tracing::warn!(filter = %name, change = what, "content filter change ignored: not negotiated");
    };
    for c in changes {
        match c {
            Response::AddHeader(n, v) if allowed & actions::ADDHDRS != 0 => {
                header_changes.push(Change::Add(n, v))
            }
            Response::InsHeader(i, n, v) if allowed & actions::ADDHDRS != 0 => {
                header_changes.push(Change::Insert(i, n, v))
            }
            Response::ChgHeader(i, n, v) if allowed & actions::CHGHDRS != 0 => {
                header_changes.push(Change::Change(i, n, v))
            }
            Response::AddRcpt(r) if allowed & actions::ADDRCPT != 0 => {
                out.add_rcpts.push(strip_brackets(&r))
            }
            Response::AddRcptPar(r, _) if allowed & actions::ADDRCPT_PAR != 0 => {
                out.add_rcpts.push(strip_brackets(&r))
            }
            Response::DelRcpt(r) if allowed & actions::DELRCPT != 0 => {
                out.del_rcpts.push(strip_brackets(&r))
            }
            Response::ChgFrom(f, _) if allowed & actions::CHGFROM != 0 => {
                out.new_from = Some(strip_brackets(&f))
            }
            Response::Quarantine(reason) if allowed & actions::QUARANTINE != 0 => {
                out.quarantine = Some(if reason.is_empty() {
                    name.to_string()
                } else {
                    reason
                })
            }
            Response::ReplBody(chunk) if allowed & actions::CHGBODY != 0 => {
                let b = new_body.get_or_insert_with(Vec::new);
                if b.len() + chunk.len() <= max_size {
                    b.extend_from_slice(&chunk);
                } else {
                    tracing::warn!(filter = %name, "replacement body over the message size limit; the original is kept");
                    new_body = Some(Vec::new());
                    out.refused.get_or_insert(Reply::new(
                        451,
                        EnhancedCode(4, 3, 4),
                        "Content filter made the message too big",
                    ));
                }
            }
            Response::SetSymList(..) => {}
            other => refuse(&format!("{other:?}").chars().take(40).collect::<String>()),
        }
    }
    if header_changes.is_empty() && new_body.is_none() {
        return body;
    }
    let end = header_end(&body.head);
    let mut fields = edit::fields(&body.head[..end]);
    for c in &header_changes {
        if !edit::apply(&mut fields, c) {
            tracing::warn!(filter = %name, change = ?c, "content filter change ignored: bad header name");
        }
    }
    let mut head = edit::render(&fields);
    head.extend_from_slice(b"\r\n");
    match new_body {
        Some(b) => {
            head.extend_from_slice(&b);
            Body::memory(head)
        }
        None => {
            head.extend_from_slice(&body.head[end..]);
            Body {
                head,
                tail: body.tail,
            }
        }
    }
}

fn strip_brackets(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rspamd_discard_drops_and_quarantine_files_into_junk() {
        let verdict = |action: &str| crate::filter::rspamd::Verdict {
            action: action.into(),
            score: 9.0,
            required: 15.0,
            ..Default::default()
        };
        let body = || crate::queue::Body::memory(b"Subject: x\r\n\r\nhi\r\n".to_vec());
        let mut out = super::Outcome::default();
        super::apply_rspamd("rspamd:t", body(), &verdict("discard"), 1 << 20, &mut out);
        assert!(out.discard && out.refused.is_none() && out.quarantine.is_none());
        let mut out = super::Outcome::default();
        let b = super::apply_rspamd(
            "rspamd:t",
            body(),
            &verdict("quarantine"),
            1 << 20,
            &mut out,
        );
        assert!(!out.discard && out.quarantine.is_some());
        assert!(String::from_utf8_lossy(&b.head).contains("X-Spam: Yes"));
        let mut out = super::Outcome::default();
        super::apply_rspamd(
            "rspamd:t",
            body(),
            &verdict("something new"),
            1 << 20,
            &mut out,
        );
        assert!(!out.discard && out.quarantine.is_none() && out.refused.is_none());
    }

    #[test]
    fn thresholds_set_in_tern_decide_over_rspamd_actions() {
        use super::decide;
        assert_eq!(decide("add header", 7.0, None, None), "add header");
        assert_eq!(decide("no action", 7.0, Some(5.0), None), "add header");
        assert_eq!(decide("add header", 4.0, Some(5.0), None), "no action");
        assert_eq!(decide("reject", 16.0, Some(5.0), Some(20.0)), "add header");
        assert_eq!(decide("reject", 16.0, Some(17.0), Some(20.0)), "no action");
        assert_eq!(decide("add header", 21.0, Some(5.0), Some(20.0)), "reject");
        assert_eq!(decide("greylist", 30.0, Some(5.0), Some(20.0)), "greylist");
        assert_eq!(
            decide("rewrite subject", 8.0, Some(5.0), None),
            "rewrite subject"
        );
        assert_eq!(decide("reject", 16.0, None, None), "reject");
    }
}
