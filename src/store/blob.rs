//! The `BlobStore` seam: where the bytes of index and crate files live. The filesystem is the
//! implementation today; an S3-compatible one can follow without touching the mirror.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

use super::{BlobKey, StoreError};
use crate::names::RegistryName;

/// A blob's bytes as a stream of chunks.
pub type BlobStream = BoxStream<'static, io::Result<Bytes>>;

/// A blob read out of a store: whole in memory, or streamed with its length.
pub enum Blob {
    Bytes(Bytes),
    Stream { len: u64, body: BlobStream },
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blob::Bytes(b) => f.debug_tuple("Bytes").field(&b.len()).finish(),
            Blob::Stream { len, .. } => f.debug_struct("Stream").field("len", len).finish(),
        }
    }
}

/// Where blobs live. Every write is atomic: a reader sees the old blob or the whole new one.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The whole blob; `None` when it does not exist.
    async fn get(&self, key: &BlobKey) -> Result<Option<Bytes>, StoreError>;
    /// The blob as a stream; `None` when it does not exist.
    async fn open(&self, key: &BlobKey) -> Result<Option<Blob>, StoreError>;
    /// The blob's length; `None` when it does not exist.
    async fn stat(&self, key: &BlobKey) -> Result<Option<u64>, StoreError>;
    /// Stores `bytes` as the blob, replacing any old one.
    async fn put(&self, key: &BlobKey, bytes: Bytes) -> Result<(), StoreError>;
    /// A new temporary blob to fill while its bytes arrive, then commit under a key once
    /// they are verified.
    async fn temp(&self) -> Result<Box<dyn TempBlob>, StoreError>;
    /// Removes the blob; removing a missing blob is not an error.
    async fn delete(&self, key: &BlobKey) -> Result<(), StoreError>;
    /// Every blob of `registry` with its length (a scan, for the checks of `cache::check`).
    /// Names that no key makes are left out, with a warning.
    async fn keys(&self, registry: &RegistryName) -> Result<Vec<(BlobKey, u64)>, StoreError>;
}

/// A blob being written. Dropped without [`TempBlob::commit`], it leaves nothing behind.
#[async_trait]
pub trait TempBlob: Send + Sync {
    /// Appends `chunk`; once this returns, readers from [`TempBlob::reader`] can read it.
    async fn append(&mut self, chunk: &Bytes) -> Result<(), StoreError>;
    /// A reader of what has been appended so far; it stays valid after commit or drop.
    fn reader(&self) -> Result<Arc<dyn BlobReader>, StoreError>;
    /// Makes the bytes durable and stores them as `key`, replacing any old blob.
    async fn commit(self: Box<Self>, key: &BlobKey) -> Result<(), StoreError>;
}

/// Random-access reads of a blob that may still be growing.
#[async_trait]
pub trait BlobReader: Send + Sync {
    /// Exactly `len` bytes from `offset` (the caller knows they have been written).
    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes>;
}
