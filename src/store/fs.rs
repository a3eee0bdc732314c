//! Blobs as files below the data folder.
//!
//! The rule this module keeps: every write goes to a temp file in `tmp/` (same filesystem),
//! is fsynced, renamed into place, and the folder is fsynced; a crash leaves at most garbage in
//! `tmp/`, which is emptied at start.

use std::fs::File;
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{Blob, BlobKey, BlobReader, BlobStore, CrateKey, IndexKey, StoreError, TempBlob};
use crate::names::RegistryName;

/// Bytes read from a file at once when streaming it.
const STREAM_CHUNK: usize = 256 * 1024;

#[derive(Debug)]
pub struct FsBlobStore {
    root: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Syncs `file`, renames `from` to `to` and syncs `to`'s folder. Whatever fails, the temp
/// file does not linger.
fn place(file: &File, from: &Path, to: &Path) -> io::Result<()> {
    let result = file.sync_all().and_then(|()| rename_into_place(from, to));
    if result.is_err() {
        let _ = std::fs::remove_file(from);
    }
    result
}

/// Renames `from` to `to`, creating `to`'s folders only when they are missing (most renames
/// land in a folder that exists, and then cost one system call), then syncs the folder so the
/// rename survives a power loss.
fn rename_into_place(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == ErrorKind::NotFound && from.exists() => {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(from, to)?;
        }
        other => other?,
    }
    if let Some(parent) = to.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

impl FsBlobStore {
    /// Opens (creating) the folder and empties its `tmp/` of files left by a crash.
    pub fn open(root: &Path) -> io::Result<Self> {
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

    fn path(&self, key: &BlobKey) -> PathBuf {
        self.root.join(key.rel_path())
    }

    fn temp_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{n}.part", std::process::id()))
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn get(&self, key: &BlobKey) -> Result<Option<Bytes>, StoreError> {
        let path = self.path(key);
        let read = blocking(move || not_found_is_none(std::fs::read(path))).await?;
        Ok(read.map(Bytes::from))
    }

    async fn open(&self, key: &BlobKey) -> Result<Option<Blob>, StoreError> {
        let path = self.path(key);
        let opened = blocking(move || {
            not_found_is_none(File::open(path).and_then(|f| Ok((f.metadata()?.len(), f))))
        })
        .await?;
        let Some((len, file)) = opened else {
            return Ok(None);
        };
        let reader = tokio::fs::File::from_std(file);
        let body = tokio_util::io::ReaderStream::with_capacity(reader, STREAM_CHUNK).boxed();
        Ok(Some(Blob::Stream { len, body }))
    }

    async fn stat(&self, key: &BlobKey) -> Result<Option<u64>, StoreError> {
        let path = self.path(key);
        Ok(blocking(move || not_found_is_none(std::fs::metadata(path).map(|m| m.len()))).await?)
    }

    async fn put(&self, key: &BlobKey, bytes: Bytes) -> Result<(), StoreError> {
        let (tmp, dest) = (self.temp_path(), self.path(key));
        // Create, write, sync and rename in one trip to the blocking pool.
        blocking(move || {
            let mut f = File::options().write(true).create_new(true).open(&tmp)?;
            if let Err(e) = f.write_all(&bytes) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            place(&f, &tmp, &dest)
        })
        .await?;
        Ok(())
    }

    async fn temp(&self) -> Result<Box<dyn TempBlob>, StoreError> {
        let path = self.temp_path();
        let root = self.root.clone();
        let p = path.clone();
        let file = blocking(move || File::options().write(true).create_new(true).open(p)).await?;
        Ok(Box::new(FsTemp {
            path,
            root,
            file: Some(Arc::new(file)),
        }))
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), StoreError> {
        let path = self.path(key);
        blocking(move || not_found_is_none(std::fs::remove_file(path)).map(|_| ())).await?;
        Ok(())
    }

    async fn keys(&self, registry: &RegistryName) -> Result<Vec<(BlobKey, u64)>, StoreError> {
        let (root, registry) = (self.root.clone(), registry.clone());
        Ok(blocking(move || list(&root, &registry)).await?)
    }
}

/// The blobs of `registry` below `root`: `index/{registry}/...` and `crates/{registry}/...`.
fn list(root: &Path, registry: &RegistryName) -> io::Result<Vec<(BlobKey, u64)>> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    let index_root = root.join("index").join(registry.as_str());
    walk(&index_root, &mut files)?;
    for (path, len) in files.drain(..) {
        let rel = path.strip_prefix(&index_root).ok().and_then(Path::to_str);
        let key = rel
            .map(|r| r.replace(std::path::MAIN_SEPARATOR, "/"))
            .and_then(|r| IndexKey::from_record_key(format!("{registry}/{r}").as_bytes()));
        match key {
            Some(k) => out.push((BlobKey::Index(k), len)),
            None => stray(&path),
        }
    }
    let crates_root = root.join("crates").join(registry.as_str());
    walk(&crates_root, &mut files)?;
    for (path, len) in files {
        let key = crate_key_of(registry, &crates_root, &path);
        match key {
            Some(k) => out.push((BlobKey::Crate(k), len)),
            None => stray(&path),
        }
    }
    Ok(out)
}

/// `{name}/{name}-{version}.crate` below the registry's crates folder.
fn crate_key_of(registry: &RegistryName, root: &Path, path: &Path) -> Option<CrateKey> {
    let rel = path.strip_prefix(root).ok()?.to_str()?;
    let (dir, file) = rel.split_once(std::path::MAIN_SEPARATOR)?;
    let version = file
        .strip_prefix(dir)?
        .strip_prefix('-')?
        .strip_suffix(".crate")?;
    let key = CrateKey::from_record_key(format!("{registry}/{dir}/{version}").as_bytes())?;
    // Only the name the key writes (lower case) is its file.
    (BlobKey::Crate(key.clone()).rel_path()
        == Path::new("crates").join(registry.as_str()).join(rel))
    .then_some(key)
}

fn stray(path: &Path) {
    tracing::warn!(file = %path.display(), "a file no cratedock key names, left alone");
}

/// Every file below `dir` with its length (none when `dir` does not exist).
fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64)>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push((entry.path(), entry.metadata()?.len()));
        }
    }
    Ok(())
}

