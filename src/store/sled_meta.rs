//! The sled database behind the metadata stores, reopened by itself after an I/O error.
//!
//! sled keeps the first I/O error of its background flush (a full disk, say) and fails every
//! later operation with it, even once the disk has room again. A watchdog writes and flushes a
//! small record every second; when that fails with an I/O error, the database is closed and
//! opened again (retried until it opens), so writes work again without a restart. Stores take
//! their trees from here on each operation, never keep them, so that the old database's last
//! handle goes away when it is replaced. What the failed flush had not written is lost, as in
//! a crash: records written since the last good flush (the start-up check puts files and
//! records back in agreement).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use super::StoreError;

/// Called with the new database after a reopen (the bookkeeping reloads its totals).
type OnReopen = Box<dyn Fn(&sled::Db) + Send + Sync>;

pub struct SledMeta {
    /// `None`: a temporary database (tests), which is never reopened.
    path: Option<PathBuf>,
    db: RwLock<Option<sled::Db>>,
    reopens: AtomicU64,
    on_reopen: Mutex<Vec<OnReopen>>,
}

fn meta_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Meta(e.to_string())
}

/// Opens the sled database at `path` (one per data folder; sled allows one process at a
/// time, so a second cratedock on the same folder is refused here).
pub fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    sled::Config::new()
        .path(path)
        .cache_capacity(16 * 1024 * 1024)
        .open()
        .map_err(|e| {
            let hint = if e.to_string().contains("could not acquire lock") {
                "; is another cratedock using this data folder?"
            } else {
                ""
            };
            StoreError::Meta(format!("cannot open {} ({e}){hint}", path.display()))
        })
}

impl SledMeta {
    /// Opens the database at `path` and starts its watchdog (a thread that ends with it).
    pub fn open(path: &Path) -> Result<Arc<Self>, StoreError> {
        let db = open_db(path)?;
        let meta = Arc::new(Self {
            path: Some(path.to_owned()),
            db: RwLock::new(Some(db)),
            reopens: AtomicU64::new(0),
            on_reopen: Mutex::default(),
        });
        let weak = Arc::downgrade(&meta);
        std::thread::Builder::new()
            .name("cratedock-meta-watchdog".into())
            .spawn(move || watch(weak))
            .map_err(meta_err)?;
        Ok(meta)
    }

    /// A temporary database, removed when dropped (tests and benchmarks).
    pub fn temporary() -> Result<Arc<Self>, StoreError> {
        // No background flusher: a temporary store is never read back.
        let db = sled::Config::new()
            .temporary(true)
            .flush_every_ms(None)
            .open()
            .map_err(meta_err)?;
        Ok(Arc::new(Self {
            path: None,
            db: RwLock::new(Some(db)),
            reopens: AtomicU64::new(0),
            on_reopen: Mutex::default(),
        }))
    }

    /// The database; an error while it is being reopened.
    pub(crate) fn db(&self) -> Result<sled::Db, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| {
                StoreError::Meta(
                    "the metadata store is being reopened after a disk error; try again".into(),
                )
            })
    }

    /// One tree of the database (a lookup in sled's table of open trees).
    pub(crate) fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.db()?.open_tree(name).map_err(meta_err)
    }

    /// How often the database was reopened.
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }

    pub(crate) fn on_reopen(&self, f: OnReopen) {
        self.on_reopen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(f);
    }

    /// Writes and flushes a small record; `false` when sled fails with an I/O error.
    fn healthy(&self) -> bool {
        let Ok(db) = self.db() else { return false };
        let probe = db
            .insert("watchdog", &super::now_ms().to_be_bytes())
            .and_then(|_| db.flush());
        !matches!(probe, Err(sled::Error::Io(_)))
    }

    /// Closes the database and opens it again, until it opens.
    fn reopen(&self) {
        let Some(path) = &self.path else { return };
        tracing::error!("the metadata store failed to write to disk; reopening it");
        // Taken out first, so that no new operation starts on it; sled lets go of its files
        // once the last handle is gone (its flusher thread may hold one a moment longer).
        let old = self.db.write().unwrap_or_else(|e| e.into_inner()).take();
        drop(old);
        let mut wait = Duration::from_millis(50);
        loop {
            match open_db(path) {
                Ok(db) => {
                    for f in self
                        .on_reopen
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter()
                    {
                        f(&db);
                    }
                    *self.db.write().unwrap_or_else(|e| e.into_inner()) = Some(db);
                    self.reopens.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("the metadata store is open again");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reopen the metadata store yet");
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// The watchdog: a check every second while the store exists.
fn watch(meta: Weak<SledMeta>) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Some(meta) = meta.upgrade() else { return };
        if !meta.healthy() {
            meta.reopen();
        }
    }
}
