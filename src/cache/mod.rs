//! The disk cache's lifecycle: last uses noted in memory and written in batches, eviction of
//! the least recently used mirror files between two watermarks, pins, statistics, and the
//! checks that keep the bookkeeping and the files in agreement ([`check`]).
//!
//! The rules this module keeps: nothing here runs on a request's path except [`Usage::note`]
//! (a hash-map insert, at most once per file and interval); only files the bookkeeping tracks
//! (mirror files) are ever evicted, never a private registry's and never a pinned one; a
//! record is removed before its file, so a crash between the two leaves an orphan file, which
//! [`check`] adopts or removes, never a record that points at nothing for long.

pub mod check;
pub mod jobs;
mod oldest;
mod scan;
mod usage;

use oldest::{Candidate, Oldest};
pub(crate) use scan::{Rec, Scan, registry_of};
pub use usage::Usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::metrics::Metrics;
use crate::store::{BlobKey, BlobStore, CacheBook, Pin, StoreError, now_ms};

/// The disk limit of the mirror files, with its watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub max_bytes: u64,
    /// Eviction starts above this ...
    pub high_bytes: u64,
    /// ... and stops at or below this.
    pub low_bytes: u64,
}

impl Limit {
    /// `None` when `max_bytes` is 0 (no limit).
    pub fn new(max_bytes: u64, high_percent: u8, low_percent: u8) -> Option<Self> {
        let part = |p: u8| (max_bytes as u128 * p as u128 / 100) as u64;
        (max_bytes > 0).then(|| Self {
            max_bytes,
            high_bytes: part(high_percent),
            low_bytes: part(low_percent),
        })
    }
}

/// Scans of the bookkeeping one eviction run makes at most.
const MAX_PASSES: usize = 8;

/// Room under the limit for one file being stored; given back when dropped.
pub struct Room<'a> {
    keeper: &'a Keeper,
    size: u64,
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        self.keeper.reserved.fetch_sub(self.size, Ordering::AcqRel);
    }
}

/// What one eviction run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Evicted {
    pub files: u64,
    pub bytes: u64,
    /// Bytes of the mirror files after the run.
    pub remaining_bytes: u64,
}

