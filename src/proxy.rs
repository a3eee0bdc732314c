//! The pull-through path of one mirror registry: index files and crate files.
//!
//! The rules this module keeps:
//! - index files: memory → disk → upstream; freshness from the upstream's caching headers (or
//!   the configured TTL), conditional revalidation, stale-while-revalidate, stale-if-error, and
//!   a short negative cache of "no such crate";
//! - crate files: hashed as they stream in from the upstream, and stored only when the SHA-256
//!   equals the index's `cksum`; clients follow the download as it arrives (see
//!   [`crate::download`]) but never get the last byte of a file that fails the check;
//! - new files are answered from memory first and written to disk in the tail of their flight,
//!   off the client's path;
//! - concurrent misses of one file share one upstream request, and waiters give up after the
//!   configured time instead of hanging on a stuck leader.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_cache_semantics::{AfterResponse, CacheOptions, CachePolicy};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::coalesce::{Coalescer, Done};
use crate::config::MirrorConfig;
use crate::download::{Download, Streamed};
use crate::metrics::Metrics;
use crate::names::{CrateName, RegistryName, Version, prefix_of};
use crate::store::{
    CrateKey, CrateMeta, DiskStore, IndexEntry, IndexFile, IndexKey, IndexMeta, MemKey, MemValue,
    MemoryTier, MetaStore, StoreError, to_ms,
};
use crate::upstream::{Failure, Kind, Upstream, UpstreamError};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("{0}")]
    NotFound(String),
    #[error(
        "timed out after {waited_ms} ms waiting for another request's upstream fetch of {what}"
    )]
    WaitTimeout { what: String, waited_ms: u64 },
    #[error("storage error: {0}")]
    Store(String),
}

impl From<StoreError> for ProxyError {
    fn from(e: StoreError) -> Self {
        ProxyError::Store(e.to_string())
    }
}

impl From<std::io::Error> for ProxyError {
    fn from(e: std::io::Error) -> Self {
        ProxyError::Store(e.to_string())
    }
}

impl ProxyError {
    /// Whether a stale copy may stand in for the answer (the upstream, not the request, failed).
    fn upstream_failed(&self) -> bool {
        matches!(
            self,
            ProxyError::Upstream(_) | ProxyError::WaitTimeout { .. }
        )
    }
}

/// The answer for an index file.
#[derive(Debug, Clone)]
pub enum Lookup {
    Found(Arc<IndexEntry>),
    NotFound,
}

/// The bytes of a crate file: from memory, an open file on disk for large ones, or a
/// download still arriving from the upstream.
#[derive(Debug)]
pub enum CrateBody {
    Memory(Bytes),
    File { file: tokio::fs::File, len: u64 },
    Streaming(Streamed),
}

type IndexFlight = Result<Lookup, ProxyError>;
/// A crate flight yields the bytes when they are small enough for memory, else `None`: the
/// file is on disk.
type CrateFlight = Result<Option<Bytes>, ProxyError>;

pub struct Mirror {
    name: RegistryName,
    cfg: MirrorConfig,
    upstream: Upstream,
    disk: Arc<DiskStore>,
    meta: Arc<dyn MetaStore>,
    memory: MemoryTier,
    negative: moka::sync::Cache<MemKey, ()>,
    index_flights: Coalescer<IndexKey, IndexFlight>,
    crate_flights: Coalescer<CrateKey, CrateFlight, Arc<Download>>,
    /// Crate files whose download just failed its checksum: refused at once for a while, so
    /// that cargo's retry gets a clear error instead of another cut-off transfer.
    bad_checksums: moka::sync::Cache<CrateKey, ProxyError>,
    metrics: Arc<Metrics>,
    coalesce_wait: Duration,
    max_crate_bytes: u64,
}

/// What the index-line check reads of each line.
#[derive(Deserialize)]
struct LineHead<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    vers: std::borrow::Cow<'a, str>,
}

/// What a download needs from a line.
#[derive(Deserialize)]
struct LineChecksum {
    name: String,
    vers: String,
    cksum: String,
}

#[derive(Deserialize)]
struct UpstreamConfigJson {
    dl: String,
}

