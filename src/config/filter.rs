//! `[[filter]]`: content filters messages pass through while the SMTP session is open (milters), per
//! listener, with their timeouts and what a message gets when a filter fails.

use super::{ConfigError, ListenerKind, Validator, raw};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for FilterAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FilterAddress::Tcp(a) => write!(f, "{a}"),
            FilterAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What a message gets when its filter cannot answer (Postfix's milter_default_action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    Tempfail,
    Accept,
    Reject,
}

impl DefaultAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultAction::Tempfail => "tempfail",
            DefaultAction::Accept => "accept",
            DefaultAction::Reject => "reject",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    Milter,
    /// rspamd's HTTP protocol: the whole message to /checkv2 at end of DATA.
    Rspamd,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FilterSettings {
    pub kind: FilterKind,
    /// For log lines: "milter:127.0.0.1:11332", "rspamd:127.0.0.1:11333".
    pub name: String,
    pub address: FilterAddress,
    pub listeners: Vec<ListenerKind>,
    pub default_action: DefaultAction,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub content_timeout: Duration,
    /// rspamd's controller, for training.
    pub controller: Option<SocketAddr>,
    pub controller_password: Option<String>,
    /// rspamd score thresholds set in tern, over rspamd's own actions.
    pub reject_score: Option<f64>,
    pub junk_score: Option<f64>,
    /// A virus scanner: its verdict is Sieve's virustest.
    pub virus: bool,
}

impl Validator {
    pub(super) fn filters(
        &self,
        list: &[raw::RawFilter],
    ) -> Result<Vec<FilterSettings>, ConfigError> {
        let mut out = Vec::new();
        for (i, f) in list.iter().enumerate() {
            let key = |k: &str| format!("filter[{i}].{k}");
            let kind = match f.kind.as_str() {
                "milter" => FilterKind::Milter,
                "rspamd" => FilterKind::Rspamd,
                other => {
                    return Err(self.err(
                        key("kind"),
                        format!("{other:?} is not \"milter\" or \"rspamd\""),
                    ));
                }
            };
            let address = match kind {
                FilterKind::Rspamd => {
                    let hostport = f
                        .url
                        .strip_prefix("http://")
                        .map(|r| r.trim_end_matches('/'))
                        .and_then(|r| r.parse::<SocketAddr>().ok())
                        .ok_or_else(|| {
                            self.err(
                                key("url"),
                                format!(
                                    "{:?} is not http://ADDRESS:PORT (rspamd's normal worker, on this host or a trusted network)",
                                    f.url
                                ),
                            )
                        })?;
                    FilterAddress::Tcp(hostport)
                }
                FilterKind::Milter => match f.address.strip_prefix("unix:") {
                    Some(path) => FilterAddress::Unix(self.resolve(path)),
                    None => FilterAddress::Tcp(f.address.parse().map_err(|_| {
                        self.err(
                            key("address"),
                            format!("{:?} is not a socket address or unix:/path", f.address),
                        )
                    })?),
                },
            };
            let default_action = match f.default_action.as_str() {
                "tempfail" => DefaultAction::Tempfail,
                "accept" => DefaultAction::Accept,
                "reject" => DefaultAction::Reject,
                other => {
                    return Err(self.err(
                        key("default_action"),
                        format!("{other:?} is not \"tempfail\", \"accept\" or \"reject\""),
                    ));
                }
            };
            for (j, l) in f.listeners.iter().enumerate() {
                if !matches!(
                    l,
                    ListenerKind::Relay | ListenerKind::Submission | ListenerKind::Submissions
                ) {
                    return Err(self.err(
                        format!("filter[{i}].listeners[{j}]"),
                        format!("{:?} is not relay, submission or submissions", l.as_str()),
                    ));
                }
            }
            let controller = match &f.controller_url {
                Some(u) if kind == FilterKind::Rspamd => Some(
                    u.strip_prefix("http://")
                        .map(|r| r.trim_end_matches('/'))
                        .and_then(|r| r.parse::<SocketAddr>().ok())
                        .ok_or_else(|| {
                            self.err(
                                key("controller_url"),
                                format!("{u:?} is not http://ADDRESS:PORT"),
                            )
                        })?,
                ),
                Some(_) => {
                    return Err(self.err(key("controller_url"), "is for kind = \"rspamd\" filters"));
                }
                None => None,
            };
            if kind != FilterKind::Milter && f.virus {
                return Err(self.err(
                    key("virus"),
                    "is for kind = \"milter\" filters (clamav-milter): rspamd's answer does not say whether a virus was found",
                ));
            }
            if kind != FilterKind::Rspamd && (f.reject_score.is_some() || f.junk_score.is_some()) {
                return Err(self.err(
                    key("junk_score"),
                    "scores are for kind = \"rspamd\" filters",
                ));
            }
            out.push(FilterSettings {
                virus: f.virus,
                reject_score: f.reject_score,
                junk_score: f.junk_score,
                controller,
                controller_password: f.controller_password.clone(),
                kind,
                name: match kind {
                    FilterKind::Milter => format!("milter:{address}"),
                    FilterKind::Rspamd => format!("rspamd:{address}"),
                },
                address,
                listeners: f.listeners.clone(),
                default_action,
                connect_timeout: Duration::from_secs(f.connect_timeout_secs.max(1)),
                command_timeout: Duration::from_secs(f.command_timeout_secs.max(1)),
                content_timeout: Duration::from_secs(f.content_timeout_secs.max(1)),
            });
        }
        Ok(out)
    }
}
