//! The body of a cached index file: from memory, or streamed from the blob store when it is
//! too large for the memory tier (never read whole for a request, nor to find one version's
//! line in it).

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::index::{IndexBody, IndexEntry};
use super::{Mirror, MirrorError};
use crate::index::{IndexLine, find_version};
use crate::store::{Blob, BlobKey, IndexKey, StoreError};

/// A body opened for an entry.
pub(crate) enum Opened {
    Body(Blob),
    /// A refresh replaced the file and its record since the entry was read: look it up again.
    Replaced,
}

impl Mirror {
    /// The body of crate `name`'s index file, as `entry` describes it.
    pub(crate) async fn index_body(
        &self,
        name: &crate::names::CrateName,
        entry: &IndexEntry,
    ) -> Result<Opened, MirrorError> {
        self.body_of(&IndexKey::krate(&self.name, name), entry)
            .await
    }

    /// A stored body whose file does not have the recorded length is either a newer copy (its
    /// record changed too: [`Opened::Replaced`]) or a file changed by hand or lost, whose record
    /// goes (the next request fetches it again).
    async fn body_of(&self, key: &IndexKey, entry: &IndexEntry) -> Result<Opened, MirrorError> {
        if let IndexBody::Memory(b) = &entry.body {
            return Ok(Opened::Body(Blob::Bytes(b.clone())));
        }
        let size = entry.meta.record.size;
        let opened = self
            .blobs
            .below()
            .open(&BlobKey::Index(key.clone()))
            .await?;
        match opened {
            Some(Blob::Stream { len, body }) if len == size => {
                return Ok(Opened::Body(Blob::Stream { len, body }));
            }
            Some(Blob::Bytes(b)) if b.len() as u64 == size => {
                return Ok(Opened::Body(Blob::Bytes(b)));
            }
            _ => {}
        }
        match self.book.index(key).await {
            Ok(Some(now)) if now.etag != entry.meta.record.etag => return Ok(Opened::Replaced),
            Ok(Some(_)) => self.book.remove_index(key).await?,
            _ => {}
        }
        tracing::warn!(
            registry = %self.name, file = %key.index_path(),
            "index file gone or changed under its record; fetching it again"
        );
        Err(MirrorError::Store(format!(
            "index file {} changed on disk",
            key.index_path()
        )))
    }

    /// The whole body (of `config.json`, which is small).
    pub(super) async fn body_bytes(
        &self,
        key: &IndexKey,
        entry: &IndexEntry,
    ) -> Result<Bytes, MirrorError> {
        match self.body_of(key, entry).await? {
            Opened::Body(Blob::Bytes(b)) => Ok(b),
            Opened::Body(Blob::Stream { len, mut body }) => {
                let mut buf = BytesMut::with_capacity(len as usize);
                while let Some(chunk) = body.next().await {
                    buf.extend_from_slice(&chunk.map_err(StoreError::from)?);
                }
                Ok(buf.freeze())
            }
            Opened::Replaced => Err(replaced(key)),
        }
    }

    /// The line of `version` in the body, read line by line from a stored body (only the lines
    /// that name the version are parsed).
    pub(super) async fn line_of(
        &self,
        key: &IndexKey,
        entry: &IndexEntry,
        version: &str,
    ) -> Result<Option<IndexLine>, MirrorError> {
        let mut body = match self.body_of(key, entry).await? {
            Opened::Body(Blob::Bytes(b)) => return Ok(find_version(&b, version)),
            Opened::Body(Blob::Stream { body, .. }) => body,
            Opened::Replaced => return Err(replaced(key)),
        };
        let needle = format!("\"{version}\"");
        let mut partial = BytesMut::new();
        let check = |line: &[u8]| {
            line.windows(needle.len())
                .any(|w| w == needle.as_bytes())
                .then(|| find_version(line, version))
                .flatten()
        };
        while let Some(chunk) = body.next().await {
            partial.extend_from_slice(&chunk.map_err(StoreError::from)?);
            while let Some(end) = partial.iter().position(|&b| b == b'\n') {
                let line = partial.split_to(end + 1);
                if let Some(found) = check(&line) {
                    return Ok(Some(found));
                }
            }
        }
        Ok(check(&partial))
    }
}

fn replaced(key: &IndexKey) -> MirrorError {
    MirrorError::Store(format!(
        "index file {} was replaced while it was read; try again",
        key.index_path()
    ))
}