pub struct MirrorParts {
    pub name: RegistryName,
    pub cfg: MirrorConfig,
    pub upstream: Upstream,
    pub disk: Arc<DiskStore>,
    pub meta: Arc<dyn MetaStore>,
    pub memory: MemoryTier,
    pub metrics: Arc<Metrics>,
    pub coalesce_wait: Duration,
    pub max_crate_bytes: u64,
}

impl Mirror {
    pub fn new(p: MirrorParts) -> Self {
        let negative = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(Duration::from_millis(p.cfg.negative_ttl_ms.max(1)))
            .build();
        let bad_checksums = moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_millis(p.cfg.negative_ttl_ms.max(1)))
            .build();
        Self {
            name: p.name,
            cfg: p.cfg,
            upstream: p.upstream,
            disk: p.disk,
            meta: p.meta,
            memory: p.memory,
            negative,
            index_flights: Coalescer::default(),
            crate_flights: Coalescer::default(),
            bad_checksums,
            metrics: p.metrics,
            coalesce_wait: p.coalesce_wait,
            max_crate_bytes: p.max_crate_bytes,
        }
    }

    pub fn name(&self) -> &RegistryName {
        &self.name
    }

    /// Fetches of index files and of crate files under way (with the disk writes after them).
    pub fn fetches_in_flight(&self) -> (usize, usize) {
        (self.index_flights.len(), self.crate_flights.len())
    }

    // ---------------------------------------------------------------- index files

    /// The index file of crate `name`.
    pub async fn index_file(self: &Arc<Self>, name: &CrateName) -> Result<Lookup, ProxyError> {
        self.lookup(&IndexKey::krate(&self.name, name)).await
    }

    async fn lookup(self: &Arc<Self>, key: &IndexKey) -> Result<Lookup, ProxyError> {
        let mk = key.mem_key();
        let (entry, tier) = match self.memory.get(&mk) {
            Some(MemValue::Index(e)) => (Some(e), "memory"),
            _ => match self.load_index(key).await? {
                Some(e) => {
                    // A fetch may have put a newer copy in memory meanwhile; keep that one.
                    match self
                        .memory
                        .insert_if_absent(mk.clone(), MemValue::Index(e.clone()))
                    {
                        MemValue::Index(current) => (Some(current), "disk"),
                        MemValue::Crate(_) => (Some(e), "disk"),
                    }
                }
                None => (None, "upstream"),
            },
        };
        let now = to_ms(SystemTime::now());
        let Some(entry) = entry else {
            if self.negative.contains_key(&mk) {
                self.metrics.cache("index", "memory", "negative");
                return Ok(Lookup::NotFound);
            }
            if matches!(key.file, IndexFile::Crate(_)) {
                self.prefetch_upstream_config();
            }
            return self.refresh(key, None).await;
        };
        if now < entry.meta.fresh_until_ms {
            self.metrics.cache("index", tier, "hit");
            return Ok(Lookup::Found(entry));
        }
        let stale_for = now - entry.meta.fresh_until_ms;
        if stale_for < self.cfg.stale_while_revalidate_ms {
            self.refresh_in_background(key, entry.clone());
            self.metrics.cache("index", tier, "stale");
            return Ok(Lookup::Found(entry));
        }
        // With a stale copy in hand, wait only a little for the upstream; the refresh goes on in
        // its own task and lands in the cache for the next request.
        let wait = Duration::from_millis(self.cfg.revalidate_wait_ms);
        match self.refresh_within(key, Some(entry.clone()), wait).await {
            Err(e) if e.upstream_failed() && stale_for < self.cfg.stale_if_error_max_age_ms => {
                tracing::warn!(
                    registry = %self.name, file = %key.index_path(), error = %e,
                    stale_for_ms = stale_for, "upstream failed; serving a stale index file"
                );
                self.metrics.cache("index", tier, "stale");
                Ok(Lookup::Found(entry))
            }
            other => other,
        }
    }

    async fn load_index(&self, key: &IndexKey) -> Result<Option<Arc<IndexEntry>>, ProxyError> {
        let Some(meta) = self.meta.get_index(key)? else {
            return Ok(None);
        };
        let Some(body) = self.disk.read(&key.rel_path()).await? else {
            // Bookkeeping without its file (removed by hand): forget it.
            self.meta.remove_index(key)?;
            return Ok(None);
        };
        // The body and its bookkeeping are written one after the other; a reader between the
        // two (or a crash) could pair them wrongly, so the ETag is taken from the body itself.
        let mut meta = meta;
        meta.etag = etag_of(&body);
        meta.size = body.len() as u64;
        Ok(Some(Arc::new(entry_from(body, meta)?)))
    }

    fn refresh_in_background(self: &Arc<Self>, key: &IndexKey, old: Arc<IndexEntry>) {
        if self.index_flights.is_running(key) {
            return;
        }
        let this = Arc::clone(self);
        let k = key.clone();
        // The flight runs in its own task; its result lands in the cache.
        let _ = self.index_flights.join(key.clone(), move || async move {
            let done = this.fetch_index(&k, Some(old)).await;
            if let Err(e) = done.value() {
                tracing::warn!(registry = %this.name, file = %k.index_path(), error = %e, "background refresh failed");
            }
            done
        });
    }

    /// Fetches or revalidates one index file, sharing the upstream request with concurrent
    /// callers.
    async fn refresh(
        self: &Arc<Self>,
        key: &IndexKey,
        old: Option<Arc<IndexEntry>>,
    ) -> Result<Lookup, ProxyError> {
        self.refresh_within(key, old, self.coalesce_wait).await
    }

    async fn refresh_within(
        self: &Arc<Self>,
        key: &IndexKey,
        old: Option<Arc<IndexEntry>>,
        wait: Duration,
    ) -> Result<Lookup, ProxyError> {
        let this = Arc::clone(self);
        let k = key.clone();
        let (flight, leader) = self.index_flights.join(key.clone(), move || async move {
            this.fetch_index(&k, old).await
        });
        if !leader {
            self.metrics
                .coalesced_waiters
                .with_label_values(&["index"])
                .inc();
        }
        self.wait(flight, wait, || format!("index file {}", key.index_path()))
            .await
    }

    async fn wait<T>(
        &self,
        flight: crate::coalesce::Flight<Result<T, ProxyError>>,
        wait: Duration,
        what: impl Fn() -> String,
    ) -> Result<T, ProxyError>
    where
        T: Clone,
    {
        match tokio::time::timeout(wait, flight).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(ProxyError::Store(format!(
                "the fetch of {} was interrupted",
                what()
            ))),
            Err(_) => Err(ProxyError::WaitTimeout {
                what: what(),
                waited_ms: wait.as_millis() as u64,
            }),
        }
    }

    /// Fetches or revalidates one index file. A new body is answered from memory at once and
    /// written to disk in the flight's tail.
    async fn fetch_index(
        self: &Arc<Self>,
        key: &IndexKey,
        old: Option<Arc<IndexEntry>>,
    ) -> Done<IndexFlight> {
        match self.fetch_index_inner(key, old).await {
            Ok((lookup, Some(persist))) => Done::then(Ok(lookup), persist),
            Ok((lookup, None)) => Ok(lookup).into(),
            Err(e) => Err(e).into(),
        }
    }

    async fn fetch_index_inner(
        self: &Arc<Self>,
        key: &IndexKey,
        old: Option<Arc<IndexEntry>>,
    ) -> Result<(Lookup, Option<impl Future<Output = ()> + Send + 'static>), ProxyError> {
        let mk = key.mem_key();
        // A flight that finished just before this one started may have done the work already.
        if let Some(MemValue::Index(e)) = self.memory.get(&mk) {
            let replaced = old.as_ref().is_none_or(|o| !Arc::ptr_eq(o, &e));
            if replaced && to_ms(SystemTime::now()) < e.meta.fresh_until_ms {
                return Ok((Lookup::Found(e), None));
            }
        }
        let path = key.index_path();
        let what = format!("index file {path}");
        let url = self.upstream.index_url(&path);
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("text/plain"));
        if let Some(o) = &old {
            if let Some(v) = o.meta.upstream_etag.as_deref().and_then(header_value) {
                headers.insert(header::IF_NONE_MATCH, v);
            } else if let Some(v) = o
                .meta
                .upstream_last_modified
                .as_deref()
                .and_then(header_value)
            {
                headers.insert(header::IF_MODIFIED_SINCE, v);
            }
        }
        let policy_request = policy_request(&url, &headers)?;
        let resp = self.upstream.get_buffered(&url, &headers, &what).await?;
        let now = SystemTime::now();
        match resp.status {
            StatusCode::OK => {
                if let Err(why) = validate_index_body(&key.file, &resp.body) {
                    return Err(self.upstream.error(what, Failure::Invalid(why)).into());
                }
                let response = policy_response(resp.status, resp.headers, self.cfg.index_ttl_ms)?;
                let policy = CachePolicy::new_options(
                    &policy_request,
                    &response,
                    now,
                    CacheOptions::default(),
                );
                let entry = self.new_index_entry(resp.body, policy, response.headers(), now)?;
                self.memory
                    .insert(mk.clone(), MemValue::Index(entry.clone()));
                self.negative.invalidate(&mk);
                self.metrics.cache("index", "upstream", "miss");
                let (k, e) = (key.clone(), entry.clone());
                let persist = Arc::clone(self).persist(
                    key.rel_path(),
                    entry.body.clone(),
                    format!("index file {}", key.index_path()),
                    move |meta| meta.put_index(&k, &e.meta),
                );
                Ok((Lookup::Found(entry), Some(persist)))
            }
            StatusCode::NOT_MODIFIED => {
                let Some(old) = old else {
                    return Err(self
                        .upstream
                        .error(
                            what,
                            Failure::Invalid("304 to an unconditional request".into()),
                        )
                        .into());
                };
                let response = policy_response(resp.status, resp.headers, self.cfg.index_ttl_ms)?;
                let policy = match old
                    .meta
                    .policy
                    .after_response(&policy_request, &response, now)
                {
                    AfterResponse::NotModified(p, _) | AfterResponse::Modified(p, _) => p,
                };
                let mut meta = old.meta.clone();
                meta.fresh_until_ms = fresh_until(&policy, now);
                meta.checked_at_ms = to_ms(now);
                meta.policy = policy;
                self.meta.put_index(key, &meta)?;
                let entry = Arc::new(entry_from(old.body.clone(), meta)?);
                self.memory.insert(mk, MemValue::Index(entry.clone()));
                self.metrics.cache("index", "upstream", "revalidated");
                Ok((Lookup::Found(entry), None))
            }
            StatusCode::NOT_FOUND
            | StatusCode::GONE
            | StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS => {
                // The crate does not exist (or no longer does) upstream.
                self.meta.remove_index(key)?;
                self.disk.remove(&key.rel_path()).await?;
                self.memory.remove(&mk);
                self.negative.insert(mk, ());
                self.metrics.cache("index", "upstream", "miss");
                Ok((Lookup::NotFound, None))
            }
            s => Err(self
                .upstream
                .error(what, Failure::Status(s.as_u16()))
                .into()),
        }
    }

    fn new_index_entry(
        &self,
        body: Bytes,
        policy: CachePolicy,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<Arc<IndexEntry>, ProxyError> {
        let meta = IndexMeta {
            etag: etag_of(&body),
            upstream_etag: header_str(headers, header::ETAG),
            upstream_last_modified: header_str(headers, header::LAST_MODIFIED),
            fresh_until_ms: fresh_until(&policy, now),
            checked_at_ms: to_ms(now),
            size: body.len() as u64,
            policy,
        };
        Ok(Arc::new(entry_from(body, meta)?))
    }

    /// Writes a file that was answered from memory to disk, then its bookkeeping (`record`).
    /// It runs in the tail of the file's flight, so writes of one file never overlap. A
    /// failure only costs the disk copy: the memory tier has the file.
    async fn persist(
        self: Arc<Self>,
        rel: PathBuf,
        bytes: Bytes,
        what: String,
        record: impl FnOnce(&dyn MetaStore) -> Result<(), StoreError>,
    ) {
        let result = async {
            self.disk.write(&rel, bytes).await?;
            record(self.meta.as_ref())?;
            Ok::<_, ProxyError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(registry = %self.name, file = %what, error = %e, "cannot store a file on disk");
        }
    }

    /// Downloads need the upstream's `config.json` (its `dl` template). Fetching it in the
    /// background while cargo is still resolving index files takes one upstream round trip
    /// off the first download of a cold cache.
    fn prefetch_upstream_config(self: &Arc<Self>) {
        let key = IndexKey::config(&self.name);
        if self.memory.get(&key.mem_key()).is_some() || self.index_flights.is_running(&key) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = this.lookup(&key).await {
                tracing::debug!(registry = %this.name, error = %e, "prefetching the upstream's config.json failed");
            }
        });
    }

    /// The `dl` template of the upstream's `config.json`.
    async fn upstream_dl(self: &Arc<Self>) -> Result<String, ProxyError> {
        match self.lookup(&IndexKey::config(&self.name)).await? {
            Lookup::Found(e) => {
                let cfg: UpstreamConfigJson = serde_json::from_slice(&e.body).map_err(|e| {
                    self.upstream
                        .error("config.json", Failure::Invalid(e.to_string()))
                })?;
                Ok(cfg.dl)
            }
            Lookup::NotFound => Err(self
                .upstream
                .error("config.json", Failure::Status(404))
                .into()),
        }
    }

    // ---------------------------------------------------------------- crate files

    /// The `.crate` file of `name` at `version`.
    pub async fn crate_file(
        self: &Arc<Self>,
        name: &CrateName,
        version: &Version,
    ) -> Result<CrateBody, ProxyError> {
        let key = CrateKey::new(&self.name, name, version);
        if let Some(MemValue::Crate(bytes)) = self.memory.get(&key.mem_key()) {
            self.metrics.cache("crate", "memory", "hit");
            return Ok(CrateBody::Memory(bytes));
        }
        // The bookkeeping says whether the file is on disk, without a trip to the blocking
        // pool for a miss.
        if self.meta.get_crate(&key)?.is_some()
            && let Some(body) = self.open_crate(&key).await?
        {
            self.metrics.cache("crate", "disk", "hit");
            return Ok(body);
        }
        if let Some(e) = self.bad_checksums.get(&key) {
            return Err(e);
        }
        let this = Arc::clone(self);
        let k = key.clone();
        let (flight, download, leader) =
            self.crate_flights
                .join_with(key.clone(), Arc::default(), move |d| async move {
                    let _end = d.guard();
                    let done = this.fetch_crate(&k, &d).await;
                    if let Err(e) = done.value() {
                        d.fail(e.to_string());
                    }
                    done
                });
        if !leader {
            self.metrics
                .coalesced_waiters
                .with_label_values(&["crate"])
                .inc();
        }
        // The file streams to the client as soon as the upstream sends it; a flight that ends
        // first (an error, or a file too quick to matter) answers directly.
        let what = || format!("crate {name} {version}");
        let fetched = tokio::select! {
            biased;
            result = self.wait(flight, self.coalesce_wait, what) => result?,
            Some(streamed) = download.reader() => return Ok(CrateBody::Streaming(streamed)),
        };
        if let Some(bytes) = fetched {
            return Ok(CrateBody::Memory(bytes));
        }
        self.open_crate(&key).await?.ok_or_else(|| {
            ProxyError::Store(format!(
                "crate {name} {version} vanished from disk after download"
            ))
        })
    }

    async fn open_crate(&self, key: &CrateKey) -> Result<Option<CrateBody>, ProxyError> {
        let Some((file, len)) = self.disk.open_file(&key.rel_path()).await? else {
            return Ok(None);
        };
        if !self.memory.fits(len) {
            return Ok(Some(CrateBody::File { file, len }));
        }
        let mut buf = Vec::with_capacity(len as usize);
        let mut file = file;
        tokio::io::AsyncReadExt::read_to_end(&mut file, &mut buf).await?;
        let bytes = Bytes::from(buf);
        self.memory
            .insert(key.mem_key(), MemValue::Crate(bytes.clone()));
        Ok(Some(CrateBody::Memory(bytes)))
    }

    /// Finds the checksum and original-case name of a version in the index, revalidating the
    /// index once if the version is not there yet (it may have been published since).
    async fn checksum_of(self: &Arc<Self>, key: &CrateKey) -> Result<LineChecksum, ProxyError> {
        let ikey = IndexKey::krate(&self.name, &key.name);
        let not_found = || {
            ProxyError::NotFound(format!(
                "crate `{}` version `{}` is not in the index of `{}`",
                key.name, key.version, self.name
            ))
        };
        let mut refreshed = false;
        loop {
            let entry = match self.lookup(&ikey).await? {
                Lookup::Found(e) => e,
                Lookup::NotFound => return Err(not_found()),
            };
            if let Some(line) = find_version(&entry.body, key.version.as_str()) {
                return Ok(line);
            }
            let just_checked =
                to_ms(SystemTime::now()).saturating_sub(entry.meta.checked_at_ms) < 1_000;
            if refreshed || just_checked {
                return Err(not_found());
            }
            refreshed = true;
            self.refresh(&ikey, Some(entry)).await?;
        }
    }

    async fn fetch_crate(
        self: &Arc<Self>,
        key: &CrateKey,
        progress: &Download,
    ) -> Done<CrateFlight> {
        match self.fetch_crate_inner(key, progress).await {
            Ok(Fetched::InMemory(bytes, meta)) => {
                let k = key.clone();
                let persist = Arc::clone(self).persist(
                    key.rel_path(),
                    bytes.clone(),
                    format!("crate {} {}", key.name, key.version),
                    move |store| store.put_crate(&k, &meta),
                );
                Done::then(Ok(Some(bytes)), persist)
            }
            Ok(Fetched::Stored(bytes)) => Ok(bytes).into(),
            Err(e) => Err(e).into(),
        }
    }

    async fn fetch_crate_inner(
        self: &Arc<Self>,
        key: &CrateKey,
        progress: &Download,
    ) -> Result<Fetched, ProxyError> {
        // A flight that finished just before this one started may have done the work already.
        if let Some(MemValue::Crate(bytes)) = self.memory.get(&key.mem_key()) {
            return Ok(Fetched::Stored(Some(bytes)));
        }
        if self.meta.get_crate(key)?.is_some() {
            return Ok(Fetched::Stored(None));
        }
        let line = self.checksum_of(key).await?;
        let dl = self.upstream_dl().await?;
        let url = download_url(&dl, &line.name, &line.vers, &line.cksum);
        let what = format!("crate {} {}", line.name, line.vers);
        let mut attempt = 0;
        loop {
            match self.download(key, &url, &what, &line.cksum, progress).await {
                // Once bytes went out to clients, a retry cannot take their place.
                Err(ProxyError::Upstream(e))
                    if e.retryable() && attempt < self.cfg.retries && !progress.started() =>
                {
                    tracing::debug!(error = %e, attempt, "retrying crate download");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Downloads one crate file, verifies it, and publishes its progress to `progress`.
    ///
    /// A file the memory tier can hold is followed in memory and answered from there; it
    /// reaches the disk in the flight's tail ([`Mirror::persist`]), off the client's
    /// path. A larger file (or one of unknown length) streams into its temp file, which
    /// readers follow, and is committed before the flight ends.
    async fn download(
        &self,
        key: &CrateKey,
        url: &str,
        what: &str,
        cksum: &str,
        progress: &Download,
    ) -> Result<Fetched, ProxyError> {
        let mut resp = self
            .upstream
            .send_once(url, &HeaderMap::new(), Kind::Crate, what)
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                return Err(ProxyError::NotFound(format!(
                    "the upstream of `{}` has no file for {what}",
                    self.name
                )));
            }
            s => {
                return Err(self
                    .upstream
                    .error(what, Failure::Status(s.as_u16()))
                    .into());
            }
        }
        let limit = self.max_crate_bytes;
        let len = resp.content_length();
        if len.is_some_and(|l| l > limit) {
            return Err(self.upstream.error(what, Failure::TooLarge(limit)).into());
        }
        let html = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
        if html {
            return Err(self
                .upstream
                .error(
                    what,
                    Failure::Invalid("an HTML page instead of a crate file".into()),
                )
                .into());
        }
        let in_memory = len.is_some_and(|l| self.memory.fits(l));
        // Bytes kept for the memory tier: always in memory mode, and for a file of unknown
        // length as long as it stays small enough.
        let mut keep = (in_memory || len.is_none()).then(BytesMut::new);
        let mut tmp = None;
        if in_memory {
            progress.start_in_memory(len);
        } else {
            let t = self.disk.temp().await?;
            progress.start_in_file(t.reader()?, len);
            tmp = Some(t);
        }
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = self.upstream.next_chunk(&mut resp, what).await? {
            size += chunk.len() as u64;
            if size > limit {
                return Err(self.upstream.error(what, Failure::TooLarge(limit)).into());
            }
            hasher.update(&chunk);
            if let Some(t) = &mut tmp {
                t.write_all(&chunk).await?;
                t.flush().await?;
            }
            progress.append(&chunk);
            if let Some(buf) = &mut keep {
                if in_memory || self.memory.fits(size) {
                    buf.extend_from_slice(&chunk);
                } else {
                    keep = None;
                }
            }
        }
        let actual = hex(&hasher.finalize());
        if !actual.eq_ignore_ascii_case(cksum) {
            self.metrics
                .checksum_failures
                .with_label_values(&[self.name.as_str()])
                .inc();
            // `tmp`, if any, is dropped here, which deletes the partial file.
            let e: ProxyError = self
                .upstream
                .error(
                    what,
                    Failure::Checksum {
                        expected: cksum.to_owned(),
                        actual,
                    },
                )
                .into();
            self.bad_checksums.insert(key.clone(), e.clone());
            return Err(e);
        }
        // Readers may hand out the last byte now; the file is stored after.
        progress.verified();
        self.metrics.cache("crate", "upstream", "miss");
        let meta = CrateMeta {
            cksum: actual,
            size,
            stored_at_ms: to_ms(SystemTime::now()),
        };
        let bytes = keep.map(BytesMut::freeze);
        if let Some(b) = &bytes {
            self.memory
                .insert(key.mem_key(), MemValue::Crate(b.clone()));
        }
        match (tmp, bytes) {
            (None, Some(bytes)) => Ok(Fetched::InMemory(bytes, meta)),
            (Some(tmp), bytes) => {
                self.disk.commit(tmp, &key.rel_path()).await?;
                self.meta.put_crate(key, &meta)?;
                Ok(Fetched::Stored(bytes))
            }
            (None, None) => unreachable!("a download without a temp file keeps its bytes"),
        }
    }
}

/// How a download ended.
enum Fetched {
    /// Verified and held in memory; still to be written to disk.
    InMemory(Bytes, CrateMeta),
    /// Stored on disk already (with its bytes when they are small enough for memory).
    Stored(Option<Bytes>),
}

/// Upstream freshness is capped, so that an absurd `max-age` cannot overflow the clock.
const MAX_FRESHNESS: Duration = Duration::from_secs(365 * 24 * 3600);

fn fresh_until(policy: &CachePolicy, now: SystemTime) -> u64 {
    to_ms(now + policy.time_to_live(now).min(MAX_FRESHNESS))
}

/// cratedock's strong ETag of an index body: the first 128 bits of its SHA-256.
fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", &hex(&Sha256::digest(body))[..32])
}

