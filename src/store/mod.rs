//! Storage: bytes in files on disk, bookkeeping behind the narrow [`MetaStore`] trait, and the
//! memory tier in front of both.
//!
//! The rule this module keeps: a reader never sees a half-written file (temp file, fsync,
//! rename), bytes never go into the metadata store, and keys are typed ([`IndexKey`],
//! [`CrateKey`]) so no path is ever built from an unchecked string.

mod disk;
mod memory;
mod meta;

pub use disk::{DiskStore, TempFile};
pub use memory::{IndexEntry, MemKey, MemValue, MemoryTier};
pub use meta::{MemoryMeta, SledMeta};

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_cache_semantics::CachePolicy;
use serde::{Deserialize, Serialize};

use crate::names::{CrateName, RegistryName, Version};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("disk: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata store: {0}")]
    Meta(String),
}

/// Which index file of a registry: the upstream's `config.json` or one crate's file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexFile {
    Config,
    Crate(CrateName),
}

/// Key of a cached index file. The crate name is lower-case, as in the sparse layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexKey {
    pub registry: RegistryName,
    pub file: IndexFile,
}

impl IndexKey {
    pub fn config(registry: &RegistryName) -> Self {
        Self {
            registry: registry.clone(),
            file: IndexFile::Config,
        }
    }

    pub fn krate(registry: &RegistryName, name: &CrateName) -> Self {
        Self {
            registry: registry.clone(),
            file: IndexFile::Crate(name.lower()),
        }
    }

    /// Path relative to the registry's index root, as the sparse protocol spells it.
    pub fn index_path(&self) -> String {
        match &self.file {
            IndexFile::Config => "config.json".to_owned(),
            IndexFile::Crate(name) => name.index_path(),
        }
    }

    /// Path of the body below the data folder.
    pub fn rel_path(&self) -> PathBuf {
        PathBuf::from("index")
            .join(self.registry.as_str())
            .join(self.index_path())
    }

    fn meta_key(&self) -> Vec<u8> {
        format!("{}/{}", self.registry, self.index_path()).into_bytes()
    }

    pub fn mem_key(&self) -> MemKey {
        MemKey::index(&self.registry, &self.index_path())
    }
}

/// Key of a cached `.crate` file. The name is lower-case; the version keeps build metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CrateKey {
    pub registry: RegistryName,
    pub name: CrateName,
    pub version: Version,
}

impl CrateKey {
    pub fn new(registry: &RegistryName, name: &CrateName, version: &Version) -> Self {
        Self {
            registry: registry.clone(),
            name: name.lower(),
            version: version.clone(),
        }
    }

    /// `crates/{registry}/{name}/{name}-{version}.crate`
    pub fn rel_path(&self) -> PathBuf {
        PathBuf::from("crates")
            .join(self.registry.as_str())
            .join(self.name.as_str())
            .join(format!("{}-{}.crate", self.name, self.version))
    }

    fn meta_key(&self) -> Vec<u8> {
        format!("{}/{}/{}", self.registry, self.name, self.version).into_bytes()
    }

    pub fn mem_key(&self) -> MemKey {
        MemKey::krate(&self.registry, &self.name, &self.version)
    }
}

/// Bookkeeping of one cached index file; the body lives on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexMeta {
    /// Upstream caching policy (validators, freshness), for revalidation.
    pub policy: CachePolicy,
    /// cratedock's own strong ETag of the body, quoted.
    pub etag: String,
    /// The upstream's validators, sent back when revalidating.
    pub upstream_etag: Option<String>,
    pub upstream_last_modified: Option<String>,
    /// Until when the body is fresh, in milliseconds since the epoch.
    pub fresh_until_ms: u64,
    /// When the body was last fetched or revalidated, in milliseconds since the epoch.
    pub checked_at_ms: u64,
    pub size: u64,
}

/// Bookkeeping of one cached crate file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrateMeta {
    /// Lowercase hex SHA-256 of the file, verified before it was stored.
    pub cksum: String,
    pub size: u64,
    pub stored_at_ms: u64,
}

/// Count and bytes of what the metadata store tracks, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub index_files: u64,
    pub index_bytes: u64,
    pub crate_files: u64,
    pub crate_bytes: u64,
}

/// Where bookkeeping lives. Narrow on purpose: typed get/put/remove, nothing domain-specific,
/// so sled can be swapped without touching the proxy.
pub trait MetaStore: Send + Sync + 'static {
    fn get_index(&self, key: &IndexKey) -> Result<Option<IndexMeta>, StoreError>;
    fn put_index(&self, key: &IndexKey, meta: &IndexMeta) -> Result<(), StoreError>;
    fn remove_index(&self, key: &IndexKey) -> Result<(), StoreError>;
    fn get_crate(&self, key: &CrateKey) -> Result<Option<CrateMeta>, StoreError>;
    fn put_crate(&self, key: &CrateKey, meta: &CrateMeta) -> Result<(), StoreError>;
    fn totals(&self) -> Totals;
    fn flush(&self) -> Result<(), StoreError>;
}

pub fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}
