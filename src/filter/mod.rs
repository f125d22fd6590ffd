//! Content filters on an SMTP session's way in (`[[filter]]`): one milter connection per filter per session,
//! opened at connect; HELO and each MAIL and RCPT are asked as they happen (a reject reaches the client at
//! that command), and at the end of DATA the header fields, the body in chunks of 64 KiB and end-of-message
//! go to each filter in turn, each seeing the message as the ones before it left it. A filter that is down,
//! slow or speaks nonsense gives its `default_action` for the rest of the session, with a log line; with
//! "accept" it is skipped, never silently.

mod apply;
pub mod milter;
pub mod rspamd;
pub mod train;

use crate::config::{DefaultAction, FilterSettings};
use crate::milter::edit;
use crate::milter::{Command, Family, Response, Stage, protocol};
use crate::queue::Body;
use crate::smtp::Reply;
use crate::smtp::reply::EnhancedCode;
pub use apply::decide;
use apply::{apply_changes, apply_rspamd};
use milter::{Answer, FilterError, Milter};
use std::sync::Arc;

/// What the session tells the filters about itself (the macros they commonly read).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `j`: this server's name.
    pub hostname: String,
    /// `{daemon_name}`: the listener kind.
    pub daemon: String,
    pub client: Option<std::net::SocketAddr>,
    /// `{client_name}`: the verified reverse name, or "[address]".
    pub client_name: String,
    pub tls_version: Option<String>,
    pub auth_user: Option<String>,
}

enum State {
    Open(Milter),
    /// Accepted the whole session, or skipped by default_action = "accept".
    Off,
    /// Failed with default_action tempfail or reject: every later MAIL gets this.
    Failed(Reply),
    /// rspamd over HTTP: one request per message, at its end.
    Http,
}

struct Slot {
    settings: Arc<FilterSettings>,
    state: State,
    /// This filter accepted the current message: nothing more of it goes there.
    done: bool,
}

/// What the filters decided about a message at its end.
#[derive(Debug, Default)]
pub struct Outcome {
    pub refused: Option<Reply>,
    pub discard: bool,
    /// SMFIR_QUARANTINE: deliver to Junk (tern does not hold it in the queue), with the filter's reason.
    pub quarantine: Option<String>,
    pub add_rcpts: Vec<String>,
    pub del_rcpts: Vec<String>,
    pub new_from: Option<String>,
    /// What each filter said, for the log line: "milter:127.0.0.1:8890:continue".
    pub summary: Vec<String>,
    /// RFC 5235 virustest, from the filters marked `virus = true` that saw the message: 1 scanned and
    /// clean, 5 found infected (quarantined, or an `X-Virus-Status: Infected` header from the scanner).
    /// None: no scanner saw it (virustest's 0).
    pub virus: Option<u8>,
}

/// What a virus scanner's answer says of the message: 5 when it quarantined it or marked it infected.
fn virus_value(changes: &[Response]) -> u8 {
    let infected = changes.iter().any(|c| match c {
        Response::Quarantine(_) => true,
        Response::AddHeader(n, v) | Response::InsHeader(_, n, v) | Response::ChgHeader(_, n, v) => {
            n.eq_ignore_ascii_case("X-Virus-Status")
                && v.trim_start().to_ascii_lowercase().starts_with("infected")
        }
        _ => false,
    });
    if infected { 5 } else { 1 }
}

pub struct Filters {
    slots: Vec<Slot>,
    facts: Facts,
    /// The current transaction's sender and accepted recipients (for rspamd's request headers).
    from: String,
    rcpts: Vec<String>,
    helo: Option<String>,
    transaction: bool,
    /// A filter said DISCARD at MAIL or RCPT: the message is accepted and dropped.
    discard: bool,
}

