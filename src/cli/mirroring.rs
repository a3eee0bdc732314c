//! `cratedock prefetch`, and the command lines of `export` and `import` (see [`super::bundle`]):
//! mirroring through a running server's admin API.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

use super::client::Client;
use super::progress::Progress;
use super::seg;

/// What `prefetch` and `export` work on.
#[derive(clap::Args, Debug)]
pub(super) struct Selection {
    /// Cargo.lock files, or folders searched for them (`target/` and hidden folders skipped).
    paths: Vec<PathBuf>,
    /// A file of `name@version` or `name` lines (`#` comments).
    #[arg(long)]
    list: Option<PathBuf>,
    /// With a bare `name`: only its newest N versions (not yanked).
    #[arg(long)]
    pub(super) newest: Option<usize>,
    #[arg(long, default_value = "crates-io")]
    pub(super) registry: String,
}

/// Versions and bare names a selection names.
#[derive(Debug, Default)]
pub(super) struct Wanted {
    pub(super) crates: BTreeSet<(String, String)>,
    pub(super) names: BTreeSet<String>,
}

/// The crates.io packages of the lock files found in `paths`.
fn lock_files(paths: &[PathBuf], out: &mut Wanted) -> anyhow::Result<usize> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            // Symbolic links are not followed (a link to a parent would never end).
            if entry.file_type()?.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    walk(&path, found)?;
                }
            } else if name == "Cargo.lock" {
                found.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut files)?;
        } else {
            files.push(p.clone());
        }
    }
    for f in &files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let lock: rustsec::Lockfile = text
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: not a Cargo.lock: {e}", f.display()))?;
        for p in &lock.packages {
            if p.source.as_ref().is_some_and(|s| s.is_default_registry()) {
                out.crates
                    .insert((p.name.as_str().to_owned(), p.version.to_string()));
            }
        }
    }
    Ok(files.len())
}

impl Selection {
    pub(super) fn wanted(&self) -> anyhow::Result<Wanted> {
        let mut out = Wanted::default();
        let locks = lock_files(&self.paths, &mut out)?;
        anyhow::ensure!(
            self.paths.is_empty() || locks > 0,
            "no Cargo.lock found in the given paths"
        );
        if let Some(list) = &self.list {
            let text = std::fs::read_to_string(list)
                .with_context(|| format!("cannot read {}", list.display()))?;
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                match line.split_once('@') {
                    Some((n, v)) => out.crates.insert((n.trim().into(), v.trim().into())),
                    None => out.names.insert(line.to_owned()),
                };
            }
        }
        Ok(out)
    }
}

/// `cratedock prefetch`.
pub(super) async fn prefetch(
    c: &Client,
    sel: &Selection,
    pin: bool,
    wait: bool,
    as_json: bool,
) -> anyhow::Result<String> {
    let wanted = sel.wanted()?;
    anyhow::ensure!(
        !wanted.crates.is_empty() || !wanted.names.is_empty(),
        "nothing to prefetch: give Cargo.lock files, folders holding them, or --list FILE"
    );
    let crates: Vec<Value> = wanted
        .crates
        .iter()
        .map(|(n, v)| json!({ "name": n, "version": v }))
        .collect();
    let body = json!({ "crates": crates, "names": wanted.names, "newest": sel.newest, "pin": pin });
    let path = format!("/-/admin/registries/{}/prefetch", seg(&sel.registry));
    let started = c.post(&path, &body).await?;
    let status = started["status"].as_str().unwrap_or_default().to_owned();
    if !wait {
        return Ok(format!(
            "prefetch job {} started: {status}\n",
            started["job"]
        ));
    }
    let progress = Progress::new("prefetch");
    let job = loop {
        let job = c.get(&status).await?;
        let n = |k: &str| job[k].as_u64().unwrap_or(0);
        let bytes = job["prefetch"]["bytes"].as_u64().unwrap_or(0);
        progress.set_noting(
            n("files_done"),
            n("files_total"),
            &format!("{} fetched", size(bytes)),
        );
        if job["state"] != "running" {
            break job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    progress.finish();
    let text = job_text(&job);
    if as_json {
        println!("{job:#}");
    }
    let failed = job["prefetch"]["failed"].as_array().map_or(0, Vec::len);
    if job["state"] != "done" || failed > 0 {
        eprint!("{text}");
        anyhow::bail!("the prefetch did not complete: {failed} failed");
    }
    Ok(if as_json { String::new() } else { text })
}

pub(super) fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// A prefetch job for people: its summary line and its failures.
pub(super) fn job_text(job: &Value) -> String {
    let p = &job["prefetch"];
    let mut out = String::new();
    for f in p["failed"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "failed: {}: {}\n",
            f["crate"].as_str().unwrap_or("?"),
            f["error"].as_str().unwrap_or("?")
        ));
    }
    out.push_str(&format!(
        "prefetch job {} {}: fetched {} ({}), cached already {}, failed {} (of {} files)\n",
        job["id"],
        job["state"].as_str().unwrap_or("?"),
        p["fetched"].as_u64().unwrap_or(0),
        size(p["bytes"].as_u64().unwrap_or(0)),
        p["cached"].as_u64().unwrap_or(0),
        p["failed"].as_array().map_or(0, Vec::len),
        job["files_total"].as_u64().unwrap_or(0),
    ));
    if let Some(e) = job["error"].as_str() {
        out.push_str(&format!("error: {e}\n"));
    }
    out
}