/// Keeps the disk cache within its limit. One per data folder.
pub struct Keeper {
    book: Arc<dyn CacheBook>,
    /// The blob store the mirrors write to (the memory tier over the files): a delete through
    /// it forgets the memory copy too.
    blobs: Arc<dyn BlobStore>,
    usage: Usage,
    limit: Option<Limit>,
    /// The mirror registries: only their files are evicted.
    mirrors: Vec<crate::names::RegistryName>,
    wake: tokio::sync::Notify,
    /// Bytes of files about to be stored, made room for (see [`Keeper::make_room`]).
    reserved: AtomicU64,
    room_turn: tokio::sync::Mutex<()>,
    /// One eviction at a time (the background task, `gc`, a purge).
    running: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

impl Keeper {
    pub fn new(
        book: Arc<dyn CacheBook>,
        blobs: Arc<dyn BlobStore>,
        limit: Option<Limit>,
        mirrors: Vec<crate::names::RegistryName>,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics
            .cache_disk_limit
            .set(limit.map_or(0, |l| l.max_bytes) as i64);
        Self {
            book,
            blobs,
            usage: Usage::default(),
            limit,
            mirrors,
            wake: tokio::sync::Notify::new(),
            reserved: AtomicU64::new(0),
            room_turn: tokio::sync::Mutex::new(()),
            running: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    pub fn limit(&self) -> Option<Limit> {
        self.limit
    }

    /// Notes a use of a cached file (a request's path: memory only).
    pub fn used(&self, key: &BlobKey) {
        self.usage.note(key);
    }

    /// Bytes of the mirror files on disk.
    pub fn disk_bytes(&self) -> u64 {
        let t = self.book.totals();
        t.index_bytes + t.crate_bytes
    }

    /// Called after a file was stored: wakes the eviction task when the high watermark is
    /// passed (no I/O).
    pub fn stored(&self) {
        if self.limit.is_some_and(|l| self.disk_bytes() > l.high_bytes) {
            self.wake.notify_one();
        }
    }

    /// Makes room for a file of `size` bytes under the limit before it is stored, evicting
    /// down to the low watermark when it would not fit, and holds that room until the returned
    /// guard is dropped (once the file's record is counted): concurrent fetches together
    /// never pass the bound. Called in a fetch's tail, after the client's answer.
    pub async fn make_room(&self, size: u64) -> Room<'_> {
        let Some(limit) = self.limit else {
            return Room {
                keeper: self,
                size: 0,
            };
        };
        // The check and the reservation are one step, taken in turn. While a check of the
        // whole cache holds off eviction, a file that needs room waits for it to end, and the
        // files after it wait their turn.
        let _turn = self.room_turn.lock().await;
        let held = self.reserved.load(Ordering::Acquire);
        if self.disk_bytes() + held + size > limit.max_bytes {
            let target = limit
                .low_bytes
                .min(limit.max_bytes.saturating_sub(size + held));
            if let Err(e) = self.evict_to(target).await {
                tracing::error!(error = %e, "cache eviction failed");
            }
        }
        self.reserved.fetch_add(size, Ordering::AcqRel);
        Room { keeper: self, size }
    }

    /// Writes the last uses noted since the previous call; a batch that cannot be written is
    /// kept for the next call (else those files would look old and go first).
    pub async fn write_usage(&self) -> Result<(), StoreError> {
        let batch = self.usage.take();
        if batch.is_empty() {
            return Ok(());
        }
        let written = self.book.touch(&batch).await;
        if written.is_err() {
            self.usage.restore(batch);
        }
        written
    }

    /// The background task: writes last uses every `usage_every`, and evicts down to the low
    /// watermark whenever the high one is passed. Ends when `stop` resolves.
    pub async fn run(self: Arc<Self>, usage_every: Duration, stop: impl std::future::Future) {
        use tokio::time::MissedTickBehavior;
        let mut usage_tick = tokio::time::interval(usage_every);
        usage_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The totals are in memory, so checking them often costs nothing; the wake-up after a
        // store is what makes eviction prompt.
        let mut limit_tick = tokio::time::interval(Duration::from_secs(1));
        limit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // After a run that could not get below the high watermark (what is left is pinned, or
        // removals fail), the next waits longer, up to a minute, instead of scanning every
        // second.
        let mut idle_until = tokio::time::Instant::now();
        let mut backoff = Duration::from_secs(1);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = usage_tick.tick() => {
                    if let Err(e) = self.write_usage().await {
                        tracing::warn!(error = %e, "cannot write the cache's last-use times");
                    }
                    continue;
                }
                _ = limit_tick.tick() => {}
                _ = self.wake.notified() => {}
            }
            let Some(limit) = self.limit else { continue };
            if self.disk_bytes() <= limit.high_bytes || tokio::time::Instant::now() < idle_until {
                continue;
            }
            match self.evict_to(limit.low_bytes).await {
                Ok(done) if done.files > 0 || done.remaining_bytes <= limit.high_bytes => {
                    backoff = Duration::from_secs(1);
                    tracing::info!(
                        files = done.files,
                        bytes = done.bytes,
                        remaining = done.remaining_bytes,
                        "evicted least recently used files from the disk cache"
                    );
                }
                Ok(done) => {
                    tracing::warn!(
                        remaining = done.remaining_bytes,
                        limit = limit.max_bytes,
                        "the disk cache stays above its limit: nothing more can be evicted (what is left is pinned or in use)"
                    );
                    idle_until = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
                Err(e) => {
                    tracing::error!(error = %e, "cache eviction failed");
                    idle_until = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
        if let Err(e) = self.write_usage().await {
            tracing::warn!(error = %e, "cannot write the cache's last-use times");
        }
    }

    /// Evicts the least recently used unpinned mirror files until their bytes are at most
    /// `target` (or nothing evictable is left).
    pub async fn evict_to(&self, target: u64) -> Result<Evicted, StoreError> {
        let _one = self.running.lock().await;
        let mut done = Evicted::default();
        // Files used while a pass runs are kept, so a pass may fall short under a busy load;
        // the next one starts from their new last uses. A pass that evicts nothing ends it.
        for _pass in 0..MAX_PASSES {
            self.write_usage().await?;
            if self.disk_bytes() <= target {
                break;
            }
            let pins = self.book.pins().await?;
            let need = self.disk_bytes().saturating_sub(target);
            let candidates = self.candidates(&pins, need + need / 4).await?;
            let before = done.files;
            for c in candidates {
                if self.disk_bytes() <= target {
                    break;
                }
                // Used since the pass began: keep it.
                if self.usage.noted(&c.key) {
                    continue;
                }
                self.remove(&c.key).await?;
                done.files += 1;
                done.bytes += c.size;
                let (registry, kind) = match &c.key {
                    BlobKey::Index(k) => (k.registry.as_str(), "index"),
                    BlobKey::Crate(k) => (k.registry.as_str(), "crate"),
                };
                self.metrics
                    .cache_evictions
                    .with_label_values(&[registry, kind])
                    .inc();
                self.metrics
                    .cache_evicted_bytes
                    .with_label_values(&[registry])
                    .inc_by(c.size);
            }
            if done.files == before {
                break;
            }
        }
        done.remaining_bytes = self.disk_bytes();
        Ok(done)
    }

    /// The least recently used files of the mirrors that no pin covers, oldest first, just
    /// enough of them to free `need` bytes (a bounded heap: memory follows what is evicted, not
    /// the size of the cache). Scans page by page, yielding between pages.
    async fn candidates(&self, pins: &[Pin], need: u64) -> Result<Vec<Candidate>, StoreError> {
        let mut heap = Oldest::new(need);
        let mut scan = Scan::new(self.book.as_ref());
        while let Some(page) = scan.next_page().await? {
            for s in page {
                if !self.is_mirror(registry_of(&s.key)) || pins.iter().any(|p| p.covers(&s.key)) {
                    continue;
                }
                let used_ms = s.last_use();
                let size = s.record.as_ref().map_or(0, Rec::size);
                heap.offer(Candidate {
                    used_ms,
                    size,
                    key: s.key,
                });
            }
        }
        Ok(heap.into_oldest_first())
    }

    /// Whether `registry` is one of this cratedock's mirrors (only their files are evicted; a
    /// record of another registry is never acted on).
    fn is_mirror(&self, registry: &crate::names::RegistryName) -> bool {
        self.mirrors.iter().any(|m| m == registry)
    }

    /// Keeps eviction, gc and purges from running while the caller works (a check of the
    /// whole cache).
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.running.lock().await
    }

    /// Removes one file: its record first, then the file (memory copy included).
    pub async fn remove(&self, key: &BlobKey) -> Result<(), StoreError> {
        match key {
            BlobKey::Index(k) => self.book.remove_index(k).await?,
            BlobKey::Crate(k) => self.book.remove_crate(k).await?,
        }
        self.blobs.delete(key).await
    }

    /// Removes one crate's cached files from a mirror (its index file and every version's
    /// crate file, or one version's crate file); returns the files removed.
    pub async fn purge(
        &self,
        registry: &crate::names::RegistryName,
        name: &crate::names::CrateName,
        version: Option<&crate::names::Version>,
    ) -> Result<Vec<BlobKey>, StoreError> {
        let _one = self.running.lock().await;
        let target = Pin::new(registry, name, version.cloned());
        let mut keys = Vec::new();
        if version.is_none() {
            let k = crate::store::IndexKey::krate(registry, name);
            if self.book.index(&k).await?.is_some() {
                keys.push(BlobKey::Index(k));
            }
        }
        let mut scan = Scan::new(self.book.as_ref());
        while let Some(page) = scan.next_page().await? {
            keys.extend(
                page.into_iter()
                    .map(|s| s.key)
                    .filter(|k| matches!(k, BlobKey::Crate(_)) && target.covers(k)),
            );
        }
        for k in &keys {
            self.remove(k).await?;
        }
        Ok(keys)
    }

    /// Statistics of the files the bookkeeping tracks, by registry.
    pub async fn stats(&self) -> Result<Vec<RegistryStats>, StoreError> {
        let mut by: std::collections::BTreeMap<String, RegistryStats> = Default::default();
        let now = now_ms();
        let mut scan = Scan::new(self.book.as_ref());
        while let Some(page) = scan.next_page().await? {
            for seen in page {
                let registry = registry_of(&seen.key).as_str();
                let s = by
                    .entry(registry.to_owned())
                    .or_insert_with(|| RegistryStats::new(registry));
                let size = seen.record.as_ref().map_or(0, Rec::size);
                if matches!(seen.key, BlobKey::Index(_)) {
                    s.index_files += 1;
                    s.index_bytes += size;
                } else {
                    s.crate_files += 1;
                    s.crate_bytes += size;
                }
                let age = now.saturating_sub(seen.last_use());
                s.oldest_use_age_ms = s.oldest_use_age_ms.max(age);
            }
        }
        Ok(by.into_values().collect())
    }

    pub fn book(&self) -> &Arc<dyn CacheBook> {
        &self.book
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }
}

/// What `cache stats` shows of one registry's cached files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct RegistryStats {
    pub registry: String,
    pub index_files: u64,
    pub index_bytes: u64,
    pub crate_files: u64,
    pub crate_bytes: u64,
    /// How long ago the least recently used file was used.
    pub oldest_use_age_ms: u64,
    /// Lookups answered from the cache, and all lookups, since the server started (online
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookups: Option<u64>,
}

impl RegistryStats {
    fn new(registry: &str) -> Self {
        Self {
            registry: registry.to_owned(),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests;
