//! One domain's recipients of one message: route (MX, implicit MX, null MX), try each host and address in
//! turn, and run the SMTP transaction. Whether a failure is temporary or permanent is decided here, in one
//! place per case, and each recipient gets its own result.

use super::Outbound;
use super::client::{
    COMMAND_TIMEOUT, ConnError, Connection, DATA_INIT_TIMEOUT, FINAL_DOT_TIMEOUT, GREETING_TIMEOUT,
};
use crate::config::TlsPolicy;
use crate::dns::{DnsError, Route};
use crate::intake::Attempt;
use crate::queue::{QueuedMessage, QueuedRecipient};
use crate::smtp::Reply;
use crate::smtp::client::{DotStuffer, MailOptions, mail_command, rcpt_command};
use std::net::SocketAddr;
use std::sync::Arc;

/// Why this host could not take the message, so the next host should be tried; `permanent` when it refused
/// the session itself (a 5xx greeting or EHLO): if every host does, the recipients fail for good.
struct TryNext(String, bool);

impl TryNext {
    fn temporary(reason: String) -> TryNext {
        TryNext(reason, false)
    }
}

pub(super) fn all(rcpts: &[&QueuedRecipient], f: impl Fn() -> Attempt) -> Vec<Attempt> {
    rcpts.iter().map(|_| f()).collect()
}

pub(super) fn permanent(reply: impl Into<String>, relay: Option<String>) -> Attempt {
    Attempt::Permanent {
        reply: reply.into(),
        relay,
    }
}

pub(super) fn temporary(reply: impl Into<String>, relay: Option<String>) -> Attempt {
    Attempt::Temporary {
        reply: reply.into(),
        relay,
    }
}

/// The reply's class decides: 2xx ok, 5xx permanent; 4xx, and a 3xx where none belongs (a final reply
/// to the message, or to RCPT), are temporary: a 3xx never means the message was taken.
pub(super) fn judge(reply: &Reply, relay: &str) -> Attempt {
    let text = reply.summary();
    match reply.code {
        200..=299 => Attempt::Delivered {
            reply: text,
            relay: relay.to_string(),
        },
        500..=599 => permanent(text, Some(relay.to_string())),
        _ => temporary(text, Some(relay.to_string())),
    }
}

/// Whether an address is one a public MX may have: not loopback, private, link-local, shared (CGNAT),
/// unspecified, multicast or documentation space. Delivery elsewhere needs `allow_private_addresses`.
pub(super) fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] == 0x2001 && seg[1] == 0x0db8))
        }
    }
}

/// Received: headers in the header section.
fn received_count(body: &[u8]) -> usize {
    crate::message::count(body, "Received")
}

