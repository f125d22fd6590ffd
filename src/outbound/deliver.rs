//! One domain's recipients of one message: route (MX, implicit MX, null MX), try each host and address in
//! turn, and run the SMTP transaction. Whether a failure is temporary or permanent is decided here, in one
//! place per case, and each recipient gets its own result.

use super::Outbound;
use super::client::{
    COMMAND_TIMEOUT, ConnError, Connection, DATA_INIT_TIMEOUT, FINAL_DOT_TIMEOUT, GREETING_TIMEOUT,
};
use crate::config::TlsPolicy;
use crate::dns::{DnsError, Route};
use crate::queue::{Attempt, QueuedMessage, QueuedRecipient};
use crate::smtp::Reply;
use crate::smtp::client::{MailOptions, dot_stuff, mail_command, rcpt_command};
use std::net::SocketAddr;

/// Why this host could not take the message, so the next host should be tried.
struct TryNext(String);

fn all(rcpts: &[&QueuedRecipient], f: impl Fn() -> Attempt) -> Vec<Attempt> {
    rcpts.iter().map(|_| f()).collect()
}

fn permanent(reply: impl Into<String>, relay: Option<String>) -> Attempt {
    Attempt::Permanent {
        reply: reply.into(),
        relay,
    }
}

fn temporary(reply: impl Into<String>, relay: Option<String>) -> Attempt {
    Attempt::Temporary {
        reply: reply.into(),
        relay,
    }
}

/// The reply's class decides: 2xx ok, 4xx temporary, 5xx permanent.
fn judge(reply: &Reply, relay: &str) -> Attempt {
    let text = reply.summary();
    match reply.code {
        200..=399 => Attempt::Delivered {
            reply: text,
            relay: relay.to_string(),
        },
        400..=499 => temporary(text, Some(relay.to_string())),
        _ => permanent(text, Some(relay.to_string())),
    }
}

/// Received: headers in the header section.
fn received_count(body: &[u8]) -> usize {
    let end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(body.len(), |i| i + 2);
    body[..end]
        .split(|b| *b == b'\n')
        .filter(|l| l.len() >= 9 && l[..9].eq_ignore_ascii_case(b"received:"))
        .count()
}

