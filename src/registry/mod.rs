//! The private registry: crates published to cratedock itself. Publish (the frame, the
//! tarball, the checks), yank and unyank, owners, search, and an admin's delete.
//!
//! The rules this module keeps:
//! - the index files are the source of truth, one per crate, rewritten whole (temp file, fsync,
//!   rename) under the crate's lock; a `.crate` file is durable before the index line that
//!   names it, so a crash never leaves a line without its file;
//! - a new version is visible to the very next index request: the in-memory copy of an index
//!   file is replaced under the same lock that writes it, misses are filled under that lock
//!   too, and "no such crate" is never remembered;
//! - every refusal leaves the index, the files and the records as they were, and says why;
//! - every change is in the audit log.

mod audit;
mod checks;
pub(crate) mod frame;
mod line;
mod manage;
mod manifest;
#[cfg(test)]
mod properties;
mod publish;
mod search;

pub(crate) use frame::{MAX_JSON_BYTES, Upload};
pub(crate) use manage::OwnersChange;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::auth::Identity;
use crate::auth::admin::Context;
use std::collections::BTreeMap;

use crate::config::{PrivateConfig, RegistryConfig};
use crate::metrics::Metrics;
use crate::mirror::Mirror;
use crate::names::{CrateName, RegistryName, Version};
use crate::store::{BlobKey, BlobStore, CrateKey, IndexKey, MetaStore, StoreError};

/// The name and version that the manifest inside a `.crate` gives (for `admin import`).
pub(crate) fn manifest_of(tarball: &[u8]) -> Result<(String, String), RegistryError> {
    let unpacked = crate::tarball::inspect(tarball, 4 << 30)
        .map_err(|e| RegistryError::invalid("tarball", e.to_string()))?;
    let m = manifest::parse(&unpacked.manifest)
        .map_err(|e| RegistryError::invalid("manifest", e.to_string()))?;
    Ok((m.name, m.version))
}

/// How a refusal or failure maps to HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    BadRequest,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    /// A check could not be made now (an upstream is unreachable); a retry may pass.
    Unavailable,
    Internal,
}

/// Why a registry operation did not happen. `reason` is a fixed word for metrics.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub(crate) struct RegistryError {
    pub(crate) status: Status,
    pub(crate) reason: &'static str,
    pub(crate) detail: String,
}

impl RegistryError {
    fn new(status: Status, reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            detail: detail.into(),
        }
    }
    pub(crate) fn invalid(reason: &'static str, detail: impl Into<String>) -> Self {
        Self::new(Status::BadRequest, reason, detail)
    }
    pub(crate) fn forbidden(reason: &'static str, detail: impl Into<String>) -> Self {
        Self::new(Status::Forbidden, reason, detail)
    }
    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::new(Status::NotFound, "not_found", detail)
    }
    pub(crate) fn conflict(reason: &'static str, detail: impl Into<String>) -> Self {
        Self::new(Status::Conflict, reason, detail)
    }
    pub(crate) fn too_large(detail: impl Into<String>) -> Self {
        Self::new(Status::TooLarge, "too_large", detail)
    }
    pub(crate) fn unavailable(reason: &'static str, detail: impl Into<String>) -> Self {
        Self::new(Status::Unavailable, reason, detail)
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        Self::new(Status::Internal, "store", e.to_string())
    }
}

/// Who asks, and from where (for the audit log).
pub(crate) struct Caller {
    pub(crate) identity: Arc<Identity>,
    pub(crate) ctx: Context,
}

/// An index file as served: its body and strong ETag.
#[derive(Debug)]
pub(crate) struct IndexDoc {
    pub(crate) body: Bytes,
    pub(crate) etag: Bytes,
}

impl IndexDoc {
    fn new(body: Bytes) -> Self {
        let digest = Sha256::digest(&body);
        let mut etag = String::with_capacity(34);
        etag.push('"');
        for b in &digest[..16] {
            etag.push_str(&format!("{b:02x}"));
        }
        etag.push('"');
        Self {
            body,
            etag: Bytes::from(etag),
        }
    }
}

/// Crates share this many locks; two names cargo treats as one always share one.
const LOCK_STRIPES: usize = 64;