pub(super) async fn deliver_domain(
    ctx: &Outbound,
    m: &QueuedMessage,
    domain: &str,
    rcpts: &[&QueuedRecipient],
) -> Vec<Attempt> {
    let hops = received_count(&m.body.head) + 1;
    if hops > ctx.settings.max_received {
        let reply = format!("5.4.14 hop count exceeded: {hops} Received: headers (mail loop?)");
        return all(rcpts, || permanent(reply.clone(), None));
    }
    let rule = crate::config::rule_for(&ctx.settings.transports, domain);
    if let Some(rule) = rule
        && let Some(target) = &rule.lmtp
    {
        return super::lmtp::via_lmtp(ctx, m, target, rcpts).await;
    }
    if let Some(rule) = rule
        && let Some((host, port)) = &rule.relay
    {
        return via_relay(ctx, m, domain, rule, host, *port, rcpts).await;
    }
    let hosts = match ctx.dns.route(domain, &ctx.hostname).await {
        Ok(Route::Mx(hosts)) => hosts,
        Ok(Route::Implicit(d)) => vec![d],
        Ok(Route::Null) => {
            let reply = format!("556 5.1.10 domain {domain} accepts no mail (null MX)");
            return all(rcpts, || permanent(reply.clone(), None));
        }
        Ok(Route::OnlySelf) => {
            // A DNS or configuration mistake that may be mended: retried, not bounced.
            let reply = format!(
                "4.4.6 mail for {domain} loops back to myself: {} is its best MX and the domain is not local",
                ctx.hostname
            );
            return all(rcpts, || temporary(reply.clone(), None));
        }
        Err(DnsError::NoSuchDomain(_)) => {
            let reply = format!("5.1.2 domain {domain} does not exist (NXDOMAIN)");
            return all(rcpts, || permanent(reply.clone(), None));
        }
        Err(e) => {
            let reply = format!("4.4.3 {e}");
            return all(rcpts, || temporary(reply.clone(), None));
        }
    };
    let mut last = None;
    let mut any_address = false;
    // Every host tried refused the session with a 5xx: the recipients fail (else they are retried).
    let mut all_refused = true;
    for host in &hosts {
        let addresses = match ctx.dns.addresses(host).await {
            Ok(a) => a,
            Err(DnsError::NoSuchDomain(_)) => Vec::new(),
            Err(e) => {
                last = Some(format!("4.4.3 {e}"));
                all_refused = false;
                continue;
            }
        };
        for ip in addresses {
            any_address = true;
            if !ctx.settings.allow_private_addresses && !is_public(ip) {
                tracing::warn!(queue_id = %m.id, domain, host = %host, addr = %ip, "MX address is not public; refused");
                last = Some(format!(
                    "4.4.4 MX {host} of {domain} resolves to {ip}, which is not a public address (delivery.allow_private_addresses is off)"
                ));
                all_refused = false;
                continue;
            }
            let addr = SocketAddr::new(ip, ctx.settings.remote_port);
            if ctx.is_own(addr) {
                let reply =
                    format!("5.4.6 mail for {domain} loops back to myself (MX {host} is {addr})");
                return all(rcpts, || permanent(reply.clone(), None));
            }
            let opts = Opts {
                tls: rule
                    .and_then(|r| r.tls)
                    .unwrap_or_else(|| ctx.tls_policy(domain)),
                auth: None,
                rule,
            };
            match transact(ctx, m, domain, host, addr, rcpts, &opts).await {
                Ok(attempts) => return attempts,
                Err(TryNext(reason, refused)) => {
                    tracing::info!(queue_id = %m.id, domain, host = %host, addr = %addr, reason = %reason, "trying the next MX");
                    all_refused &= refused;
                    last = Some(reason);
                }
            }
        }
    }
    match last {
        Some(reason) if all_refused => all(rcpts, || permanent(reason.clone(), None)),
        Some(reason) => all(rcpts, || temporary(reason.clone(), None)),
        None if !any_address => {
            let reply = format!("5.4.4 no usable host for {domain}: its MX hosts have no address");
            all(rcpts, || permanent(reply.clone(), None))
        }
        None => all(rcpts, || temporary("4.4.1 no MX host answered", None)),
    }
}

/// How to talk to a host: the TLS policy, and AUTH for a relay.
struct Opts<'a> {
    tls: TlsPolicy,
    auth: Option<&'a crate::config::RelayAuth>,
    /// The rule whose source addresses connections use, if any.
    rule: Option<&'a crate::config::TransportRule>,
}

impl Opts<'_> {
    fn source_for(&self, addr: SocketAddr) -> Option<std::net::IpAddr> {
        self.rule.and_then(|r| r.source_for(addr.ip()))
    }
}

