//! A key's request rate: a GCRA limiter from `governor` per key, which is the token
//! bucket of `GuardConfig` (sustained rate, burst) without a lock or floating-point
//! refill. A refusal says when the next request would pass (`Retry-After`, whole seconds,
//! at least 1).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::AccessError;

/// The rate limit of one key (or no limit, when the configured rate is 0).
pub(crate) struct RateLimit<C: Clock = MonotonicClock> {
    limiter: Option<RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>>,
}

impl RateLimit {
    /// A full bucket of `burst` requests refilled at `rate_per_second` on the real clock.
    pub(crate) fn new(rate_per_second: f64, burst: f64) -> Self {
        Self::with_clock(rate_per_second, burst, MonotonicClock)
    }
}

impl<C: Clock> RateLimit<C> {
    /// The same limit on `clock` (a fake one in tests).
    pub(crate) fn with_clock(rate_per_second: f64, burst: f64, clock: C) -> Self {
        Self {
            limiter: quota(rate_per_second, burst)
                .map(|quota| RateLimiter::direct_with_clock(quota, clock)),
        }
    }

    /// Takes one request, or refuses with the seconds until one would pass.
    pub(crate) fn take(&self) -> Result<(), AccessError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            AccessError::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }
}

/// `burst` requests at once, one more every `1 / rate_per_second` seconds; `None` (no
/// limit) for a rate of 0, or one too high to measure.
fn quota(rate_per_second: f64, burst: f64) -> Option<Quota> {
    if rate_per_second.is_nan() || rate_per_second <= 0.0 {
        return None;
    }
    let period = Duration::try_from_secs_f64(1.0 / rate_per_second).ok()?;
    // `as` saturates: a burst past u32::MAX is u32::MAX.
    let burst = NonZeroU32::new(burst.max(1.0) as u32)?;
    Some(Quota::with_period(period)?.allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limit(rate: f64, burst: f64) -> (RateLimit<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimit::with_clock(rate, burst, clock.clone()), clock)
    }

    fn retry_after(result: Result<(), AccessError>) -> u64 {
        match result {
            Err(AccessError::RateLimited { retry_after_secs }) => retry_after_secs,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_burst_passes_then_the_next_request_is_told_when_to_retry() {
        let (limit, _clock) = limit(1.0, 5.0);
        for _ in 0..5 {
            limit.take().unwrap();
        }
        assert_eq!(retry_after(limit.take()), 1);
    }

    #[test]
    fn the_bucket_refills_at_the_configured_rate_and_no_further_than_the_burst() {
        let (limit, clock) = limit(2.0, 3.0);
        for _ in 0..3 {
            limit.take().unwrap();
        }
        assert!(limit.take().is_err());
        // Half a second brings back one request at 2 per second...
        clock.advance(Duration::from_millis(500));
        limit.take().unwrap();
        assert!(limit.take().is_err());
        // ...and a long idle time no more than the burst.
        clock.advance(Duration::from_secs(3600));
        for _ in 0..3 {
            limit.take().unwrap();
        }
        assert!(limit.take().is_err());
    }

    #[test]
    fn retry_after_is_the_wait_for_one_request_rounded_up() {
        let (limit, clock) = limit(0.25, 1.0);
        limit.take().unwrap();
        assert_eq!(retry_after(limit.take()), 4);
        clock.advance(Duration::from_millis(2500));
        assert_eq!(retry_after(limit.take()), 2);
        clock.advance(Duration::from_millis(1500));
        limit.take().unwrap();
    }

    #[test]
    fn a_rate_of_zero_turns_limiting_off() {
        let (limit, _clock) = limit(0.0, 1.0);
        for _ in 0..10_000 {
            limit.take().unwrap();
        }
    }
}
