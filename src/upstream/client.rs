//! [`Upstream`] over HTTP(S) with reqwest: TLS roots and client certificate, token, proxy
//! from the environment, timeouts, the retry policy, and metrics of every attempt.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use rustls::RootCertStore;

use super::retry::parse_retry_after;
use super::tls::{tls_config, tls_error};
use super::{
    CrateAnswer, CrateStream, Failure, IndexAnswer, RetryPolicy, Upstream, UpstreamError,
    Validators, freshness,
};
use crate::config::MirrorConfig;
use crate::metrics::Metrics;
use crate::names::RegistryName;

/// Index files above this size are refused (crates.io's largest are a few MB).
const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;

/// What is being fetched: sets the deadline and the metric label.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Index,
    Crate,
    /// An archive (the advisory database's), fetched whole like an index file.
    Archive,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Index => "index",
            Kind::Crate => "crate",
            Kind::Archive => "archive",
        }
    }
}

/// The upstream of one mirror registry.
pub(crate) struct HttpUpstream {
    registry: RegistryName,
    base: String,
    /// `scheme://authority/` of `base`: the token goes only to URLs below it.
    origin: String,
    client: reqwest::Client,
    token: Option<HeaderValue>,
    request_timeout: Duration,
    download_timeout: Duration,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
    /// Requests in flight to this upstream at once (each holds a connection on HTTP/1.1).
    slots: Arc<tokio::sync::Semaphore>,
}

