//! Cache bookkeeping: what cratedock knows about each cached file (validators, freshness,
//! checksum, size) and the running totals, behind the [`CacheBook`] trait.
//!
//! The rule this module keeps: only cratedock's own types are persisted, each operation that
//! must be atomic (an entry and the totals) is one call, and no backend type appears in a
//! signature, so a PostgreSQL implementation can follow the sled one.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{CrateKey, IndexKey, StoreError};

/// Bookkeeping of one cached index file; the body is a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRecord {
    /// cratedock's own strong ETag of the body, quoted; computed once, when it was stored.
    pub etag: String,
    /// The upstream's validators, sent back when revalidating.
    pub upstream_etag: Option<String>,
    pub upstream_last_modified: Option<String>,
    /// Until when the body is fresh, in milliseconds since the epoch.
    pub fresh_until_ms: u64,
    /// How long the upstream's last full answer kept the file fresh; a `304` that says
    /// nothing about freshness renews it for as long.
    #[serde(default)]
    pub lifetime_ms: u64,
    /// When the body was last fetched or revalidated, in milliseconds since the epoch.
    pub checked_at_ms: u64,
    pub size: u64,
    /// Since when the upstream answers "not found" for a file cratedock holds: a removal
    /// once it lasts, a hiccup until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_since_ms: Option<u64>,
    /// When the upstream last answered "not found" for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_seen_ms: Option<u64>,
    /// The upstream marked it `Cache-Control: private`: it is served as such.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
}

/// Bookkeeping of one cached crate file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrateRecord {
    /// Lowercase hex SHA-256 of the file, verified before it was stored.
    pub cksum: String,
    pub size: u64,
    pub stored_at_ms: u64,
}

/// Count and bytes of what the bookkeeping tracks, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub index_files: u64,
    pub index_bytes: u64,
    pub crate_files: u64,
    pub crate_bytes: u64,
}

/// Which running totals an entry counts in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Index,
    Crate,
}

impl Totals {
    /// Accounts for an entry of `kind` going from `old` bytes to `new` bytes (`None`: absent).
    pub(crate) fn adjust(&mut self, kind: Kind, old: Option<u64>, new: Option<u64>) {
        let (files, bytes) = match kind {
            Kind::Index => (&mut self.index_files, &mut self.index_bytes),
            Kind::Crate => (&mut self.crate_files, &mut self.crate_bytes),
        };
        if let Some(o) = old {
            *files = files.saturating_sub(1);
            *bytes = bytes.saturating_sub(o);
        }
        if let Some(n) = new {
            *files += 1;
            *bytes += n;
        }
    }
}

/// Where the cache bookkeeping lives. An unreadable record is reported as
/// [`StoreError::Unreadable`], so the caller can treat it as a miss.
#[async_trait]
pub trait CacheBook: Send + Sync + 'static {
    async fn index(&self, key: &IndexKey) -> Result<Option<IndexRecord>, StoreError>;
    /// Stores the record and updates the totals, atomically.
    async fn put_index(&self, key: &IndexKey, record: &IndexRecord) -> Result<(), StoreError>;
    /// Removes the record and updates the totals, atomically.
    async fn remove_index(&self, key: &IndexKey) -> Result<(), StoreError>;
    async fn krate(&self, key: &CrateKey) -> Result<Option<CrateRecord>, StoreError>;
    async fn put_crate(&self, key: &CrateKey, record: &CrateRecord) -> Result<(), StoreError>;
    async fn remove_crate(&self, key: &CrateKey) -> Result<(), StoreError>;
    /// The running totals (kept in memory; no I/O).
    fn totals(&self) -> Totals;
    /// Makes every change durable (at shutdown).
    async fn flush(&self) -> Result<(), StoreError>;
}

/// The part of a stored record that the totals need; read from records of any version.
#[derive(Deserialize)]
pub(crate) struct SizeOnly {
    pub(crate) size: u64,
}

/// Bookkeeping in memory, for tests and benchmarks that need no persistence.
#[derive(Default)]
pub struct MemoryBook {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    index: HashMap<IndexKey, IndexRecord>,
    crates: HashMap<CrateKey, CrateRecord>,
    totals: Totals,
}

impl MemoryBook {
    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().expect("memory book lock")
    }
}

#[async_trait]
impl CacheBook for MemoryBook {
    async fn index(&self, key: &IndexKey) -> Result<Option<IndexRecord>, StoreError> {
        Ok(self.state().index.get(key).cloned())
    }

    async fn put_index(&self, key: &IndexKey, record: &IndexRecord) -> Result<(), StoreError> {
        let mut s = self.state();
        let old = s.index.insert(key.clone(), record.clone()).map(|o| o.size);
        s.totals.adjust(Kind::Index, old, Some(record.size));
        Ok(())
    }

    async fn remove_index(&self, key: &IndexKey) -> Result<(), StoreError> {
        let mut s = self.state();
        let old = s.index.remove(key).map(|o| o.size);
        s.totals.adjust(Kind::Index, old, None);
        Ok(())
    }

    async fn krate(&self, key: &CrateKey) -> Result<Option<CrateRecord>, StoreError> {
        Ok(self.state().crates.get(key).cloned())
    }

    async fn put_crate(&self, key: &CrateKey, record: &CrateRecord) -> Result<(), StoreError> {
        let mut s = self.state();
        let old = s.crates.insert(key.clone(), record.clone()).map(|o| o.size);
        s.totals.adjust(Kind::Crate, old, Some(record.size));
        Ok(())
    }

    async fn remove_crate(&self, key: &CrateKey) -> Result<(), StoreError> {
        let mut s = self.state();
        let old = s.crates.remove(key).map(|o| o.size);
        s.totals.adjust(Kind::Crate, old, None);
        Ok(())
    }

    fn totals(&self) -> Totals {
        self.state().totals
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
