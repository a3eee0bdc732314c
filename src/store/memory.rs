//! The memory tier: a moka cache bounded by the bytes it holds, in front of the disk.
//!
//! The rule this module keeps: values are reference-counted (`Bytes`, `Arc`), so a hit hands
//! out the cached bytes without copying them.

use std::sync::Arc;

use bytes::Bytes;
use moka::policy::EvictionPolicy;

use super::IndexMeta;
use crate::names::{CrateName, RegistryName, Version};

/// Key of the memory tier: kind, registry and file, joined without allocation-heavy types.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemKey(Box<str>);

impl MemKey {
    pub fn index(registry: &RegistryName, index_path: &str) -> Self {
        Self(format!("i {registry} {index_path}").into_boxed_str())
    }

    pub fn krate(registry: &RegistryName, lower_name: &CrateName, version: &Version) -> Self {
        Self(format!("c {registry} {lower_name} {version}").into_boxed_str())
    }
}

/// A cached index file: its body and bookkeeping.
#[derive(Debug)]
pub struct IndexEntry {
    pub body: Bytes,
    pub meta: IndexMeta,
    /// `meta.etag` ready to be sent.
    pub etag: http::HeaderValue,
}

#[derive(Debug, Clone)]
pub enum MemValue {
    Index(Arc<IndexEntry>),
    Crate(Bytes),
}

impl MemValue {
    fn weight(&self) -> usize {
        match self {
            // The entry also holds the cache policy (request and response header maps) and
            // its bookkeeping: about 3 KiB of RSS per entry, measured by benches/bookkeeping.sh.
            MemValue::Index(e) => e.body.len() + 3072,
            MemValue::Crate(b) => b.len(),
        }
    }
}

#[derive(Clone)]
pub struct MemoryTier {
    cache: moka::sync::Cache<MemKey, MemValue>,
    max_item_bytes: u64,
}

impl MemoryTier {
    pub fn new(max_bytes: u64, max_item_bytes: u64) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &MemKey, v: &MemValue| {
                u32::try_from(k.0.len() + v.weight() + 64).unwrap_or(u32::MAX)
            })
            .eviction_policy(EvictionPolicy::lru())
            .build();
        Self {
            cache,
            max_item_bytes,
        }
    }

    pub fn get(&self, key: &MemKey) -> Option<MemValue> {
        self.cache.get(key)
    }

    /// Keeps the value unless it is larger than the per-item cap.
    pub fn insert(&self, key: MemKey, value: MemValue) {
        if value.weight() as u64 <= self.max_item_bytes {
            self.cache.insert(key, value);
        } else {
            self.cache.invalidate(&key);
        }
    }

    /// Inserts unless the key is present; returns what the cache then holds for the key.
    pub fn insert_if_absent(&self, key: MemKey, value: MemValue) -> MemValue {
        if value.weight() as u64 > self.max_item_bytes {
            return value;
        }
        self.cache.entry(key).or_insert(value).into_value()
    }

    pub fn fits(&self, len: u64) -> bool {
        len <= self.max_item_bytes
    }

    pub fn remove(&self, key: &MemKey) {
        self.cache.invalidate(key);
    }

    /// Entries and weighted bytes held (moka's counts are eventually consistent).
    pub fn usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        (self.cache.entry_count(), self.cache.weighted_size())
    }
}
