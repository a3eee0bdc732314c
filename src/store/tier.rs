//! The memory tier: a decorator over any [`BlobStore`] that keeps small blobs in a moka cache
//! bounded by the bytes it holds. A blob may carry an attachment of the caller's type `A` (the
//! mirror attaches an index file's record and ready-made ETag), kept and evicted with it.
//!
//! The rules this module keeps: values are reference-counted, so a hit hands out the cached
//! bytes without copying them, and a hit never leaves memory (no disk, no bookkeeping, no
//! blocking call); a value read from below never replaces one remembered meanwhile (that one is
//! newer).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use moka::policy::EvictionPolicy;

use super::{Blob, BlobKey, BlobStore, StoreError, TempBlob};

/// What an attachment is taken to weigh (records, headers and their allocations).
const ATTACHMENT_WEIGHT: usize = 512;
/// What an entry weighs beside its bytes (the key's strings, moka's node).
const ENTRY_WEIGHT: usize = 192;

/// A blob in memory, with its attachment.
#[derive(Debug, Clone)]
pub struct Held<A> {
    pub bytes: Bytes,
    pub attached: Option<A>,
}

pub struct MemoryTier<A = ()> {
    cache: moka::sync::Cache<BlobKey, Held<A>>,
    max_item_bytes: u64,
    inner: Arc<dyn BlobStore>,
}

impl<A> Clone for MemoryTier<A> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            max_item_bytes: self.max_item_bytes,
            inner: self.inner.clone(),
        }
    }
}

impl<A: Clone + Send + Sync + 'static> MemoryTier<A> {
    pub fn new(inner: Arc<dyn BlobStore>, max_bytes: u64, max_item_bytes: u64) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_k: &BlobKey, v: &Held<A>| {
                let extra = if v.attached.is_some() {
                    ATTACHMENT_WEIGHT
                } else {
                    0
                };
                u32::try_from(v.bytes.len() + ENTRY_WEIGHT + extra).unwrap_or(u32::MAX)
            })
            .eviction_policy(EvictionPolicy::lru())
            .build();
        Self {
            cache,
            max_item_bytes,
            inner,
        }
    }

    /// The blob when memory holds it.
    pub fn cached(&self, key: &BlobKey) -> Option<Bytes> {
        self.cache.get(key).map(|h| h.bytes)
    }

    /// The blob and its attachment when memory holds them.
    pub fn held(&self, key: &BlobKey) -> Option<Held<A>> {
        self.cache.get(key)
    }

    /// The blob's attachment when memory holds the blob with one.
    pub fn attached(&self, key: &BlobKey) -> Option<A> {
        self.cache.get(key).and_then(|h| h.attached)
    }

    /// Keeps `bytes` (and `attached`) in memory only, replacing what memory held: the caller
    /// has the newest copy and stores it below later, or never.
    pub fn remember(&self, key: BlobKey, bytes: Bytes, attached: Option<A>) {
        if self.fits(bytes.len() as u64) {
            self.cache.insert(key, Held { bytes, attached });
        } else {
            self.cache.invalidate(&key);
        }
    }

    /// Keeps `bytes` read from below unless memory holds the blob already (a copy remembered
    /// while they were read is newer). Returns what memory holds then, or `bytes`.
    pub fn fill(&self, key: BlobKey, bytes: Bytes, attached: Option<A>) -> Held<A> {
        let held = Held { bytes, attached };
        if !self.fits(held.bytes.len() as u64) {
            return held;
        }
        self.cache.entry(key).or_insert(held).into_value()
    }

    pub fn forget(&self, key: &BlobKey) {
        self.cache.invalidate(key);
    }

    /// Whether a blob of `len` bytes is small enough to be held in memory.
    pub fn fits(&self, len: u64) -> bool {
        len <= self.max_item_bytes
    }

    /// Entries and weighted bytes held (moka's counts are eventually consistent).
    pub fn usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// The store below the memory tier.
    pub fn below(&self) -> &dyn BlobStore {
        self.inner.as_ref()
    }

    /// The store below, shared.
    pub fn below_arc(&self) -> Arc<dyn BlobStore> {
        self.inner.clone()
    }
}

