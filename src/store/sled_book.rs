//! [`CacheBook`] on sled: one tree for index records, one for crate records, one for the
//! totals. Records are JSON, so fields can be added without a migration, and an entry and the
//! totals change in one transaction.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::book::{Curated, Kind, Pin, Scanned, SizeOnly};
use super::sled_meta::SledMeta;
use super::{BlobKey, CacheBook, CrateKey, CrateRecord, IndexKey, IndexRecord, StoreError, Totals};
use crate::names::{CrateName, RegistryName, Version};

const TOTALS_KEY: &[u8] = b"totals";

/// The totals are stored too, so that opening does not scan every entry (a scan of 200,000
/// entries took 0.6 s and left 55 MiB more RSS behind, measured with benches/bookkeeping.sh).
/// Its trees: `index`, `crates`, `stats` (the totals), `used` (when each file was last used:
/// `i` or `c` and the record's key → milliseconds, big-endian), `pins` (`registry/name` or
/// `registry/name/version` → nothing), `curated` (`registry/name` → the entry as JSON).
pub struct SledBook {
    meta: Arc<SledMeta>,
    /// A copy of the stored totals, for [`CacheBook::totals`] without I/O; its lock also
    /// serializes changes.
    totals: Arc<Mutex<Totals>>,
}

/// The stored totals; counted from the records when there are none.
fn load_totals(db: &sled::Db) -> Result<Totals, StoreError> {
    let index = db.open_tree("index").map_err(meta_err)?;
    let crates = db.open_tree("crates").map_err(meta_err)?;
    let stats = db.open_tree("stats").map_err(meta_err)?;
    let stored = stats
        .get(TOTALS_KEY)
        .map_err(meta_err)?
        .and_then(|v| serde_json::from_slice::<Totals>(&v).ok());
    if let Some(t) = stored {
        return Ok(t);
    }
    let mut t = Totals::default();
    for (tree, kind) in [(&index, Kind::Index), (&crates, Kind::Crate)] {
        for item in tree.iter() {
            let (_, v) = item.map_err(meta_err)?;
            t.adjust(kind, None, old_size(Some(v)));
        }
    }
    let v = serde_json::to_vec(&t).map_err(meta_err)?;
    stats.insert(TOTALS_KEY, v).map_err(meta_err)?;
    Ok(t)
}

fn meta_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Meta(e.to_string())
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Unreadable {
        key: String::from_utf8_lossy(key).into_owned(),
        why: e.to_string(),
    })
}

/// The size an old value counted for; an old value without one counts as absent.
fn old_size(old: Option<sled::IVec>) -> Option<u64> {
    old.and_then(|v| serde_json::from_slice::<SizeOnly>(&v).ok())
        .map(|s| s.size)
}