pub(super) async fn deliver_domain(
    ctx: &Outbound,
    m: &QueuedMessage,
    domain: &str,
    rcpts: &[&QueuedRecipient],
) -> Vec<Attempt> {
    let hops = received_count(&m.body) + 1;
    if hops > ctx.settings.max_received {
        let reply = format!("5.4.14 hop count exceeded: {hops} Received: headers (mail loop?)");
        return all(rcpts, || permanent(reply.clone(), None));
    }
    let hosts = match ctx.dns.route(domain).await {
        Ok(Route::Mx(hosts)) => hosts,
        Ok(Route::Implicit(d)) => vec![d],
        Ok(Route::Null) => {
            let reply = format!("556 5.1.10 domain {domain} accepts no mail (null MX)");
            return all(rcpts, || permanent(reply.clone(), None));
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
    for host in &hosts {
        if host.eq_ignore_ascii_case(&ctx.hostname) {
            let reply = format!("5.4.6 mail for {domain} loops back to myself (MX {host})");
            return all(rcpts, || permanent(reply.clone(), None));
        }
        let addresses = match ctx.dns.addresses(host).await {
            Ok(a) => a,
            Err(DnsError::NoSuchDomain(_)) => Vec::new(),
            Err(e) => {
                last = Some(format!("4.4.3 {e}"));
                continue;
            }
        };
        for ip in addresses {
            any_address = true;
            let addr = SocketAddr::new(ip, ctx.settings.remote_port);
            if ctx.is_own(addr) {
                let reply =
                    format!("5.4.6 mail for {domain} loops back to myself (MX {host} is {addr})");
                return all(rcpts, || permanent(reply.clone(), None));
            }
            match transact(ctx, m, domain, host, addr, rcpts).await {
                Ok(attempts) => return attempts,
                Err(TryNext(reason)) => {
                    tracing::info!(queue_id = %m.id, domain, host = %host, addr = %addr, reason = %reason, "trying the next MX");
                    last = Some(reason);
                }
            }
        }
    }
    match last {
        Some(reason) => all(rcpts, || temporary(reason.clone(), None)),
        None if !any_address => {
            let reply = format!("5.4.4 no usable host for {domain}: its MX hosts have no address");
            all(rcpts, || permanent(reply.clone(), None))
        }
        None => all(rcpts, || temporary("4.4.1 no MX host answered", None)),
    }
}

/// A connection ready for MAIL: from the idle pool, or new (greeting, EHLO, STARTTLS per policy).
async fn open(
    ctx: &Outbound,
    domain: &str,
    host: &str,
    addr: SocketAddr,
) -> Result<Result<Connection, Vec<Reply>>, TryNext> {
    let policy = ctx.tls_policy(domain);
    let mut use_tls = true;
    for _ in 0..2 {
        let mut conn = Connection::connect(addr, host, ctx.settings.connect_timeout)
            .await
            .map_err(|e| TryNext(format!("4.4.1 {e}")))?;
        let greeting = conn
            .reply(GREETING_TIMEOUT)
            .await
            .map_err(|e| TryNext(format!("4.4.2 {e}")))?;
        match greeting.code {
            220 => {}
            400..=499 => return Err(TryNext(greeting.summary())),
            // RFC 5321 3.1: a 554 greeting refuses the whole session: permanent for every recipient.
            _ => return Ok(Err(vec![greeting])),
        }
        let hello = conn
            .hello(&ctx.hostname)
            .await
            .map_err(|e| TryNext(format!("4.4.2 {e}")))?;
        match hello.code {
            250 => {}
            400..=499 => return Err(TryNext(hello.summary())),
            _ => return Ok(Err(vec![hello])),
        }
        if !(conn.caps.starttls && use_tls) {
            if policy != TlsPolicy::May {
                conn.quit().await;
                return Err(TryNext(format!(
                    "4.7.5 TLS is required for {domain} but {host} does not offer STARTTLS"
                )));
            }
            return Ok(Ok(conn));
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
                    .map_err(|e| TryNext(format!("4.4.2 {e}")))?;
                if hello.code != 250 {
                    return Err(TryNext(hello.summary()));
                }
                return Ok(Ok(tls));
            }
            Err((e, _)) if policy == TlsPolicy::May => {
                // Opportunistic: a broken handshake falls back to plaintext on a new connection.
                tracing::info!(host, error = %e, "STARTTLS failed; retrying without TLS");
                use_tls = false;
            }
            Err((e, _)) => return Err(TryNext(format!("4.7.5 {e}"))),
        }
    }
    Err(TryNext(format!(
        "4.4.2 could not open a session with {host}"
    )))
}

/// Our Received: header for this copy, then the message; DKIM-signed for our own domains.
fn content(ctx: &Outbound, m: &QueuedMessage, rcpts: &[&QueuedRecipient]) -> Vec<u8> {
    let date = crate::clock::rfc5322_date(m.received_at);
    let mut out = m.trace.clone().into_bytes();
    if let [only] = rcpts {
        out.extend_from_slice(format!("\r\n\tfor <{}>", only.mailbox).as_bytes());
    }
    out.extend_from_slice(format!(";\r\n\t{date}\r\n").as_bytes());
    out.extend_from_slice(&m.body);
    match signing_domain(ctx, m).and_then(|d| ctx.dkim.sign(&d, &out)) {
        Some(signature) => {
            let mut signed = signature.into_bytes();
            signed.extend_from_slice(&out);
            signed
        }
        None => out,
    }
}

/// The domain to sign for: the From: domain, else the reverse-path's, if it is one of ours.
fn signing_domain(ctx: &Outbound, m: &QueuedMessage) -> Option<String> {
    let end = m
        .body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(m.body.len(), |i| i + 4);
    let from = mail_parser::MessageParser::new()
        .parse_headers(&m.body[..end])
        .and_then(|h| {
            h.from()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .map(str::to_string)
        });
    [from, Some(m.reverse_path.clone())]
        .into_iter()
        .flatten()
        .filter_map(|a| a.rsplit_once('@').map(|(_, d)| d.to_lowercase()))
        .find(|d| ctx.local_domains.iter().any(|l| l.as_str() == d))
}

async fn transact(
    ctx: &Outbound,
    m: &QueuedMessage,
    domain: &str,
    host: &str,
    addr: SocketAddr,
    rcpts: &[&QueuedRecipient],
) -> Result<Vec<Attempt>, TryNext> {
    let relay = format!("{host}[{}]:{}", addr.ip(), addr.port());
    // A pooled connection may have been closed by the server meanwhile: then one fresh try.
    for pooled in [true, false] {
        let conn = match pooled.then(|| ctx.pool.take(addr)).flatten() {
            Some(c) => c,
            None if pooled => continue,
            None => match open(ctx, domain, host, addr).await? {
                Ok(c) => c,
                Err(replies) => {
                    return Ok(rcpts.iter().map(|_| judge(&replies[0], &relay)).collect());
                }
            },
        };
        match run(ctx, m, conn, rcpts, &relay).await {
            Ok((attempts, conn)) => {
                if let Some(conn) = conn {
                    ctx.pool.put(conn);
                }
                return Ok(attempts);
            }
            Err(Stage::BeforeMail(e)) if pooled => {
                tracing::debug!(relay = %relay, error = %e, "pooled connection went stale");
                continue;
            }
            Err(Stage::BeforeMail(e)) => return Err(TryNext(format!("4.4.2 {e}"))),
            Err(Stage::AfterData(e)) => {
                // The final reply never came: the message may or may not be there; retry later.
                let reply = format!("4.4.2 {e} after the message was sent");
                return Ok(all(rcpts, || temporary(reply.clone(), Some(relay.clone()))));
            }
        }
    }
    Err(TryNext(format!("4.4.2 no session with {relay}")))
}

enum Stage {
    /// Nothing was handed over yet: another host may be tried.
    BeforeMail(ConnError),
    /// The content was (partly) sent.
    AfterData(ConnError),
}

/// MAIL, RCPT..., DATA or BDAT on a ready connection. Returns the attempts and the connection if reusable.
async fn run(
    ctx: &Outbound,
    m: &QueuedMessage,
    mut conn: Connection,
    rcpts: &[&QueuedRecipient],
    relay: &str,
) -> Result<(Vec<Attempt>, Option<Connection>), Stage> {
    let relay = match &conn.tls {
        Some(tls) => format!("{relay} ({tls})"),
        None => relay.to_string(),
    };
    let data = content(ctx, m, rcpts);
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
    if m.smtputf8 && !conn.caps.smtputf8 {
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
        smtputf8: m.smtputf8,
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
    let final_reply = if conn.caps.chunking {
        let mut chunk = format!("BDAT {} LAST\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(&data);
        conn.send(&chunk).await.map_err(Stage::AfterData)?;
        conn.reply(FINAL_DOT_TIMEOUT)
            .await
            .map_err(Stage::AfterData)?
    } else {
        let go = conn
            .command("DATA\r\n", DATA_INIT_TIMEOUT)
            .await
            .map_err(Stage::BeforeMail)?;
        if go.code != 354 {
            let _ = conn.command("RSET\r\n", COMMAND_TIMEOUT).await;
            let verdict = judge(&go, &relay);
            let filled = attempts
                .into_iter()
                .map(|a| a.unwrap_or_else(|| verdict.clone()))
                .collect();
            return Ok((filled, Some(conn)));
        }
        conn.send(&dot_stuff(&data))
            .await
            .map_err(Stage::AfterData)?;
        conn.reply(FINAL_DOT_TIMEOUT)
            .await
            .map_err(Stage::AfterData)?
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
    fn counts_received_headers_only_in_the_header_section() {
        let body = b"Received: a\r\nreceived: b\r\nSubject: x\r\n\r\nReceived: in the body\r\n";
        assert_eq!(super::received_count(body), 2);
    }
}
