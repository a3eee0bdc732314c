//! Cache bookkeeping: what cratedock knows about each cached file (validators, freshness,
//! checksum, size) and the running totals, behind the [`CacheBook`] trait.
//!
//! The rule this module keeps: only cratedock's own types are persisted, each operation that
//! must be atomic (an entry and the totals) is one call, and no backend type appears in a
//! signature, so a PostgreSQL implementation can follow the sled one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{BlobKey, CrateKey, IndexKey, StoreError};
use crate::names::{CrateName, RegistryName, Version};

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
    /// The licence its `Cargo.toml` declares; absent when it was not read yet (records of
    /// older versions, large files read when first needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<Licence>,
}

/// The licence a crate's `Cargo.toml` declares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Licence {
    /// `license`, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// `license-file`, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Lowercase hex SHA-256 of that file in the `.crate`, when it is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sha256: Option<String>,
    /// Why the manifest could not be read, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// A crate a curated mirror serves: a name, or a name pattern with `*` at its end, and
/// optionally a version requirement its versions must match.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Curated {
    pub registry: RegistryName,
    pub name: crate::names::CrateGlob,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<String>,
}

impl Curated {
    /// What identifies the entry in its registry: the pattern as cargo compares names
    /// (`Serde` and `serde` are one entry).
    pub fn key(&self) -> String {
        crate::names::fold(self.name.as_str())
    }

    /// `name` or `name@req`.
    pub fn spec(&self) -> String {
        match &self.req {
            Some(r) => format!("{}@{r}", self.name),
            None => self.name.to_string(),
        }
    }
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

/// One record as a scan of the bookkeeping reads it.
#[derive(Debug, Clone)]
pub struct Scanned<K, R> {
    pub key: K,
    /// The record, or why it cannot be read.
    pub record: Result<R, String>,
    /// When the file was last used, as [`CacheBook::touch`] recorded it.
    pub used_ms: Option<u64>,
}

/// Files that eviction never removes, in one registry: the index file and crate files of one
/// crate or of every crate a pattern (`tokio-*`) matches, or one version's crate file (with its
/// crate's index file).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pin {
    pub registry: RegistryName,
    /// A name or a pattern, lower case.
    pub name: crate::names::CrateGlob,
    pub version: Option<Version>,
}

impl Pin {
    pub fn new(registry: &RegistryName, name: &CrateName, version: Option<Version>) -> Self {
        Self {
            registry: registry.clone(),
            name: crate::names::CrateGlob::new(name.lower().as_str())
                .expect("a crate name is a pattern"),
            version,
        }
    }

    /// Every crate `pattern` matches, every version.
    pub fn pattern(registry: &RegistryName, pattern: &crate::names::CrateGlob) -> Self {
        Self {
            registry: registry.clone(),
            name: crate::names::CrateGlob::new(&pattern.as_str().to_ascii_lowercase())
                .expect("a lower-cased pattern is a pattern"),
            version: None,
        }
    }

    /// Whether the pin keeps the file of `key`.
    pub fn covers(&self, key: &BlobKey) -> bool {
        match key {
            // A version pin keeps its crate's index file too: without it the version cannot be
            // resolved (offline, it would not be served at all).
            BlobKey::Index(k) => {
                k.registry == self.registry
                    && matches!(&k.file, crate::index::IndexFile::Crate(n) if self.name.matches(n))
            }
            BlobKey::Crate(k) => {
                k.registry == self.registry
                    && self.name.matches(&k.name)
                    && self.version.as_ref().is_none_or(|v| *v == k.version)
            }
        }
    }

    /// `name`, `pattern*` or `name@version`.
    pub fn spec(&self) -> String {
        match &self.version {
            Some(v) => format!("{}@{v}", self.name),
            None => self.name.to_string(),
        }
    }
}

/// Records returned by one call of a scan at most.
pub const SCAN_PAGE: usize = 1_000;

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
    /// The versions of crate `name` (lower case) whose crate file `registry` holds.
    async fn cached_versions(
        &self,
        registry: &RegistryName,
        name: &CrateName,
    ) -> Result<Vec<Version>, StoreError>;
    async fn put_crate(&self, key: &CrateKey, record: &CrateRecord) -> Result<(), StoreError>;
    async fn remove_crate(&self, key: &CrateKey) -> Result<(), StoreError>;
    /// The running totals (kept in memory; no I/O).
    fn totals(&self) -> Totals;
    /// Index records in key order after `after`, at most `limit` (a scan, for eviction,
    /// verification and statistics; never on a request's path).
    async fn index_page(
        &self,
        after: Option<&IndexKey>,
        limit: usize,
    ) -> Result<Vec<Scanned<IndexKey, IndexRecord>>, StoreError>;
    /// Crate records in key order after `after`, at most `limit`.
    async fn crate_page(
        &self,
        after: Option<&CrateKey>,
        limit: usize,
    ) -> Result<Vec<Scanned<CrateKey, CrateRecord>>, StoreError>;
    /// Records when files were last used (batched by the caller: one call per interval, not
    /// one per hit). Files without a record are skipped.
    async fn touch(&self, used: &[(BlobKey, u64)]) -> Result<(), StoreError>;
    async fn pins(&self) -> Result<Vec<Pin>, StoreError>;
    /// Adds (`on`) or removes a pin; returns whether that changed anything.
    async fn set_pin(&self, pin: &Pin, on: bool) -> Result<bool, StoreError>;
    /// The curated mirrors' allow-lists (all registries).
    async fn curated(&self) -> Result<Vec<Curated>, StoreError>;
    /// Adds (`on`; replacing the requirement of an entry of the same registry and name) or
    /// removes an entry; returns whether that changed anything. Durable when it returns.
    async fn set_curated(&self, entry: &Curated, on: bool) -> Result<bool, StoreError>;
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
    index: BTreeMap<Vec<u8>, (IndexKey, IndexRecord)>,
    crates: BTreeMap<Vec<u8>, (CrateKey, CrateRecord)>,
    used: HashMap<BlobKey, u64>,
    pins: BTreeSet<Pin>,
    curated: BTreeMap<(RegistryName, String), Curated>,
    totals: Totals,
}

