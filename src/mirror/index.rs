//! Index files of a mirror: lookup through the tiers, freshness, revalidation, stale copies,
//! the negative cache, and the upstream's `config.json`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::coalesce::Done;
use super::{IndexFlight, Mirror, MirrorError, Record};
use crate::index::{IndexFile, UpstreamConfig, etag_of, validate_body};
use crate::store::{BlobKey, BlobStore, IndexKey, IndexRecord, StoreError, now_ms};
use crate::upstream::{Failure, IndexAnswer, UpstreamError, Validators};

/// What the mirror knows of a cached index file besides its body: the record (validators,
/// freshness) and the ETag ready to be sent. In memory it travels with the body, so the two
/// are always of the same write.
#[derive(Debug)]
pub(crate) struct IndexMeta {
    pub(crate) record: IndexRecord,
    /// `record.etag`, shared by every response.
    pub(crate) etag: Bytes,
}

impl IndexMeta {
    pub(super) fn new(record: IndexRecord) -> Arc<Self> {
        let etag = Bytes::from(record.etag.clone());
        Arc::new(Self { record, etag })
    }
}

/// A cached index file: its body and what the mirror knows of it.
#[derive(Debug, Clone)]
pub(crate) struct IndexEntry {
    pub(crate) body: IndexBody,
    pub(crate) meta: Arc<IndexMeta>,
}

/// Where an index file's body is.
#[derive(Debug, Clone)]
pub(crate) enum IndexBody {
    Memory(Bytes),
    /// In the blob store, too large for the memory tier: streamed from there when a client
    /// needs it (a `304` never reads it), never read whole for each request.
    Stored,
}

/// The answer for an index file.
#[derive(Debug, Clone)]
pub(crate) enum Lookup {
    Found(IndexEntry),
    NotFound,
}

impl Mirror {
    /// The `reserved_names` pattern that `name` matches, if any.
    pub(crate) fn reserved(
        &self,
        name: &crate::names::CrateName,
    ) -> Option<&crate::names::CrateGlob> {
        self.cfg.reserved_names.iter().find(|g| g.matches(name))
    }

    /// The index file of crate `name`.
    pub(crate) async fn index_file(
        self: &Arc<Self>,
        name: &crate::names::CrateName,
    ) -> Result<Lookup, MirrorError> {
        self.lookup(&IndexKey::krate(&self.name, name)).await
    }

