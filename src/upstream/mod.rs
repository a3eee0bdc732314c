//! Upstream registries: the [`Upstream`] trait, which answers in cratedock's own outcomes, and
//! its HTTP implementation.
//!
//! The rule this module keeps: the mirror never sees an HTTP client type. Every failure is an
//! [`UpstreamError`] that says what was asked, who is to blame and whether a retry is safe;
//! every request follows one [`RetryPolicy`] and is counted once in the metrics.

mod client;
mod error;
mod freshness;
mod retry;
mod tls;

pub(crate) use client::HttpUpstream;
pub(crate) use error::{Blame, Failure, UpstreamError};
pub(crate) use retry::RetryPolicy;
pub use tls::system_roots;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

/// The validators of a cached file, sent back to revalidate it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    pub(crate) fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// The upstream's answer for an index file.
#[derive(Debug)]
pub(crate) enum IndexAnswer {
    /// A new body, its validators and how long it stays fresh (`None`: the upstream did not
    /// say).
    Body {
        body: Bytes,
        validators: Validators,
        fresh_for: Option<Duration>,
        /// The upstream said `Cache-Control: private`.
        private: bool,
    },
    /// The cached copy is still good, for `fresh_for` more (`None`: the upstream did not say).
    NotModified { fresh_for: Option<Duration> },
    /// No such file (404, 410, 451).
    NotFound,
}

/// A crate file arriving from the upstream.
pub(crate) struct CrateStream {
    /// The length the upstream announced.
    pub len: Option<u64>,
    pub chunks: BoxStream<'static, Result<Bytes, UpstreamError>>,
}

/// The upstream's answer for a crate file.
pub(crate) enum CrateAnswer {
    Body(CrateStream),
    NotFound,
}

#[async_trait]
pub(crate) trait Upstream: Send + Sync + 'static {
    /// Fetches the index file at `path` below the upstream's index root; a conditional request
    /// when `validators` are given.
    async fn index_file(
        &self,
        path: &str,
        validators: Option<&Validators>,
    ) -> Result<IndexAnswer, UpstreamError>;

    /// Fetches the crate file at `url` (the upstream's filled `dl` template); `what` names it
    /// in errors.
    async fn crate_file(&self, url: &str, what: &str) -> Result<CrateAnswer, UpstreamError>;
}
