//! The body of `cargo publish`: a little-endian `u32` JSON length, the JSON, a `u32` tarball
//! length, the tarball.
//!
//! The rule this module keeps: each length is checked against its limit before anything is
//! allocated for it, the body is read as it arrives (an oversized or endless body is cut off
//! at the limit, not buffered), and a body that ends early or runs on is refused. A registry
//! receives a bounded number of bodies at once, each within a deadline.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use super::{Caller, Private, RegistryError};
use crate::auth::Denial;
use crate::store::{Permission, now_ms};

/// Largest metadata JSON accepted (crates.io's limit).
pub(crate) const MAX_JSON_BYTES: u32 = 1024 * 1024;

/// The most memory reserved before the bytes arrive; beyond it the buffer grows with them.
const RESERVE_AT_MOST: usize = 16 * 1024 * 1024;

/// A publish body, split.
#[derive(Debug)]
pub(crate) struct Upload {
    pub(crate) json: Bytes,
    pub(crate) tarball: Bytes,
    /// The registry's leave to hold an upload in memory, kept until the publish ends.
    pub(crate) permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Reads chunks from a body stream, keeping what has not been consumed yet.
struct Reader<S> {
    stream: S,
    buf: BytesMut,
}

impl<S, E> Reader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    /// Exactly `n` bytes; `what` names the part in the error when the body ends first.
    async fn take(&mut self, n: usize, what: &str) -> Result<Bytes, RegistryError> {
        let mut reserved = false;
        while self.buf.len() < n {
            match self.stream.next().await {
                Some(Ok(chunk)) => {
                    if self.buf.is_empty() && chunk.len() >= n {
                        // The common case of a whole part in one chunk: no copy.
                        let mut chunk = chunk;
                        let part = chunk.split_to(n);
                        self.buf.extend_from_slice(&chunk);
                        return Ok(part);
                    }
                    if !reserved {
                        // `n` is within its limit (the caller checked); a body that only
                        // claims to be large cannot make cratedock reserve much up front.
                        self.buf
                            .reserve(n.saturating_sub(self.buf.len()).min(RESERVE_AT_MOST));
                        reserved = true;
                    }
                    self.buf.extend_from_slice(&chunk);
                }
                Some(Err(e)) => {
                    return Err(RegistryError::invalid(
                        "frame",
                        format!("the upload broke off while reading {what}: {e}"),
                    ));
                }
                None => {
                    return Err(RegistryError::invalid(
                        "frame",
                        format!(
                            "the upload ended early: {what} is {n} bytes but only {} arrived",
                            self.buf.len()
                        ),
                    ));
                }
            }
        }
        Ok(self.buf.split_to(n).freeze())
    }

    async fn length(&mut self, what: &str) -> Result<u32, RegistryError> {
        let mut raw = self.take(4, what).await?;
        Ok(raw.get_u32_le())
    }

    /// Whether anything follows.
    async fn at_end(&mut self) -> Result<bool, RegistryError> {
        if !self.buf.is_empty() {
            return Ok(false);
        }
        loop {
            match self.stream.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(_)) => return Ok(false),
                Some(Err(e)) => {
                    return Err(RegistryError::invalid(
                        "frame",
                        format!("the upload broke off at its end: {e}"),
                    ));
                }
                None => return Ok(true),
            }
        }
    }
}

/// Reads a publish body, refusing a JSON over 1 MiB or a tarball over `max_tarball` bytes as
/// soon as their lengths arrive.
pub(crate) async fn read<S, E>(stream: S, max_tarball: u64) -> Result<Upload, RegistryError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut r = Reader {
        stream,
        buf: BytesMut::new(),
    };
    let json_len = r.length("the metadata length").await?;
    if json_len > MAX_JSON_BYTES {
        return Err(RegistryError::too_large(format!(
            "the metadata JSON is {json_len} bytes; at most {MAX_JSON_BYTES} are accepted"
        )));
    }
    let json = r.take(json_len as usize, "the metadata").await?;
    let tar_len = r.length("the tarball length").await?;
    if u64::from(tar_len) > max_tarball {
        return Err(RegistryError::too_large(format!(
            "the .crate file is {tar_len} bytes; this registry accepts at most {max_tarball} (max upload size); ask an admin to raise max_upload_bytes"
        )));
    }
    let tarball = r.take(tar_len as usize, "the tarball").await?;
    if !r.at_end().await? {
        return Err(RegistryError::invalid(
            "frame",
            "the upload has bytes after the tarball; it is not a `cargo publish` body",
        ));
    }
    Ok(Upload {
        json,
        tarball,
        permit: None,
    })
}

