//! How often and for how long a failed request is sent again.
//!
//! Only requests whose repetition cannot change the outcome are repeated
//! after any transient failure: reads, deletes of one generation, signing,
//! an upload of a whole object in one request (a second one stores the same
//! bytes), and the chunks of a resumable session (the session is asked how
//! much it holds before the rest is sent). Starting a session is repeated
//! only when the server answered without starting one or the connection was
//! never made (see [`Repeat`]).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Attempts at one request (or failures in a row without progress in a
/// resumable transfer), counting the first.
pub const ATTEMPTS: u32 = 5;

/// Retrying stops this long after the first failure of a series: no attempt
/// starts later. (The host's deadline for the whole call may end it sooner.)
pub const RETRY_BUDGET: Duration = Duration::from_secs(30);

/// Which failures of a request may be answered by sending it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Sending it twice has the effect of sending it once: after any
    /// transient failure (no answer, 408, 429, 5xx).
    Idempotent,
    /// Sending it twice may do something twice (starting an upload session):
    /// only after an answer of 408, 429 or 5xx, or when the connection could
    /// not be opened, so the request never left. A request whose answer was
    /// lost is not repeated.
    IfNotReceived,
}

/// The pause before retry `retry` (1 for the first): half of
/// `min(250 ms × 2^(retry-1), 4 s)` plus a random part of up to the other
/// half, so that clients that failed together do not come back together
/// while each still waits a little.
pub fn backoff(retry: u32) -> Duration {
    let ceiling = Duration::from_millis(250u64 << retry.saturating_sub(1).min(4));
    ceiling / 2 + (ceiling / 2).mul_f64(unit_random())
}

/// A number in `[0, 1)` that differs between calls and processes: the
/// standard library's randomly keyed hasher over a counter and the clock.
/// Spreads retries; not for anything secret.
pub fn unit_random() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    // The top 53 bits make an exact f64 in [0, 1).
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A time limit for retrying, counted from its creation.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    start: Instant,
    limit: Duration,
}

impl Budget {
    /// A budget of `limit` from now.
    pub fn new(limit: Duration) -> Self {
        Self { start: Instant::now(), limit }
    }

    /// Whether a pause of `delay` from now still ends within the limit.
    pub fn allows(&self, delay: Duration) -> bool {
        self.start.elapsed() + delay <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        for retry in 1..=7u32 {
            let ceiling = Duration::from_millis(250u64 << (retry - 1).min(4));
            let pauses: Vec<Duration> = (0..200).map(|_| backoff(retry)).collect();
            assert!(pauses.iter().all(|p| *p >= ceiling / 2 && *p <= ceiling), "retry {retry}: {pauses:?}");
            let distinct: std::collections::HashSet<_> = pauses.iter().collect();
            assert!(distinct.len() > 150, "retry {retry}: {} distinct pauses", distinct.len());
        }
        // Every pause of a series fits the budget.
        let worst: Duration = (1..ATTEMPTS).map(|r| Duration::from_millis(250u64 << (r - 1).min(4))).sum();
        assert!(worst < RETRY_BUDGET);
    }

    #[test]
    fn budgets_refuse_pauses_past_their_end() {
        let b = Budget::new(Duration::from_secs(10));
        assert!(b.allows(Duration::from_secs(9)));
        assert!(!b.allows(Duration::from_secs(11)));
    }
}
