//! Filling the cache ahead of need: prefetching crate files (with their index files) through
//! the normal verified path, and importing files from an air-gap bundle.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::index::Lookup;
use super::{CrateBody, Mirror, MirrorError};
use crate::index::{IndexLine, etag_of, hex, validate_body};
use crate::names::{CrateName, Version};
use crate::store::{
    BlobKey, BlobStore, CrateKey, CrateRecord, IndexKey, IndexRecord, Pin, SCAN_PAGE, now_ms,
};

/// What to prefetch.
#[derive(Debug, Default)]
pub(crate) struct PrefetchRequest {
    pub(crate) crates: Vec<(CrateName, Version)>,
    /// Every version (not yanked) of these, or the newest `newest`.
    pub(crate) names: Vec<CrateName>,
    pub(crate) newest: Option<usize>,
    /// Pin each version prefetched (or found cached).
    pub(crate) pin: bool,
}

/// What a prefetch did.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct PrefetchReport {
    pub(crate) fetched: u64,
    pub(crate) cached: u64,
    pub(crate) failed: Vec<Failed>,
    pub(crate) bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Failed {
    #[serde(rename = "crate")]
    pub(crate) krate: String,
    pub(crate) error: String,
}

impl Mirror {
    /// Versions fetched at once by a prefetch: the upstream's `max_connections` less an eighth
    /// (at least 1) that always stays free for clients. Requests queue for the upstream in
    /// arrival order, so a client never waits behind more than the requests already under way.
    fn prefetch_width(&self) -> usize {
        let n = self.cfg.max_connections as usize;
        (n - n / 8).max(1)
    }

    /// Prefetches the crate files of `req` (skipping those cached), calling `progress` with
    /// the files done, the total, and the report so far.
    pub(crate) async fn prefetch(
        self: &Arc<Self>,
        req: PrefetchRequest,
        progress: &(dyn Fn(u64, u64, &PrefetchReport) + Send + Sync),
    ) -> PrefetchReport {
        let report = Mutex::new(PrefetchReport::default());
        let mut wanted: BTreeSet<(CrateName, Version)> = req
            .crates
            .into_iter()
            .map(|(n, v)| (n.lower(), v))
            .collect();
        for name in &req.names {
            match self.versions(name).await {
                Ok(Some(list)) => {
                    let mut found: Vec<semver::Version> = list
                        .iter()
                        .filter(|(_, yanked)| !yanked)
                        .filter_map(|(v, _)| semver::Version::parse(v).ok())
                        .collect();
                    found.sort();
                    let skip = req.newest.map_or(0, |n| found.len().saturating_sub(n));
                    for v in found.into_iter().skip(skip) {
                        if let Ok(v) = Version::new(&v.to_string()) {
                            wanted.insert((name.lower(), v));
                        }
                    }
                    if list.is_empty() {
                        report.lock().expect("report lock").failed.push(Failed {
                            krate: name.to_string(),
                            error: format!("`{name}` does not exist in `{}`", self.name),
                        });
                    }
                }
                Ok(None) => {}
                Err(e) => report.lock().expect("report lock").failed.push(Failed {
                    krate: name.to_string(),
                    error: e.to_string(),
                }),
            }
        }
        let total = wanted.len() as u64;
        let done = std::sync::atomic::AtomicU64::new(0);
        let metric = |outcome: &str, n: u64| {
            self.metrics
                .prefetch_files
                .with_label_values(&[self.name.as_str(), outcome])
                .inc_by(n);
        };
        progress(0, total, &report.lock().expect("report lock"));
        futures_util::stream::iter(wanted)
            .for_each_concurrent(self.prefetch_width(), |(name, version)| {
                let (report, done, metric) = (&report, &done, &metric);
                async move {
                    let outcome = self.prefetch_one(&name, &version, req.pin).await;
                    let mut r = report.lock().expect("report lock");
                    match outcome {
                        Ok(None) => {
                            r.cached += 1;
                            metric("cached", 1);
                        }
                        Ok(Some(bytes)) => {
                            r.fetched += 1;
                            r.bytes += bytes;
                            metric("fetched", 1);
                            self.metrics
                                .prefetch_bytes
                                .with_label_values(&[self.name.as_str()])
                                .inc_by(bytes);
                        }
                        Err(e) => {
                            r.failed.push(Failed {
                                krate: format!("{name}@{version}"),
                                error: e.to_string(),
                            });
                            metric("failed", 1);
                        }
                    }
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    progress(n, total, &r);
                }
            })
            .await;
        let report = report.into_inner().expect("report lock");
        let outcome = if report.failed.is_empty() {
            "ok"
        } else {
            "failed"
        };
        self.metrics
            .prefetch_jobs
            .with_label_values(&[self.name.as_str(), outcome])
            .inc();
        report
    }