/// A `[[transport]]` relay: its address (a name resolved by A/AAAA, no MX lookup), its TLS policy and
/// AUTH. The admin chose it, so private addresses are fine; our own listeners are still a loop.
async fn via_relay(
    ctx: &Outbound,
    m: &QueuedMessage,
    domain: &str,
    rule: &crate::config::TransportRule,
    host: &str,
    port: u16,
    rcpts: &[&QueuedRecipient],
) -> Vec<Attempt> {
    let addresses = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match ctx.dns.addresses(host).await {
            Ok(a) if !a.is_empty() => a,
            Ok(_) | Err(DnsError::NoSuchDomain(_)) => {
                // The configuration names a host that does not exist: mended by the admin, so retried.
                let reply = format!("4.4.4 relay {host} has no address");
                return all(rcpts, || temporary(reply.clone(), None));
            }
            Err(e) => {
                let reply = format!("4.4.3 relay {host}: {e}");
                return all(rcpts, || temporary(reply.clone(), None));
            }
        },
    };
    let opts = Opts {
        tls: rule.tls.unwrap_or_else(|| ctx.tls_policy(domain)),
        auth: rule.auth.as_ref(),
        rule: Some(rule),
    };
    let mut last = format!("4.4.1 relay {host} did not answer");
    for ip in addresses {
        let addr = SocketAddr::new(ip, port);
        if ctx.is_own(addr) {
            let reply = format!("5.4.6 the relay for {domain} ({host}, {addr}) is this server");
            return all(rcpts, || permanent(reply.clone(), None));
        }
        match transact(ctx, m, domain, host, addr, rcpts, &opts).await {
            Ok(attempts) => return attempts,
            Err(TryNext(reason, _)) => {
                tracing::info!(queue_id = %m.id, domain, relay = %host, addr = %addr, reason = %reason, "relay address failed");
                last = reason;
            }
        }
    }
    // A relay's refusal of the session says nothing final about the recipients: retried.
    all(rcpts, || temporary(last.clone(), None))
}

/// AUTH at a relay, PLAIN or LOGIN as offered (RFC 4954); only inside TLS, or to a loopback address.
async fn authenticate(
    conn: &mut Connection,
    auth: &crate::config::RelayAuth,
    host: &str,
) -> Result<(), TryNext> {
    use base64::Engine;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    if conn.tls.is_none() && !conn.addr.ip().is_loopback() {
        return Err(TryNext::temporary(format!(
            "4.7.10 relay {host} offers no TLS: the AUTH password is not sent in the clear"
        )));
    }
    let reply = if conn.caps.auth.iter().any(|m| m == "PLAIN") {
        let token = b64(format!("\0{}\0{}", auth.user, auth.password).as_bytes());
        conn.command(&format!("AUTH PLAIN {token}\r\n"), COMMAND_TIMEOUT)
            .await
            .map_err(|e| TryNext::temporary(format!("4.4.2 {e}")))?
    } else if conn.caps.auth.iter().any(|m| m == "LOGIN") {
        let r = conn
            .command("AUTH LOGIN\r\n", COMMAND_TIMEOUT)
            .await
            .map_err(|e| TryNext::temporary(format!("4.4.2 {e}")))?;
        if r.code != 334 {
            return Err(TryNext::temporary(format!(
                "4.7.0 relay {host} refused AUTH LOGIN: {}",
                r.summary()
            )));
        }
        let r = conn
            .command(
                &format!("{}\r\n", b64(auth.user.as_bytes())),
                COMMAND_TIMEOUT,
            )
            .await
            .map_err(|e| TryNext::temporary(format!("4.4.2 {e}")))?;
        if r.code != 334 {
            return Err(TryNext::temporary(format!(
                "4.7.0 relay {host} refused the user name: {}",
                r.summary()
            )));
        }
        conn.command(
            &format!("{}\r\n", b64(auth.password.as_bytes())),
            COMMAND_TIMEOUT,
        )
        .await
        .map_err(|e| TryNext::temporary(format!("4.4.2 {e}")))?
    } else {
        return Err(TryNext::temporary(format!(
            "4.7.0 relay {host} offers neither AUTH PLAIN nor LOGIN"
        )));
    };
    if reply.code == 235 {
        tracing::debug!(relay = host, user = %crate::log::Escaped(&auth.user), "authenticated at the relay");
        Ok(())
    } else {
        // Wrong credentials are the admin's to mend: the mail waits (and the reply, never the password,
        // is in the log and the queue).
        Err(TryNext::temporary(format!(
            "4.7.8 relay {host} refused the login of {}: {}",
            auth.user,
            reply.summary()
        )))
    }
}