impl HttpUpstream {
    pub(crate) fn new(
        registry: &RegistryName,
        cfg: &MirrorConfig,
        system_roots: &RootCertStore,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("cratedock/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls_config(registry, cfg, system_roots)?)
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .read_timeout(Duration::from_millis(cfg.request_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            // Idle connections kept for reuse, at most as many as may be in use at once.
            .pool_max_idle_per_host(cfg.max_connections as usize)
            .tcp_nodelay(true)
            .build()?;
        let token = match &cfg.token {
            Some(t) => {
                let mut v = HeaderValue::from_str(t.expose()).map_err(|_| {
                    anyhow::anyhow!(
                        "registries.{registry}.token holds characters not allowed in a header"
                    )
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let uri: http::Uri = cfg.upstream.parse()?;
        let origin = format!(
            "{}://{}/",
            uri.scheme_str().unwrap_or("https"),
            uri.authority().map(|a| a.as_str()).unwrap_or_default()
        );
        Ok(Self {
            registry: registry.clone(),
            origin,
            base: cfg.upstream.clone(),
            client,
            token,
            request_timeout: Duration::from_millis(cfg.request_timeout_ms),
            download_timeout: Duration::from_millis(cfg.download_timeout_ms),
            retry: RetryPolicy::new(cfg.retries),
            metrics,
            slots: Arc::new(tokio::sync::Semaphore::new(cfg.max_connections as usize)),
        })
    }

    fn error(&self, what: &str, failure: Failure) -> UpstreamError {
        UpstreamError::new(&self.registry, what, failure)
    }

    fn classify(&self, what: &str, e: &reqwest::Error) -> UpstreamError {
        let failure = if e.is_timeout() {
            Failure::Timeout
        } else if let Some(tls) = tls_error(e) {
            Failure::Tls(tls.to_string())
        } else if e.is_connect() {
            Failure::Connect(error_chain(e))
        } else {
            // The connection broke after it was made: mid-response, or before the head.
            Failure::Body(error_chain(e))
        };
        self.error(what, failure)
    }

    /// Counts one attempt, once, when its outcome is known.
    fn record(&self, kind: Kind, outcome: &str, started: Instant) {
        record(&self.metrics, &self.registry, kind, outcome, started);
    }

    /// Runs `attempt` under the retry policy.
    async fn with_retries<T, F, Fut>(&self, kind: Kind, mut attempt: F) -> Result<T, UpstreamError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, UpstreamError>>,
    {
        let mut n = 0;
        loop {
            match attempt().await {
                Err(e) => match self.retry.next_wait(n, &e) {
                    Some(wait) => {
                        tracing::debug!(error = %e, attempt = n, wait_ms = wait.as_millis() as u64, "retrying upstream request");
                        self.metrics
                            .upstream_retries
                            .with_label_values(&[self.registry.as_str(), kind.label()])
                            .inc();
                        tokio::time::sleep(wait).await;
                        n += 1;
                    }
                    None => return Err(e),
                },
                ok => return ok,
            }
        }
    }

    /// Sends one GET, in one of the upstream's slots (held until the caller drops it, after
    /// the body). 5xx and 429 are errors (with the `Retry-After` of 429 and 503); any other
    /// status is returned for the caller to judge. The token is sent only to the upstream's own
    /// origin, never to another host that `dl` names (a CDN, a blob store).
    async fn send(
        &self,
        url: &str,
        headers: &HeaderMap,
        kind: Kind,
        what: &str,
    ) -> Result<(reqwest::Response, Slot), UpstreamError> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the upstream's slots are never closed");
        let mut req = self.client.get(url).headers(headers.clone());
        if let Some(t) = &self.token
            && url.starts_with(&self.origin)
        {
            req = req.header(header::AUTHORIZATION, t.clone());
        }
        req = req.timeout(match kind {
            Kind::Index => self.request_timeout,
            Kind::Crate | Kind::Archive => self.download_timeout,
        });
        let resp = req.send().await.map_err(|e| self.classify(what, &e))?;
        let status = resp.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            let mut e = self.error(what, Failure::Status(status.as_u16()));
            if matches!(status.as_u16(), 429 | 503) {
                e.retry_after = resp
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, SystemTime::now()));
            }
            return Err(e);
        }
        Ok((resp, slot))
    }

    /// One attempt at an index file (or an archive): the request and its whole body.
    async fn index_attempt(
        &self,
        url: &str,
        headers: &HeaderMap,
        kind: Kind,
        what: &str,
    ) -> Result<IndexAnswer, UpstreamError> {
        let (resp, _slot) = self.send(url, headers, kind, what).await?;
        match resp.status() {
            StatusCode::OK => {
                let now = SystemTime::now();
                let fresh_for = freshness::fresh_for(url, headers, resp.headers(), now);
                let validators = Validators {
                    etag: header_string(resp.headers(), header::ETAG),
                    last_modified: header_string(resp.headers(), header::LAST_MODIFIED),
                };
                let private = freshness::is_private(resp.headers());
                let body = self.read_body(resp, MAX_INDEX_BYTES, what).await?;
                Ok(IndexAnswer::Body {
                    body,
                    validators,
                    fresh_for,
                    private,
                })
            }
            StatusCode::NOT_MODIFIED => {
                if !headers.contains_key(header::IF_NONE_MATCH)
                    && !headers.contains_key(header::IF_MODIFIED_SINCE)
                {
                    return Err(self.error(
                        what,
                        Failure::Invalid("304 to an unconditional request".into()),
                    ));
                }
                let now = SystemTime::now();
                let fresh_for = freshness::fresh_for(url, headers, resp.headers(), now);
                Ok(IndexAnswer::NotModified { fresh_for })
            }
            StatusCode::NOT_FOUND
            | StatusCode::GONE
            | StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS => Ok(IndexAnswer::NotFound),
            s => Err(self.error(what, Failure::Status(s.as_u16()))),
        }
    }

    async fn read_body(
        &self,
        mut resp: reqwest::Response,
        limit: u64,
        what: &str,
    ) -> Result<Bytes, UpstreamError> {
        if resp.content_length().is_some_and(|l| l > limit) {
            return Err(self.error(what, Failure::TooLarge(limit)));
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.classify(what, &e))? {
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(self.error(what, Failure::TooLarge(limit)));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// One attempt at a crate file, up to its head; the body streams later.
    async fn crate_attempt(&self, url: &str, what: &str) -> Result<CrateAnswer, UpstreamError> {
        let started = Instant::now();
        let (resp, slot) = match self.send(url, &HeaderMap::new(), Kind::Crate, what).await {
            Ok(r) => r,
            Err(e) => {
                self.record(Kind::Crate, e.outcome(), started);
                return Err(e);
            }
        };
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                self.record(Kind::Crate, "not_found", started);
                return Ok(CrateAnswer::NotFound);
            }
            s => {
                let e = self.error(what, Failure::Status(s.as_u16()));
                self.record(Kind::Crate, e.outcome(), started);
                return Err(e);
            }
        }
        let html = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
        if html {
            let e = self.error(
                what,
                Failure::Invalid("an HTML page instead of a crate file".into()),
            );
            self.record(Kind::Crate, e.outcome(), started);
            return Err(e);
        }
        let len = resp.content_length();
        // The attempt is counted once, when its body ends, however it ends.
        let tally = Tally {
            metrics: self.metrics.clone(),
            registry: self.registry.clone(),
            started,
            outcome: None,
            _slot: slot,
        };
        let what = what.to_owned();
        let chunks = futures_util::stream::unfold(Some((resp, tally)), move |state| {
            let what = what.clone();
            async move {
                let (mut resp, mut tally) = state?;
                match resp.chunk().await {
                    Ok(Some(chunk)) => Some((Ok(chunk), Some((resp, tally)))),
                    Ok(None) => {
                        tally.outcome = Some("ok");
                        None
                    }
                    Err(e) => {
                        let failure = if e.is_timeout() {
                            Failure::Timeout
                        } else {
                            Failure::Body(error_chain(&e))
                        };
                        let e = UpstreamError::new(&tally.registry, what, failure);
                        tally.outcome = Some(e.outcome());
                        Some((Err(e), None))
                    }
                }
            }
        })
        .boxed();
        Ok(CrateAnswer::Body(CrateStream { len, chunks }))
    }
}

/// Counts a streamed attempt once, when its stream ends or is dropped. A body its reader
/// dropped before the end (over the size limit, a failed disk write, shutdown) is `cancelled`.
struct Tally {
    metrics: Arc<Metrics>,
    registry: RegistryName,
    started: Instant,
    outcome: Option<&'static str>,
    /// The upstream slot the download holds until its body ends.
    _slot: Slot,
}

/// A place among an upstream's requests in flight.
type Slot = tokio::sync::OwnedSemaphorePermit;

impl Drop for Tally {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or("cancelled");
        record(
            &self.metrics,
            &self.registry,
            Kind::Crate,
            outcome,
            self.started,
        );
    }
}

fn record(metrics: &Metrics, registry: &RegistryName, kind: Kind, outcome: &str, started: Instant) {
    let reg = registry.as_str();
    metrics
        .upstream_requests
        .with_label_values(&[reg, kind.label(), outcome])
        .inc();
    metrics
        .upstream_seconds
        .with_label_values(&[reg, kind.label()])
        .observe(started.elapsed().as_secs_f64());
}

#[async_trait]
impl Upstream for HttpUpstream {
    async fn index_file(
        &self,
        path: &str,
        validators: Option<&Validators>,
    ) -> Result<IndexAnswer, UpstreamError> {
        let what = format!("index file {path}");
        let url = format!("{}{path}", self.base);
        let mut headers = conditional(validators);
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/plain"));
        self.with_retries(Kind::Index, || async {
            let started = Instant::now();
            let result = self.index_attempt(&url, &headers, Kind::Index, &what).await;
            let outcome = match &result {
                Ok(IndexAnswer::Body { .. }) => "ok",
                Ok(IndexAnswer::NotModified { .. }) => "not_modified",
                Ok(IndexAnswer::NotFound) => "not_found",
                Err(e) => e.outcome(),
            };
            self.record(Kind::Index, outcome, started);
            result
        })
        .await
    }

    async fn crate_file(&self, url: &str, what: &str) -> Result<CrateAnswer, UpstreamError> {
        self.with_retries(Kind::Crate, || self.crate_attempt(url, what))
            .await
    }
}

impl HttpUpstream {
    /// Fetches the archive at `url` whole (at most 64 MiB); a conditional request when
    /// `validators` are given. Freshness headers are read as for index files.
    pub(crate) async fn archive(
        &self,
        url: &str,
        validators: Option<&Validators>,
    ) -> Result<IndexAnswer, UpstreamError> {
        let what = format!("archive {url}");
        let headers = conditional(validators);
        self.with_retries(Kind::Archive, || async {
            let started = Instant::now();
            let result = self
                .index_attempt(url, &headers, Kind::Archive, &what)
                .await;
            let outcome = match &result {
                Ok(IndexAnswer::Body { .. }) => "ok",
                Ok(IndexAnswer::NotModified { .. }) => "not_modified",
                Ok(IndexAnswer::NotFound) => "not_found",
                Err(e) => e.outcome(),
            };
            self.record(Kind::Archive, outcome, started);
            result
        })
        .await
    }
}

/// `If-None-Match` (or else `If-Modified-Since`) for `validators`.
fn conditional(validators: Option<&Validators>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(v) = validators {
        if let Some(etag) = v
            .etag
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            headers.insert(header::IF_NONE_MATCH, etag);
        } else if let Some(lm) = v
            .last_modified
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            headers.insert(header::IF_MODIFIED_SINCE, lm);
        }
    }
    headers
}

fn header_string(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The error and its causes on one line (reqwest's Display stops at the outermost).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