    /// One version: `None` when it was cached already, else the bytes fetched.
    async fn prefetch_one(
        self: &Arc<Self>,
        name: &CrateName,
        version: &Version,
        pin: bool,
    ) -> Result<Option<u64>, MirrorError> {
        let key = CrateKey::new(&self.name, name, version);
        let blob = BlobKey::Crate(key.clone());
        let cached = self.book.krate(&key).await.ok().flatten().is_some()
            && self.blobs.stat(&blob).await?.is_some();
        let fetched = if cached {
            // Kept as recently used, and its index file made sure of (eviction may have taken
            // it alone).
            self.keeper.used(&blob);
            if self
                .lookup_cached(&IndexKey::krate(&self.name, name))
                .await?
                .is_none()
            {
                self.index_file(name).await?;
            }
            None
        } else {
            let size = match self.crate_file(name, version).await? {
                CrateBody::Memory(b) => b.len() as u64,
                CrateBody::Stored { len, .. } => len,
                CrateBody::Streaming(s) => {
                    let mut body = s.body;
                    let mut n = 0u64;
                    while let Some(chunk) = body.next().await {
                        n += chunk.map_err(|e| MirrorError::Store(e.to_string()))?.len() as u64;
                    }
                    n
                }
            };
            Some(size)
        };
        if pin {
            let pin = Pin::new(&self.name, name, Some(version.clone()));
            self.book.set_pin(&pin, true).await?;
        }
        Ok(fetched)
    }

