//! Connection limits: in total and per client (an IPv4 address or an IPv6 /64, see
//! [`super::throttle::client_key`]: a host with a /64 must not get a fresh limit per address). A slot is held
//! for the life of a session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
pub struct ConnLimiter {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Total,
    PerIp,
}

impl Over {
    pub fn scope(self) -> &'static str {
        match self {
            Over::Total => "in total",
            Over::PerIp => "from your address",
        }
    }
}

/// A held connection slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl ConnLimiter {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            max_total,
            max_per_ip,
            counts: Mutex::new(Counts::default()),
        })
    }

    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Over> {
        let ip = super::throttle::client_key(ip);
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if c.total >= self.max_total {
            return Err(Over::Total);
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(Over::PerIp);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            limiter: self.clone(),
            ip,
        })
    }

    /// Sessions open now.
    pub fn active(&self) -> usize {
        self.counts.lock().map(|c| c.total).unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_limits_and_release() {
        let l = ConnLimiter::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = l.try_acquire(a).unwrap();
        let _s2 = l.try_acquire(a).unwrap();
        assert_eq!(l.try_acquire(a).unwrap_err(), Over::PerIp);
        let _s3 = l.try_acquire(b).unwrap();
        assert_eq!(l.try_acquire(b).unwrap_err(), Over::Total);
        drop(s1);
        let _s4 = l.try_acquire(a).unwrap();
        assert_eq!(l.active(), 3);
    }

    #[test]
    fn an_ipv6_64_shares_one_per_ip_limit() {
        let l = ConnLimiter::new(10, 2);
        let _a = l.try_acquire("2001:db8::1".parse().unwrap()).unwrap();
        let _b = l.try_acquire("2001:db8::2".parse().unwrap()).unwrap();
        assert_eq!(
            l.try_acquire("2001:db8::3".parse().unwrap()).unwrap_err(),
            Over::PerIp
        );
        assert!(l.try_acquire("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }
}