fn entry_from(body: Bytes, meta: IndexMeta) -> Result<IndexEntry, ProxyError> {
    let etag = HeaderValue::from_str(&meta.etag).map_err(|_| {
        ProxyError::Store(format!("stored ETag {:?} is not a header value", meta.etag))
    })?;
    Ok(IndexEntry { body, meta, etag })
}

/// Checks that an index body is what was asked for, not an error page that came with a 200.
fn validate_index_body(file: &IndexFile, body: &[u8]) -> Result<(), String> {
    match file {
        IndexFile::Config => serde_json::from_slice::<UpstreamConfigJson>(body)
            .map(|_| ())
            .map_err(|e| format!("config.json is not JSON with a `dl` key: {e}")),
        IndexFile::Crate(name) => {
            for (i, line) in body.split(|&b| b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let head: LineHead<'_> = serde_json::from_slice(line)
                    .map_err(|e| format!("line {} is not an index entry: {e}", i + 1))?;
                if !head.name.eq_ignore_ascii_case(name.as_str()) {
                    return Err(format!(
                        "line {} names crate `{}`, not `{name}`",
                        i + 1,
                        head.name
                    ));
                }
                if head.vers.is_empty() {
                    return Err(format!("line {} has an empty version", i + 1));
                }
            }
            Ok(())
        }
    }
}

