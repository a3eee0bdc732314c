//! Reading gzip'd tar archives that come from outside: an uploaded `.crate` (a gzip-compressed
//! tar whose entries all lie under one folder), a cached one whose licence is read, and an
//! advisory database's archive that is unpacked. This module owns the structural rules crates.io
//! and cargo enforce on a `.crate` (§3.2, §7 of the protocol notes) and keeps one rule of its own
//! for every archive: nothing in it decides how much is read or allocated. The decompressed
//! stream is metered and cut off past a bound, entries are plain files and folders with plain
//! relative paths, and only the files a caller asks for are kept in memory, with fixed caps.

use std::io::{self, Read};

use flate2::read::GzDecoder;
use tar::EntryType;

use crate::names::shown;

/// Tar framing (headers, padding, the end marker) that the decompressed stream may carry on top
/// of the entries' own bytes.
const FRAMING_ALLOWANCE: u64 = 1024 * 1024;
/// `Cargo.toml` is the only entry read into memory; cargo's normalized manifests are a few KiB.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// A `Cargo.lock` above this size is not read (a lock file of thousands of packages is a few
/// hundred KiB).
const MAX_LOCKFILE_BYTES: u64 = 8 * 1024 * 1024;

/// What the archive holds, once every rule has passed.
#[derive(Debug)]
pub(crate) struct Unpacked {
    /// The single top-level folder every entry lies under (e.g. "foo-1.0.0"), as in the archive.
    pub(crate) top: String,
    /// Bytes of `{top}/Cargo.toml`.
    pub(crate) manifest: Vec<u8>,
    /// Bytes of `{top}/Cargo.lock`, when there is one (of at most 8 MiB).
    pub(crate) lockfile: Option<Vec<u8>>,
    /// Sum of the sizes of all entries.
    pub(crate) unpacked_bytes: u64,
    pub(crate) entries: u64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TarballError {
    #[error("the tarball is not gzip-compressed ({0}); upload what `cargo package` makes")]
    NotGzip(&'static str),
    #[error("the tarball's gzip stream is corrupt or truncated: {0}")]
    CorruptGzip(String),
    #[error("the tarball's tar stream is corrupt or truncated: {0}")]
    CorruptTar(String),
    #[error("the tarball decompresses to more than {0} bytes, which is over this registry's limit")]
    StreamTooLarge(u64),
    #[error("the files in the tarball add up to more than {0} bytes, this registry's limit")]
    EntriesTooLarge(u64),
    #[error("the tarball is empty")]
    Empty,
    #[error("the tarball has a path that is not UTF-8: `{0}`")]
    NonUtf8Path(String),
    #[error("the tarball has an absolute path `{0}`; every path must be relative")]
    AbsolutePath(String),
    #[error("the tarball has a path with `..` in it: `{0}`")]
    ParentDirPath(String),
    #[error("the tarball has a path `{0}` with an empty or `.` component, a `\\` or a `:`")]
    UnusualPath(String),
    #[error("`{0}` is not inside the package folder; every entry must lie under `name-version/`")]
    OutsideFolder(String),
    #[error("the tarball has two top-level folders, `{0}` and `{1}`; it must have exactly one")]
    TwoTopFolders(String, String),
    #[error("`{0}` is {1}; a .crate may only hold regular files and directories")]
    ForbiddenEntryType(String, &'static str),
    #[error("`{0}` has a size in its pax header that differs from its tar header")]
    SizeMismatch(String),
    #[error("the tarball has no `Cargo.toml` in its package folder")]
    MissingManifest,
    #[error("the tarball has two Cargo.toml entries at `{0}`")]
    TwoManifests(String),
    #[error("the tarball has an incorrectly cased manifest `{0}`; it must be named `Cargo.toml`")]
    MiscasedManifest(String),
    #[error("`{0}` is not a regular file")]
    ManifestNotFile(String),
    #[error("Cargo.toml is larger than 1 MiB")]
    ManifestTooLarge,
    #[error("the archive has more than {0} entries")]
    TooManyEntries(u64),
    #[error("the archive has two entries at `{0}`")]
    Duplicate(String),
}

/// The bounds of a walk through an archive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The sum of the entries' sizes; the decompressed stream may exceed it by tar's framing.
    pub(crate) max_unpacked: u64,
    pub(crate) max_entries: u64,
    /// Paths may start with `./` (as `tar -C dir .` writes them); the prefix is dropped.
    pub(crate) dot_prefix: bool,
}

/// One entry as a walk hands it to its visitor.
pub(crate) struct Visit<'a> {
    /// The path's components, all plain names.
    pub(crate) parts: &'a [&'a str],
    pub(crate) is_dir: bool,
    pub(crate) size: u64,
}

/// What a visitor wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Next,
    /// Seen enough: the rest of the archive is not read (nor checked).
    Stop,
}