    /// The crate files this mirror holds, as (name, version).
    pub(crate) async fn cached_crates(&self) -> Result<Vec<(CrateName, Version)>, MirrorError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.book.crate_page(after.as_ref(), SCAN_PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.key.clone());
            out.extend(
                page.iter()
                    .filter(|s| s.key.registry == self.name && s.record.is_ok())
                    .map(|s| (s.key.name.clone(), s.key.version.clone())),
            );
            if page.len() < SCAN_PAGE {
                break;
            }
        }
        Ok(out)
    }

    /// Stores a crate file from a bundle after checking it against `cksum` (and against the
    /// cached index line, when there is one); `false` when the same file is cached already.
    pub(crate) async fn import_crate(
        self: &Arc<Self>,
        name: &CrateName,
        version: &Version,
        bytes: Bytes,
        cksum: &str,
    ) -> Result<bool, MirrorError> {
        let what = format!("crate {name} {version}");
        let actual = hex(&Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(cksum) {
            return Err(MirrorError::Refused(format!(
                "{what}: its SHA-256 is {actual}, not {cksum} as its index line says; nothing was stored"
            )));
        }
        let key = CrateKey::new(&self.name, name, version);
        if let Ok(Lookup::Found(entry)) = self.index_file(name).await
            && let Some(line) = self
                .line_of(&IndexKey::krate(&self.name, name), &entry, version.as_str())
                .await?
            && !line.cksum.eq_ignore_ascii_case(cksum)
        {
            return Err(MirrorError::Refused(format!(
                "{what}: the cached index line names SHA-256 {}, the bundle {cksum}; nothing was stored",
                line.cksum
            )));
        }
        if let Some(r) = self.book.krate(&key).await.ok().flatten()
            && self
                .blobs
                .stat(&BlobKey::Crate(key.clone()))
                .await?
                .is_some()
        {
            if !r.cksum.eq_ignore_ascii_case(cksum) {
                return Err(MirrorError::Refused(format!(
                    "{what}: the cached file's SHA-256 is {}, the bundle's {cksum}; the cached file stays",
                    r.cksum
                )));
            }
            self.imported("crate", "unchanged");
            return Ok(false);
        }
        let size = bytes.len() as u64;
        let room = self.keeper.make_room(size).await;
        self.blobs
            .below()
            .put(&BlobKey::Crate(key.clone()), bytes)
            .await?;
        let record = CrateRecord {
            cksum: actual,
            size,
            stored_at_ms: now_ms(),
            license: None,
        };
        self.book.put_crate(&key, &record).await?;
        drop(room);
        self.keeper.stored();
        self.imported("crate", "added");
        Ok(true)
    }

    /// Merges index lines from a bundle into the cached index file of `name`: the bundle's
    /// line wins for each version it names, and no cached version is dropped. `false` when
    /// nothing changed.
    pub(crate) async fn import_index(
        self: &Arc<Self>,
        name: &CrateName,
        lines: &[u8],
    ) -> Result<bool, MirrorError> {
        let key = IndexKey::krate(&self.name, name);
        validate_body(&key.file, lines).map_err(|e| {
            MirrorError::Refused(format!("the index file of `{name}` in the bundle: {e}"))
        })?;
        let mut by_version: BTreeMap<String, (Vec<u8>, IndexLine)> = BTreeMap::new();
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(l) = serde_json::from_slice::<IndexLine>(line) {
                by_version.insert(l.vers.clone(), (line.to_vec(), l));
            }
        }
        // A line must name the file cached for its version, if one is.
        for (vers, (_, line)) in &by_version {
            let Ok(v) = Version::new(vers) else { continue };
            if let Some(r) = self
                .book
                .krate(&CrateKey::new(&self.name, name, &v))
                .await?
                && !r.cksum.eq_ignore_ascii_case(&line.cksum)
            {
                return Err(MirrorError::Refused(format!(
                    "the bundle's index line of `{name}@{vers}` names SHA-256 {}, but the cached file is {}; nothing of this index file was stored",
                    line.cksum, r.cksum
                )));
            }
        }
        let old = match self.lookup_cached(&key).await? {
            Some(entry) => Some(self.body_bytes(&key, &entry).await?),
            None => None,
        };
        // The cached lines in their order, each replaced by the bundle's (a version the cache
        // knows as yanked stays yanked); then the bundle's new versions, oldest first.
        let mut merged = Vec::new();
        let mut placed = std::collections::HashSet::new();
        for line in old.as_deref().unwrap_or_default().split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let vers = serde_json::from_slice::<serde_json::Value>(line)
                .ok()
                .and_then(|v| Some((v["vers"].as_str()?.to_owned(), v["yanked"] == true)));
            match vers.and_then(|(v, yanked)| Some((by_version.get(&v)?, yanked, v))) {
                Some(((bundle_line, _), false, v)) => {
                    merged.extend_from_slice(bundle_line);
                    placed.insert(v);
                }
                Some((_, true, v)) => {
                    merged.extend_from_slice(line);
                    placed.insert(v);
                }
                None => merged.extend_from_slice(line),
            }
            merged.push(b'\n');
        }
        let mut new: Vec<&String> = by_version.keys().filter(|v| !placed.contains(*v)).collect();
        new.sort_by_key(|v| semver::Version::parse(v).ok());
        for v in new {
            merged.extend_from_slice(&by_version[v].0);
            merged.push(b'\n');
        }
        if old.as_deref() == Some(&merged[..]) {
            self.imported("index", "unchanged");
            return Ok(false);
        }
        let now = now_ms();
        let record = IndexRecord {
            etag: etag_of(&merged),
            upstream_etag: None,
            upstream_last_modified: None,
            fresh_until_ms: now + self.cfg.index_ttl_ms,
            lifetime_ms: self.cfg.index_ttl_ms,
            checked_at_ms: now,
            size: merged.len() as u64,
            missing_since_ms: None,
            missing_seen_ms: None,
            private: false,
        };
        let blob = BlobKey::Index(key.clone());
        let room = self.keeper.make_room(record.size).await;
        self.blobs.below().put(&blob, Bytes::from(merged)).await?;
        self.book.put_index(&key, &record).await?;
        drop(room);
        self.blobs.forget(&blob);
        self.negative.invalidate(&key);
        self.keeper.stored();
        self.imported("index", "added");
        Ok(true)
    }

    /// The cached index file, from memory or disk, never from the upstream.
    async fn lookup_cached(
        &self,
        key: &IndexKey,
    ) -> Result<Option<super::IndexEntry>, MirrorError> {
        let blob = BlobKey::Index(key.clone());
        if let Some(e) = self.cached_entry(&blob) {
            return Ok(Some(e));
        }
        self.load_index(key, &blob).await
    }

    fn imported(&self, kind: &str, outcome: &str) {
        self.metrics
            .imported_files
            .with_label_values(&[self.name.as_str(), kind, outcome])
            .inc();
    }
}