/// A connection ready for MAIL: from the idle pool, or new (greeting, EHLO, STARTTLS per policy, AUTH
/// for a relay that needs it).
async fn open(
    ctx: &Outbound,
    domain: &str,
    host: &str,
    addr: SocketAddr,
    opts: &Opts<'_>,
) -> Result<Connection, TryNext> {
    let policy = opts.tls;
    let mut use_tls = true;
    for _ in 0..2 {
        let mut conn = Connection::connect(
            addr,
            host,
            ctx.settings.connect_timeout,
            opts.source_for(addr),
        )
        .await
        .map_err(|e| TryNext::temporary(format!("4.4.1 {e}")))?;
        let greeting = conn
            .reply(GREETING_TIMEOUT)
            .await
            .map_err(|e| TryNext::temporary(format!("4.4.2 {e}")))?;
        match greeting.code {
            220 => {}
            // RFC 5321 3.1: a 554 greeting refuses this host's session; another MX may take the mail.
            500..=599 => {
                conn.quit().await;
                return Err(TryNext(greeting.summary(), true));
            }
            _ => return Err(TryNext::temporary(greeting.summary())),
        }
        let hello = conn
            .hello(&ctx.hostname)
            .await
            .map_err(|e| TryNext::temporary(format!("4.4.2 {e}")))?;
        match hello.code {
            250 => {}
            500..=599 => return Err(TryNext(hello.summary(), true)),
            _ => return Err(TryNext::temporary(hello.summary())),
        }
        if !(conn.caps.starttls && use_tls) {
            if policy != TlsPolicy::May {
                conn.quit().await;
                return Err(TryNext::temporary(format!(
                    "4.7.5 TLS is required for {domain} but {host} does not offer STARTTLS"
                )));
            }
            if let Some(auth) = opts.auth {
                authenticate(&mut conn, auth, host).await?;
            }
            return Ok(conn);
        }
        let config = if policy == TlsPolicy::Verify {
            ctx.tls.verified.clone()
        } else {
            ctx.tls.opportunistic.clone()
        };
        match conn.starttls(config).await {
            Ok(mut tls) => {
                let hello = tls
                    .hello(&ctx.hostname)
                    .await
                    .map_err(|e| TryNext::temporary(format!("4.4.2 {e}")))?;
                if hello.code != 250 {
                    return Err(TryNext::temporary(hello.summary()));
                }
                if let Some(auth) = opts.auth {
                    authenticate(&mut tls, auth, host).await?;
                }
                return Ok(tls);
            }
            Err((e, _)) if policy == TlsPolicy::May => {
                // Opportunistic: a broken handshake falls back to plaintext on a new connection.
                tracing::info!(host, error = %e, "STARTTLS failed; retrying without TLS");
                use_tls = false;
            }
            Err((e, _)) => return Err(TryNext::temporary(format!("4.7.5 {e}"))),
        }
    }
    Err(TryNext::temporary(format!(
        "4.4.2 could not open a session with {host}"
    )))
}

/// What goes on the wire: our headers and the message's header section in memory, then (for a spooled
/// message) its tail, read from disk in chunks while it is sent.
struct Outgoing {
    head: Vec<u8>,
    tail: Option<Arc<crate::queue::spool::Tail>>,
}

/// Tail octets read from disk per write to the server.
const SEND_CHUNK: usize = 256 * 1024;

impl Outgoing {
    fn len(&self) -> usize {
        self.head.len() + self.tail.as_ref().map_or(0, |t| t.len as usize)
    }

    /// The tail's piece at `at` (at most [`SEND_CHUNK`] octets, read on the blocking pool); empty at its end.
    async fn tail_piece(&self, at: u64) -> Result<Vec<u8>, ConnError> {
        let Some(tail) = self.tail.clone() else {
            return Ok(Vec::new());
        };
        let n = (tail.len.saturating_sub(at) as usize).min(SEND_CHUNK);
        if n == 0 {
            return Ok(Vec::new());
        }
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n];
            tail.read_at(at, &mut buf).map(|_| buf)
        })
        .await
        .map_err(|e| ConnError(format!("reading the spooled message: {e}")))?
        .map_err(|e| ConnError(format!("reading the spooled message: {e}")))
    }
}