fn reply_for(filter: &str, r: &Response) -> Option<Reply> {
    match r {
        Response::Reject => Some(Reply::new(
            550,
            EnhancedCode(5, 7, 1),
            "Message refused by a content filter",
        )),
        Response::Tempfail | Response::ConnFail | Response::Shutdown => Some(Reply::new(
            451,
            EnhancedCode(4, 7, 1),
            "Content filter asks to try again later",
        )),
        Response::ReplyCode(text) => Some(parse_reply_code(filter, text)),
        _ => None,
    }
}

/// SMFIR_REPLYCODE's "550 5.7.1 text" as a reply; anything malformed becomes a plain reject (or tempfail
/// for a 4xx start), never a 2xx.
fn parse_reply_code(filter: &str, text: &str) -> Reply {
    let mut words = text.splitn(3, ' ');
    let code: u16 = words.next().and_then(|c| c.parse().ok()).unwrap_or(550);
    let temporary = (400..500).contains(&code);
    let code = if (400..600).contains(&code) {
        code
    } else {
        550
    };
    let second = words.next().unwrap_or("");
    let enhanced = {
        let parts: Vec<u16> = second.split('.').filter_map(|p| p.parse().ok()).collect();
        match parts.as_slice() {
            [c, s, d] if (*c == 4 || *c == 5) && *c == code / 100 => {
                Some(EnhancedCode(*c as u8, *s, *d))
            }
            _ => None,
        }
    };
    let rest = if enhanced.is_some() {
        words.next().unwrap_or("").to_string()
    } else {
        format!("{second} {}", words.next().unwrap_or(""))
            .trim()
            .to_string()
    };
    let default = if temporary {
        EnhancedCode(4, 7, 1)
    } else {
        EnhancedCode(5, 7, 1)
    };
    let text: String = rest
        .chars()
        .map(|c| {
            if c.is_control() || !c.is_ascii() {
                ' '
            } else {
                c
            }
        })
        .collect();
    let text = if text.trim().is_empty() {
        format!("Refused by {filter}")
    } else {
        text
    };
    Reply::new(code, enhanced.unwrap_or(default), text)
}

fn default_reply(action: DefaultAction) -> Option<Reply> {
    match action {
        DefaultAction::Tempfail => Some(Reply::new(
            451,
            EnhancedCode(4, 7, 1),
            "Content filter unavailable, try again later",
        )),
        DefaultAction::Reject => Some(Reply::new(
            550,
            EnhancedCode(5, 7, 1),
            "Content filter unavailable",
        )),
        DefaultAction::Accept => None,
    }
}

impl Slot {
    /// The filter failed: its default action from now on, said in the log.
    fn fail(&mut self, stage: &str, e: &FilterError) -> Option<Reply> {
        let action = self.settings.default_action;
        tracing::warn!(filter = %self.settings.name, stage, error = %e, default_action = action.as_str(), "content filter failed");
        let reply = default_reply(action);
        self.state = match &reply {
            Some(r) => State::Failed(r.clone()),
            None => State::Off,
        };
        reply
    }

    fn milter(&mut self) -> Option<&mut Milter> {
        match &mut self.state {
            State::Open(m) if !self.done => Some(m),
            _ => None,
        }
    }
}

impl Filters {
    /// Opens and greets every filter for a new session; None when no filter applies to it.
    pub async fn connect(list: &[Arc<FilterSettings>], facts: Facts) -> Option<Filters> {
        if list.is_empty() {
            return None;
        }
        let mut slots = Vec::new();
        for settings in list {
            let mut slot = Slot {
                settings: settings.clone(),
                state: State::Off,
                done: false,
            };
            if settings.kind == crate::config::FilterKind::Rspamd {
                slot.state = State::Http;
                slots.push(slot);
                continue;
            }
            match Milter::open(settings.clone()).await {
                Ok(m) => slot.state = State::Open(m),
                Err(e) => {
                    slot.fail("connect", &e);
                }
            }
            slots.push(slot);
        }
        let mut f = Filters {
            slots,
            facts,
            from: String::new(),
            rcpts: Vec::new(),
            helo: None,
            transaction: false,
            discard: false,
        };
        let client = f.facts.client;
        let name = f.facts.client_name.clone();
        let macros = f.macros(Stage::Connect);
        f.each(
            "connect",
            protocol::NOCONNECT,
            protocol::NR_CONN,
            |_| {
                vec![
                    Command::Macros(Stage::Connect, macros.clone()),
                    Command::Connect {
                        hostname: name.clone(),
                        family: client.map_or(Family::Unknown, Family::Inet),
                    },
                ]
            },
            true,
        )
        .await;
        Some(f)
    }

