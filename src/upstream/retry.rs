//! The one retry policy of every upstream request: bounded attempts, exponential backoff with
//! jitter, and `Retry-After` honoured on 429 and 503 when it asks for a bearable wait.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

use super::UpstreamError;

#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// The first backoff; each next one doubles, up to `cap`.
    pub base: Duration,
    pub cap: Duration,
    /// A `Retry-After` longer than this is not waited for: the failure stands.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    pub(crate) fn new(retries: u32) -> Self {
        Self {
            retries,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(10),
        }
    }

    /// How long to wait before attempt `attempt + 1` after `error`; `None`: do not retry.
    pub(crate) fn next_wait(&self, attempt: u32, error: &UpstreamError) -> Option<Duration> {
        if attempt >= self.retries || !error.retryable() {
            return None;
        }
        match error.retry_after {
            Some(wait) if wait > self.max_retry_after => None,
            Some(wait) => Some(wait),
            None => Some(self.backoff(attempt)),
        }
    }

    /// `base * 2^attempt` capped at `cap`, plus up to half of it again at random, so that
    /// clients that failed together do not retry together.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1 << attempt.min(16)).min(self.cap);
        let jitter_ms = exp.as_millis() as u64 / 2;
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        exp + Duration::from_millis(random % (jitter_ms + 1))
    }
}

/// Reads a `Retry-After` value: delay-seconds or an HTTP date.
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::RegistryName;
    use crate::upstream::Failure;

    fn err(failure: Failure, retry_after: Option<u64>) -> UpstreamError {
        let mut e = UpstreamError::new(&RegistryName::new("r").unwrap(), "x", failure);
        e.retry_after = retry_after.map(Duration::from_secs);
        e
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy::new(5);
        for attempt in 0..8 {
            let d = p.backoff(attempt);
            let exp = (100u64 << attempt).min(2_000);
            assert!(
                d >= Duration::from_millis(exp) && d <= Duration::from_millis(exp * 3 / 2),
                "{attempt}: {d:?}"
            );
        }
    }

    #[test]
    fn retries_are_bounded_and_follow_retry_after() {
        let p = RetryPolicy::new(2);
        assert!(p.next_wait(0, &err(Failure::Timeout, None)).is_some());
        assert!(
            p.next_wait(2, &err(Failure::Timeout, None)).is_none(),
            "bounded"
        );
        assert!(p.next_wait(0, &err(Failure::Status(404), None)).is_none());
        assert_eq!(
            p.next_wait(0, &err(Failure::Status(429), Some(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            p.next_wait(0, &err(Failure::Status(503), Some(3600))),
            None,
            "a wait longer than the bound is not taken"
        );
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