impl SledBook {
    /// Opens the database at `path` (see [`SledMeta::open`]) and the bookkeeping in it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::with_meta(SledMeta::open(path)?)
    }

    /// The bookkeeping in an open database. The totals are read from it; a folder without
    /// them (written by an older cratedock) is counted once and they are stored. After the
    /// database is reopened they are read again (what was not flushed is gone).
    pub fn with_meta(meta: Arc<SledMeta>) -> Result<Self, StoreError> {
        let totals = Arc::new(Mutex::new(load_totals(&meta.db()?)?));
        let reloaded = Arc::downgrade(&totals);
        meta.on_reopen(Box::new(move |db| {
            let Some(t) = reloaded.upgrade() else { return };
            match load_totals(db) {
                Ok(fresh) => *t.lock().expect("totals lock") = fresh,
                Err(e) => tracing::error!(
                    error = %e,
                    "cannot read the cache totals after reopening the metadata store; they may be off until a restart"
                ),
            }
        }));
        Ok(Self { meta, totals })
    }

    fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.meta.tree(name)
    }

    fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, StoreError> {
        match tree.get(key).map_err(meta_err)? {
            Some(v) => decode(key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Sets (`Some`) or removes (`None`) an entry and adjusts the stored totals, in one
    /// transaction.
    fn change<T: Serialize>(
        &self,
        tree: &sled::Tree,
        kind: Kind,
        key: &[u8],
        value: Option<(&T, u64)>,
    ) -> Result<(), StoreError> {
        let encoded = match value {
            Some((v, size)) => Some((serde_json::to_vec(v).map_err(meta_err)?, size)),
            None => None,
        };
        // Changes are serialized by the totals' lock, so the copy in memory is the stored
        // value and each change starts from the one before.
        let mut current = self.totals.lock().expect("totals lock");
        let used_key = used_key(kind, key);
        let result = (tree, &self.tree("stats")?, &self.tree("used")?).transaction(|(t, s, u)| {
            let old = match &encoded {
                Some((bytes, _)) => t.insert(key, bytes.as_slice())?,
                None => {
                    u.remove(used_key.as_slice())?;
                    t.remove(key)?
                }
            };
            let mut totals = *current;
            totals.adjust(kind, old_size(old), encoded.as_ref().map(|(_, size)| *size));
            let v = serde_json::to_vec(&totals)
                .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?;
            s.insert(TOTALS_KEY, v)?;
            Ok(totals)
        });
        match result {
            Ok(totals) => {
                *current = totals;
                Ok(())
            }
            Err(TransactionError::Abort(e)) => Err(StoreError::Meta(e)),
            Err(TransactionError::Storage(e)) => Err(meta_err(e)),
        }
    }
}

fn used_key(kind: Kind, record_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(record_key.len() + 1);
    k.push(match kind {
        Kind::Index => b'i',
        Kind::Crate => b'c',
    });
    k.extend_from_slice(record_key);
    k
}

fn pin_key(pin: &Pin) -> Vec<u8> {
    match &pin.version {
        Some(v) => format!("{}/{}/{v}", pin.registry, pin.name),
        None => format!("{}/{}", pin.registry, pin.name),
    }
    .into_bytes()
}

fn pin_of(raw: &[u8]) -> Option<Pin> {
    let mut parts = std::str::from_utf8(raw).ok()?.splitn(3, '/');
    let registry = RegistryName::new(parts.next()?).ok()?;
    let name = crate::names::CrateGlob::new(parts.next()?).ok()?;
    let version = match parts.next() {
        Some(v) => Some(Version::new(v).ok()?),
        None => None,
    };
    Some(Pin {
        registry,
        name,
        version,
    })
}

impl SledBook {
    /// Up to `limit` records of `tree` after the record key `after`; keys that name nothing
    /// (`parse` fails) are skipped.
    fn page<K, R: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        kind: Kind,
        after: Option<Vec<u8>>,
        limit: usize,
        parse: impl Fn(&[u8]) -> Option<K>,
    ) -> Result<Vec<Scanned<K, R>>, StoreError> {
        let range = match after {
            Some(a) => tree.range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => tree.iter(),
        };
        let used = self.tree("used")?;
        let mut out = Vec::new();
        for item in range {
            let (k, v) = item.map_err(meta_err)?;
            let Some(key) = parse(&k) else {
                tracing::warn!(record = %String::from_utf8_lossy(&k), "skipping a bookkeeping record with a malformed name");
                continue;
            };
            let used_ms = used
                .get(used_key(kind, &k))
                .map_err(meta_err)?
                .and_then(|u| <[u8; 8]>::try_from(u.as_ref()).ok())
                .map(u64::from_be_bytes);
            out.push(Scanned {
                key,
                record: decode(&k, &v).map_err(|e| e.to_string()),
                used_ms,
            });
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

// sled's reads and writes go to its page cache and log in memory (the log is written out by
// its own thread), so they run inline; only `flush` waits for the disk.
#[async_trait]
impl CacheBook for SledBook {
    async fn index(&self, key: &IndexKey) -> Result<Option<IndexRecord>, StoreError> {
        Self::get(&self.tree("index")?, &key.record_key())
    }

    async fn put_index(&self, key: &IndexKey, record: &IndexRecord) -> Result<(), StoreError> {
        let k = key.record_key();
        self.change(
            &self.tree("index")?,
            Kind::Index,
            &k,
            Some((record, record.size)),
        )
    }

    async fn remove_index(&self, key: &IndexKey) -> Result<(), StoreError> {
        let k = key.record_key();
        self.change::<IndexRecord>(&self.tree("index")?, Kind::Index, &k, None)
    }

    async fn krate(&self, key: &CrateKey) -> Result<Option<CrateRecord>, StoreError> {
        Self::get(&self.tree("crates")?, &key.record_key())
    }

    async fn put_crate(&self, key: &CrateKey, record: &CrateRecord) -> Result<(), StoreError> {
        let k = key.record_key();
        self.change(
            &self.tree("crates")?,
            Kind::Crate,
            &k,
            Some((record, record.size)),
        )
    }

    async fn remove_crate(&self, key: &CrateKey) -> Result<(), StoreError> {
        let k = key.record_key();
        self.change::<CrateRecord>(&self.tree("crates")?, Kind::Crate, &k, None)
    }

    fn totals(&self) -> Totals {
        *self.totals.lock().expect("totals lock")
    }

    async fn index_page(
        &self,
        after: Option<&IndexKey>,
        limit: usize,
    ) -> Result<Vec<Scanned<IndexKey, IndexRecord>>, StoreError> {
        let after = after.map(IndexKey::record_key);
        self.page(
            &self.tree("index")?,
            Kind::Index,
            after,
            limit,
            IndexKey::from_record_key,
        )
    }

    async fn crate_page(
        &self,
        after: Option<&CrateKey>,
        limit: usize,
    ) -> Result<Vec<Scanned<CrateKey, CrateRecord>>, StoreError> {
        let after = after.map(CrateKey::record_key);
        self.page(
            &self.tree("crates")?,
            Kind::Crate,
            after,
            limit,
            CrateKey::from_record_key,
        )
    }

    async fn touch(&self, used: &[(BlobKey, u64)]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (key, ms) in used {
            let (tree, kind, k) = match key {
                BlobKey::Index(k) => (self.tree("index")?, Kind::Index, k.record_key()),
                BlobKey::Crate(k) => (self.tree("crates")?, Kind::Crate, k.record_key()),
            };
            // A file evicted meanwhile keeps no trace.
            if tree.contains_key(&k).map_err(meta_err)? {
                batch.insert(used_key(kind, &k), &ms.to_be_bytes());
            }
        }
        self.tree("used")?.apply_batch(batch).map_err(meta_err)
    }

    async fn pins(&self) -> Result<Vec<Pin>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree("pins")?.iter() {
            let (k, _) = item.map_err(meta_err)?;
            out.extend(pin_of(&k));
        }
        Ok(out)
    }

    async fn set_pin(&self, pin: &Pin, on: bool) -> Result<bool, StoreError> {
        let k = pin_key(pin);
        let old = if on {
            self.tree("pins")?.insert(k, &[])
        } else {
            self.tree("pins")?.remove(k)
        };
        let changed = old.map_err(meta_err)?.is_some() != on;
        self.tree("pins")?.flush_async().await.map_err(meta_err)?;
        Ok(changed)
    }

    async fn cached_versions(
        &self,
        registry: &RegistryName,
        name: &CrateName,
    ) -> Result<Vec<Version>, StoreError> {
        let prefix = format!("{registry}/{name}/");
        let mut out = Vec::new();
        for item in self.tree("crates")?.scan_prefix(prefix.as_bytes()) {
            let (k, _) = item.map_err(meta_err)?;
            out.extend(CrateKey::from_record_key(&k).map(|k| k.version));
        }
        Ok(out)
    }

    async fn curated(&self) -> Result<Vec<Curated>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree("curated")?.iter() {
            let (k, v) = item.map_err(meta_err)?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    async fn set_curated(&self, entry: &Curated, on: bool) -> Result<bool, StoreError> {
        let k = format!("{}/{}", entry.registry, entry.key()).into_bytes();
        let tree = self.tree("curated")?;
        let changed = if on {
            let v = serde_json::to_vec(entry).map_err(meta_err)?;
            tree.insert(k, v.clone()).map_err(meta_err)?.as_deref() != Some(&v[..])
        } else {
            tree.remove(k).map_err(meta_err)?.is_some()
        };
        tree.flush_async().await.map_err(meta_err)?;
        Ok(changed)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.meta
            .db()?
            .flush_async()
            .await
            .map(|_| ())
            .map_err(meta_err)
    }
}

impl SledBook {
    /// Writes a raw value under an index record's key (tests: a record an older or broken
    /// writer left behind).
    #[cfg(test)]
    fn put_raw_index(&self, key: &IndexKey, raw: &[u8]) {
        self.tree("index")
            .unwrap()
            .insert(key.record_key(), raw)
            .unwrap();
    }
}

#[cfg(test)]
mod tests;
