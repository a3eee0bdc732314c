//! The registry's supply-chain policy on the pull-through path: index files served as the
//! policy edits them (curated requirements, hidden versions), and the licence of each crate
//! file read once and judged before it is served.

use std::sync::Arc;

use bytes::Bytes;

use super::index::{IndexBody, IndexEntry, IndexMeta, Lookup};
use super::{Mirror, MirrorError};
use crate::index::{edit_lines, etag_of};
use crate::names::{CrateName, Version};
use crate::policy::{Refusal, licenses};
use crate::store::{Blob, BlobKey, BlobStore, CrateKey, IndexKey, Licence, StoreError};

/// An index file as a policy edited it, for the copy and policy generation it came from.
pub(super) struct Edited {
    source_etag: Bytes,
    /// The copy's freshness, which the edit's record carries.
    fresh_until_ms: u64,
    generation: u64,
    entry: Option<IndexEntry>,
}

impl From<Refusal> for MirrorError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Denied(d) => MirrorError::Refused(d),
            Refusal::NotOffered(d) => MirrorError::NotFound(d),
        }
    }
}

impl Mirror {
    /// The index file of crate `name` as clients get it: the cached copy, edited when a policy
    /// says so (the edit is kept for as long as the copy and the policy's inputs stay).
    pub(crate) async fn served_index(
        self: &Arc<Self>,
        name: &CrateName,
    ) -> Result<Lookup, MirrorError> {
        self.policy.check_index(name)?;
        let entry = match self.index_file(name).await? {
            Lookup::Found(e) => e,
            Lookup::NotFound => return Ok(Lookup::NotFound),
        };
        let Some(edit) = self.policy.index_edit(name) else {
            return Ok(Lookup::Found(entry));
        };
        let key = IndexKey::krate(&self.name, name);
        let generation = self.policy.generation();
        if let Some(e) = self.edited.get(&key)
            && e.source_etag == entry.meta.etag
            && e.fresh_until_ms == entry.meta.record.fresh_until_ms
            && e.generation == generation
        {
            return Ok(e.entry.clone().map_or(Lookup::NotFound, Lookup::Found));
        }
        let body = self.body_bytes(&key, &entry).await?;
        let edited = match edit_lines(&body, edit) {
            None => Some(entry.clone()),
            // Every version was dropped: the curated list offers none of them.
            Some(lines) if lines.iter().all(u8::is_ascii_whitespace) => None,
            Some(lines) => {
                let mut record = entry.meta.record.clone();
                record.etag = etag_of(&lines);
                record.size = lines.len() as u64;
                Some(IndexEntry {
                    body: IndexBody::Memory(Bytes::from(lines)),
                    meta: IndexMeta::new(record),
                })
            }
        };
        self.edited.insert(
            key,
            Arc::new(Edited {
                source_etag: entry.meta.etag.clone(),
                fresh_until_ms: entry.meta.record.fresh_until_ms,
                generation,
                entry: edited.clone(),
            }),
        );
        Ok(edited.map_or(Lookup::NotFound, Lookup::Found))
    }

    /// The versions of crate `name` with whether each is yanked, as the upstream lists them
    /// (no versions for a crate it does not have).
    pub(crate) async fn versions(
        self: &Arc<Self>,
        name: &CrateName,
    ) -> Result<Option<Vec<(String, bool)>>, MirrorError> {
        let entry = match self.index_file(name).await {
            Ok(Lookup::Found(e)) => e,
            Ok(Lookup::NotFound) => return Ok(Some(Vec::new())),
            Err(e) if e.is_not_found() => return Ok(Some(Vec::new())),
            Err(e) => return Err(e),
        };
        let body = self
            .body_bytes(&IndexKey::krate(&self.name, name), &entry)
            .await?;
        Ok(Some(crate::index::versions(&body)))
    }

    /// Whether the upstream stands for crates.io.
    pub(crate) fn is_crates_io(&self) -> bool {
        self.cfg.is_crates_io()
    }

    /// Refuses a crate file whose licence the policy does not allow (or serves it with a
    /// warning). The judgement is kept per version: a licence never changes.
    pub(super) async fn licence_gate(
        &self,
        key: &CrateKey,
        name: &CrateName,
        version: &Version,
        bytes: Option<Bytes>,
    ) -> Result<(), MirrorError> {
        let why = match self.licence_verdicts.get(key) {
            Some(why) => why,
            None => {
                let licence = self.licence_of(key, bytes).await?;
                let why = self
                    .policy
                    .judge_licence(name.as_str(), version.as_str(), &licence);
                self.licence_verdicts.insert(key.clone(), why.clone());
                why
            }
        };
        Ok(self.policy.apply_licence(name, version, why.as_deref())?)
    }

    /// The licence of a cached crate file: from its record, else read from the file (and then
    /// kept in the record).
    async fn licence_of(
        &self,
        key: &CrateKey,
        bytes: Option<Bytes>,
    ) -> Result<Licence, MirrorError> {
        let record = match self.book.krate(key).await {
            Ok(r) => r,
            Err(StoreError::Unreadable { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(l) = record.as_ref().and_then(|r| r.license.clone()) {
            return Ok(l);
        }
        let blob = match bytes {
            Some(b) => Blob::Bytes(b),
            None => self
                .blobs
                .open(&BlobKey::Crate(key.clone()))
                .await?
                .ok_or_else(|| {
                    MirrorError::Store(format!("crate {} {} vanished", key.name, key.version))
                })?,
        };
        let licence = tokio::task::spawn_blocking(move || match blob {
            Blob::Bytes(b) => licenses::read(&b[..]),
            Blob::Stream { body, .. } => {
                let reader = tokio_util::io::StreamReader::new(body);
                licenses::read(tokio_util::io::SyncIoBridge::new(reader))
            }
        })
        .await
        .map_err(|e| MirrorError::Store(format!("the licence reading task failed: {e}")))?;
        if let Some(mut r) = record {
            r.license = Some(licence.clone());
            if let Err(e) = self.book.put_crate(key, &r).await {
                tracing::warn!(registry = %self.name, error = %e, "cannot keep a crate's licence in its record");
            }
        }
        Ok(licence)
    }
}