    fn macros(&self, stage: Stage) -> Vec<(String, String)> {
        let f = &self.facts;
        let mut m: Vec<(String, String)> = Vec::new();
        match stage {
            Stage::Connect => {
                m.push(("j".into(), f.hostname.clone()));
                m.push(("{daemon_name}".into(), f.daemon.clone()));
                if let Some(c) = f.client {
                    m.push(("{client_addr}".into(), c.ip().to_string()));
                    m.push(("{client_port}".into(), c.port().to_string()));
                }
                m.push(("{client_name}".into(), f.client_name.clone()));
            }
            Stage::Helo => {
                if let Some(v) = &f.tls_version {
                    m.push(("{tls_version}".into(), v.clone()));
                }
            }
            Stage::Mail => {
                if let Some(u) = &f.auth_user {
                    m.push(("{auth_authen}".into(), u.clone()));
                    m.push(("{auth_type}".into(), "PLAIN".into()));
                }
            }
            _ => {}
        }
        m
    }

    /// Sends `commands(slot)` to every open filter that wants the step (`skip` flag not negotiated), asking
    /// for the last one's answer unless `no_reply` was negotiated; returns the first refusal. `session`:
    /// a refusal holds for the whole session (connect, helo).
    async fn each(
        &mut self,
        stage: &str,
        skip: u32,
        no_reply: u32,
        commands: impl Fn(&Milter) -> Vec<Command>,
        session: bool,
    ) -> Option<Reply> {
        let mut refusal = None;
        for slot in &mut self.slots {
            if let State::Failed(r) = &slot.state {
                refusal.get_or_insert(r.clone());
                continue;
            }
            let Some(m) = slot.milter() else { continue };
            let mut cmds = commands(m);
            let mut last = cmds.pop();
            // A step left out still gets its macros: later stages read them (libmilter keeps them).
            if !m.wants(skip) {
                last = None;
            }
            let mut result: Result<Option<Answer>, FilterError> = Ok(None);
            for c in cmds {
                if let Err(e) = m.tell(c).await {
                    result = Err(e);
                    break;
                }
            }
            if let (Ok(_), Some(last)) = (&result, last) {
                result = if m.wants(no_reply) {
                    m.ask(last).await.map(Some)
                } else {
                    m.tell(last).await.map(|_| None)
                };
            }
            match result {
                Err(e) => {
                    if let Some(r) = slot.fail(stage, &e) {
                        refusal.get_or_insert(r);
                    }
                }
                Ok(None) => {}
                Ok(Some(answer)) => match answer.last {
                    Response::Accept if session => {
                        tracing::info!(filter = %slot.settings.name, stage, "content filter accepts the session");
                        if let State::Open(m) = std::mem::replace(&mut slot.state, State::Off) {
                            m.quit().await;
                        }
                    }
                    Response::Accept => slot.done = true,
                    Response::Discard if !session => self.discard = true,
                    Response::Continue | Response::Discard | Response::Skip => {}
                    other => {
                        if let Some(r) = reply_for(&slot.settings.name, &other) {
                            tracing::info!(filter = %slot.settings.name, stage, reply = %r.summary(), "content filter refused");
                            if session {
                                slot.state = State::Failed(r.clone());
                            }
                            refusal.get_or_insert(r);
                        }
                    }
                },
            }
        }
        refusal
    }

