//! A decorator over any [`CacheBook`] that keeps records in memory, so that a request served
//! from the memory tier never reaches the bookkeeping backend.
//!
//! The rule this module keeps: writes go through to the backend first and are remembered
//! after; a record remembered ahead of its write (see [`CachedBook::remember_index`]) is the
//! same value the write will store.

use std::sync::Arc;

use async_trait::async_trait;

use super::{CacheBook, CrateKey, CrateRecord, IndexKey, IndexRecord, StoreError, Totals};

/// What a remembered record weighs, keys and allocations included (an estimate).
const RECORD_WEIGHT: u32 = 320;

pub struct CachedBook {
    inner: Arc<dyn CacheBook>,
    index: moka::sync::Cache<IndexKey, Arc<IndexRecord>>,
    crates: moka::sync::Cache<CrateKey, CrateRecord>,
}

impl CachedBook {
    /// Remembers records up to about `max_bytes` of memory.
    pub fn new(inner: Arc<dyn CacheBook>, max_bytes: u64) -> Self {
        Self {
            inner,
            index: moka::sync::Cache::builder()
                .max_capacity(max_bytes / 2)
                .weigher(|_, _| RECORD_WEIGHT)
                .build(),
            crates: moka::sync::Cache::builder()
                .max_capacity(max_bytes / 2)
                .weigher(|_, _| RECORD_WEIGHT)
                .build(),
        }
    }

    /// The index record when memory holds it.
    pub fn cached_index(&self, key: &IndexKey) -> Option<Arc<IndexRecord>> {
        self.index.get(key)
    }

    /// Remembers a record that is about to be written (answers go out before disk writes).
    pub fn remember_index(&self, key: IndexKey, record: Arc<IndexRecord>) {
        self.index.insert(key, record);
    }

    /// The index record, from memory or the backend (then remembered).
    pub async fn index_shared(
        &self,
        key: &IndexKey,
    ) -> Result<Option<Arc<IndexRecord>>, StoreError> {
        if let Some(r) = self.index.get(key) {
            return Ok(Some(r));
        }
        let Some(r) = self.inner.index(key).await? else {
            return Ok(None);
        };
        let r = Arc::new(r);
        self.index.insert(key.clone(), r.clone());
        Ok(Some(r))
    }
}

#[async_trait]
impl CacheBook for CachedBook {
    async fn index(&self, key: &IndexKey) -> Result<Option<IndexRecord>, StoreError> {
        Ok(self.index_shared(key).await?.map(|r| (*r).clone()))
    }

    async fn put_index(&self, key: &IndexKey, record: &IndexRecord) -> Result<(), StoreError> {
        self.inner.put_index(key, record).await?;
        self.index.insert(key.clone(), Arc::new(record.clone()));
        Ok(())
    }

    async fn remove_index(&self, key: &IndexKey) -> Result<(), StoreError> {
        self.index.invalidate(key);
        self.inner.remove_index(key).await
    }

    async fn krate(&self, key: &CrateKey) -> Result<Option<CrateRecord>, StoreError> {
        if let Some(r) = self.crates.get(key) {
            return Ok(Some(r));
        }
        let found = self.inner.krate(key).await?;
        if let Some(r) = &found {
            self.crates.insert(key.clone(), r.clone());
        }
        Ok(found)
    }

    async fn put_crate(&self, key: &CrateKey, record: &CrateRecord) -> Result<(), StoreError> {
        self.inner.put_crate(key, record).await?;
        self.crates.insert(key.clone(), record.clone());
        Ok(())
    }

    async fn remove_crate(&self, key: &CrateKey) -> Result<(), StoreError> {
        self.crates.invalidate(key);
        self.inner.remove_crate(key).await
    }

    fn totals(&self) -> Totals {
        self.inner.totals()
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
}
