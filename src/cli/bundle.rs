//! Air-gap bundles: `cratedock export` writes one, `cratedock import` reads one, both through a
//! running server's admin API.
//!
//! The rule this module keeps: a bundle is checked whole (every file against its manifest,
//! every crate file against its index line) before anything of it is sent to the server.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::client::Client;
use super::mirroring::{Selection, size};
use super::progress::Progress;
use super::seg;
use crate::index::{IndexLine, hex, prefix_of};

/// The sparse path of a crate's index file.
fn index_path(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    format!("{}/{lower}", prefix_of(&lower))
}

/// `cratedock export`: fetches the selection from the server and writes a bundle.
pub(super) async fn export(
    c: &Client,
    sel: &Selection,
    all: bool,
    output: &Path,
) -> anyhow::Result<String> {
    let mut wanted = sel.wanted()?;
    let r = seg(&sel.registry);
    if all {
        let v = c.get(&format!("/-/admin/registries/{r}/cached")).await?;
        for k in v["crates"].as_array().into_iter().flatten() {
            if let (Some(n), Some(v)) = (k["name"].as_str(), k["version"].as_str()) {
                wanted.crates.insert((n.to_owned(), v.to_owned()));
            }
        }
    }
    // Bare names: every version their index file lists (not yanked), or the newest N.
    let mut index_files: BTreeMap<String, bytes::Bytes> = BTreeMap::new();
    for name in wanted.names.clone() {
        let body = c
            .get_bytes(&format!("/{r}/index/{}", index_path(&name)))
            .await?
            .with_context(|| format!("`{name}` is not in `{}`", sel.registry))?;
        let mut vs: Vec<semver::Version> = crate::index::versions(&body)
            .into_iter()
            .filter(|(_, y)| !y)
            .filter_map(|(v, _)| semver::Version::parse(&v).ok())
            .collect();
        vs.sort();
        let skip = sel.newest.map_or(0, |n| vs.len().saturating_sub(n));
        for v in vs.into_iter().skip(skip) {
            wanted.crates.insert((name.clone(), v.to_string()));
        }
        index_files.insert(name.to_ascii_lowercase(), body);
    }
    anyhow::ensure!(!wanted.crates.is_empty(), "nothing to export");
    // Written beside the output and renamed at the end: a failed export leaves no bundle.
    let partial = output.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let sink = match output.extension().and_then(|e| e.to_str()) {
        Some("gz") => Sink::Gz(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::default(),
        )),
        Some("zst") => Sink::Zstd(zstd::stream::write::Encoder::new(file, 3)?),
        _ => Sink::Plain(file),
    };
    let mut tar = tar::Builder::new(sink);
    let mut manifest = Vec::new();
    let mut add = |tar: &mut tar::Builder<Sink>, path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        tar.append_data(&mut h, path, data)?;
        manifest.push(
            json!({ "path": path, "sha256": hex(&Sha256::digest(data)), "size": data.len() }),
        );
        anyhow::Ok(())
    };
    let mut skipped = Vec::new();
    let progress = Progress::new("export");
    let total = wanted.crates.len() as u64;
    let (mut done, mut bytes) = (0u64, 0u64);
    let names: BTreeSet<String> = wanted
        .crates
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    for (name, version) in &wanted.crates {
        let path = format!("/{r}/api/v1/crates/{}/{}/download", seg(name), seg(version));
        let data = match c.get_bytes(&path).await {
            Ok(Some(d)) => d,
            // With --all, a version refused by policy or gone is left out and named.
            Ok(None) if all => {
                skipped.push(format!("{name}@{version}: not available"));
                continue;
            }
            Err(e) if all => {
                skipped.push(format!("{name}@{version}: {e:#}"));
                continue;
            }
            Ok(None) => anyhow::bail!("{name}@{version} is not available from `{}`", sel.registry),
            Err(e) => return Err(e),
        };
        let lower = name.to_ascii_lowercase();
        add(
            &mut tar,
            &format!("crates/{lower}/{lower}-{version}.crate"),
            &data,
        )?;
        done += 1;
        bytes += data.len() as u64;
        progress.set_noting(done, total, &size(bytes));
    }
    progress.finish();
    for name in names {
        let body = match index_files.remove(&name) {
            Some(b) => b,
            None => c
                .get_bytes(&format!("/{r}/index/{}", index_path(&name)))
                .await?
                .with_context(|| format!("the index file of `{name}` is not available"))?,
        };
        add(&mut tar, &format!("index/{}", index_path(&name)), &body)?;
    }
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let m = json!({
        "format": 1,
        "created": created,
        "source": { "registry": sel.registry, "url": c.base() },
        "files": manifest,
    });
    let mbytes = serde_json::to_vec_pretty(&m)?;
    let mut h = tar::Header::new_gnu();
    h.set_size(mbytes.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    tar.append_data(&mut h, "manifest.json", &mbytes[..])?;
    let file = tar.into_inner()?.finish()?;
    file.sync_all()?;
    std::fs::rename(&partial, output).with_context(|| {
        format!(
            "cannot rename {} to {}",
            partial.display(),
            output.display()
        )
    })?;
    for s in &skipped {
        eprintln!("left out: {s}");
    }
    Ok(format!(
        "wrote {}: {done} crate files ({}), {} index files{}\n",
        output.display(),
        size(bytes),
        m["files"].as_array().map_or(0, Vec::len) as u64 - done,
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; {} versions left out", skipped.len())
        }
    ))
}

