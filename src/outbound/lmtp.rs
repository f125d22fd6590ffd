//! LMTP transports (`[[transport]] relay = "lmtp:..."`, RFC 2033): the session with the server; the
//! transaction itself is the SMTP one (`deliver::run`), with a reply per recipient after the data.

use super::Outbound;
use super::client::{ConnError, Connection, FINAL_DOT_TIMEOUT, GREETING_TIMEOUT};
use super::deliver::{Stage, all, judge, permanent, run, temporary};
use crate::intake::Attempt;
use crate::queue::{QueuedMessage, QueuedRecipient};
use std::net::SocketAddr;

/// A `[[transport]]` LMTP server (RFC 2033): LHLO, one transaction, one reply per accepted recipient
/// after the data. No pooling, no TLS, no AUTH: a delivery agent on this host or network.
pub(super) async fn via_lmtp(
    ctx: &Outbound,
    m: &QueuedMessage,
    target: &crate::config::LmtpTarget,
    rcpts: &[&QueuedRecipient],
) -> Vec<Attempt> {
    use crate::config::LmtpTarget;
    let relay = target.to_string();
    let connected = match target {
        LmtpTarget::Unix(path) => {
            Connection::connect_unix(path, ctx.settings.connect_timeout).await
        }
        LmtpTarget::Tcp(host, port) => {
            let ip = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => ip,
                Err(_) => match ctx.dns.addresses(host).await {
                    Ok(a) if !a.is_empty() => a[0],
                    _ => {
                        let reply = format!("4.4.4 LMTP server {host} has no address");
                        return all(rcpts, || temporary(reply.clone(), Some(relay.clone())));
                    }
                },
            };
            let addr = SocketAddr::new(ip, *port);
            if ctx.is_own(addr) {
                let reply = format!("5.4.6 the LMTP server {relay} is this server's own listener");
                return all(rcpts, || permanent(reply.clone(), Some(relay.clone())));
            }
            Connection::connect(addr, host, ctx.settings.connect_timeout, None).await
        }
    };
    let mut conn = match connected {
        Ok(c) => c,
        Err(e) => {
            let reply = format!("4.4.1 {e}");
            return all(rcpts, || temporary(reply.clone(), Some(relay.clone())));
        }
    };
    let opened: Result<Result<(), crate::smtp::Reply>, ConnError> = async {
        let greeting = conn.reply(GREETING_TIMEOUT).await?;
        if greeting.code != 220 {
            return Ok(Err(greeting));
        }
        let hello = conn.lhlo(&ctx.hostname).await?;
        Ok(if hello.code == 250 {
            Ok(())
        } else {
            Err(hello)
        })
    }
    .await;
    match opened {
        Ok(Ok(())) => {}
        Ok(Err(reply)) => {
            conn.quit().await;
            return rcpts.iter().map(|_| judge(&reply, &relay)).collect();
        }
        Err(e) => {
            let reply = format!("4.4.2 {e}");
            return all(rcpts, || temporary(reply.clone(), Some(relay.clone())));
        }
    }
    match run(ctx, m, conn, rcpts, &relay, true).await {
        Ok((attempts, conn)) => {
            if let Some(conn) = conn {
                conn.quit().await;
            }
            attempts
        }
        Err(Stage::BeforeMail(e)) => {
            let reply = format!("4.4.2 {e}");
            all(rcpts, || temporary(reply.clone(), Some(relay.clone())))
        }
        Err(Stage::AfterRcpt(e, verdicts)) => verdicts
            .into_iter()
            .map(|v| v.unwrap_or_else(|| temporary(format!("4.4.2 {e}"), Some(relay.clone()))))
            .collect(),
    }
}

/// RFC 2033 4.2: after the data, one reply per accepted recipient, in RCPT order. A reply that never
/// comes leaves its recipient (and the ones after it) for a retry.
pub(super) async fn replies(
    mut conn: Connection,
    mut attempts: Vec<Option<Attempt>>,
    relay: &str,
) -> Result<(Vec<Attempt>, Option<Connection>), Stage> {
    for i in 0..attempts.len() {
        if attempts[i].is_some() {
            continue;
        }
        match conn.reply(FINAL_DOT_TIMEOUT).await {
            Ok(reply) => attempts[i] = Some(judge(&reply, relay)),
            Err(e) => return Err(Stage::AfterRcpt(e, attempts)),
        }
    }
    conn.transactions += 1;
    Ok((attempts.into_iter().flatten().collect(), Some(conn)))
}