/// Up to `limit` entries of `map` after the record key `after`.
fn page<K: Clone, R: Clone>(
    map: &BTreeMap<Vec<u8>, (K, R)>,
    after: Option<Vec<u8>>,
    limit: usize,
    used: impl Fn(&K) -> Option<u64>,
) -> Vec<Scanned<K, R>> {
    let from = match after {
        Some(a) => Bound::Excluded(a),
        None => Bound::Unbounded,
    };
    map.range((from, Bound::Unbounded))
        .take(limit)
        .map(|(_, (k, r))| Scanned {
            key: k.clone(),
            record: Ok(r.clone()),
            used_ms: used(k),
        })
        .collect()
}

impl MemoryBook {
    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().expect("memory book lock")
    }
}

#[async_trait]
impl CacheBook for MemoryBook {
    async fn index(&self, key: &IndexKey) -> Result<Option<IndexRecord>, StoreError> {
        Ok(self
            .state()
            .index
            .get(&key.record_key())
            .map(|e| e.1.clone()))
    }

    async fn put_index(&self, key: &IndexKey, record: &IndexRecord) -> Result<(), StoreError> {
        let mut s = self.state();
        let entry = (key.clone(), record.clone());
        let old = s.index.insert(key.record_key(), entry).map(|o| o.1.size);
        s.totals.adjust(Kind::Index, old, Some(record.size));
        Ok(())
    }

    async fn remove_index(&self, key: &IndexKey) -> Result<(), StoreError> {
        let mut s = self.state();
        let old = s.index.remove(&key.record_key()).map(|o| o.1.size);
        s.used.remove(&BlobKey::Index(key.clone()));
        s.totals.adjust(Kind::Index, old, None);
        Ok(())
    }

    async fn krate(&self, key: &CrateKey) -> Result<Option<CrateRecord>, StoreError> {
        Ok(self
            .state()
            .crates
            .get(&key.record_key())
            .map(|e| e.1.clone()))
    }

    async fn put_crate(&self, key: &CrateKey, record: &CrateRecord) -> Result<(), StoreError> {
        let mut s = self.state();
        let entry = (key.clone(), record.clone());
        let old = s.crates.insert(key.record_key(), entry).map(|o| o.1.size);
        s.totals.adjust(Kind::Crate, old, Some(record.size));
        Ok(())
    }

    async fn remove_crate(&self, key: &CrateKey) -> Result<(), StoreError> {
        let mut s = self.state();
        let old = s.crates.remove(&key.record_key()).map(|o| o.1.size);
        s.used.remove(&BlobKey::Crate(key.clone()));
        s.totals.adjust(Kind::Crate, old, None);
        Ok(())
    }

    fn totals(&self) -> Totals {
        self.state().totals
    }

    async fn index_page(
        &self,
        after: Option<&IndexKey>,
        limit: usize,
    ) -> Result<Vec<Scanned<IndexKey, IndexRecord>>, StoreError> {
        let s = self.state();
        let used = |k: &IndexKey| s.used.get(&BlobKey::Index(k.clone())).copied();
        Ok(page(&s.index, after.map(IndexKey::record_key), limit, used))
    }

    async fn crate_page(
        &self,
        after: Option<&CrateKey>,
        limit: usize,
    ) -> Result<Vec<Scanned<CrateKey, CrateRecord>>, StoreError> {
        let s = self.state();
        let used = |k: &CrateKey| s.used.get(&BlobKey::Crate(k.clone())).copied();
        Ok(page(
            &s.crates,
            after.map(CrateKey::record_key),
            limit,
            used,
        ))
    }

    async fn touch(&self, used: &[(BlobKey, u64)]) -> Result<(), StoreError> {
        let mut s = self.state();
        for (key, ms) in used {
            let known = match key {
                BlobKey::Index(k) => s.index.contains_key(&k.record_key()),
                BlobKey::Crate(k) => s.crates.contains_key(&k.record_key()),
            };
            if known {
                s.used.insert(key.clone(), *ms);
            }
        }
        Ok(())
    }

    async fn pins(&self) -> Result<Vec<Pin>, StoreError> {
        Ok(self.state().pins.iter().cloned().collect())
    }

    async fn set_pin(&self, pin: &Pin, on: bool) -> Result<bool, StoreError> {
        let mut s = self.state();
        Ok(if on {
            s.pins.insert(pin.clone())
        } else {
            s.pins.remove(pin)
        })
    }

    async fn curated(&self) -> Result<Vec<Curated>, StoreError> {
        Ok(self.state().curated.values().cloned().collect())
    }

    async fn cached_versions(
        &self,
        registry: &RegistryName,
        name: &CrateName,
    ) -> Result<Vec<Version>, StoreError> {
        let prefix = format!("{registry}/{name}/").into_bytes();
        Ok(self
            .state()
            .crates
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, (k, _))| k.version.clone())
            .collect())
    }

    async fn set_curated(&self, entry: &Curated, on: bool) -> Result<bool, StoreError> {
        let mut s = self.state();
        let key = (entry.registry.clone(), entry.key());
        Ok(if on {
            s.curated.insert(key, entry.clone()).as_ref() != Some(entry)
        } else {
            s.curated.remove(&key).is_some()
        })
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
