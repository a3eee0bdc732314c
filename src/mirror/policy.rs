//! The registry's supply-chain policy on the pull-through path: index files served as the
//! policy edits them (curated requirements, hidden versions), and the licence of each crate
//! file read once and judged before it is served.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use super::index::{IndexBody, IndexEntry, IndexMeta, Lookup};
use super::{Mirror, MirrorError};
use crate::index::{LineEdit, edit_lines, etag_of};
use crate::names::{CrateName, Version};
use crate::policy::{Refusal, licenses};
use crate::store::{Blob, BlobKey, BlobStore, CrateKey, IndexKey, Licence, StoreError};

/// An index file as a policy edited it, for the copy and policy generation it came from.
pub(super) struct Edited {
    source_etag: Bytes,
    /// The copy's freshness, which the edit's record carries.
    fresh_until_ms: u64,
    generation: u64,
    /// Which versions were cached, when the edit pruned to them.
    cached_sig: Option<u64>,
    entry: Option<IndexEntry>,
}

impl Edited {
    /// What it holds in memory, roughly.
    pub(super) fn weight(&self) -> u32 {
        let body = match &self.entry {
            Some(IndexEntry {
                body: IndexBody::Memory(b),
                ..
            }) => b.len(),
            _ => 0,
        };
        u32::try_from(body + 256).unwrap_or(u32::MAX)
    }
}

/// An order-independent digest of a set of versions.
fn signature(set: &HashSet<String>) -> u64 {
    use std::hash::{Hash, Hasher};
    set.iter()
        .map(|v| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            v.hash(&mut h);
            h.finish()
        })
        .fold(set.len() as u64, |acc, h| {
            acc ^ h.rotate_left(7).wrapping_mul(31)
        })
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
    /// says so, and pruned to the versions whose crate file is cached when the mirror serves
    /// only those (offline, `serve_only_cached`). An edit is kept for as long as the copy, the
    /// policy's inputs and the set of cached versions stay.
    pub(crate) async fn served_index(
        self: &Arc<Self>,
        name: &CrateName,
    ) -> Result<Lookup, MirrorError> {
        self.policy.check_index(name)?;
        let entry = match self.index_file(name).await? {
            Lookup::Found(e) => e,
            Lookup::NotFound => return Ok(Lookup::NotFound),
        };
        // Read before the policy's inputs: an edit made from older inputs is never kept under
        // a newer generation.
        let generation = self.policy.generation();
        let edit = self.policy.index_edit(name);
        let cached: Option<HashSet<String>> = if self.serves_only_cached() {
            let versions = self.book.cached_versions(&self.name, &name.lower()).await?;
            Some(
                versions
                    .into_iter()
                    .map(|v| v.as_str().to_owned())
                    .collect(),
            )
        } else {
            None
        };
        if edit.is_none() && cached.is_none() {
            return Ok(Lookup::Found(entry));
        }
        let key = IndexKey::krate(&self.name, name);
        let cached_sig = cached.as_ref().map(signature);
        if let Some(e) = self.edited.get(&key)
            && e.source_etag == entry.meta.etag
            && e.fresh_until_ms == entry.meta.record.fresh_until_ms
            && e.generation == generation
            && e.cached_sig == cached_sig
        {
            return match e.entry.clone() {
                Some(entry) => Ok(Lookup::Found(entry)),
                None => Err(self.nothing_offered(name)),
            };
        }
        let body = self.body_bytes(&key, &entry).await?;
        let edited = edit_lines(&body, |vers, yanked| {
            if cached.as_ref().is_some_and(|c| !c.contains(vers)) {
                return LineEdit::Drop;
            }
            edit.as_ref().map_or(LineEdit::Keep, |e| e(vers, yanked))
        });
        let edited = match edited {
            None => Some(entry.clone()),
            // Every version was dropped: none is offered (curated) or cached.
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
                cached_sig,
                entry: edited.clone(),
            }),
        );
        match edited {
            Some(entry) => Ok(Lookup::Found(entry)),
            None => Err(self.nothing_offered(name)),
        }
    }

    /// Why an index file whose every version was left out is not served.
    fn nothing_offered(&self, name: &CrateName) -> MirrorError {
        if self.serves_only_cached() {
            MirrorError::NotFound(format!(
                "no version of `{name}` is cached in mirror `{}`, which serves only cached versions{}",
                self.name,
                if self.is_offline() {
                    " (it is offline)"
                } else {
                    ""
                }
            ))
        } else {
            MirrorError::NotFound(self.policy.not_offered(name))
        }
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
                // A licence that could not be read may be a passing read error: judged again
                // next time.
                if licence.unreadable.is_none() {
                    self.licence_verdicts.insert(key.clone(), why.clone());
                }
                why
            }
        };
        Ok(self.policy.apply_licence(name, version, why.as_deref())?)
    }

    /// The licence of a cached crate file: from its record, else read from the file. (Not
    /// written back into the record: eviction may remove the record meanwhile; the judgement
    /// is kept in memory instead.)
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
        Ok(licence)
    }
}
