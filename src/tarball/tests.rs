//! The rules of `inspect` and `unpack`, each shown on a crafted archive.

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

fn limits() -> Limits {
    Limits {
        max_unpacked: MIB,
        max_entries: 10,
        dot_prefix: true,
    }
}

#[test]
fn an_archive_is_unpacked_with_its_folders() {
    let dir = tempfile::tempdir().unwrap();
    let tarball = gzip(&tar_of(&[
        (b"db/", DIR, b""),
        (b"db/crates/foo/A.md", FILE, b"advisory"),
        (b"./top.txt", FILE, b"at the root"),
    ]));
    let walked = unpack(&tarball[..], dir.path(), limits()).unwrap();
    assert_eq!(walked.entries, 3);
    assert_eq!(
        std::fs::read(dir.path().join("db/crates/foo/A.md")).unwrap(),
        b"advisory"
    );
    assert!(dir.path().join("top.txt").is_file());
}

#[test]
fn unpacking_refuses_links_escapes_duplicates_and_too_many_entries() {
    let cases: [(Vec<u8>, &str); 5] = [
        (
            gzip(&tar_of(&[(b"db/link", b'2', b"")])),
            "`db/link` is a symlink",
        ),
        (
            gzip(&tar_of(&[(b"db/../../etc/x", FILE, b"x")])),
            "with `..` in it",
        ),
        (
            gzip(&tar_of(&[(b"/etc/x", FILE, b"x")])),
            "an absolute path",
        ),
        (
            gzip(&tar_of(&[(b"db/a", FILE, b"1"), (b"db/a", FILE, b"2")])),
            "two entries at `db/a`",
        ),
        (
            gzip(&tar_of(&vec![(&b"db/"[..], DIR, &b""[..]); 11])),
            "more than 10 entries",
        ),
    ];
    for (tarball, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(&tarball[..], dir.path(), limits()).unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
        assert!(!dir.path().join("etc").exists());
    }
}
