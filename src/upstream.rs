//! The HTTP client of one upstream registry: TLS roots, token, timeouts, bounded retries.
//!
//! The rule this module keeps: every failure becomes an [`UpstreamError`] that says what was
//! asked, whether the upstream is at fault and whether a retry is safe, and every attempt is
//! counted in the metrics with a bounded outcome label.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::MirrorConfig;
use crate::metrics::Metrics;
use crate::names::RegistryName;

/// What is being fetched; sets the deadline and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Index,
    Crate,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Index => "index",
            Kind::Crate => "crate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the deadline.
    Timeout,
    /// Could not connect (refused, DNS, TLS handshake).
    Connect(String),
    /// An HTTP status cratedock cannot use.
    Status(u16),
    /// The body was cut off or could not be read.
    Body(String),
    /// The body arrived but is not what was asked for (an HTML page, broken JSON).
    Invalid(String),
    /// The crate file does not hash to the index's `cksum`.
    Checksum { expected: String, actual: String },
    /// The body is larger than the configured limit.
    TooLarge(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct UpstreamError {
    pub registry: RegistryName,
    /// What was asked for, e.g. `index file se/rd/serde`.
    pub what: String,
    pub failure: Failure,
}

impl UpstreamError {
    fn describe(&self) -> String {
        let (r, w) = (&self.registry, &self.what);
        match &self.failure {
            Failure::Timeout => format!("upstream of `{r}` timed out fetching {w}"),
            Failure::Connect(e) => format!("cannot reach the upstream of `{r}` for {w}: {e}"),
            Failure::Status(s) => format!("upstream of `{r}` answered HTTP {s} for {w}"),
            Failure::Body(e) => format!("upstream of `{r}` cut off {w}: {e}"),
            Failure::Invalid(e) => format!("upstream of `{r}` sent invalid data for {w}: {e}"),
            Failure::Checksum { expected, actual } => format!(
                "checksum mismatch for {w} from the upstream of `{r}`: the index says {expected}, the file hashes to {actual}; it was not stored"
            ),
            Failure::TooLarge(limit) => {
                format!("{w} from the upstream of `{r}` is larger than the {limit}-byte limit")
            }
        }
    }

    /// Whether trying the same request again may succeed.
    pub fn retryable(&self) -> bool {
        match self.failure {
            Failure::Timeout | Failure::Connect(_) | Failure::Body(_) => true,
            Failure::Status(s) => s >= 500 || s == 429,
            Failure::Invalid(_) | Failure::Checksum { .. } | Failure::TooLarge(_) => false,
        }
    }

    pub fn is_timeout(&self) -> bool {
        self.failure == Failure::Timeout
    }

    fn outcome(&self) -> &'static str {
        match self.failure {
            Failure::Timeout => "timeout",
            Failure::Connect(_) => "connect",
            Failure::Status(s) if s >= 500 => "status_5xx",
            Failure::Status(_) => "status_4xx",
            Failure::Body(_) => "body",
            Failure::Invalid(_) | Failure::TooLarge(_) => "invalid",
            Failure::Checksum { .. } => "checksum",
        }
    }
}

/// The system's trusted roots, loaded once and shared by every upstream.
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::warn!(error = %e, "could not load some system CA certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    tracing::debug!(added, ignored, "loaded system CA certificates");
    roots
}

