//! Idle outbound connections kept for the next message to the same host (after a completed transaction a
//! connection is ready for the next MAIL), closed with QUIT once idle for `[delivery] idle_secs`.

use super::Outbound;
use super::client::Connection;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type PoolKey = (SocketAddr, Option<IpAddr>);

pub struct Pool {
    idle: Duration,
    per_host: usize,
    /// By destination and the source address a transport rule bound it to.
    conns: Mutex<HashMap<PoolKey, Vec<Connection>>>,
}

impl Pool {
    pub fn new(idle: Duration, per_host: usize) -> Pool {
        Pool {
            idle,
            per_host,
            conns: Mutex::new(HashMap::new()),
        }
    }

    /// A connection to `addr` from `source` used recently enough, if one is idle.
    pub fn take(&self, addr: SocketAddr, source: Option<IpAddr>) -> Option<Connection> {
        let mut map = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.get_mut(&(addr, source))?;
        while let Some(c) = list.pop() {
            if c.last_used.elapsed() < self.idle {
                return Some(c);
            }
            tokio::spawn(c.quit());
        }
        None
    }

    pub fn put(&self, mut conn: Connection) {
        if self.idle.is_zero() {
            tokio::spawn(conn.quit());
            return;
        }
        conn.last_used = std::time::Instant::now();
        let mut map = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.entry((conn.addr, conn.source)).or_default();
        if list.len() < self.per_host {
            list.push(conn);
        } else {
            tokio::spawn(conn.quit());
        }
    }

    fn expire(&self) {
        let mut map = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        for list in map.values_mut() {
            let (keep, old): (Vec<Connection>, Vec<Connection>) = std::mem::take(list)
                .into_iter()
                .partition(|c| c.last_used.elapsed() < self.idle);
            *list = keep;
            for c in old {
                tokio::spawn(c.quit());
            }
        }
        map.retain(|_, l| !l.is_empty());
    }
}

/// Closes connections that have been idle too long.
pub async fn reaper(ctx: Arc<Outbound>) {
    let period = (ctx.settings.idle / 2).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(period).await;
        ctx.pool.expire();
    }
}