    /// What the session learnt since connect: the authenticated user, the TLS version.
    pub fn set_session(&mut self, auth_user: Option<String>, tls_version: Option<String>) {
        self.facts.auth_user = auth_user;
        if tls_version.is_some() {
            self.facts.tls_version = tls_version;
        }
    }

    /// MAIL FROM (with HELO first when it changed): the refusal to give, if any.
    pub async fn mail(
        &mut self,
        helo: &str,
        reverse_path: &str,
        params: Vec<String>,
    ) -> Option<Reply> {
        if self.transaction {
            for slot in &mut self.slots {
                if let State::Open(m) = &mut slot.state
                    && let Err(e) = m.tell(Command::Abort).await
                {
                    slot.fail("abort", &e);
                }
            }
        }
        self.transaction = true;
        self.discard = false;
        self.from = reverse_path.to_string();
        self.rcpts.clear();
        for slot in &mut self.slots {
            slot.done = false;
        }
        if self.helo.as_deref() != Some(helo) {
            self.helo = Some(helo.to_string());
            let macros = self.macros(Stage::Helo);
            let h = helo.to_string();
            if let Some(r) = self
                .each(
                    "helo",
                    protocol::NOHELO,
                    protocol::NR_HELO,
                    |_| {
                        vec![
                            Command::Macros(Stage::Helo, macros.clone()),
                            Command::Helo(h.clone()),
                        ]
                    },
                    true,
                )
                .await
            {
                return Some(r);
            }
        }
        let mut macros = self.macros(Stage::Mail);
        macros.push(("{mail_addr}".into(), reverse_path.to_string()));
        let mut args = vec![format!("<{reverse_path}>")];
        args.extend(params);
        self.each(
            "mail",
            protocol::NOMAIL,
            protocol::NR_MAIL,
            |_| {
                vec![
                    Command::Macros(Stage::Mail, macros.clone()),
                    Command::Mail(args.clone()),
                ]
            },
            false,
        )
        .await
    }

    pub async fn rcpt(&mut self, forward_path: &str) -> Option<Reply> {
        let macros = vec![("{rcpt_addr}".to_string(), forward_path.to_string())];
        let arg = format!("<{forward_path}>");
        let refusal = self
            .each(
                "rcpt",
                protocol::NORCPT,
                protocol::NR_RCPT,
                |_| {
                    vec![
                        Command::Macros(Stage::Rcpt, macros.clone()),
                        Command::Rcpt(vec![arg.clone()]),
                    ]
                },
                false,
            )
            .await;
        if refusal.is_none() {
            self.rcpts.push(forward_path.to_string());
        }
        refusal
    }

