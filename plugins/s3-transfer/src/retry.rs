//! Which requests are sent again after a failure, and for how long.
//!
//! A request is repeated only when repeating it cannot change the outcome:
//!
//! * `UploadPart`, `PutObject` (whose body is produced again from the file or
//!   from memory), `GetObject` (whole or ranged), `HeadObject`,
//!   `ListMultipartUploads` and `AbortMultipartUpload` are retried by the SDK
//!   ([`transfer_retries`]): at most 4 attempts, full-jitter exponential
//!   backoff (a random pause in `0..=min(1 s × 2^n, 8 s)`), each attempt
//!   bounded by the client's timeouts, and the SDK's retry quota on top.
//! * `CreateMultipartUpload` and `CompleteMultipartUpload` are never retried
//!   by the SDK ([`single_attempt`]). A second Create after a lost answer would
//!   leave the first upload behind with nobody knowing its id; a second
//!   Complete after a lost answer finds the upload gone (`NoSuchUpload`)
//!   though the object is stored. The upload code sends them again itself
//!   only after an answer saying the server did not act ([`server_busy`];
//!   for Complete also an internal error, once the stored object has been
//!   looked at), at most [`CONTROL_ATTEMPTS`] times within [`CONTROL_BUDGET`],
//!   and otherwise settles what happened: after a failed Complete it looks at
//!   the stored object, after a failed Create it aborts the uploads of the
//!   key that the lost request may have started.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

/// Attempts per idempotent request, counting the first.
const MAX_ATTEMPTS: u32 = 4;

/// Upper end of the first SDK retry's random pause; it doubles per retry.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);

/// Longest pause between two SDK attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// Attempts at a Create or Complete that the server answered as busy.
pub(crate) const CONTROL_ATTEMPTS: u32 = 3;

/// Time after the first attempt at a Create or Complete within which a
/// further attempt may start.
pub(crate) const CONTROL_BUDGET: Duration = Duration::from_secs(30);

/// Upper end of the first pause before a Create or Complete is sent again.
pub(crate) const CONTROL_BACKOFF: Duration = Duration::from_millis(500);

/// The SDK retry policy for transfers: standard mode, at most 4 attempts per
/// request, full-jitter exponential backoff of at most 8 s.
///
/// Every attempt is bounded by the client's timeouts (see
/// [`transfer_timeouts`](crate::transfer_timeouts): 10 s to connect, 5
/// minutes to the response headers, and stalled-stream protection for
/// bodies), so one request takes at most 4 attempts plus 3 pauses of at most
/// 1, 2 and 4 s. [`build_client`](crate::build_client) uses it; a client
/// built from `aws-config` should set it too, or it keeps the count from the
/// environment or profile.
#[must_use]
pub fn transfer_retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF)
}

/// A per-operation configuration that turns the SDK's retries off, with
/// `timeouts` for that operation (they replace the client's, so they must
/// name every limit).
pub(crate) fn single_attempt(timeouts: TimeoutConfig) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().retry_config(RetryConfig::disabled()).timeout_config(timeouts)
}

/// Whether a request failed because the server is gone or failing for now
/// (no connection, no answer, a 5xx or 429), not because it refused it.
pub(crate) fn unreachable_now<E>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::DispatchFailure(d) => !d.is_user(),
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(ctx) => matches!(ctx.raw().status().as_u16(), 429 | 500..=599),
        _ => false,
    }
}

/// Whether the server answered that it did not act on the request because it
/// is busy or throttling (503, 429, `SlowDown` and the like): sending the
/// same request again cannot do anything twice.
pub(crate) fn server_busy<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    let SdkError::ServiceError(ctx) = err else {
        return false;
    };
    let status = ctx.raw().status().as_u16();
    status == 503
        || status == 429
        || matches!(
            ctx.err().code(),
            Some(
                "SlowDown"
                    | "ServiceUnavailable"
                    | "Throttling"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "RequestThrottled"
                    | "TooManyRequests"
            )
        )
}

/// The pause before retry number `retry` (1 for the first): a random
/// duration in `0..=min(base × 2^(retry-1), cap)` ("full jitter"), so that
/// clients that failed together do not come back together.
pub(crate) fn jittered(base: Duration, retry: u32, cap: Duration) -> Duration {
    let ceiling = base.saturating_mul(1u32 << retry.saturating_sub(1).min(16)).min(cap);
    ceiling.mul_f64(unit_random())
}

/// A number in `[0, 1)` that differs between calls and processes: the
/// standard library's randomly keyed hasher over a counter and the clock.
/// Spreads retries; not for anything secret.
pub(crate) fn unit_random() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    // The top 53 bits make an exact f64 in [0, 1).
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A time limit for retrying, counted from its creation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    start: Instant,
    limit: Duration,
}

impl Budget {
    pub(crate) fn new(limit: Duration) -> Self {
        Self { start: Instant::now(), limit }
    }

    /// Whether a pause of `delay` from now still ends within the limit.
    pub(crate) fn allows(&self, delay: Duration) -> bool {
        self.start.elapsed() + delay <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_doubling_ceiling() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        for retry in 1..=8u32 {
            let ceiling = (base * 2u32.pow(retry - 1)).min(cap);
            let pauses: Vec<Duration> = (0..200).map(|_| jittered(base, retry, cap)).collect();
            assert!(pauses.iter().all(|p| *p <= ceiling), "retry {retry}: {pauses:?}");
            // Spread out, not one fixed value.
            let distinct: std::collections::HashSet<_> = pauses.iter().collect();
            assert!(distinct.len() > 150, "retry {retry}: only {} distinct pauses", distinct.len());
        }
        assert!(jittered(base, u32::MAX, cap) <= cap);
    }

    #[test]
    fn random_numbers_cover_the_unit_interval() {
        let xs: Vec<f64> = (0..10_000).map(|_| unit_random()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let low = xs.iter().filter(|x| **x < 0.5).count();
        assert!((4_500..5_500).contains(&low), "{low} of 10000 below 0.5");
    }

    #[test]
    fn budgets_refuse_pauses_past_their_end() {
        let b = Budget::new(Duration::from_secs(10));
        assert!(b.allows(Duration::from_secs(9)));
        assert!(!b.allows(Duration::from_secs(11)));
    }

    #[test]
    fn transfer_policy_is_bounded() {
        let r = transfer_retries();
        assert_eq!(r.max_attempts(), MAX_ATTEMPTS);
        assert_eq!(r.max_backoff(), MAX_BACKOFF);
        assert_eq!(r.initial_backoff(), INITIAL_BACKOFF);
        assert_eq!(RetryConfig::disabled().max_attempts(), 1);
    }
}
