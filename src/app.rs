//! The `App` value: it owns the stores, caches, upstream clients and metrics, and hands them
//! down. Nothing in cratedock is global; tests and benches build the same `App` with other
//! parts (an in-memory bookkeeping, say).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::auth::Auth;
use crate::cache::{Keeper, Limit};
use crate::config::{Config, RegistryConfig};
use crate::metrics::Metrics;
use crate::mirror::IndexMeta;
use crate::mirror::{Mirror, MirrorParts};
use crate::names::RegistryName;
use crate::net::Readiness;
use crate::policy::{AdvisorySource, Curation, Policy};
use crate::registry::{Allowed, Private, PrivateParts};
use crate::store::{
    AccountStore, BlobStore, CacheBook, FsBlobStore, MemoryTier, MetaStore, SledAccounts, SledBook,
    SledMeta,
};
use crate::upstream::{HttpUpstream, system_roots};

/// Fails with a message that says so when `dir` cannot be written (sled's own error would be
/// read as a lock held by another process).
pub fn writable(dir: &std::path::Path) -> anyhow::Result<()> {
    probe_write(dir).with_context(|| {
        format!(
            "the data folder {} is not writable by this process; give its user write access or set storage.data_dir",
            dir.display()
        )
    })
}

/// Writes some bytes to a file in `dir`, synced, and removes it (on a full disk an empty file
/// can still be created).
fn probe_write(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".write-check-{}-{n}", std::process::id()));
    let result = std::fs::File::create(&probe)
        .and_then(|mut f| f.write_all(&[0u8; 65536]).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::remove_file(&probe));
    let _ = std::fs::remove_file(&probe);
    result
}

/// Whether the data folder can be used, without creating it: an existing folder must be
/// writable; a missing one must be creatable (its nearest existing parent writable).
pub fn data_folder_usable(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return writable(dir);
    }
    anyhow::ensure!(
        !dir.exists(),
        "storage.data_dir {} exists and is not a folder",
        dir.display()
    );
    let absolute = std::path::absolute(dir)?;
    let parent = absolute
        .ancestors()
        .skip(1)
        .find(|p| p.exists())
        .context("no parent folder of storage.data_dir exists")?;
    anyhow::ensure!(
        parent.is_dir(),
        "storage.data_dir {} cannot be created: {} is not a folder",
        dir.display(),
        parent.display()
    );
    probe_write(parent).with_context(|| {
        format!(
            "storage.data_dir {} cannot be created: {} is not writable by this process",
            dir.display(),
            parent.display()
        )
    })
}

/// Registry changes running in their own tasks (see `http::registry`), which shutdown waits for.
#[derive(Debug, Default)]
struct InFlight(std::sync::atomic::AtomicUsize);