/// An upstream response whose body has been read whole.
#[derive(Debug)]
pub struct Buffered {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct Upstream {
    registry: RegistryName,
    base: String,
    /// `scheme://authority/` of `base`: the token goes only to URLs below it.
    origin: String,
    client: reqwest::Client,
    token: Option<HeaderValue>,
    request_timeout: Duration,
    download_timeout: Duration,
    retries: u32,
    metrics: Arc<Metrics>,
}

/// Index files above this size are refused (crates.io's largest are a few MB).
const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;

impl Upstream {
    pub fn new(
        registry: &RegistryName,
        cfg: &MirrorConfig,
        system_roots: &RootCertStore,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let mut roots = if cfg.system_roots {
            system_roots.clone()
        } else {
            RootCertStore::empty()
        };
        if let Some(path) = &cfg.ca_bundle {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    anyhow::anyhow!(
                        "registries.{registry}.ca_bundle: cannot read PEM certificates from {}: {e}",
                        path.display()
                    )
                })?;
            if certs.is_empty() {
                anyhow::bail!(
                    "registries.{registry}.ca_bundle: {} holds no certificate",
                    path.display()
                );
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    anyhow::anyhow!("registries.{registry}.ca_bundle: {}: {e}", path.display())
                })?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(crate::crypto_provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut tls = match (&cfg.client_cert_file, &cfg.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = crate::tls::read_certs(cert)
                    .map_err(|e| anyhow::anyhow!("registries.{registry}.client_cert_file: {e}"))?;
                let key_der = crate::tls::read_key(key)
                    .map_err(|e| anyhow::anyhow!("registries.{registry}.client_key_file: {e}"))?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    anyhow::anyhow!(
                        "registries.{registry}: the key in {} does not fit the certificate in {}: {e}",
                        key.display(),
                        cert.display()
                    )
                })?
            }
            _ => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let client = reqwest::Client::builder()
            .user_agent(concat!("cratedock/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .read_timeout(Duration::from_millis(cfg.request_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(90))
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
            retries: cfg.retries,
            metrics,
        })
    }

    /// URL of a file below the upstream's index root.
    pub fn index_url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn error(&self, what: impl Into<String>, failure: Failure) -> UpstreamError {
        UpstreamError {
            registry: self.registry.clone(),
            what: what.into(),
            failure,
        }
    }

    fn classify(&self, what: &str, e: &reqwest::Error) -> UpstreamError {
        let failure = if e.is_timeout() {
            Failure::Timeout
        } else if e.is_connect() {
            Failure::Connect(error_chain(e))
        } else {
            // The connection broke after it was made: mid-response, or before the head.
            Failure::Body(error_chain(e))
        };
        self.error(what, failure)
    }

    fn record(&self, kind: Kind, outcome: &str, started: Instant) {
        let reg = self.registry.as_str();
        self.metrics
            .upstream_requests
            .with_label_values(&[reg, kind.label(), outcome])
            .inc();
        self.metrics
            .upstream_seconds
            .with_label_values(&[reg, kind.label()])
            .observe(started.elapsed().as_secs_f64());
    }

    /// How long to wait before retry number `attempt + 1`: 100 ms, 200 ms, 400 ms ... capped
    /// at 2 s, with up to 50% jitter from the clock.
    pub fn backoff(attempt: u32) -> Duration {
        let base = 100u64.saturating_mul(1 << attempt.min(5)).min(2_000);
        let jitter = u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0),
        ) % (base / 2 + 1);
        Duration::from_millis(base + jitter)
    }

    /// Retries after a failure (connect errors, timeouts, cut-off bodies, 5xx, 429).
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Sends one GET. 5xx and 429 are errors; any other status is returned for the caller to
    /// judge. The token is sent only to the upstream's own origin, never to another host that
    /// `dl` names (a CDN, a pre-signed blob store).
    pub async fn send_once(
        &self,
        url: &str,
        headers: &HeaderMap,
        kind: Kind,
        what: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let started = Instant::now();
        let mut req = self.client.get(url).headers(headers.clone());
        if let Some(t) = &self.token
            && url.starts_with(&self.origin)
        {
            req = req.header(header::AUTHORIZATION, t.clone());
        }
        req = req.timeout(match kind {
            Kind::Index => self.request_timeout,
            Kind::Crate => self.download_timeout,
        });
        let result = match req.send().await {
            Err(e) => Err(self.classify(what, &e)),
            Ok(resp) if resp.status().is_server_error() || resp.status() == 429 => {
                Err(self.error(what, Failure::Status(resp.status().as_u16())))
            }
            Ok(resp) => Ok(resp),
        };
        let outcome = match &result {
            Ok(resp) => match resp.status() {
                s if s.is_success() => "ok",
                StatusCode::NOT_MODIFIED => "not_modified",
                StatusCode::NOT_FOUND | StatusCode::GONE => "not_found",
                _ => "status_4xx",
            },
            Err(e) => e.outcome(),
        };
        self.record(kind, outcome, started);
        result
    }

    /// GETs an index file and reads its body whole, retrying failed attempts with backoff.
    pub async fn get_buffered(
        &self,
        url: &str,
        headers: &HeaderMap,
        what: &str,
    ) -> Result<Buffered, UpstreamError> {
        let mut attempt = 0;
        loop {
            let result: Result<Buffered, UpstreamError> = async {
                let resp = self.send_once(url, headers, Kind::Index, what).await?;
                let status = resp.status();
                let resp_headers = resp.headers().clone();
                let body = self
                    .read_body(resp, MAX_INDEX_BYTES, what)
                    .await
                    .inspect_err(|e| {
                        self.record(Kind::Index, e.outcome(), Instant::now());
                    })?;
                Ok(Buffered {
                    status,
                    headers: resp_headers,
                    body,
                })
            }
            .await;
            match result {
                Err(e) if e.retryable() && attempt < self.retries => {
                    tracing::debug!(error = %e, attempt, "retrying upstream request");
                    tokio::time::sleep(Self::backoff(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
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

    /// Reads the next chunk of a streamed body, classifying failures.
    pub async fn next_chunk(
        &self,
        resp: &mut reqwest::Response,
        what: &str,
    ) -> Result<Option<Bytes>, UpstreamError> {
        resp.chunk().await.map_err(|e| self.classify(what, &e))
    }
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
