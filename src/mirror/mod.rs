//! The pull-through path of one mirror registry: index files and crate files.
//!
//! The rules this module keeps:
//! - index files: memory → disk → upstream; freshness from the upstream's caching headers (or
//!   the configured TTL), conditional revalidation, stale-while-revalidate, stale-if-error, a
//!   short negative cache of "no such crate", and a "not found" for a file cratedock holds
//!   taken as a removal only once it outlasts the negative TTL;
//! - crate files: hashed as they stream in from the upstream, and stored only when the SHA-256
//!   equals the index's `cksum`; clients follow the download as it arrives (see [`tee`]) but
//!   never get the last byte of a file that fails the check;
//! - new files are answered from memory first and written to the stores in the tail of their
//!   flight, off the client's path;
//! - concurrent misses of one file share one upstream request ([`coalesce`]), and waiters give
//!   up after the configured time instead of hanging on a stuck leader;
//! - a record that cannot be read, or whose file is gone, is a miss: logged, counted, dropped.

mod body;
mod coalesce;
mod crates;
mod index;
mod policy;
mod prefetch;
mod tee;

pub(crate) use body::Opened;
pub(crate) use crates::CrateBody;
pub(crate) use index::{IndexBody, IndexEntry, IndexMeta, Lookup};
pub(crate) use prefetch::{PrefetchReport, PrefetchRequest};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::cache::Keeper;
use crate::config::MirrorConfig;
use crate::metrics::Metrics;
use crate::names::RegistryName;
use crate::store::{BlobKey, CacheBook, CrateKey, CrateRecord, IndexKey, MemoryTier, StoreError};
use crate::upstream::{Blame, Upstream, UpstreamError};
use coalesce::Coalescer;
use tee::Download;

#[derive(Debug, Clone, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("{0}")]
    NotFound(String),
    #[error(
        "timed out after {waited_ms} ms waiting for another request's upstream fetch of {what}"
    )]
    WaitTimeout { what: String, waited_ms: u64 },
    /// A policy refuses it (403).
    #[error("{0}")]
    Refused(String),
    /// The mirror is offline and does not hold it (404 to clients; "cannot tell" to checks
    /// that must know whether the upstream has it).
    #[error("{0}")]
    Offline(String),
    /// A failure of cratedock's own storage; the text is for the log, not for clients.
    #[error("storage error: {0}")]
    Store(String),
}

impl From<StoreError> for MirrorError {
    fn from(e: StoreError) -> Self {
        MirrorError::Store(e.to_string())
    }
}

impl MirrorError {
    /// Whether the answer is "no such crate" (a reserved name included).
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, MirrorError::NotFound(_)) || self.is_upstream_not_found()
    }

    /// Whether the upstream answered "not found" for a file cratedock holds (see
    /// `Mirror::missing_is_a_hiccup`).
    fn is_upstream_not_found(&self) -> bool {
        matches!(self, MirrorError::Upstream(e) if e.failure == crate::upstream::Failure::Status(404))
    }

    /// Whether a stale copy may stand in for the answer (the upstream, not the request or
    /// cratedock, failed).
    fn upstream_failed(&self) -> bool {
        match self {
            MirrorError::Upstream(e) => e.blame() != Blame::Limit,
            MirrorError::WaitTimeout { .. } => true,
            _ => false,
        }
    }
}

type IndexFlight = Result<Lookup, MirrorError>;
/// A crate flight yields the bytes when they are small enough for memory, else `None`: the
/// file is in the blob store.
type CrateFlight = Result<Option<Bytes>, MirrorError>;

pub(crate) struct Mirror {
    name: RegistryName,
    cfg: MirrorConfig,
    upstream: Arc<dyn Upstream>,
    /// Blobs; an index file's body carries its [`IndexMeta`] in memory.
    blobs: MemoryTier<Arc<IndexMeta>>,
    book: Arc<dyn CacheBook>,
    negative: moka::sync::Cache<IndexKey, ()>,
    index_flights: Coalescer<IndexKey, IndexFlight>,
    crate_flights: Coalescer<CrateKey, CrateFlight, Arc<Download>>,
    /// Crate files whose download just failed its checksum: refused at once for a while, so
    /// that cargo's retry gets a clear error instead of another cut-off transfer.
    bad_checksums: moka::sync::Cache<CrateKey, MirrorError>,
    metrics: Arc<Metrics>,
    coalesce_wait: Duration,
    max_crate_bytes: u64,
    keeper: Arc<Keeper>,
    /// KiB of downloads that may be followed in memory while the disk cannot stage them,
    /// shared by every mirror.
    pass_through: Arc<tokio::sync::Semaphore>,
    policy: Arc<crate::policy::Policy>,
    /// Index files as the policy edits them.
    edited: moka::sync::Cache<IndexKey, Arc<policy::Edited>>,
    /// Why a version's licence is against the policy (`None`: it is not).
    licence_verdicts: moka::sync::Cache<CrateKey, Option<Arc<str>>>,
    /// Never contact the upstream; serve what is cached (switchable at run time).
    offline: std::sync::atomic::AtomicBool,
}

