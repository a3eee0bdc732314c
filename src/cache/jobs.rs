//! Long checks run through the admin API as jobs: started by one request, read by others.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::check::Report;

/// Jobs kept for reading after they end.
const KEPT: usize = 32;

/// Where a job stands.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: u64,
    pub kind: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub files_done: u64,
    pub files_total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What a prefetch did so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<serde_json::Value>,
}

#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<u64, JobView>>,
}

impl Jobs {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<u64, JobView>) -> T) -> T {
        f(&mut self.jobs.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Registers a running job of `kind`, unless one is running already (its id is the
    /// error). The oldest finished jobs are forgotten beyond [`KEPT`].
    pub fn try_start(&self, kind: &str) -> Result<u64, u64> {
        self.with(|jobs| {
            if let Some(j) = jobs
                .values()
                .find(|j| j.kind == kind && j.state == "running")
            {
                return Err(j.id);
            }
            while jobs.len() >= KEPT {
                let Some(old) = jobs
                    .iter()
                    .find(|(_, j)| j.state != "running")
                    .map(|(k, _)| *k)
                else {
                    break;
                };
                jobs.remove(&old);
            }
            let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
            jobs.insert(
                id,
                JobView {
                    id,
                    kind: kind.to_owned(),
                    state: "running".to_owned(),
                    files_done: 0,
                    files_total: 0,
                    report: None,
                    error: None,
                    prefetch: None,
                },
            );
            Ok(id)
        })
    }

    pub fn progress(&self, id: u64, done: u64, total: u64) {
        self.with(|jobs| {
            if let Some(j) = jobs.get_mut(&id) {
                (j.files_done, j.files_total) = (done, total);
            }
        });
    }

    pub fn finish(&self, id: u64, result: Result<Report, String>) {
        self.with(|jobs| {
            if let Some(j) = jobs.get_mut(&id) {
                match result {
                    Ok(r) => (j.state, j.report) = ("done".to_owned(), Some(r)),
                    Err(e) => (j.state, j.error) = ("failed".to_owned(), Some(e)),
                }
            }
        });
    }

    pub fn get(&self, id: u64) -> Option<JobView> {
        self.with(|jobs| jobs.get(&id).cloned())
    }

    /// The jobs kept, newest first, of `kind` when given.
    pub fn list(&self, kind: Option<&str>) -> Vec<JobView> {
        self.with(|jobs| {
            jobs.values()
                .rev()
                .filter(|j| kind.is_none_or(|k| j.kind == k))
                .cloned()
                .collect()
        })
    }

    /// Notes a prefetch's progress: its counts and what it found so far.
    pub fn prefetch_progress(&self, id: u64, done: u64, total: u64, detail: serde_json::Value) {
        self.with(|jobs| {
            if let Some(j) = jobs.get_mut(&id) {
                (j.files_done, j.files_total) = (done, total);
                j.prefetch = Some(detail);
            }
        });
    }

    /// Ends a job that has no check report: `done`, or `failed` with why.
    pub fn end(&self, id: u64, result: Result<(), String>) {
        self.with(|jobs| {
            if let Some(j) = jobs.get_mut(&id) {
                match result {
                    Ok(()) => j.state = "done".to_owned(),
                    Err(e) => (j.state, j.error) = ("failed".to_owned(), Some(e)),
                }
            }
        });
    }
}