/// Writes `prefix`, then the message (dot-stuffed and ended with `.CRLF` for DATA): the head, then a
/// spooled tail piece by piece.
async fn send_content(
    conn: &mut Connection,
    data: &Outgoing,
    prefix: &[u8],
    stuff: bool,
) -> Result<(), ConnError> {
    let mut stuffer = DotStuffer::default();
    let mut out = Vec::with_capacity(prefix.len() + data.head.len() + 64);
    out.extend_from_slice(prefix);
    let mut put = |piece: &[u8], out: &mut Vec<u8>| {
        if stuff {
            stuffer.push(piece, out)
        } else {
            out.extend_from_slice(piece)
        }
    };
    put(&data.head, &mut out);
    let mut at = 0u64;
    loop {
        let piece = data.tail_piece(at).await?;
        if piece.is_empty() {
            break;
        }
        conn.send(&out).await?;
        out.clear();
        put(&piece, &mut out);
        at += piece.len() as u64;
    }
    if stuff {
        stuffer.finish(&mut out);
    }
    conn.send(&out).await
}

/// Our Received: header for this copy, then the message; DKIM-signed when intake decided the message may
/// carry our signature (`dkim_domain`). RSA over a large message is CPU work: it runs on the blocking pool,
/// over a spooled tail mapped from its file.
async fn content(ctx: &Outbound, m: &QueuedMessage, rcpts: &[&QueuedRecipient]) -> Outgoing {
    let date = crate::clock::rfc5322_date(m.received_at);
    let mut out = m.trace.clone().into_bytes();
    if let [only] = rcpts {
        out.extend_from_slice(format!("\r\n\tfor <{}>", only.mailbox).as_bytes());
    }
    out.extend_from_slice(format!(";\r\n\t{date}\r\n").as_bytes());
    out.extend_from_slice(&m.body.head);
    let tail = m.body.tail.clone();
    let Some(domain) = m.dkim_domain.clone() else {
        return Outgoing { head: out, tail };
    };
    let dkim = ctx.dkim.clone();
    let mapped_tail = tail.clone();
    let head_fields = out.len() - m.body.head.len() + crate::message::header_len(&m.body.head);
    let signed = tokio::task::spawn_blocking(move || {
        let Some(t) = &mapped_tail else {
            return (dkim.sign(&domain, &out), out);
        };
        // The signer takes header fields first, then a message with none (the empty line and the body):
        // our fields and the head's, then the tail mapped from the empty line before it.
        match t.map_from_empty_line() {
            Ok(Some(body)) => {
                let signature = dkim.sign_parts(&domain, &[&out[..head_fields], &body]);
                (signature, out)
            }
            Ok(None) => {
                tracing::error!(path = %t.path().display(), "spooled message without an empty line before its body; sending unsigned");
                (None, out)
            }
            Err(e) => {
                tracing::error!(path = %t.path().display(), error = %e, "cannot map the spooled message to sign it; sending unsigned");
                (None, out)
            }
        }
    })
    .await;
    match signed {
        Ok((Some(signature), out)) => {
            let mut signed = signature.into_bytes();
            signed.extend_from_slice(&out);
            Outgoing { head: signed, tail }
        }
        Ok((None, out)) => Outgoing { head: out, tail },
        Err(e) => {
            tracing::error!(queue_id = %m.id, error = %e, "dkim signing failed; sending unsigned");
            let mut out = m.trace.clone().into_bytes();
            out.extend_from_slice(format!(";\r\n\t{date}\r\n").as_bytes());
            out.extend_from_slice(&m.body.head);
            Outgoing { head: out, tail }
        }
    }
}

/// Whether the message needs SMTPUTF8 on the wire: non-ASCII in the envelope or the header section. A
/// message whose client said SMTPUTF8 but that is ASCII after all goes to servers without it as it is.
fn needs_smtputf8(m: &QueuedMessage, rcpts: &[&QueuedRecipient]) -> bool {
    m.smtputf8
        && (!m.reverse_path.is_ascii()
            || rcpts.iter().any(|r| !r.mailbox.is_ascii())
            || !m.body.head[..crate::message::header_len(&m.body.head)].is_ascii())
}

