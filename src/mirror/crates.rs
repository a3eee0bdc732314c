//! Crate files of a mirror: served from memory or the blob store, else downloaded once,
//! verified against the index's checksum while clients follow the download.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::coalesce::Done;
use super::index::Lookup;
use super::tee::{Download, Streamed};
use super::{CrateFlight, Mirror, MirrorError, Record};
use crate::index::{IndexLine, download_url, hex};
use crate::names::{CrateName, Version};
use crate::store::{
    Blob, BlobKey, BlobStore, BlobStream, CrateKey, CrateRecord, IndexKey, StoreError, TempBlob,
    now_ms,
};
use crate::upstream::{CrateAnswer, Failure, UpstreamError};

/// The bytes of a crate file: from memory, streamed from the blob store, or a download still
/// arriving from the upstream.
pub(crate) enum CrateBody {
    Memory(Bytes),
    Stored { len: u64, body: BlobStream },
    Streaming(Streamed),
}

impl std::fmt::Debug for CrateBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CrateBody::Memory(b) => f.debug_tuple("Memory").field(&b.len()).finish(),
            CrateBody::Stored { len, .. } => f.debug_struct("Stored").field("len", len).finish(),
            CrateBody::Streaming(s) => f.debug_tuple("Streaming").field(s).finish(),
        }
    }
}

impl From<Blob> for CrateBody {
    fn from(b: Blob) -> Self {
        match b {
            Blob::Bytes(bytes) => CrateBody::Memory(bytes),
            Blob::Stream { len, body } => CrateBody::Stored { len, body },
        }
    }
}

/// The largest file followed in memory when it cannot be staged on disk.
const PASS_THROUGH_BYTES: u64 = 64 * 1024 * 1024;

/// How a download ended.
enum Fetched {
    /// Verified and held in memory; still to be stored.
    InMemory(Bytes, CrateRecord),
    /// Stored already (with its bytes when they are small enough for memory).
    Stored(Option<Bytes>),
}

impl Mirror {
    /// The `.crate` file of `name` at `version`, if the registry's policy lets it through:
    /// advisories and curation are checked before anything is fetched, the licence once the
    /// file is at hand.
    pub(crate) async fn crate_file(
        self: &Arc<Self>,
        name: &CrateName,
        version: &Version,
    ) -> Result<CrateBody, MirrorError> {
        self.policy.check_download(name, version)?;
        let key = CrateKey::new(&self.name, name, version);
        let body = self.crate_body(&key, name, version).await?;
        if self.policy.licenses_active() {
            let bytes = match &body {
                CrateBody::Memory(b) => Some(b.clone()),
                _ => None,
            };
            self.licence_gate(&key, name, version, bytes).await?;
        }
        Ok(body)
    }

