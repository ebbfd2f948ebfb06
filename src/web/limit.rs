//! The per-IP limit on requests that send mail, held in memory per instance.
//!
//! Keyed by [`super::client::limit_key`] (an IPv4 address or an IPv6 /64), so rotating
//! addresses inside one allocation doesn't escape it. Its memory is bounded: every so many
//! checks, keys whose budget has fully refilled are forgotten, and if a flood of distinct
//! keys still leaves more than the cap, the table starts afresh (the per-address limit in
//! the database still holds, so that is the safe way to fail).

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use super::client::limit_key;

/// Keys kept at most; each costs well under a hundred bytes.
pub const MAX_TRACKED: usize = 100_000;
/// How many checks pass between two clean-ups.
const SWEEP_EVERY: u64 = 1_024;

pub struct IpLimiter {
    /// Replaced whole when it must start afresh (governor can't empty one in place).
    limiter: RwLock<DefaultKeyedRateLimiter<IpAddr>>,
    quota: Quota,
    checks: AtomicU64,
    cap: usize,
}

impl IpLimiter {
    pub fn per_hour(per_hour: u32) -> Self {
        Self::with_cap(per_hour, MAX_TRACKED)
    }

    pub fn with_cap(per_hour: u32, cap: usize) -> Self {
        let n = NonZeroU32::new(per_hour).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_hour(n);
        Self {
            limiter: RwLock::new(RateLimiter::keyed(quota)),
            quota,
            checks: AtomicU64::new(0),
            cap,
        }
    }

    /// Counts one request from `ip`; `Err` carries how long until it would be allowed.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        let limiter = self.limiter.read().unwrap_or_else(|p| p.into_inner());
        limiter.check_key(&limit_key(ip)).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }

    fn sweep(&self) {
        let mut limiter = self.limiter.write().unwrap_or_else(|p| p.into_inner());
        limiter.retain_recent();
        if limiter.len() > self.cap {
            tracing::warn!(
                keys = limiter.len(),
                cap = self.cap,
                "too many distinct client addresses; starting the per-IP limit afresh"
            );
            *limiter = RateLimiter::keyed(self.quota);
        }
        limiter.shrink_to_fit();
    }

    /// How many client keys are held now.
    pub fn tracked(&self) -> usize {
        self.limiter.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stays_bounded_under_a_flood_of_addresses() {
        let limiter = IpLimiter::with_cap(5, 2_000);
        for i in 0..50_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0A00_0000 | i));
            let _ = limiter.check(ip);
            assert!(limiter.tracked() <= 2_000 + SWEEP_EVERY as usize);
        }
    }

    #[test]
    fn one_ipv6_slash_64_is_one_client() {
        let limiter = IpLimiter::with_cap(2, 100);
        let base: u128 = "2001:db8:1:2::"
            .parse::<std::net::Ipv6Addr>()
            .expect("ip")
            .into();
        let results: Vec<bool> = (1..=3u128)
            .map(|i| limiter.check(IpAddr::V6((base | i).into())).is_ok())
            .collect();
        assert_eq!(results, [true, true, false]);
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        let plain: IpAddr = "192.0.2.1".parse().expect("ip");
        assert!(limiter.check(mapped).is_ok());
        assert!(limiter.check(plain).is_ok());
        let refused = limiter
            .check(mapped)
            .expect_err("third from one IPv4 client");
        assert!(refused > Duration::from_secs(60), "{refused:?}");
    }
}