    /// The end of DATA: every filter in turn gets the message as the ones before it left it; `body` comes
    /// back changed when a filter changed it.
    /// `queue_id`: the ID intake will give the message (milters read it as the `i` macro).
    pub async fn message(
        &mut self,
        mut body: Body,
        max_size: usize,
        queue_id: &str,
    ) -> (Body, Outcome) {
        let mut out = Outcome {
            discard: self.discard,
            ..Default::default()
        };
        self.transaction = false;
        for i in 0..self.slots.len() {
            if let State::Failed(r) = &self.slots[i].state {
                out.refused = Some(r.clone());
                break;
            }
            let name = self.slots[i].settings.name.clone();
            if matches!(self.slots[i].state, State::Http) {
                let env = rspamd::Envelope {
                    ip: self.facts.client.map(|c| c.ip()),
                    helo: self.helo.clone().unwrap_or_default(),
                    hostname: Some(self.facts.client_name.clone()),
                    from: self.from.clone(),
                    rcpts: self.rcpts.clone(),
                    user: self.facts.auth_user.clone(),
                    queue_id: queue_id.to_string(),
                    tls_version: self.facts.tls_version.clone(),
                };
                let settings = self.slots[i].settings.clone();
                match rspamd::check(&settings, &env, &body).await {
                    Ok(mut v) => {
                        v.action = decide(
                            &v.action,
                            v.score,
                            settings.junk_score,
                            settings.reject_score,
                        )
                        .to_string();
                        out.summary.push(format!(
                            "{name}:{} score={:.2}/{:.2}",
                            v.action.replace(' ', "_"),
                            v.score,
                            v.required
                        ));
                        body = apply_rspamd(&name, body, &v, max_size, &mut out);
                        if out.refused.is_some() || out.discard {
                            break;
                        }
                    }
                    Err(e) => {
                        out.summary.push(format!("{name}:failed"));
                        let action = settings.default_action;
                        tracing::warn!(filter = %name, stage = "eom", error = %e, default_action = action.as_str(), "content filter failed");
                        // Per message: rspamd has no session to lose, the next message asks again.
                        if let Some(r) = default_reply(action) {
                            out.refused = Some(r);
                            break;
                        }
                    }
                }
                continue;
            }
            let Some(m) = self.slots[i].milter() else {
                out.summary.push(format!("{name}:skipped"));
                continue;
            };
            let limit = m.settings.content_timeout;
            let sent = tokio::time::timeout(limit, send_message(m, &body, queue_id)).await;
            let answer = match sent {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => {
                    out.summary.push(format!("{name}:failed"));
                    if let Some(r) = self.slots[i].fail("eom", &e) {
                        out.refused = Some(r);
                        break;
                    }
                    continue;
                }
                Err(_) => {
                    out.summary.push(format!("{name}:timeout"));
                    if let Some(r) = self.slots[i].fail("eom", &FilterError::Timeout(limit)) {
                        out.refused = Some(r);
                        break;
                    }
                    continue;
                }
            };
            let Some(answer) = answer else {
                // Accepted earlier in the message (at a header or body chunk).
                out.summary.push(format!("{name}:accept"));
                // A scanner that stopped before the end may not have seen the whole body: not tested (0).
                continue;
            };
            let verdict = match &answer.last {
                Response::Accept => "accept",
                Response::Continue => "continue",
                Response::Discard => "discard",
                Response::Reject | Response::ReplyCode(_) => "reject",
                _ => "tempfail",
            };
            out.summary.push(format!("{name}:{verdict}"));
            match &answer.last {
                Response::Accept | Response::Continue => {}
                Response::Discard => {
                    out.discard = true;
                    break;
                }
                other => {
                    out.refused = reply_for(&name, other).or_else(|| {
                        Some(Reply::new(
                            451,
                            EnhancedCode(4, 7, 1),
                            "Content filter failed",
                        ))
                    });
                    break;
                }
            }
            if self.slots[i].settings.virus {
                out.virus = out.virus.max(Some(virus_value(&answer.changes)));
            }
            let Some(m) = self.slots[i].milter() else {
                continue;
            };
            let allowed = m.actions;
            body = apply_changes(&name, allowed, body, answer.changes, max_size, &mut out);
        }
        (body, out)
    }

    /// SMFIC_QUIT to every filter still open.
    pub async fn quit(self) {
        for slot in self.slots {
            if let State::Open(m) = slot.state {
                m.quit().await;
            }
        }
    }
}

/// Where the header section ends in `head` (after its empty line), or its length when there is none.
fn header_end(head: &[u8]) -> usize {
    memchr::memmem::find(head, b"\r\n\r\n").map_or(head.len(), |i| i + 4)
}