/// Where a bundle is written: a file, or a gzip stream into one.
enum Sink {
    Plain(std::fs::File),
    Gz(flate2::write::GzEncoder<std::fs::File>),
    Zstd(zstd::stream::write::Encoder<'static, std::fs::File>),
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Plain(f) => f.write(buf),
            Sink::Gz(g) => g.write(buf),
            Sink::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Plain(f) => f.flush(),
            Sink::Gz(g) => g.flush(),
            Sink::Zstd(z) => z.flush(),
        }
    }
}

impl Sink {
    /// Ends the stream (the gzip trailer) and hands back the file.
    fn finish(self) -> std::io::Result<std::fs::File> {
        match self {
            Sink::Plain(mut f) => {
                std::io::Write::flush(&mut f)?;
                Ok(f)
            }
            Sink::Gz(g) => g.finish(),
            Sink::Zstd(z) => z.finish(),
        }
    }
}

/// Files read whole while a bundle is checked: its manifest and its index files.
const MAX_SMALL_FILE: u64 = 64 * 1024 * 1024;

/// A bundle's tar entries, decompressed (gzip, zstd or plain, by the first bytes).
fn entries_of(path: &Path) -> anyhow::Result<tar::Archive<Box<dyn Read>>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut f = std::io::BufReader::new(file);
    let head = std::io::BufRead::fill_buf(&mut f)?;
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(f))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(f)?)
    } else {
        Box::new(f)
    };
    Ok(tar::Archive::new(reader))
}

/// Walks the regular files of a bundle, with safe relative paths.
fn each_file(
    path: &Path,
    mut visit: impl FnMut(&str, &mut dyn Read, u64) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut archive = entries_of(path)?;
    for entry in archive
        .entries()
        .context("the bundle is not a tar archive")?
    {
        let mut entry = entry.context("the bundle is not a tar archive")?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let p = entry.path()?.to_string_lossy().into_owned();
        let p = p.trim_start_matches("./").to_owned();
        anyhow::ensure!(
            !p.split('/').any(|c| c == ".." || c.is_empty()) && !p.starts_with('/'),
            "the bundle has an unsafe path `{p}`"
        );
        let size = entry.size();
        visit(&p, &mut entry, size)?;
    }
    Ok(())
}

/// What the first pass learns: each file's SHA-256 and size, and the small files whole.
struct Checked {
    digests: BTreeMap<String, (String, u64)>,
    index_files: BTreeMap<String, Vec<u8>>,
}

/// Reads a bundle once, streaming: hashes every file, keeps the manifest and the index files,
/// and checks every file against the manifest. Nothing else is kept in memory.
fn check_bundle(path: &Path) -> anyhow::Result<Checked> {
    let mut digests = BTreeMap::new();
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    each_file(path, |p, entry, size| {
        let keep = p == "manifest.json" || p.starts_with("index/");
        anyhow::ensure!(
            !keep || size <= MAX_SMALL_FILE,
            "{p} is larger than {MAX_SMALL_FILE} bytes"
        );
        let mut hasher = Sha256::new();
        let mut data = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        loop {
            let read = entry.read(&mut buf)?;
            if read == 0 {
                break;
            }
            hasher.update(&buf[..read]);
            if keep {
                data.extend_from_slice(&buf[..read]);
            }
            n += read as u64;
        }
        digests.insert(p.to_owned(), (hex(&hasher.finalize()), n));
        if keep {
            small.insert(p.to_owned(), data);
        }
        Ok(())
    })?;
    let manifest = small
        .remove("manifest.json")
        .context("the bundle has no manifest.json")?;
    let m: Value = serde_json::from_slice(&manifest).context("manifest.json is not JSON")?;
    let listed = m["files"]
        .as_array()
        .context("manifest.json lists no files")?;
    let mut named = BTreeSet::new();
    for f in listed {
        let p = f["path"]
            .as_str()
            .context("a manifest entry without a path")?;
        let (sha, size) = digests
            .get(p)
            .with_context(|| format!("{p} is in the manifest but not in the bundle"))?;
        anyhow::ensure!(
            Some(sha.as_str()) == f["sha256"].as_str() && Some(*size) == f["size"].as_u64(),
            "{p}: its SHA-256 or size differs from the manifest's; the bundle is damaged, nothing was imported"
        );
        named.insert(p.to_owned());
    }
    for p in digests.keys() {
        anyhow::ensure!(
            p == "manifest.json" || named.contains(p),
            "{p} is in the bundle but not in its manifest; nothing was imported"
        );
    }
    Ok(Checked {
        digests,
        index_files: small,
    })
}