fn find_version(body: &[u8], version: &str) -> Option<LineChecksum> {
    body.split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<LineChecksum>(line).ok())
        .find(|l| l.vers == version)
}

/// Fills the upstream's `dl` template the way cargo does (markers, or the legacy suffix).
pub fn download_url(dl: &str, name: &str, version: &str, cksum: &str) -> String {
    const MARKERS: [&str; 5] = [
        "{crate}",
        "{version}",
        "{prefix}",
        "{lowerprefix}",
        "{sha256-checksum}",
    ];
    if !MARKERS.iter().any(|m| dl.contains(m)) {
        return format!("{dl}/{name}/{version}/download");
    }
    let prefix = prefix_of(name);
    dl.replace("{crate}", name)
        .replace("{version}", version)
        .replace("{prefix}", &prefix)
        .replace("{lowerprefix}", &prefix.to_ascii_lowercase())
        .replace("{sha256-checksum}", cksum)
}

fn policy_request(url: &str, headers: &HeaderMap) -> Result<http::Request<()>, ProxyError> {
    let mut req = http::Request::get(url)
        .body(())
        .map_err(|e| ProxyError::Store(format!("upstream URL {url}: {e}")))?;
    *req.headers_mut() = headers.clone();
    Ok(req)
}

/// The upstream response as the cache policy sees it: when the upstream says nothing about
/// freshness, the configured TTL is written in as `max-age`.
fn policy_response(
    status: StatusCode,
    mut headers: HeaderMap,
    ttl_ms: u64,
) -> Result<http::Response<()>, ProxyError> {
    let cc = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let has_freshness =
        cc.contains("max-age") || cc.contains("s-maxage") || headers.contains_key(header::EXPIRES);
    if !has_freshness {
        let value = if cc.trim().is_empty() {
            format!("max-age={}", ttl_ms / 1000)
        } else {
            format!("{cc}, max-age={}", ttl_ms / 1000)
        };
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_str(&value).map_err(|e| ProxyError::Store(e.to_string()))?,
        );
    }
    let mut resp = http::Response::new(());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_urls_follow_cargo_rules() {
        assert_eq!(
            download_url("https://x/api/v1/crates", "serde", "1.0.0", "ab"),
            "https://x/api/v1/crates/serde/1.0.0/download"
        );
        assert_eq!(
            download_url(
                "https://x/{prefix}/{lowerprefix}/{crate}-{version}.crate?{sha256-checksum}",
                "MyCrate",
                "1.0.0+m",
                "ab"
            ),
            "https://x/My/Cr/my/cr/MyCrate-1.0.0+m.crate?ab"
        );
    }

    #[test]
    fn index_bodies_are_checked() {
        let file = IndexFile::Crate(CrateName::new("foo").unwrap());
        assert!(validate_index_body(&file, b"{\"name\":\"foo\",\"vers\":\"1.0.0\"}\n").is_ok());
        assert!(validate_index_body(&file, b"{\"name\":\"Foo\",\"vers\":\"1.0.0\"}").is_ok());
        assert!(validate_index_body(&file, b"<html><body>Error</body></html>").is_err());
        assert!(validate_index_body(&file, b"{\"name\":\"bar\",\"vers\":\"1.0.0\"}").is_err());
        assert!(validate_index_body(&IndexFile::Config, b"{\"dl\":\"https://x\"}").is_ok());
        assert!(validate_index_body(&IndexFile::Config, b"<html>").is_err());
    }

    #[test]
    fn default_ttl_applies_only_without_upstream_freshness() {
        let r = policy_response(StatusCode::OK, HeaderMap::new(), 5_000).unwrap();
        assert_eq!(r.headers()[header::CACHE_CONTROL], "max-age=5");
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=600"),
        );
        let r = policy_response(StatusCode::OK, h, 5_000).unwrap();
        assert_eq!(r.headers()[header::CACHE_CONTROL], "public, max-age=600");
    }
}
