//! Checks that the bookkeeping and the mirrors' files agree, and repairs what does not:
//! `cratedock verify` (sizes and SHA-256 of every file, against its record and the index line),
//! and the reconciliation at start (records without files, files without records).
//!
//! The rule this module keeps: a file is adopted only after its bytes are checked (an index
//! file must read as one, a crate file must hash to its index line's `cksum`); anything else
//! that disagrees is removed, so nothing unverified is ever served.

use std::collections::HashMap;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Rec, Scan, registry_of};
use crate::index::{etag_of, find_version, hex, validate_body};
use crate::names::RegistryName;
use crate::store::{
    Blob, BlobKey, BlobStore, CacheBook, CrateKey, CrateRecord, IndexKey, IndexRecord, StoreError,
    now_ms,
};

/// What a check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Remove what is corrupt, drop records without files, adopt or remove orphans.
    pub repair: bool,
    /// Read every recorded file and check its contents (else sizes and presence only; orphans
    /// are always read before they are adopted).
    pub contents: bool,
}

/// One file that disagrees with the bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Path below the data folder.
    pub file: String,
    pub problem: String,
    /// What the repair did (absent without `repair`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// Problems listed one by one at most; beyond, they are only counted.
const LISTED: usize = 1_000;

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Files checked, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Every problem found (the first thousand are listed).
    #[serde(default)]
    pub problems_found: u64,
    pub problems: Vec<Problem>,
    /// Files without a record that were checked and taken into the bookkeeping.
    pub adopted: u64,
}

impl Report {
    fn add(&mut self, p: Problem) {
        self.problems_found += 1;
        if self.problems.len() < LISTED {
            self.problems.push(p);
        }
    }
}

/// The parts a check works on.
pub struct Checker<'a> {
    pub book: &'a dyn CacheBook,
    /// The files, read directly (never through the memory tier).
    pub disk: &'a dyn BlobStore,
    /// Where removals go (the memory tier over the files when serving, so that a memory copy
    /// goes too).
    pub blobs: &'a dyn BlobStore,
    /// The mirror registries whose folders are checked for files without records.
    pub mirrors: &'a [RegistryName],
    /// Called with (files done, files in all) as the check goes.
    pub progress: &'a (dyn Fn(u64, u64) + Send + Sync),
}

/// A file's fault, found by [`Checker::fault`].
type Fault = Option<String>;