/// What a mirror is built from.
pub(crate) struct MirrorParts {
    pub name: RegistryName,
    pub cfg: MirrorConfig,
    pub upstream: Arc<dyn Upstream>,
    pub blobs: MemoryTier<Arc<IndexMeta>>,
    pub book: Arc<dyn CacheBook>,
    pub metrics: Arc<Metrics>,
    pub coalesce_wait: Duration,
    pub max_crate_bytes: u64,
    pub keeper: Arc<Keeper>,
    pub pass_through: Arc<tokio::sync::Semaphore>,
    pub policy: Arc<crate::policy::Policy>,
}

/// A record to write after its blob, in a flight's tail.
enum Record {
    Index(IndexKey, Arc<IndexMeta>),
    Crate(CrateKey, CrateRecord),
}

impl Mirror {
    pub(crate) fn new(p: MirrorParts) -> Self {
        let ttl = Duration::from_millis(p.cfg.negative_ttl_ms.max(1));
        let offline = p.cfg.offline;
        Self {
            negative: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            bad_checksums: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            name: p.name,
            cfg: p.cfg,
            upstream: p.upstream,
            blobs: p.blobs,
            book: p.book,
            index_flights: Coalescer::default(),
            crate_flights: Coalescer::default(),
            metrics: p.metrics,
            coalesce_wait: p.coalesce_wait,
            max_crate_bytes: p.max_crate_bytes,
            keeper: p.keeper,
            pass_through: p.pass_through,
            policy: p.policy,
            // Whole bodies: bounded by their bytes.
            edited: moka::sync::Cache::builder()
                .max_capacity(64 * 1024 * 1024)
                .weigher(|_: &IndexKey, e: &Arc<policy::Edited>| e.weight())
                .build(),
            licence_verdicts: moka::sync::Cache::new(100_000),
            offline: std::sync::atomic::AtomicBool::new(offline),
        }
    }

    pub(crate) fn name(&self) -> &RegistryName {
        &self.name
    }

    pub(crate) fn policy(&self) -> &Arc<crate::policy::Policy> {
        &self.policy
    }

    /// Whether the mirror is offline: the upstream is never contacted.
    pub(crate) fn is_offline(&self) -> bool {
        self.offline.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Switches offline mode; returns the previous state.
    pub(crate) fn set_offline(&self, on: bool) -> bool {
        let was = self.offline.swap(on, std::sync::atomic::Ordering::AcqRel);
        self.metrics
            .mirror_offline
            .with_label_values(&[self.name.as_str()])
            .set(i64::from(on));
        was
    }

    /// Whether index files are served with only the versions whose crate file is cached.
    pub(crate) fn serves_only_cached(&self) -> bool {
        self.cfg.serve_only_cached || self.is_offline()
    }

    /// The error for a file that an offline mirror does not hold.
    fn offline_miss(&self, what: &str) -> MirrorError {
        MirrorError::Offline(format!(
            "{what} is not cached, and mirror `{}` is offline (it does not contact its upstream; prefetch what builds need, or switch it online with `cratedock admin offline off --registry {}`)",
            self.name, self.name
        ))
    }

    /// Fetches of index files and of crate files under way (with the disk writes after them).
    pub(crate) fn fetches_in_flight(&self) -> (usize, usize) {
        (self.index_flights.len(), self.crate_flights.len())
    }

    /// Waits for a flight, at most `wait`.
    async fn wait<T: Clone>(
        &self,
        flight: coalesce::Flight<Result<T, MirrorError>>,
        wait: Duration,
        what: impl Fn() -> String,
    ) -> Result<T, MirrorError> {
        match tokio::time::timeout(wait, flight).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(MirrorError::Store(format!(
                "the fetch of {} was interrupted",
                what()
            ))),
            Err(_) => Err(MirrorError::WaitTimeout {
                what: what(),
                waited_ms: wait.as_millis() as u64,
            }),
        }
    }

    /// Writes a file that was answered from memory (where it stays) to the blob store below,
    /// then its record. It runs in the tail of the file's flight, so writes of one file never
    /// overlap. A failure only costs the stored copy: the memory tier has the file, and nothing
    /// half-written stays.
    async fn persist(self: Arc<Self>, key: BlobKey, bytes: Bytes, record: Record) {
        let result = async {
            // Held until the record is counted.
            let _room = self.keeper.make_room(bytes.len() as u64).await;
            self.blobs.below().put(&key, bytes).await?;
            match &record {
                Record::Index(k, m) => self.book.put_index(k, &m.record).await,
                Record::Crate(k, r) => self.book.put_crate(k, r).await,
            }
        }
        .await;
        self.keeper.stored();
        self.metrics.disk_write("cache", result.is_ok());
        if let Err(e) = result {
            tracing::error!(
                registry = %self.name, file = %key.rel_path().display(), error = %e,
                "cannot store a file"
            );
            self.metrics
                .store_failures
                .with_label_values(&[self.name.as_str()])
                .inc();
        }
    }

    /// Counts a cache result, and notes it on the request's span for the access log.
    fn cached(&self, kind: &str, tier: &'static str, result: &'static str) {
        self.metrics.cache(self.name.as_str(), kind, tier, result);
        let span = tracing::Span::current();
        span.record("tier", tier);
        span.record("cache", result);
    }

    /// Logs and counts a record that cannot be read; the caller drops it and takes a miss.
    fn unreadable(&self, what: &str, error: &StoreError) {
        tracing::warn!(
            registry = %self.name, file = what, error = %error,
            "unreadable bookkeeping record; treated as a miss"
        );
        self.metrics
            .unreadable_records
            .with_label_values(&[self.name.as_str()])
            .inc();
    }
}