    pub(super) async fn lookup(self: &Arc<Self>, key: &IndexKey) -> Result<Lookup, MirrorError> {
        if let IndexFile::Crate(name) = &key.file
            && let Some(glob) = self.reserved(name)
        {
            return Err(MirrorError::NotFound(format!(
                "`{name}` is reserved for the company's private registries (pattern `{glob}` of mirror `{}`): it is never served from this mirror's upstream; depend on it with `registry = \"<your private registry>\"`",
                self.name
            )));
        }
        let blob = BlobKey::Index(key.clone());
        let (entry, tier) = match self.cached_entry(&blob) {
            Some(e) => (Some(e), "memory"),
            None => match self.load_index(key, &blob).await? {
                Some(e) => (Some(e), "disk"),
                None => (None, "upstream"),
            },
        };
        let now = now_ms();
        if entry.is_some() {
            self.keeper.used(&blob);
        }
        if self.is_offline() {
            return match entry {
                Some(e) => {
                    self.cached("index", tier, "hit");
                    Ok(Lookup::Found(e))
                }
                None => Err(self.offline_miss(&format!("index file {}", key.index_path()))),
            };
        }
        let Some(entry) = entry else {
            if self.negative.contains_key(key) {
                self.metrics
                    .cache(self.name.as_str(), "index", "memory", "negative");
                return Ok(Lookup::NotFound);
            }
            if matches!(key.file, IndexFile::Crate(_)) {
                self.prefetch_upstream_config();
            }
            return self.refresh(key, None).await;
        };
        if now < entry.meta.record.fresh_until_ms {
            self.cached("index", tier, "hit");
            return Ok(Lookup::Found(entry));
        }
        let stale_for = now - entry.meta.record.fresh_until_ms;
        if stale_for < self.cfg.stale_while_revalidate_ms {
            self.refresh_in_background(key, entry.clone());
            self.metrics
                .cache(self.name.as_str(), "index", tier, "stale");
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
                self.metrics
                    .cache(self.name.as_str(), "index", tier, "stale");
                Ok(Lookup::Found(entry))
            }
            other => other,
        }
    }

    /// The entry when memory holds it (no I/O, no blocking call).
    pub(super) fn cached_entry(&self, blob: &BlobKey) -> Option<IndexEntry> {
        let held = self.blobs.held(blob)?;
        Some(IndexEntry {
            body: IndexBody::Memory(held.bytes),
            meta: held.attached?,
        })
    }

    /// Keeps an entry in memory: the body and its meta in one value, replacing an older one.
    fn remember(&self, blob: BlobKey, entry: &IndexEntry) {
        match &entry.body {
            IndexBody::Memory(b) => self
                .blobs
                .remember(blob, b.clone(), Some(entry.meta.clone())),
            IndexBody::Stored => self.blobs.forget(&blob),
        }
    }

    /// Reads an entry from the bookkeeping and the blob store.
    pub(super) async fn load_index(
        &self,
        key: &IndexKey,
        blob: &BlobKey,
    ) -> Result<Option<IndexEntry>, MirrorError> {
        let record = match self.book.index(key).await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(e @ StoreError::Unreadable { .. }) => {
                self.unreadable(&key.index_path(), &e);
                self.book.remove_index(key).await?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        // Too large for memory: only its length is checked; it is streamed when needed.
        if !self.blobs.fits(record.size) {
            return match self.blobs.below().stat(blob).await? {
                Some(len) if len == record.size => Ok(Some(IndexEntry {
                    body: IndexBody::Stored,
                    meta: IndexMeta::new(record),
                })),
                _ if self.index_flights.is_running(key) => Ok(None),
                found => {
                    tracing::warn!(
                        registry = %self.name, file = %key.index_path(),
                        found = found.is_some(), "index record without its file; fetching it again"
                    );
                    self.book.remove_index(key).await?;
                    Ok(None)
                }
            };
        }
        match self.blobs.below().get(blob).await? {
            Some(body) if body.len() as u64 == record.size => {
                let meta = IndexMeta::new(record);
                let held = self
                    .blobs
                    .fill(blob.clone(), body.clone(), Some(meta.clone()));
                match held.attached {
                    // A copy remembered while this one was read is newer: take it.
                    Some(newer) => Ok(Some(IndexEntry {
                        body: IndexBody::Memory(held.bytes),
                        meta: newer,
                    })),
                    // Bytes without a record are not an entry: keep the pair just read.
                    None => {
                        let entry = IndexEntry {
                            body: IndexBody::Memory(body),
                            meta,
                        };
                        self.remember(blob.clone(), &entry);
                        Ok(Some(entry))
                    }
                }
            }
            // A fetch is writing the file: its body and its record are not both in place
            // yet. The caller joins that fetch.
            _ if self.index_flights.is_running(key) => Ok(None),
            other => {
                // A record without its file (removed by hand), or a body and a record that a
                // crash between their writes left unpaired: forget both.
                tracing::warn!(
                    registry = %self.name, file = %key.index_path(),
                    found = other.is_some(), "index record without its file; fetching it again"
                );
                self.book.remove_index(key).await?;
                self.blobs.forget(blob);
                Ok(None)
            }
        }
    }

    fn refresh_in_background(self: &Arc<Self>, key: &IndexKey, old: IndexEntry) {
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
    pub(super) async fn refresh(
        self: &Arc<Self>,
        key: &IndexKey,
        old: Option<IndexEntry>,
    ) -> Result<Lookup, MirrorError> {
        self.refresh_within(key, old, self.coalesce_wait).await
    }

    async fn refresh_within(
        self: &Arc<Self>,
        key: &IndexKey,
        old: Option<IndexEntry>,
        wait: Duration,
    ) -> Result<Lookup, MirrorError> {
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

    /// Fetches or revalidates one index file. A new body is answered from memory at once and
    /// stored in the flight's tail.
    async fn fetch_index(
        self: &Arc<Self>,
        key: &IndexKey,
        old: Option<IndexEntry>,
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
        old: Option<IndexEntry>,
    ) -> Result<(Lookup, Option<impl Future<Output = ()> + Send + 'static>), MirrorError> {
        let blob = BlobKey::Index(key.clone());
        // A flight that finished just before this one started may have done the work already;
        // if it left a stale copy, that copy is the one to revalidate.
        let mut old = old;
        if let Some(e) = self.cached_entry(&blob) {
            let replaced = old.as_ref().is_none_or(|o| !Arc::ptr_eq(&o.meta, &e.meta));
            if replaced {
                if now_ms() < e.meta.record.fresh_until_ms {
                    return Ok((Lookup::Found(e), None));
                }
                old = Some(e);
            }
        }
        let path = key.index_path();
        let validators = old.as_ref().map(|o| Validators {
            etag: o.meta.record.upstream_etag.clone(),
            last_modified: o.meta.record.upstream_last_modified.clone(),
        });
        let validators = validators.filter(|v| !v.is_empty());
        let answer = self.upstream.index_file(&path, validators.as_ref()).await?;
        let now = now_ms();
        let ttl_ms = self.cfg.index_ttl_ms;
        match answer {
            IndexAnswer::Body {
                body,
                validators,
                fresh_for,
                private,
            } => {
                if let Err(why) = validate_body(&key.file, &body) {
                    let what = format!("index file {path}");
                    return Err(UpstreamError::new(&self.name, what, Failure::Invalid(why)).into());
                }
                let lifetime_ms = fresh_for
                    .map_or(ttl_ms, |d| d.as_millis() as u64)
                    .min(self.cfg.max_freshness_ms);
                let meta = IndexMeta::new(IndexRecord {
                    etag: etag_of(&body),
                    upstream_etag: validators.etag,
                    upstream_last_modified: validators.last_modified,
                    fresh_until_ms: now.saturating_add(lifetime_ms),
                    lifetime_ms,
                    checked_at_ms: now,
                    size: body.len() as u64,
                    missing_since_ms: None,
                    missing_seen_ms: None,
                    private,
                });
                let entry = IndexEntry {
                    body: IndexBody::Memory(body.clone()),
                    meta: meta.clone(),
                };
                self.remember(blob.clone(), &entry);
                self.negative.invalidate(key);
                self.metrics
                    .cache(self.name.as_str(), "index", "upstream", "miss");
                let persist =
                    Arc::clone(self).persist(blob, body, Record::Index(key.clone(), meta));
                Ok((Lookup::Found(entry), Some(persist)))
            }
            IndexAnswer::NotModified { fresh_for } => {
                let Some(old) = old else {
                    let what = format!("index file {path}");
                    let why = "304 to an unconditional request".to_owned();
                    return Err(UpstreamError::new(&self.name, what, Failure::Invalid(why)).into());
                };
                // A 304 that says nothing of freshness renews the file for as long as the last
                // full answer did.
                let lifetime_ms = match fresh_for {
                    Some(d) => d.as_millis() as u64,
                    None if old.meta.record.lifetime_ms > 0 => old.meta.record.lifetime_ms,
                    None => ttl_ms,
                }
                .min(self.cfg.max_freshness_ms);
                let record = IndexRecord {
                    fresh_until_ms: now.saturating_add(lifetime_ms),
                    lifetime_ms,
                    checked_at_ms: now,
                    missing_since_ms: None,
                    missing_seen_ms: None,
                    ..old.meta.record.clone()
                };
                self.book.put_index(key, &record).await?;
                let entry = IndexEntry {
                    body: old.body,
                    meta: IndexMeta::new(record),
                };
                self.remember(blob, &entry);
                self.metrics
                    .cache(self.name.as_str(), "index", "upstream", "revalidated");
                Ok((Lookup::Found(entry), None))
            }
            IndexAnswer::NotFound => {
                if let Some(old) = &old
                    && self.missing_is_a_hiccup(key, &blob, old, now).await?
                {
                    let what = format!("index file {path}");
                    return Err(UpstreamError::new(&self.name, what, Failure::Status(404)).into());
                }
                // The crate does not exist (or no longer does) upstream.
                self.book.remove_index(key).await?;
                self.blobs.delete(&blob).await?;
                self.negative.insert(key.clone(), ());
                self.metrics
                    .cache(self.name.as_str(), "index", "upstream", "miss");
                Ok((Lookup::NotFound, None))
            }
        }
    }

    /// A "not found" for a file cratedock holds is a hiccup (a CDN answering 404 for a moment)
    /// until the 404s have lasted `negative_ttl_ms`, and while the copy is within
    /// `stale_if_error_max_age_ms`; then it is a removal. 404s further apart than
    /// `negative_ttl_ms` are separate hiccups. Notes when the 404s began and were last seen.
    async fn missing_is_a_hiccup(
        &self,
        key: &IndexKey,
        blob: &BlobKey,
        old: &IndexEntry,
        now: u64,
    ) -> Result<bool, MirrorError> {
        let r = &old.meta.record;
        let window = self.cfg.negative_ttl_ms;
        let since = match (r.missing_since_ms, r.missing_seen_ms) {
            (Some(since), Some(seen)) if now.saturating_sub(seen) <= window => since,
            _ => now,
        };
        let stale_for = now.saturating_sub(r.fresh_until_ms);
        let hiccup =
            now.saturating_sub(since) < window && stale_for < self.cfg.stale_if_error_max_age_ms;
        if hiccup {
            let record = IndexRecord {
                missing_since_ms: Some(since),
                missing_seen_ms: Some(now),
                ..r.clone()
            };
            self.book.put_index(key, &record).await?;
            let entry = IndexEntry {
                body: old.body.clone(),
                meta: IndexMeta::new(record),
            };
            self.remember(blob.clone(), &entry);
        }
        Ok(hiccup)
    }

    /// Downloads need the upstream's `config.json` (its `dl` template). Fetching it in the
    /// background while cargo is still resolving index files takes one upstream round trip
    /// off the first download of a cold cache.
    fn prefetch_upstream_config(self: &Arc<Self>) {
        let key = IndexKey::config(&self.name);
        let blob = BlobKey::Index(key.clone());
        if self.blobs.attached(&blob).is_some() || self.index_flights.is_running(&key) {
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
    pub(super) async fn upstream_dl(self: &Arc<Self>) -> Result<String, MirrorError> {
        let invalid = |f| UpstreamError::new(&self.name, "config.json", f);
        match self.lookup(&IndexKey::config(&self.name)).await? {
            Lookup::Found(e) => {
                let body = self.body_bytes(&IndexKey::config(&self.name), &e).await?;
                let cfg: UpstreamConfig = serde_json::from_slice(&body)
                    .map_err(|e| invalid(Failure::Invalid(e.to_string())))?;
                Ok(cfg.dl)
            }
            Lookup::NotFound => Err(invalid(Failure::Status(404)).into()),
        }
    }
}
