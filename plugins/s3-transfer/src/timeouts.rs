//! How long a transfer's requests may take. The client, the retry policy and
//! the upload code all build on these; this module depends on none of them.

use std::time::Duration;

use aws_smithy_types::timeout::TimeoutConfig;

/// Time allowed to open a TCP (and TLS) connection.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed from the start of one HTTP request until its response headers
/// arrive. The SDK counts the upload of the request body in it, so it must
/// cover sending one part (or one single-PUT object): 5 minutes means at
/// least ~56 KB/s for a 16 MiB part.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a body may make no progress before the transfer fails.
/// The SDK default (5 s) misfires on a busy 2-core machine where the server
/// shares the CPU with the client.
pub(crate) const STALL_GRACE: Duration = Duration::from_secs(30);

/// Time allowed for one Create, Abort or clean-up listing: these carry no
/// data, so a long wait means the answer is not coming.
pub(crate) const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);

/// The time limits of a transfer client: 10 s to connect and 5 minutes from
/// sending a request to its response headers (the SDK counts the request
/// body in it, so it must cover one part), and no limit on a whole
/// operation: a large object may take as long as it needs while it moves.
/// Stalls are caught by stalled-stream protection instead. With the bounded
/// attempts of [`transfer_retries`](crate::transfer_retries), each request
/// (one part, one range) is bounded in total time all the same.
#[must_use]
pub fn transfer_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).read_timeout(READ_TIMEOUT).build()
}

/// The limits of a request that carries no data: 10 s to connect, and
/// [`CONTROL_TIMEOUT`] for the whole attempt.
pub(crate) fn control_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(CONTROL_TIMEOUT)
        .operation_attempt_timeout(CONTROL_TIMEOUT)
        .operation_timeout(CONTROL_TIMEOUT)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_is_bounded() {
        let t = transfer_timeouts();
        assert_eq!((t.connect_timeout(), t.read_timeout()), (Some(CONNECT_TIMEOUT), Some(READ_TIMEOUT)));
        // A whole transfer may take as long as it keeps moving.
        assert_eq!(t.operation_timeout(), None);
        let c = control_timeouts();
        assert_eq!(c.operation_timeout(), Some(CONTROL_TIMEOUT));
        assert!(c.connect_timeout().is_some() && c.read_timeout().is_some());
    }
}