/// `cratedock prefetch --status`: the latest prefetch job.
pub(super) async fn status(c: &Client, as_json: bool) -> anyhow::Result<String> {
    let v = c.get("/-/admin/jobs?kind=prefetch").await?;
    let Some(job) = v["jobs"].as_array().and_then(|j| j.first()).cloned() else {
        return Ok("no prefetch job since the server started\n".to_owned());
    };
    Ok(if as_json {
        format!("{job:#}\n")
    } else {
        job_text(&job)
    })
}

/// The versions of the crates.io packages of lock files, for pins.
pub(super) fn locked(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut w = Wanted::default();
    lock_files(paths, &mut w)?;
    Ok(w.crates.into_iter().collect())
}

/// `cratedock prefetch ...`: fill a mirror's cache ahead of need.
#[derive(clap::Args)]
pub struct PrefetchArgs {
    #[command(flatten)]
    connection: super::client::Connection,
    #[command(flatten)]
    selection: Selection,
    /// Pin each version prefetched (or found cached), so eviction never removes it.
    #[arg(long)]
    pin: bool,
    /// Start the job and return (follow it with --status).
    #[arg(long)]
    no_wait: bool,
    /// Show the latest prefetch job instead of starting one.
    #[arg(long)]
    status: bool,
}

/// Runs `cratedock prefetch`.
pub fn run_prefetch(args: PrefetchArgs) -> anyhow::Result<()> {
    let PrefetchArgs {
        connection,
        selection,
        pin,
        no_wait,
        status,
    } = args;
    connection.run(|c, as_json| async move {
        if status {
            self::status(&c, as_json).await
        } else {
            prefetch(&c, &selection, pin, !no_wait, as_json).await
        }
    })
}

/// `cratedock export ...`: an air-gap bundle of a mirror's crates.
#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    connection: super::client::Connection,
    #[command(flatten)]
    selection: Selection,
    /// Everything the mirror has cached.
    #[arg(long)]
    all: bool,
    /// The bundle to write: a tar, zstd-compressed when it ends in .zst, gzip'd for .gz.
    #[arg(long, short)]
    output: PathBuf,
}

pub fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    let ExportArgs {
        connection,
        selection,
        all,
        output,
    } = args;
    connection.run(|c, _| async move { super::bundle::export(&c, &selection, all, &output).await })
}

/// `cratedock import BUNDLE`: a bundle's files into a mirror's cache (or a private registry).
#[derive(clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    connection: super::client::Connection,
    bundle: PathBuf,
    /// The mirror whose cache receives the files.
    #[arg(long, default_value = "crates-io")]
    registry: String,
    /// Publish each crate to this private registry instead, through its publish checks.
    #[arg(long)]
    into: Option<String>,
}

pub fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    let ImportArgs {
        connection,
        bundle,
        registry,
        into,
    } = args;
    connection.run(|c, _| async move {
        super::bundle::import(&c, &bundle, &registry, into.as_deref()).await
    })
}