async fn transact(
    ctx: &Outbound,
    m: &QueuedMessage,
    domain: &str,
    host: &str,
    addr: SocketAddr,
    rcpts: &[&QueuedRecipient],
    opts: &Opts<'_>,
) -> Result<Vec<Attempt>, TryNext> {
    let relay = format!("{host}[{}]:{}", addr.ip(), addr.port());
    // Authenticated sessions are not pooled: the pool is by address, and another route to the same
    // address must not inherit a login (or lack one).
    let poolable = opts.auth.is_none();
    // A pooled connection may have been closed by the server meanwhile: then one fresh try.
    for pooled in [true, false] {
        let conn = match (pooled && poolable)
            .then(|| ctx.pool.take(addr, opts.source_for(addr)))
            .flatten()
        {
            Some(c) => c,
            None if pooled => continue,
            None => open(ctx, domain, host, addr, opts).await?,
        };
        match run(ctx, m, conn, rcpts, &relay, false).await {
            Ok((attempts, conn)) => {
                if let Some(conn) = conn
                    && poolable
                {
                    ctx.pool.put(conn);
                }
                return Ok(attempts);
            }
            Err(Stage::BeforeMail(e)) if pooled => {
                tracing::debug!(relay = %relay, error = %e, "pooled connection went stale");
                continue;
            }
            Err(Stage::BeforeMail(e)) => return Err(TryNext::temporary(format!("4.4.2 {e}"))),
            Err(Stage::AfterRcpt(e, verdicts)) => {
                // The final reply never came: the message may or may not be there; retry those the server
                // had accepted, and keep what it said of the others (a 5xx RCPT stays permanent).
                let reply = format!("4.4.2 {e} after the recipients were given");
                return Ok(verdicts
                    .into_iter()
                    .map(|v| v.unwrap_or_else(|| temporary(reply.clone(), Some(relay.clone()))))
                    .collect());
            }
        }
    }
    Err(TryNext::temporary(format!("4.4.2 no session with {relay}")))
}

pub(super) enum Stage {
    /// Nothing was handed over yet: another host may be tried.
    BeforeMail(ConnError),
    /// The recipients were given (with these verdicts, `None` for accepted) and the connection failed after.
    AfterRcpt(ConnError, Vec<Option<Attempt>>),
}

