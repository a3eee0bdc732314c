//! Storage: bytes behind the [`BlobStore`] trait (files on disk, the memory tier in front),
//! bookkeeping behind the [`CacheBook`] trait (sled; in memory for tests), accounts and the
//! audit log behind the [`AccountStore`] trait, private crates' records behind the
//! [`PackageStore`] trait (both sled, or in memory for tests), typed keys.
//!
//! The rule this module keeps: a reader never sees a half-written blob, bytes never go into
//! the bookkeeping, no backend type (sled, files) appears in a trait, and keys are typed
//! ([`IndexKey`], [`CrateKey`], [`BlobKey`]) so no path is ever built from an unchecked string.

mod accounts;
mod blob;
mod book;
mod fs;
mod keys;
mod memory_accounts;
mod packages;
mod sled_accounts;
mod sled_book;
mod sled_meta;
mod tier;

#[cfg(test)]
pub(crate) use accounts::fixtures as accounts_fixtures;
pub use accounts::{
    AccountStore, Actor, AuditEntry, AuditQuery, Grant, Permission, Revocation, Subject, Team,
    TokenRecord, TokenScope, User, UserChange,
};
pub use blob::{Blob, BlobReader, BlobStore, BlobStream, TempBlob};
pub use book::{
    CacheBook, CrateRecord, Curated, IndexRecord, Licence, MemoryBook, Pin, SCAN_PAGE, Scanned,
    Totals,
};
pub use fs::FsBlobStore;
pub use keys::{BlobKey, CrateKey, IndexKey};
pub use memory_accounts::MemoryAccounts;
pub use packages::{MetaStore, Owner, PackageChange, PackageRecord, PackageStore, VersionRecord};
pub use sled_accounts::SledAccounts;
pub use sled_book::SledBook;
pub use sled_meta::{SledMeta, open_db};
pub use tier::{Held, MemoryTier};

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("disk: {0}")]
    Io(#[from] std::io::Error),
    #[error("metadata store: {0}")]
    Meta(String),
    /// A record that cannot be decoded (written by a broken or unknown writer).
    #[error("unreadable record {key}: {why}")]
    Unreadable { key: String, why: String },
}

/// Milliseconds since the epoch (0 for a clock before it).
pub fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn now_ms() -> u64 {
    to_ms(SystemTime::now())
}
