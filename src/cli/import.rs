//! `cratedock admin import`: existing `.crate` files (migrating from another registry)
//! published through the same API and checks as `cargo publish`.
//!
//! The rule this module keeps: one file's failure never stops the others; a version already
//! there with the same bytes counts as skipped, not failed (with other bytes, as failed); the
//! command fails when any file failed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::client::Client;
use crate::registry::{MAX_JSON_BYTES, manifest_of};

/// The `.crate` files named by `paths` (folders are searched recursively), in a stable order.
fn crate_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else if path.extension().is_some_and(|e| e == "crate") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The body `cargo publish` would send for `tarball`: its name and version come from the
/// manifest inside (the server reads everything else from there too).
fn frame(tarball: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (name, vers) = manifest_of(tarball)?;
    let json = serde_json::to_vec(&serde_json::json!({ "name": name, "vers": vers }))?;
    anyhow::ensure!(
        json.len() as u64 <= u64::from(MAX_JSON_BYTES),
        "metadata too large"
    );
    let len = u32::try_from(tarball.len()).context("the file is larger than 4 GiB")?;
    let mut body = Vec::with_capacity(8 + json.len() + tarball.len());
    body.extend_from_slice(&(json.len() as u32).to_le_bytes());
    body.extend_from_slice(&json);
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(tarball);
    Ok(body)
}

/// Imports the files; the summary line and one line per failure go to the returned text.
pub(super) async fn import(
    c: &Client,
    registry: &str,
    paths: &[PathBuf],
) -> anyhow::Result<String> {
    let files = crate_files(paths)?;
    anyhow::ensure!(
        !files.is_empty(),
        "no .crate files found in the given paths"
    );
    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut imported, mut skipped) = (0usize, 0usize);
    let mut failures = Vec::new();
    for file in &files {
        bar.set_message(
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let outcome = match std::fs::read(file)
            .with_context(|| format!("cannot read {}", file.display()))
            .and_then(|bytes| frame(&bytes))
        {
            Ok(body) => c
                .publish(registry, body)
                .await
                .unwrap_or_else(|e| Err((0, format!("{e:#}")))),
            Err(e) => Err((0, format!("{e:#}"))),
        };
        match outcome {
            Ok(_) => imported += 1,
            // Skipped only when the registry holds this very file; another file under the same
            // version is a conflict to look at.
            Err((409, detail)) if detail.contains("(the same file as this one)") => skipped += 1,
            Err((_, detail)) => failures.push(format!("{}: {detail}", file.display())),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut out = String::new();
    for f in &failures {
        out.push_str(&format!("failed: {f}\n"));
    }
    out.push_str(&format!(
        "{imported} imported, {skipped} already present, {} failed (of {} files) into `{registry}`\n",
        failures.len(),
        files.len()
    ));
    if failures.is_empty() {
        Ok(out)
    } else {
        eprint!("{out}");
        anyhow::bail!(
            "{} of {} files could not be imported",
            failures.len(),
            files.len()
        )
    }
}
