//! The `App` value: it owns the stores, caches, upstream clients and metrics, and hands them
//! down. Nothing in cratedock is global; tests and benches build the same `App`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;

use crate::config::{Config, RegistryConfig};
use crate::metrics::Metrics;
use crate::names::RegistryName;
use crate::proxy::{Mirror, MirrorParts};
use crate::store::{DiskStore, MemoryTier, MetaStore, SledMeta};
use crate::upstream::{Upstream, system_roots};

pub struct App {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    mirrors: BTreeMap<String, Arc<Mirror>>,
    memory: MemoryTier,
    meta: Arc<dyn MetaStore>,
    ready: AtomicBool,
}

impl App {
    /// Opens the data folder (sled metadata in `meta/`) and builds every registry.
    pub fn open(config: Config) -> anyhow::Result<Arc<Self>> {
        let dir = &config.storage.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data folder {}", dir.display()))?;
        let meta = SledMeta::open(&dir.join("meta"))?;
        Self::with_meta(config, Arc::new(meta))
    }

    /// Builds the app over a given metadata store (tests and benches use the in-memory one).
    pub fn with_meta(config: Config, meta: Arc<dyn MetaStore>) -> anyhow::Result<Arc<Self>> {
        let disk = Arc::new(DiskStore::open(&config.storage.data_dir).with_context(|| {
            format!(
                "cannot use the data folder {}",
                config.storage.data_dir.display()
            )
        })?);
        let metrics = Arc::new(Metrics::new());
        let memory = MemoryTier::new(
            config.cache.memory_max_bytes,
            config.cache.memory_max_item_bytes,
        );
        let needs_roots = config.registries.values().any(|r| {
            let RegistryConfig::Mirror(m) = r;
            m.upstream.starts_with("https://") && m.system_roots
        });
        let roots = if needs_roots {
            system_roots()
        } else {
            rustls::RootCertStore::empty()
        };
        let mut mirrors = BTreeMap::new();
        for (name, registry) in &config.registries {
            let RegistryConfig::Mirror(cfg) = registry;
            let name = RegistryName::new(name)?;
            let upstream = Upstream::new(&name, cfg, &roots, metrics.clone())?;
            let mirror = Mirror::new(MirrorParts {
                name: name.clone(),
                cfg: cfg.clone(),
                upstream,
                disk: disk.clone(),
                meta: meta.clone(),
                memory: memory.clone(),
                metrics: metrics.clone(),
                coalesce_wait: Duration::from_millis(config.cache.coalesce_wait_ms),
                max_crate_bytes: config.cache.max_crate_bytes,
            });
            mirrors.insert(name.to_string(), Arc::new(mirror));
        }
        Ok(Arc::new(Self {
            config,
            metrics,
            mirrors,
            memory,
            meta,
            ready: AtomicBool::new(false),
        }))
    }

    pub fn mirror(&self, name: &str) -> Option<&Arc<Mirror>> {
        self.mirrors.get(name)
    }

    pub fn registry_names(&self) -> impl Iterator<Item = &str> {
        self.mirrors.keys().map(String::as_str)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Brings the cache-size gauges up to date (called when metrics are scraped).
    pub fn update_gauges(&self) {
        let m = &self.metrics;
        let (entries, bytes) = self.memory.usage();
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
        let t = self.meta.totals();
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

    /// Waits until no mirror has a fetch or a disk write under way (at shutdown, after the
    /// connections drained), or `deadline` passes.
    pub async fn settle(&self, deadline: tokio::time::Instant) {
        while self
            .mirrors
            .values()
            .any(|m| m.fetches_in_flight() != (0, 0))
        {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!("grace period over; fetches still under way are abandoned");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Writes the metadata store to disk (at shutdown).
    pub fn flush(&self) -> anyhow::Result<()> {
        self.meta.flush()?;
        Ok(())
    }
}