/// A file in `tmp/` being written.
struct FsTemp {
    path: PathBuf,
    root: PathBuf,
    file: Option<Arc<File>>,
}

#[async_trait]
impl TempBlob for FsTemp {
    async fn append(&mut self, chunk: &Bytes) -> Result<(), StoreError> {
        let file = self.file.clone().expect("open until commit");
        let chunk = chunk.clone();
        blocking(move || (&*file).write_all(&chunk)).await?;
        Ok(())
    }

    fn reader(&self) -> Result<Arc<dyn BlobReader>, StoreError> {
        Ok(Arc::new(FileReader(File::open(&self.path)?)))
    }

    async fn commit(mut self: Box<Self>, key: &BlobKey) -> Result<(), StoreError> {
        let file = self.file.take().expect("open until commit");
        let from = std::mem::take(&mut self.path);
        let to = self.root.join(key.rel_path());
        blocking(move || place(&file, &from, &to)).await?;
        Ok(())
    }
}

impl Drop for FsTemp {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Not committed: the partial file must not linger.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A read handle; it stays valid after the file is renamed into place or deleted.
struct FileReader(File);

#[async_trait]
impl BlobReader for FileReader {
    async fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let file = self.0.try_clone()?;
        blocking(move || {
            let mut buf = vec![0u8; len];
            read_exact_at(&file, &mut buf, offset)?;
            Ok(Bytes::from(buf))
        })
        .await
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let got =
            std::os::windows::fs::FileExt::seek_read(file, &mut buf[done..], offset + done as u64)?;
        if got == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        done += got;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{CrateName, RegistryName, Version};
    use crate::store::CrateKey;

    fn key() -> BlobKey {
        let r = RegistryName::new("r").unwrap();
        let n = CrateName::new("a").unwrap();
        CrateKey::new(&r, &n, &Version::new("1.0.0").unwrap()).into()
    }

    #[tokio::test]
    async fn writes_are_atomic_and_uncommitted_files_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let k = key();
        assert!(store.get(&k).await.unwrap().is_none());
        store.put(&k, Bytes::from_static(b"one")).await.unwrap();
        store.put(&k, Bytes::from_static(b"two")).await.unwrap();
        assert_eq!(store.get(&k).await.unwrap().unwrap(), "two");
        assert_eq!(store.stat(&k).await.unwrap(), Some(3));

        let mut t = store.temp().await.unwrap();
        t.append(&Bytes::from_static(b"partial")).await.unwrap();
        let reader = t.reader().unwrap();
        assert_eq!(reader.read_at(2, 3).await.unwrap(), "rti");
        drop(t);
        let tmp = dir.path().join("tmp");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);

        let mut t = store.temp().await.unwrap();
        t.append(&Bytes::from_static(b"three")).await.unwrap();
        t.commit(&k).await.unwrap();
        match store.open(&k).await.unwrap().unwrap() {
            Blob::Stream { len, body } => {
                assert_eq!(len, 5);
                let got: Vec<_> = body.map(|c| c.unwrap()).collect().await;
                assert_eq!(got.concat(), b"three");
            }
            other => panic!("{other:?}"),
        }

        std::fs::write(tmp.join("left-by-crash.part"), b"x").unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
        store.delete(&k).await.unwrap();
        store.delete(&k).await.unwrap();
        assert!(store.open(&k).await.unwrap().is_none());
    }
}
