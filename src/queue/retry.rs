//! The retry schedule, as a pure function of attempts and times.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again at this Unix time.
    At(u64),
    /// The message outlived `max_lifetime`: fail it permanently.
    Expired,
}

/// After `attempts` failed attempts (1 for the first), when to try again: `base * 2^(attempts-1)` capped at
/// `max`, unless that would pass `received_at + lifetime`.
pub fn next_attempt(
    attempts: u32,
    received_at: u64,
    now: u64,
    base: Duration,
    max: Duration,
    lifetime: Duration,
) -> Retry {
    if now >= received_at.saturating_add(lifetime.as_secs()) {
        return Retry::Expired;
    }
    let shift = attempts.saturating_sub(1).min(30);
    let delay = base
        .as_secs()
        .saturating_mul(1 << shift)
        .min(max.as_secs())
        .max(1);
    Retry::At(now + delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_expires() {
        let (b, m, l) = (
            Duration::from_secs(300),
            Duration::from_secs(14400),
            Duration::from_secs(5 * 86400),
        );
        assert_eq!(next_attempt(1, 0, 10, b, m, l), Retry::At(310));
        assert_eq!(next_attempt(2, 0, 10, b, m, l), Retry::At(610));
        assert_eq!(next_attempt(4, 0, 10, b, m, l), Retry::At(2410));
        assert_eq!(next_attempt(40, 0, 10, b, m, l), Retry::At(14410));
        assert_eq!(next_attempt(3, 0, 5 * 86400, b, m, l), Retry::Expired);
    }
}
