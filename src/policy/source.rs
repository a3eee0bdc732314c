//! Where the advisory database comes from, and swapping in a new one: read from
//! `advisories.path`, or fetched from `advisories.url` (conditional GET, the hardened tar
//! reader) into `DATA_DIR/advisories/`, opened, and swapped in only when it loads. On any failure
//! the database in use stays; the failure is logged once and counted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::advisories::{AdvisoryDb, root_of};
use crate::config::AdvisoriesConfig;
use crate::metrics::Metrics;
use crate::store::now_ms;
use crate::tarball::{Limits, unpack};
use crate::upstream::{HttpUpstream, IndexAnswer, Validators};

/// Bounds of an unpacked database archive (advisory-db is about 9 MB in 1,250 files).
const UNPACK_LIMITS: Limits = Limits {
    max_unpacked: 64 * 1024 * 1024,
    max_entries: 100_000,
    dot_prefix: true,
};

/// The database in use.
pub(crate) struct Loaded {
    pub(crate) db: Arc<AdvisoryDb>,
    /// Where it came from, for people.
    pub(crate) source: String,
    /// When it was last known current (fetched, confirmed unchanged, or its files changed).
    pub(crate) current_ms: u64,
    /// The copy fetched from `url` (the folder under `DATA_DIR/advisories/`), when it is one.
    fetched: Option<String>,
}

/// What `DATA_DIR/advisories/state.json` records of the copy fetched from `url`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    url: String,
    /// The folder under `DATA_DIR/advisories/` holding the unpacked archive.
    folder: String,
    etag: Option<String>,
    last_modified: Option<String>,
    /// When it was last fetched or confirmed unchanged.
    current_ms: u64,
}

/// How a refresh ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// A new archive was fetched and is in use.
    Updated,
    /// The archive has not changed since it was fetched.
    NotModified,
    /// `path` was read again.
    Reloaded,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Updated => "updated",
            Outcome::NotModified => "not_modified",
            Outcome::Reloaded => "reloaded",
        }
    }
}

/// The advisory database of a cratedock, shared by every registry's policy.
pub(crate) struct AdvisorySource {
    cfg: AdvisoriesConfig,
    /// `DATA_DIR/advisories`.
    dir: PathBuf,
    current: RwLock<Option<Arc<Loaded>>>,
    /// Bumped at each swap: what was derived from the old database is stale.
    generation: AtomicU64,
    client: Option<HttpUpstream>,
    metrics: Arc<Metrics>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// The last refresh's outcome or error, for the status page.
    last: Mutex<Option<(u64, Result<Outcome, String>)>>,
    /// Whether staleness was logged (once per episode).
    stale_logged: AtomicBool,
    /// The modification signature of `path` when it was read.
    path_signature: Mutex<Option<u64>>,
}

