//! A crate download in flight, shared by every request for that file: each request streams
//! the bytes behind the download, from the first byte, while the rest is still coming from the
//! upstream (a tee of the store and the clients). A file small enough for the memory tier is
//! followed in memory, in the chunks it arrived in (no copy, no store round trip before the
//! answer); a larger one is written to its temporary blob as it arrives and readers read that
//! blob, so memory stays flat whatever the size.
//!
//! The rule this module keeps: a reader never hands out the last byte of a file before its
//! SHA-256 has been checked against the index. On a mismatch or a broken upstream, readers end
//! with an error, so the client sees a cut-off transfer (and retries), never a complete wrong
//! file.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

use crate::store::BlobReader;

/// Bytes a reader asks the blob for at once.
const READ_CHUNK: u64 = 256 * 1024;

/// Where readers find the bytes.
enum Source {
    /// The chunks as they arrived.
    Memory(Vec<Bytes>),
    /// A reader of the temporary blob.
    Blob(Arc<dyn BlobReader>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Memory(chunks) => f.debug_tuple("Memory").field(&chunks.len()).finish(),
            Source::Blob(_) => f.write_str("Blob"),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Set once the upstream answered with the file.
    source: Option<Source>,
    /// The length the upstream announced.
    len: Option<u64>,
    /// Bytes received so far.
    written: u64,
    /// `Ok` once the whole file arrived and its checksum matched.
    end: Option<Result<(), String>>,
}

/// The progress of one download, written by the download and followed by its readers.
#[derive(Debug)]
pub(super) struct Download {
    state: watch::Sender<State>,
}

impl Default for Download {
    fn default() -> Self {
        Self {
            state: watch::Sender::new(State::default()),
        }
    }
}

/// The bytes of a download as a stream, and the length the upstream announced.
pub(crate) struct Streamed {
    pub body: BoxStream<'static, io::Result<Bytes>>,
    pub len: Option<u64>,
}

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed").field("len", &self.len).finish()
    }
}

impl Download {
    /// The upstream answered with a file that readers follow in memory.
    pub(super) fn start_in_memory(&self, len: Option<u64>) {
        self.state.send_modify(|s| {
            s.source = Some(Source::Memory(Vec::new()));
            s.len = len;
        });
    }

    /// The upstream answered with a file that readers follow through `reader`, a reader of
    /// the temporary blob it is written to.
    pub(super) fn start_in_blob(&self, reader: Arc<dyn BlobReader>, len: Option<u64>) {
        self.state.send_modify(|s| {
            s.source = Some(Source::Blob(reader));
            s.len = len;
        });
    }

    /// `chunk` arrived (and, for a blob download, is in the blob).
    pub(super) fn append(&self, chunk: &Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.state.send_modify(|s| {
            s.written += chunk.len() as u64;
            if let Some(Source::Memory(chunks)) = &mut s.source {
                chunks.push(chunk.clone());
            }
        });
    }

    /// The whole file arrived and its checksum matched: readers may finish.
    pub(super) fn verified(&self) {
        self.state.send_modify(|s| s.end = Some(Ok(())));
    }

    /// The download failed: readers end with `why`.
    pub(super) fn fail(&self, why: String) {
        self.state.send_if_modified(|s| {
            if s.end.is_some() {
                return false;
            }
            s.end = Some(Err(why));
            true
        });
    }

    /// Fails the download with "interrupted" when dropped before it ended, so that no reader
    /// waits forever on a download task that panicked or was cancelled.
    pub(super) fn guard(self: &Arc<Self>) -> EndGuard {
        EndGuard(self.clone())
    }

    /// Waits until the download starts streaming, then returns a reader from the first
    /// byte. `None` when the download ended without starting.
    pub(super) async fn reader(&self) -> Option<Streamed> {
        let mut rx = self.state.subscribe();
        let len = {
            let s = rx
                .wait_for(|s| s.source.is_some() || s.end.is_some())
                .await
                .ok()?;
            s.source.as_ref()?;
            s.len
        };
        let reader = Reader {
            rx,
            offset: 0,
            chunk: 0,
            in_chunk: 0,
        };
        let body = stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            match reader.next().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(reader))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed();
        Some(Streamed { body, len })
    }
}

pub(super) struct EndGuard(Arc<Download>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.fail("the download was interrupted".into());
    }
}

struct Reader {
    rx: watch::Receiver<State>,
    /// Bytes handed out so far.
    offset: u64,
    /// Where `offset` is in the chunks of a download followed in memory.
    chunk: usize,
    in_chunk: usize,
}

enum Next {
    Bytes(Bytes),
    Read(Arc<dyn BlobReader>, usize),
    End(Option<Result<(), String>>),
}

