//! The body of a cached index file: from memory, or streamed from the blob store when it is
//! too large for the memory tier (never read whole for a request).

use bytes::Bytes;

use super::index::{IndexBody, IndexEntry};
use super::{Mirror, MirrorError};
use crate::store::{Blob, BlobKey, IndexKey, StoreError};

impl Mirror {
    /// The body as a blob: from memory, or streamed from the blob store. A stored body whose
    /// file is gone or changed length is an error (its entry goes; the next request fetches
    /// it again).
    pub(crate) async fn index_body(
        &self,
        name: &crate::names::CrateName,
        entry: &IndexEntry,
    ) -> Result<Blob, MirrorError> {
        let key = IndexKey::krate(&self.name, name);
        self.body_of(&key, entry).await
    }

    async fn body_of(&self, key: &IndexKey, entry: &IndexEntry) -> Result<Blob, MirrorError> {
        let blob = BlobKey::Index(key.clone());
        match &entry.body {
            IndexBody::Memory(b) => Ok(Blob::Bytes(b.clone())),
            IndexBody::Stored => match self.blobs.below().open(&blob).await? {
                Some(Blob::Stream { len, body }) if len == entry.meta.record.size => {
                    Ok(Blob::Stream { len, body })
                }
                Some(Blob::Bytes(b)) if b.len() as u64 == entry.meta.record.size => {
                    Ok(Blob::Bytes(b))
                }
                other => {
                    tracing::warn!(
                        registry = %self.name, file = %key.index_path(), found = other.is_some(),
                        "index file gone or changed under its record; fetching it again"
                    );
                    self.book.remove_index(key).await?;
                    Err(MirrorError::Store(format!(
                        "index file {} changed on disk",
                        key.index_path()
                    )))
                }
            },
        }
    }

    /// The whole body (to find a version's line in it, or to parse `config.json`).
    pub(super) async fn body_bytes(
        &self,
        key: &IndexKey,
        entry: &IndexEntry,
    ) -> Result<Bytes, MirrorError> {
        match self.body_of(key, entry).await? {
            Blob::Bytes(b) => Ok(b),
            Blob::Stream { len, mut body } => {
                let mut buf = bytes::BytesMut::with_capacity(len as usize);
                while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
                    buf.extend_from_slice(&chunk.map_err(StoreError::from)?);
                }
                Ok(buf.freeze())
            }
        }
    }
}