/// What a walk saw.
#[derive(Debug, Default)]
pub(crate) struct Walked {
    pub(crate) unpacked_bytes: u64,
    pub(crate) entries: u64,
    /// The visitor stopped the walk early.
    pub(crate) stopped: bool,
}

/// Walks a gzip'd tar under the hardened rules (metered decompression, bounded sizes and
/// entry count, plain relative paths, regular files and folders only), handing each entry to
/// `visit`. The gzip trailer is checked when the walk reaches the end.
pub(crate) fn scan<R: Read>(
    gz: R,
    limits: Limits,
    visit: &mut dyn FnMut(&Visit<'_>, &mut dyn Read) -> io::Result<Flow>,
) -> Result<Walked, TarballError> {
    let meter = Metered {
        inner: GzDecoder::new(gz),
        read: 0,
        limit: limits.max_unpacked.saturating_add(FRAMING_ALLOWANCE),
    };
    let mut archive = tar::Archive::new(meter);
    let walked = walk(&mut archive, limits, visit).and_then(|walked| {
        if !walked.stopped {
            // Tar stops at its end marker; reading on checks the gzip trailer (CRC and
            // length) and meters whatever else was compressed after the archive.
            io::copy(&mut archive.into_inner(), &mut io::sink())?;
        }
        Ok(walked)
    });
    walked.map_err(|e| match e.downcast::<TarballError>() {
        Ok(broken) => broken,
        Err(e) => TarballError::CorruptTar(shown(&e.to_string())),
    })
}

/// Checks an uploaded `.crate` and returns its manifest (and its `Cargo.lock`, when it has
/// one). `max_unpacked_bytes` bounds the sum of the entries' sizes; the decompressed stream may
/// exceed it by tar's framing only.
pub(crate) fn inspect(tarball: &[u8], max_unpacked_bytes: u64) -> Result<Unpacked, TarballError> {
    use TarballError as E;
    if tarball.get(..2) != Some(&[0x1f, 0x8b][..]) {
        return Err(E::NotGzip(not_gzip_reason(tarball)));
    }
    let mut top: Option<String> = None;
    let mut manifest: Option<Vec<u8>> = None;
    let mut lockfile: Option<Vec<u8>> = None;
    let limits = Limits {
        max_unpacked: max_unpacked_bytes,
        max_entries: u64::MAX,
        dot_prefix: false,
    };
    let walked = scan(tarball, limits, &mut |v, entry| {
        let path = v.parts.join("/");
        let first = top.get_or_insert_with(|| v.parts[0].to_owned());
        if first != v.parts[0] {
            return Err(rule(E::TwoTopFolders(shown(first), shown(v.parts[0]))));
        }
        if v.parts.len() == 1 && !v.is_dir {
            return Err(rule(E::OutsideFolder(shown(&path))));
        }
        let in_root = v.parts.len() == 2;
        if in_root && v.parts[1] == "Cargo.toml" {
            if v.is_dir {
                return Err(rule(E::ManifestNotFile(shown(&path))));
            } else if manifest.is_some() {
                return Err(rule(E::TwoManifests(shown(&path))));
            } else if v.size > MAX_MANIFEST_BYTES {
                return Err(rule(E::ManifestTooLarge));
            }
            manifest = Some(read_all(entry)?);
        } else if in_root && v.parts[1].eq_ignore_ascii_case("Cargo.toml") {
            return Err(rule(E::MiscasedManifest(shown(&path))));
        } else if in_root && v.parts[1] == "Cargo.lock" && !v.is_dir && v.size <= MAX_LOCKFILE_BYTES
        {
            lockfile = Some(read_all(entry)?);
        }
        Ok(Flow::Next)
    })?;
    let top = top.ok_or(E::Empty)?;
    let manifest = manifest.ok_or(E::MissingManifest)?;
    Ok(Unpacked {
        top,
        manifest,
        lockfile,
        unpacked_bytes: walked.unpacked_bytes,
        entries: walked.entries,
    })
}

/// Reads an entry whose size the walk has checked.
pub(crate) fn read_all(entry: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Unpacks a gzip'd tar into the folder `dest` (which must exist and be empty) under the same
/// rules as [`inspect`]: nothing but plain files and folders, no path leaving `dest`, bounded
/// sizes. A file that appears twice is refused.
pub(crate) fn unpack<R: Read>(
    gz: R,
    dest: &std::path::Path,
    limits: Limits,
) -> Result<Walked, TarballError> {
    scan(gz, limits, &mut |v, entry| {
        let mut path = dest.to_path_buf();
        path.extend(v.parts);
        if v.is_dir {
            std::fs::create_dir_all(&path)?;
            return Ok(Flow::Next);
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::File::create_new(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                rule(TarballError::Duplicate(shown(&v.parts.join("/"))))
            } else {
                e
            }
        })?;
        io::copy(entry, &mut file)?;
        Ok(Flow::Next)
    })
}

fn not_gzip_reason(bytes: &[u8]) -> &'static str {
    if bytes.is_empty() {
        "it is empty"
    } else if bytes.get(257..262) == Some(b"ustar") {
        "it looks like an uncompressed tar archive"
    } else {
        "it does not start with the gzip magic bytes 1f 8b"
    }
}