/// Headers, end of headers, body chunks and end of message; None when the filter accepted before the end.
/// The message to one milter; `queue_id` goes with the DATA, end-of-header and end-of-message macros
/// as `i` (Postfix's milter_data_macros, milter_end_of_header_macros and milter_end_of_data_macros).
async fn send_message(
    m: &mut Milter,
    body: &Body,
    queue_id: &str,
) -> Result<Option<Answer>, FilterError> {
    let i = || vec![("i".to_string(), queue_id.to_string())];
    let end = header_end(&body.head);
    let section = &body.head[..end];
    let ask = |m: &Milter, no_reply: u32| m.wants(no_reply);
    if m.wants(protocol::NODATA) {
        m.tell(Command::Macros(Stage::Data, i())).await?;
        if ask(m, protocol::NR_DATA) {
            if let Some(done) = early(m.ask(Command::Data).await?)? {
                return Ok(done);
            }
        } else {
            m.tell(Command::Data).await?;
        }
    }
    if m.wants(protocol::NOHDRS) {
        for f in edit::fields(section)
            .into_iter()
            .filter(|f| !f.name.is_empty())
        {
            let c = Command::Header(f.name, f.value);
            if ask(m, protocol::NR_HDR) {
                if let Some(done) = early(m.ask(c).await?)? {
                    return Ok(done);
                }
            } else {
                m.tell(c).await?;
            }
        }
    }
    if m.wants(protocol::NOEOH) {
        m.tell(Command::Macros(Stage::Eoh, i())).await?;
        if ask(m, protocol::NR_EOH) {
            if let Some(done) = early(m.ask(Command::Eoh).await?)? {
                return Ok(done);
            }
        } else {
            m.tell(Command::Eoh).await?;
        }
    }
    if m.wants(protocol::NOBODY) {
        let mapped = body.map()?;
        let mut pending: Vec<u8> = Vec::with_capacity(crate::milter::BODY_CHUNK);
        let mut skipped = false;
        let parts: Vec<&[u8]> = mapped.parts().collect();
        'parts: for (n, part) in parts.iter().enumerate() {
            let part = if n == 0 {
                &part[end.min(part.len())..]
            } else {
                part
            };
            for piece in part.chunks(crate::milter::BODY_CHUNK) {
                pending.extend_from_slice(piece);
                while pending.len() >= crate::milter::BODY_CHUNK {
                    let chunk: Vec<u8> = pending.drain(..crate::milter::BODY_CHUNK).collect();
                    if send_chunk(m, chunk).await? {
                        skipped = true;
                        break 'parts;
                    }
                }
            }
        }
        if !skipped && !pending.is_empty() {
            send_chunk(m, pending).await?;
        }
    }
    m.tell(Command::Macros(Stage::Eom, i())).await?;
    let answer = m.ask(Command::BodyEob).await?;
    Ok(Some(answer))
}

/// One body chunk; true when the filter asked to skip the rest.
async fn send_chunk(m: &mut Milter, chunk: Vec<u8>) -> Result<bool, FilterError> {
    if !m.wants(protocol::NR_BODY) {
        m.tell(Command::Body(chunk)).await?;
        return Ok(false);
    }
    let a = m.ask(Command::Body(chunk)).await?;
    match a.last {
        Response::Skip => Ok(true),
        Response::Continue => Ok(false),
        // Accept or a verdict before the end: the end-of-message answer carries it for tern.
        _ => Ok(false),
    }
}

/// An answer before end of message: Continue goes on; anything final other than accept is kept for the
/// end (libmilter filters repeat it there); accept ends this filter's part in the message.
fn early(a: Answer) -> Result<Option<Option<Answer>>, FilterError> {
    match a.last {
        Response::Continue | Response::Skip => Ok(None),
        Response::Accept => Ok(Some(None)),
        _ => Ok(Some(Some(a))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reply_codes_from_filters_stay_refusals() {
        let r = super::parse_reply_code("f", "554 5.7.1 spam detected");
        assert_eq!(
            (r.code, r.enhanced.unwrap().to_string(), r.lines[0].as_str()),
            (554, "5.7.1".into(), "spam detected")
        );
        let r = super::parse_reply_code("f", "250 2.0.0 ok");
        assert_eq!(r.code, 550);
        let r = super::parse_reply_code("f", "451 try\r\nlater");
        assert_eq!(
            (r.code, r.enhanced.unwrap().to_string()),
            (451, "4.7.1".into())
        );
        assert!(!r.lines[0].contains('\n'));
        let r = super::parse_reply_code("f", "550 4.7.1 mixed");
        assert_eq!(r.enhanced.unwrap().to_string(), "5.7.1");
    }
}
