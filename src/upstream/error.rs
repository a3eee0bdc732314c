//! What can go wrong talking to an upstream, whose fault it is, and whether to try again.

use std::time::Duration;

use crate::names::RegistryName;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the deadline.
    Timeout,
    /// Could not connect (refused, DNS); the error chain, for the log.
    Connect(String),
    /// The TLS handshake failed; what TLS said (e.g. `invalid peer certificate: UnknownIssuer`).
    Tls(String),
    /// An HTTP status cratedock cannot use.
    Status(u16),
    /// The body was cut off or could not be read; the error chain, for the log.
    Body(String),
    /// The body arrived but is not what was asked for (an HTML page, broken JSON).
    Invalid(String),
    /// The crate file does not hash to the index's `cksum`.
    Checksum { expected: String, actual: String },
    /// The body is larger than the configured limit.
    TooLarge(u64),
}

/// Who is to blame for a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The upstream answered, wrongly (a 5xx, a bad body, a wrong checksum).
    Upstream,
    /// The upstream could not be reached or did not answer in time.
    Network,
    /// The answer broke one of cratedock's own limits.
    Limit,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}", self.message(), self.internals())]
pub struct UpstreamError {
    pub registry: RegistryName,
    /// What was asked for, e.g. `index file se/rd/serde`.
    pub what: String,
    pub failure: Failure,
    /// How long the upstream asked to wait before trying again (`Retry-After` on 429/503).
    pub retry_after: Option<Duration>,
}

impl UpstreamError {
    pub fn new(registry: &RegistryName, what: impl Into<String>, failure: Failure) -> Self {
        Self {
            registry: registry.clone(),
            what: what.into(),
            failure,
            retry_after: None,
        }
    }

    /// What a client is told: what failed and where, without internals (error chains of the
    /// network stack, addresses), which go to the log through `Display`.
    pub fn message(&self) -> String {
        let (r, w) = (&self.registry, &self.what);
        match &self.failure {
            Failure::Timeout => format!("upstream of `{r}` timed out fetching {w}"),
            Failure::Connect(_) => format!("cannot reach the upstream of `{r}` for {w}"),
            Failure::Tls(e) => format!(
                "the TLS handshake with the upstream of `{r}` failed for {w}: {e} (for a certificate it does not trust, see registries.{r}.ca_bundle)"
            ),
            Failure::Status(s) => format!("upstream of `{r}` answered HTTP {s} for {w}"),
            Failure::Body(_) => format!("upstream of `{r}` cut off {w}"),
            Failure::Invalid(e) => format!("upstream of `{r}` sent invalid data for {w}: {e}"),
            Failure::Checksum { expected, actual } => format!(
                "checksum mismatch for {w} from the upstream of `{r}`: the index says {expected}, the file hashes to {actual}; it was not stored"
            ),
            Failure::TooLarge(limit) => {
                format!("{w} from the upstream of `{r}` is larger than the {limit}-byte limit")
            }
        }
    }

    fn internals(&self) -> String {
        match &self.failure {
            Failure::Connect(chain) | Failure::Body(chain) => format!(": {chain}"),
            _ => String::new(),
        }
    }

    /// Whether trying the same request again may succeed.
    pub fn retryable(&self) -> bool {
        match self.failure {
            Failure::Timeout | Failure::Connect(_) | Failure::Body(_) => true,
            Failure::Status(s) => s >= 500 || s == 429,
            Failure::Tls(_)
            | Failure::Invalid(_)
            | Failure::Checksum { .. }
            | Failure::TooLarge(_) => false,
        }
    }

    pub fn blame(&self) -> Blame {
        match self.failure {
            Failure::Timeout | Failure::Connect(_) | Failure::Tls(_) | Failure::Body(_) => {
                Blame::Network
            }
            Failure::Status(_) | Failure::Invalid(_) | Failure::Checksum { .. } => Blame::Upstream,
            Failure::TooLarge(_) => Blame::Limit,
        }
    }

    pub fn is_timeout(&self) -> bool {
        self.failure == Failure::Timeout
    }

    /// The metric label of this failure.
    pub(crate) fn outcome(&self) -> &'static str {
        match self.failure {
            Failure::Timeout => "timeout",
            Failure::Connect(_) | Failure::Tls(_) => "connect",
            Failure::Status(s) if s >= 500 => "status_5xx",
            Failure::Status(_) => "status_4xx",
            Failure::Body(_) => "body",
            Failure::Invalid(_) | Failure::TooLarge(_) => "invalid",
            Failure::Checksum { .. } => "checksum",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_get_no_internals_the_log_does() {
        let r = RegistryName::new("up").unwrap();
        let e = UpstreamError::new(
            &r,
            "index file se/rd/serde",
            Failure::Connect("tcp connect error: Connection refused (os error 111)".into()),
        );
        assert_eq!(
            e.message(),
            "cannot reach the upstream of `up` for index file se/rd/serde"
        );
        assert!(e.to_string().contains("os error 111"));
        assert!(e.retryable());
        assert_eq!(e.blame(), Blame::Network);
        let e = UpstreamError::new(&r, "x", Failure::Status(404));
        assert!(!e.retryable());
        assert_eq!(e.to_string(), e.message());
    }
}