/// A broken rule travels as an I/O error through the tar reader; `scan` takes it out again.
pub(crate) fn rule(broken: TarballError) -> io::Error {
    io::Error::other(broken)
}

fn walk<R: Read>(
    archive: &mut tar::Archive<R>,
    limits: Limits,
    visit: &mut dyn FnMut(&Visit<'_>, &mut dyn Read) -> io::Result<Flow>,
) -> io::Result<Walked> {
    use TarballError as E;
    let mut walked = Walked::default();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            // Metadata for the whole archive, not a file; the meter still counts its bytes.
            io::copy(&mut entry, &mut io::sink())?;
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let lossy = || shown(&String::from_utf8_lossy(&raw));
        let mut path = std::str::from_utf8(&raw).map_err(|_| rule(E::NonUtf8Path(lossy())))?;
        if limits.dot_prefix {
            path = path.trim_start_matches("./");
            if path.is_empty() {
                // `./` itself.
                continue;
            }
        }
        let is_dir = kind == EntryType::Directory;
        let parts = components(path, is_dir).map_err(rule)?;
        if let Some(kind) = forbidden(kind) {
            return Err(rule(E::ForbiddenEntryType(shown(path), kind)));
        }
        let size = entry.size();
        if entry.header().entry_size()? != size {
            return Err(rule(E::SizeMismatch(shown(path))));
        }
        walked.unpacked_bytes = walked
            .unpacked_bytes
            .checked_add(size)
            .filter(|total| *total <= limits.max_unpacked)
            .ok_or_else(|| rule(E::EntriesTooLarge(limits.max_unpacked)))?;
        walked.entries += 1;
        if walked.entries > limits.max_entries {
            return Err(rule(E::TooManyEntries(limits.max_entries)));
        }
        let v = Visit {
            parts: &parts,
            is_dir,
            size,
        };
        if visit(&v, &mut entry)? == Flow::Stop {
            walked.stopped = true;
            return Ok(walked);
        }
        // Whatever the visitor left unread is still read (and metered).
        io::copy(&mut entry, &mut io::sink())?;
    }
    Ok(walked)
}

/// Splits a path into its components, all of them plain names. A `\` or `:` is refused too:
/// they are a separator and a drive prefix on Windows, and cargo refuses to package them.
fn components(path: &str, is_dir: bool) -> Result<Vec<&str>, TarballError> {
    if path.starts_with('/') {
        return Err(TarballError::AbsolutePath(shown(path)));
    }
    let trimmed = path.strip_suffix('/').filter(|_| is_dir).unwrap_or(path);
    let parts: Vec<&str> = trimmed.split('/').collect();
    // `\` is a separator on Windows, where `a\..\..\x` escapes too.
    if parts.iter().any(|p| p.split('\\').any(|q| q == "..")) {
        return Err(TarballError::ParentDirPath(shown(path)));
    }
    let unusual = |p: &&str| p.is_empty() || *p == "." || p.contains(['\\', ':']);
    if parts.iter().any(unusual) {
        return Err(TarballError::UnusualPath(shown(path)));
    }
    Ok(parts)
}

/// What an entry type is called in an error, if it is not a regular file or a directory.
fn forbidden(kind: EntryType) -> Option<&'static str> {
    match kind {
        // The old `\0` type byte is reported as `Regular`; `Continuous` is a regular file too.
        EntryType::Regular | EntryType::Continuous | EntryType::Directory => None,
        EntryType::Symlink => Some("a symlink"),
        EntryType::Link => Some("a hard link"),
        EntryType::Char => Some("a character device"),
        EntryType::Block => Some("a block device"),
        EntryType::Fifo => Some("a fifo"),
        EntryType::GNUSparse => Some("a sparse file"),
        _ => Some("an entry of an unsupported type"),
    }
}

/// Counts the bytes coming out of the decoder and fails once they pass `limit`, so a gzip bomb
/// is refused after reading about `limit` bytes, none of them buffered.
struct Metered<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let corrupt = |e: io::Error| rule(TarballError::CorruptGzip(shown(&e.to_string())));
        let n = self.inner.read(buf).map_err(corrupt)?;
        self.read = self.read.saturating_add(n as u64);
        if self.read > self.limit {
            return Err(rule(TarballError::StreamTooLarge(self.limit)));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
