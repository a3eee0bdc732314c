//! The memory tier: a decorator over any [`BlobStore`] that keeps small blobs in a moka cache
//! bounded by the bytes it holds.
//!
//! The rule this module keeps: values are reference-counted `Bytes`, so a hit hands out the
//! cached bytes without copying them, and a hit never leaves memory (no disk, no metadata
//! store, no blocking call).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use moka::policy::EvictionPolicy;

use super::{Blob, BlobKey, BlobStore, StoreError, TempBlob};

#[derive(Clone)]
pub struct MemoryTier {
    cache: moka::sync::Cache<BlobKey, Bytes>,
    max_item_bytes: u64,
    inner: Arc<dyn BlobStore>,
}

impl MemoryTier {
    pub fn new(inner: Arc<dyn BlobStore>, max_bytes: u64, max_item_bytes: u64) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            // The key's strings and the entry's overhead count too.
            .weigher(|_k: &BlobKey, v: &Bytes| u32::try_from(v.len() + 192).unwrap_or(u32::MAX))
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
        self.cache.get(key)
    }

    /// Keeps `bytes` in memory only (the caller writes them below later, or never).
    pub fn remember(&self, key: BlobKey, bytes: Bytes) {
        if self.fits(bytes.len() as u64) {
            self.cache.insert(key, bytes);
        } else {
            self.cache.invalidate(&key);
        }
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
}

#[async_trait]
impl BlobStore for MemoryTier {
    async fn get(&self, key: &BlobKey) -> Result<Option<Bytes>, StoreError> {
        if let Some(b) = self.cached(key) {
            return Ok(Some(b));
        }
        let got = self.inner.get(key).await?;
        if let Some(b) = &got {
            self.remember(key.clone(), b.clone());
        }
        Ok(got)
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
                let bytes = buf.freeze();
                self.remember(key.clone(), bytes.clone());
                Ok(Some(Blob::Bytes(bytes)))
            }
            Some(Blob::Bytes(b)) => {
                self.remember(key.clone(), b.clone());
                Ok(Some(Blob::Bytes(b)))
            }
            other => Ok(other),
        }
    }

    async fn stat(&self, key: &BlobKey) -> Result<Option<u64>, StoreError> {
        self.inner.stat(key).await
    }

    async fn put(&self, key: &BlobKey, bytes: Bytes) -> Result<(), StoreError> {
        self.remember(key.clone(), bytes.clone());
        self.inner.put(key, bytes).await
    }

    async fn temp(&self) -> Result<Box<dyn TempBlob>, StoreError> {
        self.inner.temp().await
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), StoreError> {
        self.forget(key);
        self.inner.delete(key).await
    }
}