    async fn crate_body(
        self: &Arc<Self>,
        key: &CrateKey,
        name: &CrateName,
        version: &Version,
    ) -> Result<CrateBody, MirrorError> {
        let key = key.clone();
        let blob = BlobKey::Crate(key.clone());
        if let Some(bytes) = self.blobs.cached(&blob) {
            self.metrics
                .cache(self.name.as_str(), "crate", "memory", "hit");
            self.keeper.used(&blob);
            return Ok(CrateBody::Memory(bytes));
        }
        // The bookkeeping says whether the file is stored, without a trip to the disk for a
        // miss.
        if self.is_stored(&key).await? {
            match self.blobs.open(&blob).await? {
                Some(b) => {
                    self.metrics
                        .cache(self.name.as_str(), "crate", "disk", "hit");
                    self.keeper.used(&blob);
                    return Ok(b.into());
                }
                None => self.forget_lost_file(&key).await?,
            }
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
        // first (an error, or a file too quick to matter) answers directly. Not when its licence
        // must be judged first: then the whole file is awaited.
        let what = || format!("crate {name} {version}");
        let follow = !self.policy.licenses_active();
        // Not following, a request waits for the whole download, which may take as long as
        // the download's own deadline.
        let wait = if follow {
            self.coalesce_wait
        } else {
            self.coalesce_wait.max(std::time::Duration::from_millis(
                self.cfg.download_timeout_ms,
            ))
        };
        let fetched = tokio::select! {
            biased;
            result = self.wait(flight, wait, what) => result?,
            Some(streamed) = download.reader(), if follow => return Ok(CrateBody::Streaming(streamed)),
        };
        if let Some(bytes) = fetched {
            return Ok(CrateBody::Memory(bytes));
        }
        match self.blobs.open(&blob).await? {
            Some(b) => Ok(b.into()),
            None => Err(MirrorError::Store(format!(
                "crate {name} {version} vanished from the blob store after its download"
            ))),
        }
    }

    /// Whether the bookkeeping has a record of the file; an unreadable record is dropped.
    async fn is_stored(&self, key: &CrateKey) -> Result<bool, MirrorError> {
        match self.book.krate(key).await {
            Ok(found) => Ok(found.is_some()),
            Err(e @ StoreError::Unreadable { .. }) => {
                self.unreadable(&format!("crate {} {}", key.name, key.version), &e);
                self.book.remove_crate(key).await?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A record whose file is gone (removed by hand, evicted, lost in a crash) is dropped, so
    /// that the file is fetched again.
    async fn forget_lost_file(&self, key: &CrateKey) -> Result<(), MirrorError> {
        tracing::warn!(
            registry = %self.name, krate = %key.name, version = %key.version,
            "crate record without its file; fetching it again"
        );
        self.book.remove_crate(key).await?;
        Ok(())
    }

    /// Finds the checksum and original-case name of a version in the index, revalidating the
    /// index once if the version is not there yet (it may have been published since).
    async fn checksum_of(self: &Arc<Self>, key: &CrateKey) -> Result<IndexLine, MirrorError> {
        let ikey = IndexKey::krate(&self.name, &key.name);
        let not_found = || {
            MirrorError::NotFound(format!(
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
            if let Some(line) = self.line_of(&ikey, &entry, key.version.as_str()).await? {
                return Ok(line);
            }
            let just_checked = now_ms().saturating_sub(entry.meta.record.checked_at_ms) < 1_000;
            if refreshed || just_checked || self.is_offline() {
                return Err(not_found());
            }
            refreshed = true;
            match self.refresh(&ikey, Some(entry)).await {
                // The upstream answers "not found" for the crate (a hiccup while the copy at
                // hand stands in): the version is not in that copy.
                Err(e) if e.is_upstream_not_found() => return Err(not_found()),
                other => other?,
            };
        }
    }

    async fn fetch_crate(
        self: &Arc<Self>,
        key: &CrateKey,
        progress: &Download,
    ) -> Done<CrateFlight> {
        match self.fetch_crate_inner(key, progress).await {
            Ok(Fetched::InMemory(bytes, record)) => {
                let persist = Arc::clone(self).persist(
                    BlobKey::Crate(key.clone()),
                    bytes.clone(),
                    Record::Crate(key.clone(), record),
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
    ) -> Result<Fetched, MirrorError> {
        let blob = BlobKey::Crate(key.clone());
        // A flight that finished just before this one started may have done the work already.
        if let Some(bytes) = self.blobs.cached(&blob) {
            return Ok(Fetched::Stored(Some(bytes)));
        }
        if self.is_stored(key).await? {
            if self.blobs.stat(&blob).await?.is_some() {
                return Ok(Fetched::Stored(None));
            }
            self.forget_lost_file(key).await?;
        }
        if self.is_offline() {
            return Err(self.offline_miss(&format!("crate {} {}", key.name, key.version)));
        }
        let line = self.checksum_of(key).await?;
        let dl = self.upstream_dl().await?;
        let url = download_url(&dl, &line.name, &line.vers, &line.cksum);
        let what = format!("crate {} {}", line.name, line.vers);
        self.download(key, &url, &what, &line.cksum, progress).await
    }

    /// Counts a write to the data folder (and whether writes work).
    fn written<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        self.metrics.disk_write("cache", r.is_ok());
        r
    }

    fn upstream_error(&self, what: &str, failure: Failure) -> MirrorError {
        UpstreamError::new(&self.name, what, failure).into()
    }

    /// Downloads one crate file, verifies it, and publishes its progress to `progress`.
    ///
    /// A file the memory tier can hold is followed in memory and answered from there; it is
    /// stored in the flight's tail ([`Mirror::persist`]), off the client's path. A larger file
    /// (or one of unknown length) streams into a temporary blob, which readers follow, and is
    /// committed before the flight ends.
    async fn download(
        &self,
        key: &CrateKey,
        url: &str,
        what: &str,
        cksum: &str,
        progress: &Download,
    ) -> Result<Fetched, MirrorError> {
        let stream = match self.upstream.crate_file(url, what).await? {
            CrateAnswer::Body(s) => s,
            CrateAnswer::NotFound => {
                return Err(MirrorError::NotFound(format!(
                    "the upstream of `{}` has no file for {what}",
                    self.name
                )));
            }
        };
        let limit = self.max_crate_bytes;
        let len = stream.len;
        if len.is_some_and(|l| l > limit) {
            return Err(self.upstream_error(what, Failure::TooLarge(limit)));
        }
        // While writes to the data folder fail (a full disk), a file up to PASS_THROUGH_BYTES
        // is followed in memory instead of a temporary blob: clients still get verified bytes,
        // and storing it is tried after.
        let disk_ok = self.metrics.disk_writable.get() == 1;
        // A permit of the shared budget, taken for a file the memory tier would not hold.
        let budget = |l: u64| -> Option<tokio::sync::OwnedSemaphorePermit> {
            if l > PASS_THROUGH_BYTES.min(limit) {
                return None;
            }
            let kib = u32::try_from(l.div_ceil(1024)).ok()?;
            self.pass_through.clone().try_acquire_many_owned(kib).ok()
        };
        // Held until the download ends.
        let mut held = None;
        let fits = len.is_some_and(|l| self.blobs.fits(l));
        if !fits && !disk_ok {
            held = len.and_then(budget);
        }
        let mut in_memory = fits || held.is_some();
        let mut tmp: Option<Box<dyn TempBlob>> = None;
        if !in_memory {
            match self.blobs.temp().await.and_then(|t| Ok((t.reader()?, t))) {
                Ok((reader, t)) => {
                    progress.start_in_blob(reader, len);
                    tmp = Some(t);
                }
                Err(e) => {
                    self.metrics.disk_write("cache", false);
                    let Some(permit) = len.and_then(budget) else {
                        return Err(e.into());
                    };
                    tracing::warn!(registry = %self.name, error = %e, "cannot stage a download on disk; following it in memory");
                    held = Some(permit);
                    in_memory = true;
                }
            }
        }
        if in_memory {
            progress.start_in_memory(len);
        }
        // Bytes kept for the memory tier: always in memory mode, and for a file of unknown
        // length as long as it stays small enough.
        let mut keep = (in_memory || len.is_none()).then(BytesMut::new);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut chunks = stream.chunks;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(self.upstream_error(what, Failure::TooLarge(limit)));
            }
            hasher.update(&chunk);
            if let Some(t) = &mut tmp {
                self.written(t.append(&chunk).await)?;
            }
            progress.append(&chunk);
            if let Some(buf) = &mut keep {
                if in_memory || self.blobs.fits(size) {
                    buf.extend_from_slice(&chunk);
                } else {
                    keep = None;
                }
            }
        }
        drop(chunks);
        // The bytes are in; what follows them (the memory tier, the store) has its own bounds.
        drop(held);
        let actual = hex(&hasher.finalize());
        if !actual.eq_ignore_ascii_case(cksum) {
            self.metrics
                .checksum_failures
                .with_label_values(&[self.name.as_str()])
                .inc();
            // `tmp`, if any, is dropped here, which deletes the partial blob.
            let e = self.upstream_error(
                what,
                Failure::Checksum {
                    expected: cksum.to_owned(),
                    actual,
                },
            );
            self.bad_checksums.insert(key.clone(), e.clone());
            return Err(e);
        }
        // Readers may hand out the last byte now; the file is stored after.
        progress.verified();
        self.metrics
            .cache(self.name.as_str(), "crate", "upstream", "miss");
        let bytes = keep.map(BytesMut::freeze);
        let record = CrateRecord {
            cksum: actual,
            size,
            stored_at_ms: now_ms(),
            // Read now from bytes in memory when a licence policy needs it; otherwise (and for
            // a larger file) when first needed.
            license: bytes
                .as_ref()
                .filter(|_| self.policy.licenses_active())
                .map(|b| crate::policy::licenses::read(&b[..])),
        };
        let blob = BlobKey::Crate(key.clone());
        if let Some(b) = &bytes {
            self.blobs.remember(blob.clone(), b.clone(), None);
        }
        match (tmp, bytes) {
            (None, Some(bytes)) => Ok(Fetched::InMemory(bytes, record)),
            (Some(tmp), bytes) => {
                let room = self.keeper.make_room(size).await;
                self.written(tmp.commit(&blob).await)?;
                self.written(self.book.put_crate(key, &record).await)?;
                drop(room);
                self.keeper.stored();
                Ok(Fetched::Stored(bytes))
            }
            (None, None) => unreachable!("a download without a temporary blob keeps its bytes"),
        }
    }
}