/// How long a publish waits for its turn to be received (see `max_concurrent_publishes`).
const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(25);

impl Private {
    /// Reads a publish body within this registry's limits (a refusal is counted). A caller
    /// who may publish nothing here is refused before the body is read.
    pub(crate) async fn receive<S, E>(
        &self,
        caller: &Caller,
        body: S,
    ) -> Result<Upload, RegistryError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let registry = self.name.as_str();
        if !caller
            .identity
            .allows(Permission::Publish, registry, None, now_ms())
        {
            let denial = Denial::lacks(Permission::Publish, registry, None);
            let detail = format!("{} (it may publish nothing here)", denial.detail());
            let refused = RegistryError::forbidden("permission", detail);
            self.count(Err(&refused));
            return Err(refused);
        }
        // Waiting here leaves the body unread: the client's upload waits with it, and cargo
        // gives up on an upload that makes no progress for about 30 s.
        let permit =
            match tokio::time::timeout(TURN_WAIT, self.uploads.clone().acquire_owned()).await {
                Ok(permit) => permit.ok(),
                Err(_) => {
                    let busy = RegistryError::unavailable(
                        "busy",
                        format!(
                            "`{registry}` is receiving {} publishes already; try again in a minute",
                            self.cfg.max_concurrent_publishes
                        ),
                    );
                    self.count(Err(&busy));
                    return Err(busy);
                }
            };
        let deadline = std::time::Duration::from_millis(self.cfg.upload_timeout_ms);
        let upload =
            match tokio::time::timeout(deadline, read(body, self.cfg.max_upload_bytes)).await {
                Ok(upload) => upload,
                Err(_) => Err(RegistryError::invalid(
                    "frame",
                    format!(
                        "the upload did not arrive within {} s",
                        self.cfg.upload_timeout_ms / 1000
                    ),
                )),
            };
        match upload {
            Ok(mut upload) => {
                upload.permit = permit;
                Ok(upload)
            }
            Err(e) => {
                self.count(Err(&e));
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &[u8], tarball: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(json.len() as u32).to_le_bytes());
        b.extend_from_slice(json);
        b.extend_from_slice(&(tarball.len() as u32).to_le_bytes());
        b.extend_from_slice(tarball);
        b
    }

    /// The body in chunks of `size` bytes.
    fn chunks(b: &[u8], size: usize) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        let parts: Vec<Result<Bytes, String>> = b
            .chunks(size.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(parts)
    }

    #[tokio::test]
    async fn bodies_split_however_they_arrive() {
        let b = body(b"{\"name\":\"x\"}", b"tarball-bytes");
        for size in [1, 3, 7, b.len()] {
            let u = read(chunks(&b, size), 100).await.unwrap();
            assert_eq!(&u.json[..], b"{\"name\":\"x\"}");
            assert_eq!(&u.tarball[..], b"tarball-bytes");
        }
    }

    #[tokio::test]
    async fn bad_frames_are_refused_before_allocating() {
        let ok = body(b"{}", b"abc");
        for (b, needle) in [
            (vec![1, 0], "metadata length"),
            (ok[..5].to_vec(), "metadata"),
            (ok[..8].to_vec(), "tarball length"),
            (ok[..ok.len() - 1].to_vec(), "tarball"),
            ([ok.clone(), vec![0]].concat(), "after the tarball"),
        ] {
            let e = read(chunks(&b, 2), 100).await.unwrap_err();
            assert!(e.detail.contains(needle), "{needle}: {e}");
        }
        // Huge lengths are refused from the four bytes alone.
        let e = read(chunks(&u32::MAX.to_le_bytes(), 4), 100)
            .await
            .unwrap_err();
        assert_eq!(e.status, super::super::Status::TooLarge);
        let mut b = 2u32.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        b.extend_from_slice(&101u32.to_le_bytes());
        let e = read(chunks(&b, 4), 100).await.unwrap_err();
        assert!(e.detail.contains("at most 100"), "{e}");
    }
}