impl Reader {
    /// The next bytes, `None` at the verified end, an error when the download failed.
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let next = {
                let s = self.rx.borrow_and_update();
                let verified = matches!(s.end, Some(Ok(())));
                // The last byte waits for the checksum.
                let limit = if verified {
                    s.written
                } else {
                    s.written.saturating_sub(1)
                };
                let want = limit.saturating_sub(self.offset);
                match &s.source {
                    _ if want == 0 => Next::End(s.end.clone()),
                    Some(Source::Memory(chunks)) => {
                        let c = &chunks[self.chunk];
                        let take = (c.len() - self.in_chunk).min(want as usize);
                        let bytes = c.slice(self.in_chunk..self.in_chunk + take);
                        self.in_chunk += take;
                        if self.in_chunk == c.len() {
                            self.chunk += 1;
                            self.in_chunk = 0;
                        }
                        Next::Bytes(bytes)
                    }
                    Some(Source::Blob(reader)) => {
                        Next::Read(reader.clone(), want.min(READ_CHUNK) as usize)
                    }
                    None => Next::End(s.end.clone()),
                }
            };
            let bytes = match next {
                Next::Bytes(bytes) => bytes,
                Next::Read(reader, n) => reader.read_at(self.offset, n).await?,
                Next::End(Some(Ok(()))) => return Ok(None),
                Next::End(Some(Err(why))) => return Err(io::Error::other(why)),
                Next::End(None) => {
                    if self.rx.changed().await.is_err() {
                        return Err(io::Error::other("the download stopped"));
                    }
                    continue;
                }
            };
            self.offset += bytes.len() as u64;
            return Ok(Some(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::store::{BlobStore, FsBlobStore};

    async fn collect(mut s: Streamed) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::new();
        while let Some(item) = s.body.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    /// A writer that appends `parts` (to a temporary blob, or in memory), announcing each,
    /// then ends with `end`.
    async fn write(
        d: Arc<Download>,
        parts: Vec<Vec<u8>>,
        in_file: bool,
        end: Result<(), String>,
    ) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let mut tmp = store.temp().await.unwrap();
        let len = Some(parts.iter().map(|p| p.len() as u64).sum());
        if in_file {
            d.start_in_blob(tmp.reader().unwrap(), len);
        } else {
            d.start_in_memory(len);
        }
        tokio::spawn(async move {
            for p in parts {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let p = Bytes::from(p);
                if in_file {
                    tmp.append(&p).await.unwrap();
                }
                d.append(&p);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            match end {
                Ok(()) => d.verified(),
                Err(why) => d.fail(why),
            }
        });
        dir
    }

    #[tokio::test]
    async fn readers_follow_the_writer_and_finish_at_the_verified_end() {
        for in_file in [false, true] {
            let d = Arc::new(Download::default());
            let early = {
                let d = d.clone();
                tokio::spawn(async move { collect(d.reader().await.unwrap()).await })
            };
            let parts: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 300_000]).collect();
            let whole = parts.concat();
            let _dir = write(d.clone(), parts, in_file, Ok(())).await;
            let late = collect(d.reader().await.unwrap()).await;
            let early = early.await.unwrap();
            for (got, err) in [early, late] {
                assert!(err.is_none(), "in file: {in_file}");
                assert_eq!(got, whole, "in file: {in_file}");
            }
        }
    }

    #[tokio::test]
    async fn a_failed_download_never_hands_out_its_last_byte() {
        for in_file in [false, true] {
            let d = Arc::new(Download::default());
            let parts = vec![b"abc".to_vec(), b"def".to_vec()];
            let _dir = write(d.clone(), parts, in_file, Err("checksum".into())).await;
            let (got, err) = collect(d.reader().await.unwrap()).await;
            assert_eq!(got, b"abcde", "all but the last byte (in file: {in_file})");
            assert_eq!(err.unwrap().to_string(), "checksum");
        }
    }

    #[tokio::test]
    async fn readers_of_an_abandoned_download_end_with_an_error() {
        let d = Arc::new(Download::default());
        let guard = d.guard();
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        let mut tmp = store.temp().await.unwrap();
        let xyz = Bytes::from_static(b"xyz");
        tmp.append(&xyz).await.unwrap();
        d.start_in_blob(tmp.reader().unwrap(), None);
        d.append(&xyz);
        let reader = tokio::spawn({
            let d = d.clone();
            async move { collect(d.reader().await.unwrap()).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(guard);
        let (got, err) = reader.await.unwrap();
        assert_eq!(got, b"xy");
        assert!(err.is_some());
    }

    #[tokio::test]
    async fn a_download_that_ends_before_starting_has_no_reader() {
        let d = Download::default();
        d.fail("upstream answered 503".into());
        assert!(d.reader().await.is_none());
    }
}