/// `cratedock import`: checks the whole bundle (a first pass), then sends its crate files one
/// at a time (a second pass, each file checked again as it is read), then its index files.
pub(super) async fn import(
    c: &Client,
    bundle: &Path,
    registry: &str,
    into: Option<&str>,
) -> anyhow::Result<String> {
    let checked = {
        let path = bundle.to_owned();
        tokio::task::spawn_blocking(move || check_bundle(&path)).await??
    };
    // Every crate file against its index line in the bundle.
    let mut lines: BTreeMap<(String, String), String> = BTreeMap::new();
    for (p, data) in &checked.index_files {
        let name = p.rsplit('/').next().unwrap_or_default();
        let file = crate::index::IndexFile::Crate(
            crate::names::CrateName::new(name)
                .with_context(|| format!("{p}: not a crate's index file"))?,
        );
        crate::index::validate_body(&file, data).map_err(|e| {
            anyhow::anyhow!("{p}: {e}; the bundle is damaged, nothing was imported")
        })?;
        for l in data.split(|&x| x == b'\n').filter(|l| !l.is_empty()) {
            let line: IndexLine = serde_json::from_slice(l)
                .with_context(|| format!("{p}: a line is not an index entry"))?;
            lines.insert((line.name.to_ascii_lowercase(), line.vers), line.cksum);
        }
    }
    // Crate file path → (name, version, cksum).
    let mut crates: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for (p, (sha, _)) in checked
        .digests
        .iter()
        .filter(|(p, _)| p.starts_with("crates/"))
    {
        let file = p.rsplit('/').next().unwrap_or_default();
        let dir = p.split('/').nth(1).unwrap_or_default();
        let version = file
            .strip_prefix(&format!("{dir}-"))
            .and_then(|f| f.strip_suffix(".crate"))
            .with_context(|| format!("{p}: not a crates/NAME/NAME-VERSION.crate path"))?;
        let cksum = lines
            .get(&(dir.to_owned(), version.to_owned()))
            .with_context(|| format!("{p}: no index line in the bundle names this version"))?;
        anyhow::ensure!(
            sha.eq_ignore_ascii_case(cksum),
            "{p}: its SHA-256 is {sha}, but its index line says {cksum}; the bundle is damaged, nothing was imported"
        );
        crates.insert(
            p.clone(),
            (dir.to_owned(), version.to_owned(), cksum.clone()),
        );
    }
    // The second pass: each crate file read again, checked again, and handed on.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<(String, Vec<u8>)>>(2);
    let reader = {
        let (path, wanted) = (bundle.to_owned(), crates.clone());
        tokio::task::spawn_blocking(move || {
            let result = each_file(&path, |p, entry, _| {
                let Some((_, _, cksum)) = wanted.get(p) else {
                    return Ok(());
                };
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                anyhow::ensure!(
                    hex(&Sha256::digest(&data)).eq_ignore_ascii_case(cksum),
                    "{p} changed since it was checked; nothing more was imported"
                );
                tx.blocking_send(Ok((p.to_owned(), data)))
                    .map_err(|_| anyhow::anyhow!("the import stopped"))
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        })
    };
    let r = seg(registry);
    let private_dir = into.map(|_| tempfile_dir()).transpose()?;
    let progress = Progress::new("import");
    let total = crates.len() as u64;
    let (mut added, mut changed, mut done) = (0u64, 0u64, 0u64);
    while let Some(next) = rx.recv().await {
        let (p, data) = next?;
        let (name, version, cksum) = &crates[&p];
        if let Some(dir) = &private_dir {
            std::fs::write(dir.join(format!("{name}-{version}.crate")), &data)?;
        } else {
            let path = format!(
                "/-/admin/registries/{r}/cached/crates/{}/{}",
                seg(name),
                seg(version)
            );
            let v = c
                .put_bytes(&path, &[("x-cratedock-cksum", cksum)], data)
                .await?;
            added += u64::from(v["added"] == true);
        }
        done += 1;
        progress.set(done, total);
    }
    reader.await?;
    progress.finish();
    if let (Some(private), Some(dir)) = (into, &private_dir) {
        let out = super::import::import(c, private, std::slice::from_ref(dir)).await;
        let _ = std::fs::remove_dir_all(dir);
        return out;
    }
    anyhow::ensure!(done == total, "the bundle could not be read again whole");
    for (p, data) in &checked.index_files {
        let name = p.rsplit('/').next().unwrap_or_default();
        let path = format!("/-/admin/registries/{r}/cached/index/{}", seg(name));
        let v = c.put_bytes(&path, &[], data.clone()).await?;
        changed += u64::from(v["changed"] == true);
    }
    Ok(format!(
        "imported {} into `{registry}`: added {added} crate files ({} present already), {changed} index files changed\n",
        bundle.display(),
        total - added
    ))
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("cratedock-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
