//! Files on disk below the data folder.
//!
//! The rule this module keeps: every write goes to a temp file in `tmp/` (same filesystem),
//! is fsynced, and is renamed into place; a crash leaves at most garbage in `tmp/`, which is
//! emptied at start.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::fs;
use tokio::io::AsyncWriteExt;

#[derive(Debug)]
pub struct DiskStore {
    root: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
}

/// A file being written; removed on drop unless [`DiskStore::commit`] renamed it into place.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: Option<fs::File>,
}

impl TempFile {
    pub async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file
            .as_mut()
            .expect("temp file is open until commit")
            .write_all(buf)
            .await
    }

    /// Waits until what was written is in the file, visible to its readers.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.file
            .as_mut()
            .expect("temp file is open until commit")
            .flush()
            .await
    }

    /// A second, read-only handle on the file. It stays valid after the file is renamed
    /// into place or deleted.
    pub fn reader(&self) -> std::io::Result<std::fs::File> {
        std::fs::File::open(&self.path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Not committed: the partial file must not linger.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// Runs `fill` (which writes the temp file at `path` and returns it), syncs the file and
/// renames it to `dest`. Whatever fails, the temp file does not linger.
fn place(
    path: &Path,
    dest: &Path,
    fill: impl FnOnce() -> std::io::Result<std::fs::File>,
) -> std::io::Result<()> {
    let result = fill()
        .and_then(|f| f.sync_all())
        .and_then(|()| rename_into_place(path, dest));
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Renames `from` to `to`, creating `to`'s folders only when they are missing (most renames
/// land in a folder that exists, and then cost one system call).
fn rename_into_place(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == ErrorKind::NotFound && from.exists() => {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(from, to)
        }
        other => other,
    }
}

impl DiskStore {
    /// Opens (creating) the folder and empties its `tmp/` of files left by a crash.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Self {
            root: root.to_owned(),
            tmp,
            counter: AtomicU64::new(0),
        })
    }

    pub fn path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// Reads a whole file; `None` when it does not exist.
    pub async fn read(&self, rel: &Path) -> std::io::Result<Option<Bytes>> {
        match fs::read(self.path(rel)).await {
            Ok(v) => Ok(Some(Bytes::from(v))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens a file for streaming, with its length; `None` when it does not exist.
    pub async fn open_file(&self, rel: &Path) -> std::io::Result<Option<(fs::File, u64)>> {
        match fs::File::open(self.path(rel)).await {
            Ok(f) => {
                let len = f.metadata().await?.len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn temp_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{n}.part", std::process::id()))
    }

    pub async fn temp(&self) -> std::io::Result<TempFile> {
        let path = self.temp_path();
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await?;
        Ok(TempFile {
            path,
            file: Some(file),
        })
    }

    /// Flushes the temp file to disk and renames it to `rel`, replacing any old file.
    pub async fn commit(&self, mut tmp: TempFile, rel: &Path) -> std::io::Result<()> {
        let mut file = tmp.file.take().expect("temp file is open until commit");
        let path = std::mem::take(&mut tmp.path);
        let dest = self.path(rel);
        // Wait for tokio's pending write, then sync and rename in one trip to the blocking pool.
        if let Err(e) = file.flush().await {
            let _ = fs::remove_file(&path).await;
            return Err(e);
        }
        let file = file.into_std().await;
        blocking(move || place(&path, &dest, || Ok(file))).await
    }

    /// Writes a whole file atomically, in one trip to the blocking pool.
    pub async fn write(&self, rel: &Path, bytes: Bytes) -> std::io::Result<()> {
        let path = self.temp_path();
        let dest = self.path(rel);
        blocking(move || {
            place(&path, &dest, || {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                std::io::Write::write_all(&mut f, &bytes)?;
                Ok(f)
            })
        })
        .await
    }

    pub async fn remove(&self, rel: &Path) -> std::io::Result<()> {
        match fs::remove_file(self.path(rel)).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_are_atomic_and_uncommitted_files_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let rel = Path::new("a/b/c.txt");
        assert!(store.read(rel).await.unwrap().is_none());
        store.write(rel, Bytes::from_static(b"one")).await.unwrap();
        store.write(rel, Bytes::from_static(b"two")).await.unwrap();
        assert_eq!(store.read(rel).await.unwrap().unwrap(), "two");

        let mut t = store.temp().await.unwrap();
        t.write_all(b"partial").await.unwrap();
        drop(t);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );

        std::fs::write(dir.path().join("tmp/left-by-crash.part"), b"x").unwrap();
        let _store = DiskStore::open(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert_eq!(std::fs::read(dir.path().join(rel)).unwrap(), b"two");
    }
}