/// MAIL, RCPT..., DATA or BDAT on a ready connection. Returns the attempts and the connection if reusable.
pub(super) async fn run(
    ctx: &Outbound,
    m: &QueuedMessage,
    mut conn: Connection,
    rcpts: &[&QueuedRecipient],
    relay: &str,
    lmtp: bool,
) -> Result<(Vec<Attempt>, Option<Connection>), Stage> {
    let relay = match &conn.tls {
        Some(tls) => format!("{relay} ({tls})"),
        None => relay.to_string(),
    };
    let data = content(ctx, m, rcpts).await;
    if let Some(max) = conn.caps.size
        && data.len() > max
    {
        let reply = format!(
            "5.3.4 message of {} octets exceeds the {max}-octet limit of {}",
            data.len(),
            conn.host
        );
        return Ok((
            all(rcpts, || permanent(reply.clone(), Some(relay.clone()))),
            Some(conn),
        ));
    }
    let smtputf8 = needs_smtputf8(m, rcpts);
    if smtputf8 && !conn.caps.smtputf8 {
        let reply = format!(
            "5.6.7 {} does not support SMTPUTF8, which this message needs",
            conn.host
        );
        return Ok((
            all(rcpts, || permanent(reply.clone(), Some(relay.clone()))),
            Some(conn),
        ));
    }
    let options = MailOptions {
        size: data.len(),
        eight_bit: m.body_type == "8BITMIME",
        smtputf8,
        ret: m.ret.as_deref(),
        envid: m.envid.as_deref(),
    };
    let mail = mail_command(&m.reverse_path, &conn.caps, &options);
    let rcpt_lines: Vec<String> = rcpts
        .iter()
        .map(|r| {
            // The mailbox: for an alias, its target; the forward-path is what the sender wrote.
            rcpt_command(
                &r.mailbox,
                &conn.caps,
                r.notify.as_deref(),
                r.orcpt.as_deref(),
            )
        })
        .collect();
    // RFC 2920: with PIPELINING, MAIL and every RCPT go in one write.
    let (mail_reply, rcpt_replies) = if conn.caps.pipelining {
        let mut batch = mail.clone().into_bytes();
        for l in &rcpt_lines {
            batch.extend_from_slice(l.as_bytes());
        }
        conn.send(&batch).await.map_err(Stage::BeforeMail)?;
        let mail_reply = conn
            .reply(COMMAND_TIMEOUT)
            .await
            .map_err(Stage::BeforeMail)?;
        let mut replies = Vec::new();
        for _ in &rcpt_lines {
            replies.push(
                conn.reply(COMMAND_TIMEOUT)
                    .await
                    .map_err(Stage::BeforeMail)?,
            );
        }
        (mail_reply, replies)
    } else {
        let mail_reply = conn
            .command(&mail, COMMAND_TIMEOUT)
            .await
            .map_err(Stage::BeforeMail)?;
        let mut replies = Vec::new();
        if mail_reply.code == 250 {
            for l in &rcpt_lines {
                replies.push(
                    conn.command(l, COMMAND_TIMEOUT)
                        .await
                        .map_err(Stage::BeforeMail)?,
                );
            }
        }
        (mail_reply, replies)
    };
    if mail_reply.code != 250 {
        let _ = conn.command("RSET\r\n", COMMAND_TIMEOUT).await;
        return match mail_reply.code {
            400..=499 => Err(Stage::BeforeMail(ConnError(mail_reply.summary()))),
            // A 5xx to MAIL is permanent for every recipient of the transaction.
            _ => Ok((
                rcpts.iter().map(|_| judge(&mail_reply, &relay)).collect(),
                Some(conn),
            )),
        };
    }
    let mut attempts: Vec<Option<Attempt>> = Vec::with_capacity(rcpts.len());
    for reply in &rcpt_replies {
        attempts.push(if (200..300).contains(&reply.code) {
            None
        } else {
            Some(judge(reply, &relay))
        });
    }
    if attempts.iter().all(Option::is_some) {
        let _ = conn.command("RSET\r\n", COMMAND_TIMEOUT).await;
        return Ok((attempts.into_iter().flatten().collect(), Some(conn)));
    }
    let after = |e: ConnError| Stage::AfterRcpt(e, attempts.clone());
    let final_reply = if conn.caps.chunking {
        // One chunk announced with the whole size (a spooled tail streams after the head).
        let command = format!("BDAT {} LAST\r\n", data.len());
        send_content(&mut conn, &data, command.as_bytes(), false)
            .await
            .map_err(after)?;
        if lmtp {
            return super::lmtp::replies(conn, attempts, &relay).await;
        }
        conn.reply(FINAL_DOT_TIMEOUT).await.map_err(after)?
    } else {
        let go = conn
            .command("DATA\r\n", DATA_INIT_TIMEOUT)
            .await
            .map_err(after)?;
        if go.code != 354 {
            let _ = conn.command("RSET\r\n", COMMAND_TIMEOUT).await;
            let verdict = judge(&go, &relay);
            let filled = attempts
                .into_iter()
                .map(|a| a.unwrap_or_else(|| verdict.clone()))
                .collect();
            return Ok((filled, Some(conn)));
        }
        send_content(&mut conn, &data, b"", true)
            .await
            .map_err(after)?;
        if lmtp {
            return super::lmtp::replies(conn, attempts, &relay).await;
        }
        conn.reply(FINAL_DOT_TIMEOUT).await.map_err(after)?
    };
    let verdict = judge(&final_reply, &relay);
    conn.transactions += 1;
    let filled = attempts
        .into_iter()
        .map(|a| a.unwrap_or_else(|| verdict.clone()))
        .collect();
    Ok((filled, Some(conn)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_public_addresses_without_the_switch() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!super::is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["192.0.3.1", "8.8.8.8", "2a00:1450::1"] {
            assert!(super::is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_3xx_final_reply_is_not_a_delivery() {
        let r = crate::smtp::Reply::plain(354, vec!["go on".into()]);
        assert!(matches!(
            super::judge(&r, "x"),
            crate::intake::Attempt::Temporary { .. }
        ));
    }

    #[test]
    fn counts_received_headers_only_in_the_header_section() {
        let body = b"Received: a\r\nreceived: b\r\nSubject: x\r\n\r\nReceived: in the body\r\n";
        assert_eq!(super::received_count(body), 2);
    }
}
