//! Properties of the publish path that hold for any input (proptest): the frame gives back
//! what was framed however the body is chunked, and never panics on garbage; the tarball check
//! never panics, whatever the bytes; index lines round-trip byte for byte, and a yank and an
//! unyank give back the very same file; names and index paths never panic, and a name is
//! matched by itself as a glob.

use bytes::Bytes;
use proptest::prelude::*;

use super::frame::read;
use super::line::{IndexDep, IndexLine, set_yanked};
use super::manifest::{DepKind, Manifest, ManifestDep};
use crate::tarball::inspect;

fn framed(json: &[u8], tarball: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(json.len() as u32).to_le_bytes());
    b.extend_from_slice(json);
    b.extend_from_slice(&(tarball.len() as u32).to_le_bytes());
    b.extend_from_slice(tarball);
    b
}

/// `body` cut at the given sizes (cycled), as a body stream.
fn chunked(
    body: &[u8],
    sizes: &[usize],
) -> impl futures_util::Stream<Item = Result<Bytes, String>> + Unpin {
    let mut parts = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < body.len() {
        let n = sizes[i % sizes.len()].min(body.len() - at);
        parts.push(Ok(Bytes::copy_from_slice(&body[at..at + n])));
        at += n;
        i += 1;
    }
    futures_util::stream::iter(parts)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(f)
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_-]{0,20}"
}

fn manifest(
    features: Vec<(String, Vec<String>)>,
    deps: Vec<(String, Option<String>, u8)>,
) -> Manifest {
    Manifest {
        name: "prop".into(),
        version: "1.0.0".into(),
        license: Some("MIT".into()),
        license_file: None,
        description: None,
        keywords: vec![],
        categories: vec![],
        links: None,
        rust_version: None,
        features: features.into_iter().collect(),
        deps: deps
            .into_iter()
            .map(|(name, package, kind)| ManifestDep {
                name,
                package,
                req: "^1".into(),
                features: vec![],
                optional: kind % 2 == 0,
                default_features: true,
                target: None,
                kind: match kind % 3 {
                    0 => DepKind::Normal,
                    1 => DepKind::Build,
                    _ => DepKind::Dev,
                },
                registry_index: None,
            })
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn a_frame_gives_back_what_was_framed_however_it_is_chunked(
        json in proptest::collection::vec(any::<u8>(), 0..600),
        tarball in proptest::collection::vec(any::<u8>(), 0..3000),
        sizes in proptest::collection::vec(1usize..97, 1..8),
    ) {
        let body = framed(&json, &tarball);
        let upload = block_on(read(chunked(&body, &sizes), 3000)).expect("a whole frame");
        prop_assert_eq!(&upload.json[..], &json[..]);
        prop_assert_eq!(&upload.tarball[..], &tarball[..]);
    }

    #[test]
    fn a_frame_of_garbage_is_refused_or_read_but_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..200),
        sizes in proptest::collection::vec(1usize..17, 1..4),
    ) {
        if let Ok(upload) = block_on(read(chunked(&body, &sizes), 150)) {
            prop_assert_eq!(upload.json.len() + upload.tarball.len() + 8, body.len());
        }
    }

    #[test]
    fn the_tarball_check_never_panics_on_any_bytes(
        raw in proptest::collection::vec(any::<u8>(), 0..2000),
        gzipped in any::<bool>(),
    ) {
        let bytes = if gzipped {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&raw).expect("memory");
            gz.finish().expect("memory")
        } else {
            raw
        };
        // Refused or accepted, never a panic; an accepted one has a manifest within the cap.
        if let Ok(u) = inspect(&bytes, 1 << 20) {
            prop_assert!(u.manifest.len() <= 1 << 20);
        }
    }

    #[test]
    fn index_lines_round_trip_and_a_yank_is_undone_exactly(
        features in proptest::collection::vec(
            (name(), proptest::collection::vec(
                prop_oneof![name(), name().prop_map(|n| format!("dep:{n}")), name().prop_map(|n| format!("{n}?/std"))],
                0..4,
            )),
            0..6,
        ),
        deps in proptest::collection::vec((name(), proptest::option::of(name()), any::<u8>()), 0..6),
    ) {
        let m = manifest(features, deps);
        let index_deps = m.deps.iter().map(|d| IndexDep::of(d, None)).collect();
        let line = IndexLine::new(&m, index_deps, "ab".repeat(32), "2026-12-03T10:00:00Z".into());
        let json = line.to_json();
        let back: IndexLine = serde_json::from_str(&json).expect("a line parses");
        prop_assert_eq!(back.to_json(), json.clone());
        // Every feature is in exactly one of the two maps.
        let two = line.features2.clone().unwrap_or_default();
        prop_assert_eq!(line.features.len() + two.len(), m.features.len());
        prop_assert_eq!(line.v.is_some(), !two.is_empty());
        let body = format!("{json}\n").into_bytes();
        let yanked = set_yanked(&body, "1.0.0", true).expect("parses").expect("found").expect("changed");
        let back = set_yanked(&yanked, "1.0.0", false).expect("parses").expect("found").expect("changed");
        prop_assert_eq!(back, body);
    }

    #[test]
    fn names_and_index_paths_never_panic_and_agree_with_their_globs(s in "\\PC{0,80}") {
        let _ = crate::index::IndexRequest::parse(&s);
        if let Ok(n) = crate::names::CrateName::new(&s) {
            let glob = crate::names::CrateGlob::new(&s).expect("a name is a glob");
            prop_assert!(glob.matches(&n) && glob.matches(&n.lower()));
            prop_assert_eq!(n.lower().canonical(), n.canonical());
        }
    }

    #[test]
    fn the_tarball_check_never_panics_on_any_entries(
        entries in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 1..40), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64)),
            0..6,
        ),
    ) {
        use std::io::Write;
        let mut tar = Vec::new();
        for (path, kind, data) in &entries {
            let mut header = [0u8; 512];
            header[..path.len().min(100)].copy_from_slice(&path[..path.len().min(100)]);
            header[100..107].copy_from_slice(b"0000644");
            header[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
            header[136..147].copy_from_slice(b"00000000000");
            header[156] = *kind;
            header[257..263].copy_from_slice(b"ustar\0");
            header[263..265].copy_from_slice(b"00");
            header[148..156].copy_from_slice(b"        ");
            let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
            header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            tar.extend_from_slice(&header);
            tar.extend_from_slice(data);
            tar.resize(tar.len().div_ceil(512) * 512, 0);
        }
        tar.extend_from_slice(&[0; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("memory");
        let bytes = gz.finish().expect("memory");
        if let Ok(u) = inspect(&bytes, 1 << 20) {
            prop_assert!(u.top.split('/').count() == 1 && !u.top.is_empty());
        }
    }
}