impl Checker<'_> {
    pub async fn run(&self, opts: Options) -> Result<Report, StoreError> {
        let mut files: HashMap<BlobKey, u64> = HashMap::new();
        for registry in self.mirrors {
            files.extend(self.disk.keys(registry).await?);
        }
        let t = self.book.totals();
        let total = (t.index_files + t.crate_files).max(files.len() as u64);
        let mut report = Report::default();
        let mut done = 0u64;

        let mut scan = Scan::new(self.book);
        while let Some(page) = scan.next_page().await? {
            for seen in page {
                let key = seen.key;
                if !self.mirrors.contains(registry_of(&key)) {
                    self.foreign(&key, opts, &mut report).await?;
                    continue;
                }
                let len = self.len_of(&key, &mut files).await?;
                let fault = match (&seen.record, len) {
                    (Err(why), _) => Some(format!("unreadable record: {why}")),
                    (Ok(r), None) if self.still(&key, r).await? => {
                        Some("the file is missing".to_owned())
                    }
                    (Ok(_), None) => None,
                    (Ok(r), Some(len)) if len != r.size() => {
                        Some(format!("{len} bytes where the record says {}", r.size()))
                    }
                    (Ok(r), Some(_)) if opts.contents => self.contents_fault(&key, r).await?,
                    _ => None,
                };
                report.files += 1;
                report.bytes += len.unwrap_or(0);
                if let Some(f) = fault {
                    self.faulty(&key, f, len.is_some(), opts, &mut report)
                        .await?;
                }
                done += 1;
                (self.progress)(done, total);
            }
        }

        // What is left has no record: index files first, so that an orphan crate file can be
        // checked against an index file adopted just before.
        let mut orphans: Vec<(BlobKey, u64)> = files.into_iter().collect();
        orphans.sort_by_key(|(k, _)| matches!(k, BlobKey::Crate(_)));
        for (key, len) in orphans {
            report.files += 1;
            report.bytes += len;
            self.orphan(key, len, opts, &mut report).await?;
            done += 1;
            (self.progress)(done, total.max(done));
        }
        Ok(report)
    }

    /// Whether the record is still the one scanned (a file evicted or replaced meanwhile by a
    /// server at work is not a fault).
    async fn still(&self, key: &BlobKey, r: &Rec) -> Result<bool, StoreError> {
        Ok(match (key, r) {
            (BlobKey::Index(k), Rec::Index(r)) => {
                matches!(self.book.index(k).await, Ok(Some(now)) if now == *r)
            }
            (BlobKey::Crate(k), Rec::Crate(r)) => {
                matches!(self.book.krate(k).await, Ok(Some(now)) if now == *r)
            }
            _ => false,
        })
    }

    /// What is wrong with a recorded file's contents, if anything.
    async fn contents_fault(&self, key: &BlobKey, r: &Rec) -> Result<Fault, StoreError> {
        match (key, r) {
            (BlobKey::Index(k), Rec::Index(r)) => self.index_fault(k, r).await,
            (BlobKey::Crate(k), Rec::Crate(r)) => self.crate_fault(k, r).await,
            _ => Ok(None),
        }
    }

    /// A record of a registry that is not a mirror here (renamed, or now a private registry):
    /// reported; with `repair` the record goes, never the file (a private registry's files are
    /// its index itself).
    async fn foreign(
        &self,
        key: &BlobKey,
        opts: Options,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        let registry = registry_of(key);
        let action = if opts.repair {
            match key {
                BlobKey::Index(k) => self.book.remove_index(k).await?,
                BlobKey::Crate(k) => self.book.remove_crate(k).await?,
            }
            Some("dropped the record; the file was left alone".to_owned())
        } else {
            None
        };
        report.add(Problem {
            file: key.rel_path().display().to_string(),
            problem: format!("a cache record of `{registry}`, which is not a mirror registry here"),
            action,
        });
        Ok(())
    }

    /// The file's length, from the listing of a mirror's folder or else from the store.
    async fn len_of(
        &self,
        key: &BlobKey,
        files: &mut HashMap<BlobKey, u64>,
    ) -> Result<Option<u64>, StoreError> {
        match files.remove(key) {
            Some(len) => Ok(Some(len)),
            None => self.disk.stat(key).await,
        }
    }

    /// What is wrong with a recorded index file's contents, if anything.
    async fn index_fault(&self, key: &IndexKey, r: &IndexRecord) -> Result<Fault, StoreError> {
        let Some(body) = self.disk.get(&BlobKey::Index(key.clone())).await? else {
            return Ok(Some("the file is missing".to_owned()));
        };
        if etag_of(&body) != r.etag {
            return Ok(Some("its contents are not the ones recorded".to_owned()));
        }
        Ok(validate_body(&key.file, &body).err())
    }

    /// What is wrong with a recorded crate file's contents, if anything.
    async fn crate_fault(&self, key: &CrateKey, r: &CrateRecord) -> Result<Fault, StoreError> {
        let Some(actual) = self.sha256(&BlobKey::Crate(key.clone())).await? else {
            return Ok(Some("the file is missing".to_owned()));
        };
        if !actual.eq_ignore_ascii_case(&r.cksum) {
            return Ok(Some(format!(
                "SHA-256 {actual}, where the record says {}",
                r.cksum
            )));
        }
        match self.line_cksum(key).await? {
            Some(c) if !c.eq_ignore_ascii_case(&actual) => Ok(Some(format!(
                "SHA-256 {actual}, where the index line says {c}"
            ))),
            _ => Ok(None),
        }
    }

    /// The `cksum` of the crate's version in the cached index file, when both are there.
    async fn line_cksum(&self, key: &CrateKey) -> Result<Option<String>, StoreError> {
        let ikey = IndexKey::krate(&key.registry, &key.name);
        if !matches!(self.book.index(&ikey).await, Ok(Some(_))) {
            return Ok(None);
        }
        let body = self.disk.get(&BlobKey::Index(ikey)).await?;
        Ok(body
            .and_then(|b| find_version(&b, key.version.as_str()))
            .map(|line| line.cksum))
    }

    /// The SHA-256 of a file, read as a stream.
    async fn sha256(&self, key: &BlobKey) -> Result<Option<String>, StoreError> {
        let mut hasher = Sha256::new();
        match self.disk.open(key).await? {
            None => return Ok(None),
            Some(Blob::Bytes(b)) => hasher.update(&b),
            Some(Blob::Stream { mut body, .. }) => {
                while let Some(chunk) = body.next().await {
                    hasher.update(&chunk?);
                }
            }
        }
        Ok(Some(hex(&hasher.finalize())))
    }

    /// Reports a recorded file that is wrong and, with `repair`, removes it and its record.
    async fn faulty(
        &self,
        key: &BlobKey,
        problem: String,
        file_exists: bool,
        opts: Options,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        let file = key.rel_path().display().to_string();
        let action = if opts.repair {
            match key {
                BlobKey::Index(k) => self.book.remove_index(k).await?,
                BlobKey::Crate(k) => self.book.remove_crate(k).await?,
            }
            self.blobs.delete(key).await?;
            let what = if file_exists {
                "removed the file and its record; it is fetched again when next asked for"
            } else {
                "dropped the record; the file is fetched again when next asked for"
            };
            tracing::warn!(file, problem, "cache repair: {what}");
            Some(what.to_owned())
        } else {
            None
        };
        report.add(Problem {
            file,
            problem,
            action,
        });
        Ok(())
    }

    /// A file without a record: adopted once its bytes are checked, else removed (with
    /// `repair`); reported either way.
    async fn orphan(
        &self,
        key: BlobKey,
        len: u64,
        opts: Options,
        report: &mut Report,
    ) -> Result<(), StoreError> {
        let file = key.rel_path().display().to_string();
        // What the adoption records: the body's ETag, or the crate file's SHA-256.
        let (verdict, digest): (Result<(), String>, String) = match &key {
            BlobKey::Index(k) => match self.disk.get(&key).await? {
                Some(body) => (validate_body(&k.file, &body), etag_of(&body)),
                None => return Ok(()),
            },
            BlobKey::Crate(k) => match (self.line_cksum(k).await?, self.sha256(&key).await?) {
                (_, None) => return Ok(()),
                (None, Some(a)) => (
                    Err("no cached index line to check it against".to_owned()),
                    a,
                ),
                (Some(c), Some(a)) if c.eq_ignore_ascii_case(&a) => (Ok(()), a),
                (Some(c), Some(a)) => (
                    Err(format!("SHA-256 {a}, where the index line says {c}")),
                    a,
                ),
            },
        };
        let problem = match &verdict {
            Ok(()) => "no record; its contents check out".to_owned(),
            Err(why) => format!("no record, and {why}"),
        };
        let action = if !opts.repair {
            None
        } else if verdict.is_ok() {
            self.adopt(&key, len, digest).await?;
            report.adopted += 1;
            Some("adopted".to_owned())
        } else {
            self.blobs.delete(&key).await?;
            Some("removed".to_owned())
        };
        if let Some(a) = &action {
            tracing::warn!(file, problem, action = a, "cache repair");
        }
        report.add(Problem {
            file,
            problem,
            action,
        });
        Ok(())
    }

    /// Records a checked file found without a record. An index file is due for
    /// revalidation at once (its upstream validators are unknown).
    async fn adopt(&self, key: &BlobKey, len: u64, digest: String) -> Result<(), StoreError> {
        match key {
            BlobKey::Index(k) => {
                let record = IndexRecord {
                    etag: digest,
                    upstream_etag: None,
                    upstream_last_modified: None,
                    fresh_until_ms: 0,
                    lifetime_ms: 0,
                    checked_at_ms: now_ms(),
                    size: len,
                    missing_since_ms: None,
                    missing_seen_ms: None,
                    private: false,
                };
                self.book.put_index(k, &record).await
            }
            BlobKey::Crate(k) => {
                let record = CrateRecord {
                    cksum: digest,
                    size: len,
                    stored_at_ms: now_ms(),
                    license: None,
                };
                self.book.put_crate(k, &record).await
            }
        }
    }
}
