//! A crate download in flight, shared by every request for that file: the bytes go to a temp
//! file as they arrive, and each request streams them from that file behind the writer, so
//! cargo gets the first bytes while the rest is still coming from the upstream (a tee of disk
//! and clients). Memory stays flat whatever the file size: readers read the file, not a
//! buffer.
//!
//! The rule this module keeps: a reader never hands out the last byte of a file before its
//! SHA-256 has been checked against the index. On a mismatch or a broken upstream, readers end
//! with an error, so the client sees a cut-off transfer (and retries), never a complete wrong
//! file.

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

/// Bytes a reader asks the file for at once.
const READ_CHUNK: u64 = 256 * 1024;

#[derive(Debug, Default)]
struct State {
    /// A read handle on the temp file, once the upstream answered with the file.
    file: Option<Arc<File>>,
    /// The length the upstream announced.
    len: Option<u64>,
    /// Bytes written to the file so far.
    written: u64,
    /// `Ok` once the whole file arrived and its checksum matched.
    end: Option<Result<(), String>>,
}

/// The progress of one download, written by the download and followed by its readers.
#[derive(Debug)]
pub struct Download {
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
pub struct Streamed {
    pub body: BoxStream<'static, io::Result<Bytes>>,
    pub len: Option<u64>,
}

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed").field("len", &self.len).finish()
    }
}

impl Download {
    /// The upstream answered with the file: bytes written to `file` will follow.
    pub fn start(&self, file: File, len: Option<u64>) {
        self.state.send_modify(|s| {
            s.file = Some(Arc::new(file));
            s.len = len;
        });
    }

    pub fn started(&self) -> bool {
        self.state.borrow().file.is_some()
    }

    /// `n` more bytes are in the file.
    pub fn advance(&self, n: u64) {
        self.state.send_modify(|s| s.written += n);
    }

    /// The whole file arrived and its checksum matched: readers may finish.
    pub fn verified(&self) {
        self.state.send_modify(|s| s.end = Some(Ok(())));
    }

    /// The download failed: readers end with `why`.
    pub fn fail(&self, why: String) {
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
    pub fn guard(self: &Arc<Self>) -> EndGuard {
        EndGuard(self.clone())
    }

    /// Waits until the download starts streaming, then returns a reader from the first
    /// byte. `None` when the download ended without starting.
    pub async fn reader(&self) -> Option<Streamed> {
        let mut rx = self.state.subscribe();
        let (file, len) = {
            let s = rx
                .wait_for(|s| s.file.is_some() || s.end.is_some())
                .await
                .ok()?;
            (s.file.clone()?, s.len)
        };
        let reader = Reader {
            rx,
            file,
            offset: 0,
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

pub struct EndGuard(Arc<Download>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.fail("the download was interrupted".into());
    }
}

struct Reader {
    rx: watch::Receiver<State>,
    file: Arc<File>,
    offset: u64,
}

impl Reader {
    /// The next bytes, `None` at the verified end, an error when the download failed.
    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let (limit, end) = {
                let s = self.rx.borrow_and_update();
                let verified = matches!(s.end, Some(Ok(())));
                // The last byte waits for the checksum.
                let limit = if verified {
                    s.written
                } else {
                    s.written.saturating_sub(1)
                };
                (limit, s.end.clone())
            };
            if self.offset < limit {
                let n = (limit - self.offset).min(READ_CHUNK) as usize;
                let (file, offset) = (self.file.clone(), self.offset);
                let bytes = tokio::task::spawn_blocking(move || read_at(&file, n, offset))
                    .await
                    .map_err(io::Error::other)??;
                self.offset += bytes.len() as u64;
                return Ok(Some(bytes));
            }
            match end {
                Some(Ok(())) => return Ok(None),
                Some(Err(why)) => return Err(io::Error::other(why)),
                None => {
                    if self.rx.changed().await.is_err() {
                        return Err(io::Error::other("the download stopped"));
                    }
                }
            }
        }
    }
}

fn read_at(file: &File, n: usize, offset: u64) -> io::Result<Bytes> {
    let mut buf = vec![0u8; n];
    #[cfg(unix)]
    std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, offset)?;
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < n {
            let got = std::os::windows::fs::FileExt::seek_read(
                file,
                &mut buf[done..],
                offset + done as u64,
            )?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            done += got;
        }
    }
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

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

    /// A writer that appends `parts` to a temp file, announcing each, then ends with `end`.
    fn write(d: Arc<Download>, parts: Vec<Vec<u8>>, end: Result<(), String>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = File::create(&path).unwrap();
        d.start(
            File::open(&path).unwrap(),
            Some(parts.iter().map(|p| p.len() as u64).sum()),
        );
        tokio::spawn(async move {
            for p in parts {
                tokio::time::sleep(Duration::from_millis(5)).await;
                w.write_all(&p).unwrap();
                d.advance(p.len() as u64);
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
        let d = Arc::new(Download::default());
        assert!(!d.started());
        let early = {
            let d = d.clone();
            tokio::spawn(async move { collect(d.reader().await.unwrap()).await })
        };
        let parts: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 300_000]).collect();
        let whole = parts.concat();
        let _dir = write(d.clone(), parts, Ok(()));
        let late = collect(d.reader().await.unwrap()).await;
        let early = early.await.unwrap();
        for (got, err) in [early, late] {
            assert!(err.is_none());
            assert_eq!(got, whole);
        }
    }

    #[tokio::test]
    async fn a_failed_download_never_hands_out_its_last_byte() {
        let d = Arc::new(Download::default());
        let _dir = write(
            d.clone(),
            vec![b"abc".to_vec(), b"def".to_vec()],
            Err("checksum".into()),
        );
        let (got, err) = collect(d.reader().await.unwrap()).await;
        assert_eq!(got, b"abcde", "all but the last byte");
        assert_eq!(err.unwrap().to_string(), "checksum");
    }

    #[tokio::test]
    async fn readers_of_an_abandoned_download_end_with_an_error() {
        let d = Arc::new(Download::default());
        let guard = d.guard();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"xyz").unwrap();
        d.start(File::open(dir.path().join("f")).unwrap(), None);
        d.advance(3);
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