/// One change in flight; dropping it ends it.
pub struct InFlightGuard(Arc<App>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0
            .changes
            .0
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

pub struct App {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub auth: Arc<Auth>,
    changes: InFlight,
    mirrors: BTreeMap<String, Arc<Mirror>>,
    privates: BTreeMap<String, Arc<Private>>,
    blobs: MemoryTier<Arc<IndexMeta>>,
    book: Arc<dyn CacheBook>,
    keeper: Arc<Keeper>,
    /// Checks run through the admin API.
    pub jobs: crate::cache::jobs::Jobs,
    advisories: Arc<AdvisorySource>,
    curation: Arc<Curation>,
    /// The private registries' records.
    packages: Arc<dyn MetaStore>,
}

/// The HTTP client of `advisories.url`, when it is set.
fn advisory_client(
    cfg: &crate::config::AdvisoriesConfig,
    roots: &rustls::RootCertStore,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<HttpUpstream>> {
    let Some(url) = &cfg.url else {
        return Ok(None);
    };
    let mut m = crate::config::MirrorConfig::new(url);
    m.ca_bundle = cfg.ca_bundle.clone();
    m.max_connections = 2;
    let name = RegistryName::new("advisories")?;
    HttpUpstream::new(&name, &m, roots, metrics.clone())
        .map(Some)
        .context("advisories.url")
}

impl App {
    /// Opens the data folder (bookkeeping and accounts in sled under `meta/`, blobs in files)
    /// and builds every registry.
    pub fn open(config: Config) -> anyhow::Result<Arc<Self>> {
        let dir = &config.storage.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data folder {}", dir.display()))?;
        writable(dir)?;
        let meta = SledMeta::open(&dir.join("meta"))?;
        let book = SledBook::with_meta(meta.clone())?;
        let accounts = SledAccounts::with_meta(meta)?;
        Self::with_stores(config, Arc::new(book), Arc::new(accounts))
    }

    /// Builds the app over given metadata stores (tests and benches use in-memory or
    /// temporary ones).
    pub fn with_stores(
        config: Config,
        book: Arc<dyn CacheBook>,
        meta: Arc<dyn MetaStore>,
    ) -> anyhow::Result<Arc<Self>> {
        let dir = &config.storage.data_dir;
        let fs: Arc<dyn BlobStore> = Arc::new(
            FsBlobStore::open(dir)
                .with_context(|| format!("cannot use the data folder {}", dir.display()))?,
        );
        let metrics = Arc::new(Metrics::new());
        let blobs: MemoryTier<Arc<IndexMeta>> = MemoryTier::new(
            fs,
            config.cache.memory_max_bytes,
            config.cache.memory_max_item_bytes,
        );
        let needs_roots = config.registries.values().any(|r| match r {
            RegistryConfig::Mirror(m) => m.upstream.starts_with("https://") && m.system_roots,
            RegistryConfig::Private(_) => false,
        }) || config
            .advisories
            .url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        let roots = if needs_roots {
            system_roots()
        } else {
            rustls::RootCertStore::empty()
        };
        let fs_below: Arc<dyn BlobStore> = Arc::new(blobs.clone());
        let c = &config.cache;
        let mirror_names = config
            .registries
            .iter()
            .filter(|(_, r)| matches!(r, RegistryConfig::Mirror(_)))
            .map(|(n, _)| RegistryName::new(n))
            .collect::<Result<Vec<_>, _>>()?;
        let keeper = Arc::new(Keeper::new(
            book.clone(),
            fs_below.clone(),
            Limit::new(c.disk_max_bytes, c.evict_high_percent, c.evict_low_percent),
            mirror_names,
            metrics.clone(),
        ));
        // While the disk cannot stage downloads, they are followed in memory, within the memory
        // tier's size in all.
        let pass_through = Arc::new(tokio::sync::Semaphore::new(
            (c.memory_max_bytes / 1024).min(u32::MAX as u64) as usize,
        ));
        let advisories = Arc::new(AdvisorySource::new(
            config.advisories.clone(),
            dir,
            advisory_client(&config.advisories, &roots, &metrics)?,
            metrics.clone(),
        ));
        let curation: Arc<Curation> = Arc::default();
        let policy_of = |name: &RegistryName, cfg: &RegistryConfig| {
            Arc::new(Policy::new(
                name,
                cfg,
                advisories.clone(),
                curation.clone(),
                metrics.clone(),
            ))
        };
        let mut mirrors = BTreeMap::new();
        for (name, registry) in &config.registries {
            let RegistryConfig::Mirror(cfg) = registry else {
                continue;
            };
            let name = RegistryName::new(name)?;
            let policy = policy_of(&name, registry);
            let upstream = HttpUpstream::new(&name, cfg, &roots, metrics.clone())?;
            let mirror = Mirror::new(MirrorParts {
                name: name.clone(),
                cfg: cfg.clone(),
                upstream: Arc::new(upstream),
                blobs: blobs.clone(),
                book: book.clone(),
                metrics: metrics.clone(),
                coalesce_wait: Duration::from_millis(config.cache.coalesce_wait_ms),
                max_crate_bytes: config.cache.max_crate_bytes,
                keeper: keeper.clone(),
                pass_through: pass_through.clone(),
                policy,
            });
            mirror.set_offline(cfg.offline);
            mirrors.insert(name.to_string(), Arc::new(mirror));
        }
        let mut privates = BTreeMap::new();
        for (name, registry) in &config.registries {
            let RegistryConfig::Private(cfg) = registry else {
                continue;
            };
            let name = RegistryName::new(name)?;
            let private = Private::new(PrivateParts {
                policy: policy_of(&name, registry),
                name: name.clone(),
                cfg: cfg.clone(),
                blobs: fs_below.clone(),
                disk: blobs.below_arc(),
                meta: meta.clone(),
                metrics: metrics.clone(),
                mirrors: mirrors.values().cloned().collect(),
                allowed: Allowed::resolve(cfg, &config.registries),
                registries: config.registries.keys().cloned().collect(),
                public_url: config.public_url().map(str::to_owned),
                memory_bytes: config.cache.memory_max_bytes / 4,
            });
            privates.insert(name.to_string(), Arc::new(private));
        }
        let packages = meta.clone();
        let accounts: Arc<dyn AccountStore> = meta;
        let auth = Arc::new(Auth::new(
            accounts,
            config.registries.keys().cloned().collect(),
            config.auth.identity_cache_entries,
            metrics.clone(),
        ));
        Ok(Arc::new(Self {
            config,
            metrics,
            readiness: Arc::default(),
            auth,
            changes: InFlight::default(),
            mirrors,
            privates,
            blobs,
            book,
            keeper,
            jobs: Default::default(),
            advisories,
            curation,
            packages,
        }))
    }

    /// Builds every registry's upstream client (and reads `advisories.path`), to check a
    /// configuration without opening its data folder (`cratedock config check`).
    pub fn check_upstreams(config: &Config) -> anyhow::Result<()> {
        let roots = rustls::RootCertStore::empty();
        let metrics = Arc::new(Metrics::new());
        for (name, registry) in &config.registries {
            let RegistryConfig::Mirror(m) = registry else {
                continue;
            };
            let name = RegistryName::new(name)?;
            HttpUpstream::new(&name, m, &roots, metrics.clone())?;
        }
        advisory_client(&config.advisories, &roots, &metrics)?;
        if let Some(path) = &config.advisories.path {
            use crate::policy::advisories::{AdvisoryDb, root_of};
            root_of(path)
                .and_then(|root| AdvisoryDb::open(&root))
                .map_err(|e| anyhow::anyhow!("advisories.path: {e}"))?;
        }
        Ok(())
    }

    /// The disk cache's keeper (eviction, pins, statistics).
    pub fn keeper(&self) -> &Arc<Keeper> {
        &self.keeper
    }

    /// The names of the mirror registries.
    pub fn mirror_names(&self) -> impl Iterator<Item = &str> {
        self.mirrors.keys().map(String::as_str)
    }

    pub(crate) fn mirror(&self, name: &str) -> Option<&Arc<Mirror>> {
        self.mirrors.get(name)
    }

    pub(crate) fn private(&self, name: &str) -> Option<&Arc<Private>> {
        self.privates.get(name)
    }

    /// Notes a registry change that runs in its own task, until the guard is dropped.
    pub fn change_started(self: &Arc<Self>) -> InFlightGuard {
        self.changes
            .0
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    /// Work to do once before serving: counting what the private registries hold, and
    /// bringing the mirrors' bookkeeping and files into agreement (a crash may have left a
    /// file without its record, or a record without its file).
    pub async fn prepare(&self) -> anyhow::Result<()> {
        for p in self.privates.values() {
            p.recount().await?;
        }
        self.curation.set(self.book.curated().await?);
        self.advisories.load_at_start().await;
        let report = self
            .check_cache(
                crate::cache::check::Options {
                    repair: true,
                    contents: false,
                },
                &|_, _| {},
            )
            .await
            .context("cannot reconcile the cache's bookkeeping with its files")?;
        tracing::info!(
            files = report.files,
            bytes = report.bytes,
            fixed = report.problems_found,
            adopted = report.adopted,
            "cache checked against its bookkeeping"
        );
        Ok(())
    }

    /// Checks the mirrors' files against the bookkeeping (`cratedock verify` through the admin
    /// API, and at start).
    pub async fn check_cache(
        &self,
        opts: crate::cache::check::Options,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<crate::cache::check::Report, crate::store::StoreError> {
        let _no_eviction = self.keeper.exclusive().await;
        let mirrors: Vec<RegistryName> = self.mirrors.values().map(|m| m.name().clone()).collect();
        let checker = crate::cache::check::Checker {
            book: self.book.as_ref(),
            disk: self.blobs.below(),
            blobs: self.keeper.blobs().as_ref(),
            mirrors: &mirrors,
            progress,
        };
        checker.run(opts).await
    }

    /// The advisory database and its refreshes.
    pub(crate) fn advisories(&self) -> &Arc<AdvisorySource> {
        &self.advisories
    }

    /// Runs the advisory database's refreshes until `stop` is notified.
    pub fn spawn_advisory_refresh(&self, stop: Arc<tokio::sync::Notify>) {
        tokio::spawn(self.advisories.clone().run(stop));
    }

    /// The curated mirrors' allow-lists in memory.
    pub(crate) fn curation(&self) -> &Arc<Curation> {
        &self.curation
    }

    pub(crate) fn book(&self) -> &Arc<dyn CacheBook> {
        &self.book
    }

    pub(crate) fn packages(&self) -> &Arc<dyn MetaStore> {
        &self.packages
    }

    pub(crate) fn mirrors(&self) -> impl Iterator<Item = &Arc<Mirror>> {
        self.mirrors.values()
    }

    pub(crate) fn privates(&self) -> impl Iterator<Item = &Arc<Private>> {
        self.privates.values()
    }

    /// Whether the registry requires auth; `None` when there is no such registry.
    pub fn auth_required(&self, registry: &str) -> Option<bool> {
        self.config
            .registries
            .get(registry)
            .map(RegistryConfig::auth_required)
    }

    pub fn registry_names(&self) -> impl Iterator<Item = &str> {
        self.config.registries.keys().map(String::as_str)
    }

    /// Brings the cache-size gauges up to date (called when metrics are scraped).
    pub fn update_gauges(&self) {
        let m = &self.metrics;
        self.advisories.update_gauges();
        let (entries, bytes) = self.blobs.usage();
        m.cache_entries
            .with_label_values(&["memory", "all"])
            .set(entries as i64);
        m.cache_bytes
            .with_label_values(&["memory", "all"])
            .set(bytes as i64);
        for (name, mirror) in &self.mirrors {
            let (index, crates) = mirror.fetches_in_flight();
            for (kind, n) in [("index", index), ("crate", crates)] {
                m.fetches_in_flight
                    .with_label_values(&[name.as_str(), kind])
                    .set(n as i64);
            }
        }
        for (name, p) in &self.privates {
            m.private_bytes
                .with_label_values(&[name.as_str()])
                .set(p.stored_bytes() as i64);
        }
        let t = self.book.totals();
        for (kind, files, size) in [
            ("index", t.index_files, t.index_bytes),
            ("crate", t.crate_files, t.crate_bytes),
        ] {
            m.cache_entries
                .with_label_values(&["disk", kind])
                .set(files as i64);
            m.cache_bytes
                .with_label_values(&["disk", kind])
                .set(size as i64);
        }
    }

    /// Waits until no mirror has a fetch or a store write under way and no registry change is
    /// running (at shutdown, after the connections drained: answers may have gone out before
    /// their files were stored, and a change whose client left runs on), or `deadline` passes.
    pub async fn settle(&self, deadline: tokio::time::Instant) {
        while self
            .mirrors
            .values()
            .any(|m| m.fetches_in_flight() != (0, 0))
            || self.changes.0.load(std::sync::atomic::Ordering::Acquire) > 0
        {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("grace period over; fetches still under way are abandoned");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Makes the bookkeeping and the accounts durable (at shutdown).
    pub async fn flush(&self) -> anyhow::Result<()> {
        self.book.flush().await?;
        self.auth.flush().await?;
        Ok(())
    }
}
