//! Inspection of an uploaded `.crate`: a gzip-compressed tar whose entries all lie under one
//! folder. This module owns the structural rules crates.io and cargo enforce on that archive
//! (§3.2, §7 of the protocol notes) and keeps one rule of its own: nothing in the archive decides
//! how much is read or allocated. The decompressed stream is metered and cut off past a bound,
//! and only `Cargo.toml` is kept in memory, with a fixed cap.

use std::io::{self, Read};

use flate2::read::GzDecoder;
use tar::EntryType;

use crate::names::shown;

/// Tar framing (headers, padding, the end marker) that the decompressed stream may carry on top
/// of the entries' own bytes.
const FRAMING_ALLOWANCE: u64 = 1024 * 1024;
/// `Cargo.toml` is the only entry read into memory; cargo's normalized manifests are a few KiB.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// What the archive holds, once every rule has passed.
#[derive(Debug)]
pub(crate) struct Unpacked {
    /// The single top-level folder every entry lies under (e.g. "foo-1.0.0"), as in the archive.
    pub(crate) top: String,
    /// Bytes of `{top}/Cargo.toml`.
    pub(crate) manifest: Vec<u8>,
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
}

/// Checks an uploaded `.crate` and returns its manifest. `max_unpacked_bytes` bounds the sum of
/// the entries' sizes; the decompressed stream may exceed it by tar's framing only.
pub(crate) fn inspect(tarball: &[u8], max_unpacked_bytes: u64) -> Result<Unpacked, TarballError> {
    if tarball.get(..2) != Some(&[0x1f, 0x8b][..]) {
        return Err(TarballError::NotGzip(not_gzip_reason(tarball)));
    }
    let limit = max_unpacked_bytes.saturating_add(FRAMING_ALLOWANCE);
    let meter = Metered {
        inner: GzDecoder::new(tarball),
        read: 0,
        limit,
    };
    let mut archive = tar::Archive::new(meter);
    let checked = walk(&mut archive, max_unpacked_bytes).and_then(|unpacked| {
        // Tar stops at its end marker; reading on checks the gzip trailer (CRC and length)
        // and meters whatever else was compressed after the archive.
        io::copy(&mut archive.into_inner(), &mut io::sink())?;
        Ok(unpacked)
    });
    checked.map_err(|e| match e.downcast::<TarballError>() {
        Ok(broken) => broken,
        Err(e) => TarballError::CorruptTar(shown(&e.to_string())),
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

/// A broken rule travels as an I/O error through the tar reader; `inspect` takes it out again.
fn rule(broken: TarballError) -> io::Error {
    io::Error::other(broken)
}

fn walk<R: Read>(archive: &mut tar::Archive<R>, max_unpacked: u64) -> io::Result<Unpacked> {
    use TarballError as E;
    let mut top: Option<String> = None;
    let mut manifest: Option<Vec<u8>> = None;
    let (mut unpacked_bytes, mut entries) = (0u64, 0u64);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            // Metadata for the whole archive, not a file; the meter still counts its bytes.
            io::copy(&mut entry, &mut io::sink())?;
            continue;
        }
        let raw = entry.path_bytes();
        let lossy = || shown(&String::from_utf8_lossy(&raw));
        let path = std::str::from_utf8(&raw).map_err(|_| rule(E::NonUtf8Path(lossy())))?;
        let is_dir = kind == EntryType::Directory;
        let parts = components(path, is_dir).map_err(rule)?;
        let first = top.get_or_insert_with(|| parts[0].to_owned());
        if first != parts[0] {
            return Err(rule(E::TwoTopFolders(shown(first), shown(parts[0]))));
        }
        if parts.len() == 1 && !is_dir {
            return Err(rule(E::OutsideFolder(shown(path))));
        }
        if let Some(kind) = forbidden(kind) {
            return Err(rule(E::ForbiddenEntryType(shown(path), kind)));
        }
        let size = entry.size();
        if entry.header().entry_size()? != size {
            return Err(rule(E::SizeMismatch(shown(path))));
        }
        unpacked_bytes = unpacked_bytes
            .checked_add(size)
            .filter(|total| *total <= max_unpacked)
            .ok_or_else(|| rule(E::EntriesTooLarge(max_unpacked)))?;
        entries += 1;
        let in_root = parts.len() == 2;
        if in_root && parts[1] == "Cargo.toml" {
            if is_dir {
                return Err(rule(E::ManifestNotFile(shown(path))));
            } else if manifest.is_some() {
                return Err(rule(E::TwoManifests(shown(path))));
            } else if size > MAX_MANIFEST_BYTES {
                return Err(rule(E::ManifestTooLarge));
            }
            let mut bytes = Vec::new();
            // The entry yields no more than its size, checked just above.
            entry.read_to_end(&mut bytes)?;
            manifest = Some(bytes);
        } else if in_root && parts[1].eq_ignore_ascii_case("Cargo.toml") {
            return Err(rule(E::MiscasedManifest(shown(path))));
        } else {
            io::copy(&mut entry, &mut io::sink())?;
        }
    }
    let top = top.ok_or_else(|| rule(E::Empty))?;
    let manifest = manifest.ok_or_else(|| rule(E::MissingManifest))?;
    Ok(Unpacked {
        top,
        manifest,
        unpacked_bytes,
        entries,
    })
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
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    const MANIFEST: &[u8] = b"[package]\nname = \"foo\"\nversion = \"1.0.0\"\n";
    const MIB: u64 = 1024 * 1024;
    const FILE: u8 = b'0';
    const DIR: u8 = b'5';

    /// Path, tar type byte, data.
    type Entry<'a> = (&'a [u8], u8, &'a [u8]);

    fn gzip(tar: &[u8]) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(tar).unwrap();
        gz.finish().unwrap()
    }

    /// A raw header, so that paths and types `tar::Builder` refuses can be written.
    fn header(path: &[u8], kind: u8, size: u64) -> [u8; 512] {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.as_old_mut().name[..path.len()].copy_from_slice(path);
        h.as_old_mut().linkname[..6].copy_from_slice(b"target");
        h.as_mut_bytes()[156] = kind;
        h.set_cksum();
        *h.as_bytes()
    }

    /// An uncompressed tar of the entries, with the end marker.
    fn tar_of(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, kind, data) in entries {
            out.extend_from_slice(&header(path, *kind, data.len() as u64));
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0; 1024]);
        out
    }

    /// A good crate plus the `extra` entries.
    fn crate_with(extra: &[Entry]) -> Vec<u8> {
        let lib: Entry = (b"foo-1.0.0/src/lib.rs", FILE, b"pub fn f() {}\n");
        let mut entries = vec![(&b"foo-1.0.0/Cargo.toml"[..], FILE, MANIFEST), lib];
        entries.extend_from_slice(extra);
        gzip(&tar_of(&entries))
    }

    fn with(path: &[u8], kind: u8) -> Vec<u8> {
        crate_with(&[(path, kind, b"")])
    }

    #[track_caller]
    fn refused(tarball: &[u8], says: &str) {
        let err = inspect(tarball, MIB).unwrap_err();
        assert!(err.to_string().contains(says), "{err:?}");
    }

    #[test]
    fn a_crate_built_with_tar_builder_is_accepted() {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
        let mut add = |path: &str, kind: EntryType, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, path, data).unwrap();
        };
        add("foo-1.0.0/", EntryType::Directory, b"");
        add("foo-1.0.0/.cargo-ok", EntryType::Regular, b"");
        add("foo-1.0.0/Cargo.toml", EntryType::Regular, MANIFEST);
        add(
            "foo-1.0.0/Cargo.toml.orig",
            EntryType::Regular,
            b"[package]\n",
        );
        // Over 100 bytes, so the builder writes a GNU long-name entry first.
        let long = format!("foo-1.0.0/src/{}.rs", "a".repeat(150));
        add(&long, EntryType::Regular, b"// long\n");
        let unpacked = inspect(&b.into_inner().unwrap().finish().unwrap(), MIB).unwrap();
        assert_eq!(unpacked.top, "foo-1.0.0");
        assert_eq!(unpacked.manifest, MANIFEST);
        assert_eq!(unpacked.entries, 5);
        assert_eq!(unpacked.unpacked_bytes, (MANIFEST.len() + 10 + 8) as u64);
    }

    #[test]
    fn old_and_contiguous_files_nested_manifests_and_pax_globals_are_accepted() {
        let cases = [
            (with(b"foo-1.0.0/old", 0), 3), // the pre-POSIX "regular file" type byte
            (with(b"foo-1.0.0/contiguous", b'7'), 3),
            (with(b"foo-1.0.0/sub/cargo.toml", FILE), 3),
            (with(b"pax_global_header", b'g'), 2),
        ];
        for (tarball, entries) in cases {
            assert_eq!(inspect(&tarball, MIB).unwrap().entries, entries);
        }
    }

    #[test]
    fn a_body_that_is_not_a_whole_gzip_tar_is_refused() {
        let tar = tar_of(&[(b"foo-1.0.0/Cargo.toml", FILE, MANIFEST)]);
        let mut bad_tar = tar.clone();
        bad_tar[0] = b'g'; // the header checksum no longer matches
        let good = crate_with(&[]);
        let mut bad_crc = good.clone();
        bad_crc[good.len() - 8] ^= 0xff;
        let cases: [(&[u8], &str); 8] = [
            (
                &tar,
                "not gzip-compressed (it looks like an uncompressed tar",
            ),
            (b"", "not gzip-compressed (it is empty)"),
            (b"PK\x03\x04", "not gzip-compressed (it does not start with"),
            (
                &good[..good.len() - 4],
                "gzip stream is corrupt or truncated",
            ),
            (
                &good[..good.len() / 2],
                "gzip stream is corrupt or truncated",
            ),
            (&good[..12], "gzip stream is corrupt or truncated"),
            (&bad_crc, "gzip stream is corrupt or truncated"),
            (&gzip(&bad_tar), "tar stream is corrupt or truncated"),
        ];
        for (tarball, says) in cases {
            refused(tarball, says);
        }
    }

    #[test]
    fn a_gzip_bomb_is_refused_without_reading_it() {
        let size = 64 * MIB;
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&header(b"foo-1.0.0/zeros", FILE, size))
            .unwrap();
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..size / chunk.len() as u64 {
            gz.write_all(&chunk).unwrap();
        }
        gz.write_all(&[0; 1024]).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < MIB as usize);
        refused(&bomb, "add up to more than 1048576 bytes");
    }

    #[test]
    fn a_stream_longer_than_its_entries_is_cut_off() {
        // Zeros after the end marker are no entry, but still decompressed bytes.
        let mut tar = tar_of(&[(b"foo-1.0.0/Cargo.toml", FILE, MANIFEST)]);
        tar.resize(tar.len() + 3 * MIB as usize, 0);
        refused(&gzip(&tar), "decompresses to more than 2097152 bytes");
    }

    #[test]
    fn entry_sizes_over_the_limit_are_refused() {
        let big = vec![7u8; 700 * 1024];
        let tarball = crate_with(&[(b"foo-1.0.0/a", FILE, &big), (b"foo-1.0.0/b", FILE, &big)]);
        refused(&tarball, "add up to more than 1048576 bytes");
        assert_eq!(inspect(&tarball, 2 * MIB).unwrap().entries, 4);
    }

    #[test]
    fn unsafe_paths_are_refused() {
        let cases: [(&[u8], &str); 7] = [
            (b"foo-1.0.0/../../etc/x", "with `..` in it"),
            (b"../x", "with `..` in it"),
            (b"foo-1.0.0/a\\..\\..\\x", "with `..` in it"),
            (b"/etc/passwd", "an absolute path `/etc/passwd`"),
            (b"foo-1.0.0/./x", "with an empty or `.` component"),
            (b"foo-1.0.0//x", "with an empty or `.` component"),
            (b"foo-1.0.0/\xff.rs", "not UTF-8: `foo-1.0.0/\\u{fffd}.rs`"),
        ];
        for (path, says) in cases {
            refused(&with(path, FILE), says);
        }
    }

    #[test]
    fn links_devices_fifos_and_unknown_types_are_refused_by_path() {
        let kinds = [
            (b'2', "a symlink"),
            (b'1', "a hard link"),
            (b'3', "a character device"),
            (b'4', "a block device"),
            (b'6', "a fifo"),
            (b'V', "an entry of an unsupported type"),
        ];
        for (kind, name) in kinds {
            let says = format!("`foo-1.0.0/x` is {name}; a .crate");
            refused(&with(b"foo-1.0.0/x", kind), &says);
        }
    }

    #[test]
    fn every_entry_lies_under_one_folder_with_one_cargo_toml() {
        let cases = [
            (
                with(b"bar-1.0.0/x", FILE),
                "two top-level folders, `foo-1.0.0` and `bar-1.0.0`",
            ),
            (
                with(b"foo-1.0.0", FILE),
                "`foo-1.0.0` is not inside the package folder",
            ),
            (with(b"foo-1.0.0/Cargo.toml", FILE), "two Cargo.toml"),
            (
                with(b"foo-1.0.0/cargo.toml", FILE),
                "incorrectly cased manifest",
            ),
            (
                with(b"foo-1.0.0/CARGO.TOML", FILE),
                "incorrectly cased manifest",
            ),
            (gzip(&tar_of(&[])), "the tarball is empty"),
            (
                gzip(&tar_of(&[(b"foo-1.0.0/", DIR, b"")])),
                "no `Cargo.toml`",
            ),
            (
                gzip(&tar_of(&[(b"foo-1.0.0/Cargo.toml/", DIR, b"")])),
                "is not a regular file",
            ),
        ];
        for (tarball, says) in cases {
            refused(&tarball, says);
        }
        let big = vec![b'#'; MIB as usize + 1];
        let tarball = gzip(&tar_of(&[(b"foo-1.0.0/Cargo.toml", FILE, &big)]));
        let err = inspect(&tarball, 4 * MIB).unwrap_err();
        assert_eq!(err.to_string(), "Cargo.toml is larger than 1 MiB");
    }

    #[test]
    fn pax_and_ustar_sizes_must_agree() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", &b"3"[..])]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(MANIFEST.len() as u64);
        let path = "foo-1.0.0/Cargo.toml";
        b.append_data(&mut h, path, MANIFEST).unwrap();
        let tarball = gzip(&b.into_inner().unwrap());
        refused(&tarball, "size in its pax header that differs");
    }
}
