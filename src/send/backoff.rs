//! Retry timing: exponential backoff with jitter, so a relay coming back from an outage
//! is not hit by the whole queue in the same second.

use std::time::Duration;

/// Delay before attempt `attempts + 1`, given `attempts` made so far (≥ 1).
pub fn retry_delay(attempts: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exp).min(max);
    // ±20 % spread; `jitter` is a uniform sample in [0, 1).
    raw.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0)).min(max)
}

/// A uniform sample in [0, 1) from the OS RNG (no need for a seeded generator here).
pub fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let base = Duration::from_secs(30);
        let max = Duration::from_secs(3600);
        assert_eq!(retry_delay(1, base, max, 0.5), Duration::from_secs(30));
        assert_eq!(retry_delay(2, base, max, 0.5), Duration::from_secs(60));
        assert_eq!(retry_delay(4, base, max, 0.5), Duration::from_secs(240));
        assert_eq!(retry_delay(20, base, max, 0.5), max);
        assert_eq!(retry_delay(1, base, max, 0.0), Duration::from_secs(24));
        assert!(retry_delay(1, base, max, 0.999) < Duration::from_secs(37));
    }
}