/// What a private registry is built from.
pub(crate) struct PrivateParts {
    pub(crate) name: RegistryName,
    pub(crate) cfg: PrivateConfig,
    /// Crate files (the memory tier over the disk).
    pub(crate) blobs: Arc<dyn BlobStore>,
    /// Index files: the disk itself (this module keeps its own copies in memory).
    pub(crate) disk: Arc<dyn BlobStore>,
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) metrics: Arc<Metrics>,
    /// Mirrors whose upstreams a new name is checked against (dependency confusion).
    pub(crate) mirrors: Vec<Arc<Mirror>>,
    /// Registries the crates here may depend on (`None`: every mirror), resolved: registry
    /// names, index URLs (compared by `url_key`), and whether crates.io is among them.
    pub(crate) allowed: Allowed,
    /// Every registry name of the configuration.
    pub(crate) registries: Vec<String>,
    /// The configured public base URL, if any.
    pub(crate) public_url: Option<String>,
    pub(crate) memory_bytes: u64,
    pub(crate) policy: Arc<crate::policy::Policy>,
}

/// The dependency registries a private registry allows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Allowed {
    pub(crate) registries: Vec<String>,
    /// Index URLs, as `checks::url_key` spells them.
    pub(crate) urls: Vec<String>,
    pub(crate) crates_io: bool,
}

impl Allowed {
    /// What `cfg` allows among `registries` (absent list: every mirror).
    pub(crate) fn resolve(
        cfg: &PrivateConfig,
        registries: &BTreeMap<String, RegistryConfig>,
    ) -> Self {
        let listed: Vec<String> = match &cfg.dependency_registries {
            Some(list) => list.clone(),
            None => registries
                .iter()
                .filter(|(_, r)| matches!(r, RegistryConfig::Mirror(_)))
                .map(|(n, _)| n.clone())
                .collect(),
        };
        let mut out = Self::default();
        for entry in listed {
            match registries.get(&entry) {
                Some(RegistryConfig::Mirror(m)) => {
                    // A mirror stands for its upstream: dependencies recorded with the
                    // upstream's own URL (or as crates.io's, for a crates.io mirror) pass too.
                    out.crates_io |= m.is_crates_io();
                    out.urls.push(checks::url_key(&m.upstream));
                    out.registries.push(entry);
                }
                Some(RegistryConfig::Private(_)) => out.registries.push(entry),
                None => out.urls.push(checks::url_key(&entry)),
            }
        }
        out
    }
}

pub(crate) struct Private {
    name: RegistryName,
    cfg: PrivateConfig,
    blobs: Arc<dyn BlobStore>,
    disk: Arc<dyn BlobStore>,
    meta: Arc<dyn MetaStore>,
    metrics: Arc<Metrics>,
    mirrors: Vec<Arc<Mirror>>,
    allowed: Allowed,
    registries: Vec<String>,
    public_url: Option<String>,
    cache: moka::sync::Cache<CrateName, Arc<IndexDoc>>,
    locks: Box<[tokio::sync::Mutex<()>]>,
    stored_bytes: AtomicU64,
    /// Publishes being received and checked (each holds its upload in memory).
    uploads: Arc<tokio::sync::Semaphore>,
    policy: Arc<crate::policy::Policy>,
}

impl Private {
    pub(crate) fn new(p: PrivateParts) -> Self {
        let uploads = Arc::new(tokio::sync::Semaphore::new(
            p.cfg.max_concurrent_publishes as usize,
        ));
        let cache = moka::sync::Cache::builder()
            .max_capacity(p.memory_bytes.max(1))
            .weigher(|_: &CrateName, d: &Arc<IndexDoc>| {
                u32::try_from(d.body.len() + 128).unwrap_or(u32::MAX)
            })
            .build();
        Self {
            name: p.name,
            cfg: p.cfg,
            blobs: p.blobs,
            disk: p.disk,
            meta: p.meta,
            metrics: p.metrics,
            mirrors: p.mirrors,
            allowed: p.allowed,
            registries: p.registries,
            public_url: p.public_url,
            cache,
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            stored_bytes: AtomicU64::new(0),
            uploads,
            policy: p.policy,
        }
    }

    pub(crate) fn policy(&self) -> &Arc<crate::policy::Policy> {
        &self.policy
    }