impl AdvisorySource {
    pub(crate) fn new(
        cfg: AdvisoriesConfig,
        data_dir: &Path,
        client: Option<HttpUpstream>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            dir: data_dir.join("advisories"),
            cfg,
            current: RwLock::default(),
            generation: AtomicU64::new(0),
            client,
            metrics,
            refreshing: tokio::sync::Mutex::new(()),
            last: Mutex::default(),
            stale_logged: AtomicBool::new(false),
            path_signature: Mutex::default(),
        }
    }

    pub(crate) fn configured(&self) -> bool {
        self.cfg.configured()
    }

    /// The database in use, if any.
    pub(crate) fn loaded(&self) -> Option<Arc<Loaded>> {
        self.current.read().expect("advisories lock").clone()
    }

    /// Calls `f` with the database in use (the lock is held only for the call).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&AdvisoryDb) -> T) -> Option<T> {
        let guard = self.current.read().expect("advisories lock");
        guard.as_ref().map(|l| f(&l.db))
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn swap(&self, loaded: Loaded) {
        let n = loaded.db.len();
        *self.current.write().expect("advisories lock") = Some(Arc::new(loaded));
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.metrics.advisories_loaded.set(n as i64);
        self.stale_logged.store(false, Ordering::Relaxed);
        self.update_gauges();
    }

    /// Loads what is on disk, before serving: the last copy fetched from `url` (when it is of
    /// the configured `url`), else `path`. A failure is logged; cratedock serves on without.
    pub(crate) async fn load_at_start(&self) {
        if !self.configured() {
            return;
        }
        let started = std::time::Instant::now();
        if let Some(url) = &self.cfg.url
            && let Some(state) = self.read_state().filter(|s| &s.url == url)
        {
            let folder = self.dir.join(&state.folder);
            match open_blocking(folder.clone()).await {
                Ok(db) => {
                    self.swap(Loaded {
                        db: Arc::new(db),
                        source: format!("{} (fetched copy in {})", redact(url), folder.display()),
                        current_ms: state.current_ms,
                        fetched: Some(state.folder.clone()),
                    });
                    self.loaded_log(started);
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the fetched advisory database cannot be read; falling back")
                }
            }
        }
        if self.cfg.path.is_some()
            && let Err(e) = self.reload_path().await
        {
            tracing::error!(error = %e, "no advisory database loaded; advisory policies apply nothing until one loads");
            self.metrics
                .advisory_refreshes
                .with_label_values(&["failed"])
                .inc();
        } else if self.loaded().is_some() {
            self.loaded_log(started);
        }
    }

    fn loaded_log(&self, started: std::time::Instant) {
        if let Some(l) = self.loaded() {
            tracing::info!(
                advisories = l.db.len(), source = %l.source,
                ms = started.elapsed().as_millis() as u64, "advisory database loaded"
            );
        }
    }

    /// Reads `path` again and swaps it in.
    async fn reload_path(&self) -> Result<Outcome, String> {
        let path = self.cfg.path.clone().ok_or("advisories.path is not set")?;
        let root = root_of(&path)?;
        let signature = signature(&root);
        let db = open_blocking(root).await?;
        *self.path_signature.lock().expect("signature lock") = signature;
        self.swap(Loaded {
            db: Arc::new(db),
            source: path.display().to_string(),
            current_ms: signature.unwrap_or_else(now_ms),
            fetched: None,
        });
        Ok(Outcome::Reloaded)
    }

    /// Refreshes now: from `url` when set, else by reading `path` again. The database in use
    /// stays on failure. Each call is logged once and counted.
    pub(crate) async fn sync(&self) -> Result<(Outcome, usize), String> {
        if !self.configured() {
            return Err(
                "no advisory database is configured: set [advisories] path or url".to_owned(),
            );
        }
        let _one = self.refreshing.lock().await;
        let result = match (&self.cfg.url, &self.client) {
            (Some(url), Some(client)) => self.fetch(url, client).await,
            _ => self.reload_path().await,
        };
        let label = match &result {
            Ok(o) => o.label(),
            Err(_) => "failed",
        };
        self.metrics
            .advisory_refreshes
            .with_label_values(&[label])
            .inc();
        match &result {
            Ok(o) => tracing::info!(outcome = o.label(), "advisory database refreshed"),
            Err(e) => {
                tracing::warn!(error = %e, "advisory database refresh failed; the database in use stays")
            }
        }
        *self.last.lock().expect("last lock") = Some((now_ms(), result.clone()));
        let n = self.loaded().map_or(0, |l| l.db.len());
        result.map(|o| (o, n))
    }

    async fn fetch(&self, url: &str, client: &HttpUpstream) -> Result<Outcome, String> {
        let state = self.read_state().filter(|s| s.url == url);
        // Conditional only when the copy it names is the one in use.
        let in_use = self.loaded().and_then(|l| l.fetched.clone());
        let validators = state
            .as_ref()
            .filter(|s| in_use.as_deref() == Some(s.folder.as_str()))
            .map(|s| Validators {
                etag: s.etag.clone(),
                last_modified: s.last_modified.clone(),
            });
        let answer = client
            .archive(url, validators.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        let (body, validators) = match answer {
            IndexAnswer::NotModified { .. } => {
                let mut s = state.expect("a conditional request had a state");
                s.current_ms = now_ms();
                self.write_state(&s)?;
                let l = self.loaded().expect("checked above");
                *self.current.write().expect("advisories lock") = Some(Arc::new(Loaded {
                    db: l.db.clone(),
                    source: l.source.clone(),
                    current_ms: s.current_ms,
                    fetched: l.fetched.clone(),
                }));
                self.stale_logged.store(false, Ordering::Relaxed);
                self.update_gauges();
                return Ok(Outcome::NotModified);
            }
            IndexAnswer::NotFound => return Err(format!("{} answered: not found", redact(url))),
            IndexAnswer::Body {
                body, validators, ..
            } => (body, validators),
        };
        let folder = format!("db-{}", now_ms());
        let dest = self.dir.join(&folder);
        let tmp = self.dir.join(format!("tmp-{folder}"));
        let unpacked = {
            let tmp = tmp.clone();
            tokio::task::spawn_blocking(move || -> Result<AdvisoryDb, String> {
                std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
                unpack(&body[..], &tmp, UNPACK_LIMITS)
                    .map_err(|e| format!("the archive cannot be unpacked: {e}"))?;
                AdvisoryDb::open(&root_of(&tmp)?)
            })
            .await
            .map_err(|e| format!("the unpacking task failed: {e}"))?
        };
        let db = match unpacked {
            Ok(db) => db,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                return Err(e);
            }
        };
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| format!("{}: {e}", dest.display()))?;
        let state = State {
            url: url.to_owned(),
            folder: folder.clone(),
            etag: validators.etag,
            last_modified: validators.last_modified,
            current_ms: now_ms(),
        };
        self.write_state(&state)?;
        self.swap(Loaded {
            db: Arc::new(db),
            source: format!("{} (fetched copy in {})", redact(url), dest.display()),
            current_ms: state.current_ms,
            fetched: Some(folder.clone()),
        });
        // Removing the older copies (a thousand files each) is left to a blocking thread.
        let (dir, keep) = (self.dir.clone(), folder.clone());
        tokio::task::spawn_blocking(move || remove_old_copies(&dir, &keep));
        Ok(Outcome::Updated)
    }

    fn read_state(&self) -> Option<State> {
        let bytes = std::fs::read(self.dir.join("state.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn write_state(&self, s: &State) -> Result<(), String> {
        let tmp = self.dir.join("state.json.tmp");
        let json = serde_json::to_vec_pretty(s).expect("state serializes");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, self.dir.join("state.json")))
            .map_err(|e| format!("cannot record the advisory database's state: {e}"))
    }

    /// Age and staleness gauges (at each scrape and each refresh); staleness is logged once.
    pub(crate) fn update_gauges(&self) {
        let Some(l) = self.loaded() else {
            return;
        };
        let age_ms = now_ms().saturating_sub(l.current_ms);
        self.metrics
            .advisory_db_age_seconds
            .set((age_ms / 1000) as i64);
        let stale = age_ms > self.cfg.max_age_ms;
        self.metrics.advisory_db_stale.set(i64::from(stale));
        if stale && !self.stale_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                age_s = age_ms / 1000, max_age_ms = self.cfg.max_age_ms, source = %l.source,
                "the advisory database is older than advisories.max_age_ms; policies keep applying it"
            );
        }
    }

    /// Refreshes every `refresh_interval_ms` until `stop` is set: from `url`, or by reading
    /// `path` again when its files changed.
    pub(crate) async fn run(self: Arc<Self>, stop: Arc<tokio::sync::Notify>) {
        if !self.configured() {
            return;
        }
        let every = Duration::from_millis(self.cfg.refresh_interval_ms.max(100));
        let mut first = self.cfg.url.is_some();
        loop {
            if !first {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.notified() => return,
                }
            }
            first = false;
            if self.cfg.url.is_some() {
                let _ = self.sync().await;
            } else if let Some(path) = &self.cfg.path {
                let now = root_of(path).ok().and_then(|r| signature(&r));
                let before = *self.path_signature.lock().expect("signature lock");
                if now.is_some() && now != before {
                    let _ = self.sync().await;
                }
            }
            self.update_gauges();
        }
    }

    /// What the status page shows.
    pub(crate) fn status(&self) -> serde_json::Value {
        let loaded = self.loaded();
        let last = self.last.lock().expect("last lock").clone();
        serde_json::json!({
            "configured": self.configured(),
            "loaded": loaded.is_some(),
            "advisories": loaded.as_ref().map_or(0, |l| l.db.len()),
            "source": loaded.as_ref().map(|l| l.source.clone()),
            "age_seconds": loaded.as_ref().map(|l| now_ms().saturating_sub(l.current_ms) / 1000),
            "stale": loaded.as_ref().is_some_and(|l| now_ms().saturating_sub(l.current_ms) > self.cfg.max_age_ms),
            "path": self.cfg.path,
            "url": self.cfg.url.as_deref().map(redact),
            "last_refresh": last.map(|(at, r)| match r {
                Ok(o) => serde_json::json!({ "at_ms": at, "outcome": o }),
                Err(e) => serde_json::json!({ "at_ms": at, "outcome": "failed", "error": e }),
            }),
        })
    }
}

/// Removes the copies and leftovers in `dir` other than `keep`.
fn remove_old_copies(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if (name.starts_with("db-") || name.starts_with("tmp-")) && name != keep {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A URL without the user and password it may carry.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme && !url[scheme + 3..at].contains('/') => {
            format!("{}***@{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

async fn open_blocking(root: PathBuf) -> Result<AdvisoryDb, String> {
    tokio::task::spawn_blocking(move || AdvisoryDb::open(&root))
        .await
        .map_err(|e| format!("the loading task failed: {e}"))?
}

/// The newest modification time (ms) of `root/crates` and the folders in it: changes when an
/// advisory is added or changed by a `git pull`.
fn signature(root: &Path) -> Option<u64> {
    let crates = root.join("crates");
    let mut newest = crate::store::to_ms(std::fs::metadata(&crates).ok()?.modified().ok()?);
    for e in std::fs::read_dir(&crates).ok()?.flatten() {
        if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
            newest = newest.max(crate::store::to_ms(t));
        }
    }
    Some(newest)
}