#[async_trait]
impl<A: Clone + Send + Sync + 'static> BlobStore for MemoryTier<A> {
    async fn get(&self, key: &BlobKey) -> Result<Option<Bytes>, StoreError> {
        if let Some(b) = self.cached(key) {
            return Ok(Some(b));
        }
        let got = self.inner.get(key).await?;
        Ok(got.map(|b| self.fill(key.clone(), b, None).bytes))
    }

    /// Memory first; a blob read from below that fits in memory is read whole and kept.
    async fn open(&self, key: &BlobKey) -> Result<Option<Blob>, StoreError> {
        if let Some(b) = self.cached(key) {
            return Ok(Some(Blob::Bytes(b)));
        }
        match self.inner.open(key).await? {
            Some(Blob::Stream { len, mut body }) if self.fits(len) => {
                let mut buf = BytesMut::with_capacity(len as usize);
                while let Some(chunk) = body.next().await {
                    buf.extend_from_slice(&chunk?);
                }
                let held = self.fill(key.clone(), buf.freeze(), None);
                Ok(Some(Blob::Bytes(held.bytes)))
            }
            Some(Blob::Bytes(b)) => Ok(Some(Blob::Bytes(self.fill(key.clone(), b, None).bytes))),
            other => Ok(other),
        }
    }

    async fn stat(&self, key: &BlobKey) -> Result<Option<u64>, StoreError> {
        self.inner.stat(key).await
    }

    /// Writes below, then keeps the bytes in memory (without an attachment: a caller that has
    /// one remembers it itself).
    async fn put(&self, key: &BlobKey, bytes: Bytes) -> Result<(), StoreError> {
        self.inner.put(key, bytes.clone()).await?;
        self.fill(key.clone(), bytes, None);
        Ok(())
    }

    async fn temp(&self) -> Result<Box<dyn TempBlob>, StoreError> {
        self.inner.temp().await
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), StoreError> {
        self.forget(key);
        self.inner.delete(key).await
    }

    async fn keys(
        &self,
        registry: &crate::names::RegistryName,
    ) -> Result<Vec<(BlobKey, u64)>, StoreError> {
        self.inner.keys(registry).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{CrateName, RegistryName, Version};
    use crate::store::{CrateKey, FsBlobStore};

    #[tokio::test]
    async fn what_is_read_from_below_never_replaces_a_newer_copy() {
        let dir = tempfile::tempdir().unwrap();
        let below = Arc::new(FsBlobStore::open(dir.path()).unwrap());
        let tier: MemoryTier<u32> = MemoryTier::new(below, 1 << 20, 1 << 10);
        let r = RegistryName::new("r").unwrap();
        let key = BlobKey::Crate(CrateKey::new(
            &r,
            &CrateName::new("a").unwrap(),
            &Version::new("1.0.0").unwrap(),
        ));
        tier.below()
            .put(&key, Bytes::from_static(b"old"))
            .await
            .unwrap();
        tier.remember(key.clone(), Bytes::from_static(b"new"), Some(2));
        // A reader that read "old" from below meanwhile does not overwrite "new".
        let held = tier.fill(key.clone(), Bytes::from_static(b"old"), Some(1));
        assert_eq!((held.bytes.as_ref(), held.attached), (&b"new"[..], Some(2)));
        assert_eq!(tier.attached(&key), Some(2));
        tier.forget(&key);
        assert_eq!(tier.get(&key).await.unwrap().unwrap(), "old");
        assert_eq!(
            tier.attached(&key),
            None,
            "filled from below: no attachment"
        );
        // Too large for memory: served, not kept.
        let big = Bytes::from(vec![0u8; 2048]);
        tier.remember(key.clone(), big, Some(3));
        assert!(tier.cached(&key).is_none());
    }
}