    /// Counts the bytes of the crate files this registry holds (at start).
    pub(crate) async fn recount(&self) -> Result<(), StoreError> {
        let stored: u64 = self
            .meta
            .packages(self.name.as_str())
            .await?
            .iter()
            .map(|r| r.stored_bytes())
            .sum();
        self.stored_bytes.store(stored, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn name(&self) -> &RegistryName {
        &self.name
    }

    /// Bytes of the crate files this registry holds.
    pub(crate) fn stored_bytes(&self) -> u64 {
        self.stored_bytes.load(Ordering::Relaxed)
    }

    /// The lock of crate `name` (and of every spelling cargo treats as the same name).
    fn lock(&self, name: &CrateName) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.canonical().hash(&mut h);
        &self.locks[(h.finish() as usize) % self.locks.len()]
    }

    fn index_key(&self, name: &CrateName) -> BlobKey {
        BlobKey::Index(IndexKey::krate(&self.name, name))
    }

    fn crate_key(&self, name: &CrateName, version: &Version) -> BlobKey {
        BlobKey::Crate(CrateKey::new(&self.name, name, version))
    }

    /// The index file of `name` (any case), when the crate exists.
    pub(crate) async fn index_file(
        &self,
        name: &CrateName,
    ) -> Result<Option<Arc<IndexDoc>>, StoreError> {
        let lower = name.lower();
        if let Some(doc) = self.cache.get(&lower) {
            return Ok(Some(doc));
        }
        let _held = self.lock(name).lock().await;
        self.load(&lower).await
    }

    /// The index file read from the disk into memory; call with the crate's lock held.
    async fn load(&self, lower: &CrateName) -> Result<Option<Arc<IndexDoc>>, StoreError> {
        if let Some(doc) = self.cache.get(lower) {
            return Ok(Some(doc));
        }
        match self.disk.get(&self.index_key(lower)).await? {
            Some(body) => {
                let doc = Arc::new(IndexDoc::new(body));
                self.cache.insert(lower.clone(), doc.clone());
                Ok(Some(doc))
            }
            None => Ok(None),
        }
    }

    /// Replaces the index file of `lower` (removes it when `body` is empty); call with the
    /// crate's lock held.
    async fn store_index(&self, lower: &CrateName, body: Vec<u8>) -> Result<(), StoreError> {
        let key = self.index_key(lower);
        if body.is_empty() {
            self.disk.delete(&key).await?;
            self.cache.invalidate(lower);
            return Ok(());
        }
        let body = Bytes::from(body);
        // Forget first: if the write fails half-way, the next read goes to the disk.
        self.cache.invalidate(lower);
        self.disk.put(&key, body.clone()).await?;
        self.cache
            .insert(lower.clone(), Arc::new(IndexDoc::new(body)));
        Ok(())
    }

    /// A crate file, when its version is in the index.
    pub(crate) async fn crate_file(
        &self,
        name: &CrateName,
        version: &Version,
    ) -> Result<Option<crate::store::Blob>, StoreError> {
        let Some(doc) = self.index_file(name).await? else {
            return Ok(None);
        };
        if crate::index::find_version(&doc.body, version.as_str()).is_none() {
            return Ok(None);
        }
        self.blobs.open(&self.crate_key(name, version)).await
    }

    fn count(&self, outcome: Result<(), &RegistryError>) {
        let (result, reason) = match outcome {
            Ok(()) => ("ok", "ok"),
            Err(e) => ("refused", e.reason),
        };
        match reason {
            "ok" => self.metrics.disk_write("registry", true),
            "store" => self.metrics.disk_write("registry", false),
            _ => {}
        }
        self.metrics
            .publishes
            .with_label_values(&[self.name.as_str(), result, reason])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MirrorConfig;

    #[test]
    fn a_mirror_allowed_as_a_dependency_registry_stands_for_its_upstream() {
        let mut registries = BTreeMap::new();
        let crates_io = MirrorConfig::new("https://index.crates.io/");
        let corp = MirrorConfig::new("https://registry.corp.example/index/");
        registries.insert("crates-io".into(), RegistryConfig::Mirror(crates_io));
        registries.insert("corp".into(), RegistryConfig::Mirror(corp));
        registries.insert(
            "internal".into(),
            RegistryConfig::Private(PrivateConfig::default()),
        );
        // Absent list: every mirror.
        let all = Allowed::resolve(&PrivateConfig::default(), &registries);
        assert!(all.crates_io);
        assert!(all.urls.contains(&checks::url_key(
            "sparse+https://registry.corp.example/index/"
        )));
        let only_corp = PrivateConfig {
            dependency_registries: Some(vec!["corp".into()]),
            ..PrivateConfig::default()
        };
        let some = Allowed::resolve(&only_corp, &registries);
        assert!(!some.crates_io, "crates.io is not among them");
        assert_eq!(some.registries, ["corp"]);
    }
}
