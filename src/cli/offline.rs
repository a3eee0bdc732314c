//! Commands that work on a data folder directly, with the server stopped (sled allows one
//! process per folder): `cratedock verify`, `gc`, `cache stats`, `cache purge`. Their online
//! forms go through the admin API (`cratedock admin cache ...`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::progress::Progress;
use crate::cache::check::{Checker, Options, Report};
use crate::cache::{Keeper, Limit, RegistryStats};
use crate::config::{CliOverrides, Config, RegistryConfig};
use crate::metrics::Metrics;
use crate::names::{CrateName, RegistryName, Version};
use crate::store::{
    AccountStore, Actor, AuditEntry, CacheBook, FsBlobStore, SledAccounts, SledBook, SledMeta,
    now_ms,
};

/// Where the data folder is: a configuration file, or the folder itself.
#[derive(clap::Args, Debug, Clone)]
pub struct FolderArgs {
    /// The configuration the server runs with (its storage.data_dir and registries).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The data folder (overriding the configuration's; without --config, the embedded
    /// default configuration's registries).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// A data folder opened by a command.
pub struct Folder {
    pub config: Config,
    book: Arc<SledBook>,
    accounts: SledAccounts,
    disk: Arc<FsBlobStore>,
    keeper: Keeper,
    mirrors: Vec<RegistryName>,
}

impl Folder {
    pub fn open(args: &FolderArgs) -> anyhow::Result<Self> {
        let overrides = CliOverrides {
            listen: None,
            data_dir: args.data_dir.clone(),
        };
        let config = Config::load(args.config.as_deref(), &overrides)?;
        let dir = config.storage.data_dir.clone();
        anyhow::ensure!(
            dir.join("meta").exists(),
            "{} holds no cratedock data (no meta/ folder)",
            dir.display()
        );
        let db = SledMeta::open(&dir.join("meta")).map_err(|e| {
            if e.to_string().contains("another cratedock") {
                anyhow::anyhow!(
                    "{e}\nthese commands need the server stopped; against a running server use `cratedock admin cache ...`"
                )
            } else {
                e.into()
            }
        })?;
        let book = Arc::new(SledBook::with_meta(db.clone())?);
        let accounts = SledAccounts::with_meta(db)?;
        let disk = Arc::new(FsBlobStore::open(&dir)?);
        let c = &config.cache;
        let mirrors: Vec<RegistryName> = config
            .registries
            .iter()
            .filter(|(_, r)| matches!(r, RegistryConfig::Mirror(_)))
            .map(|(n, _)| RegistryName::new(n))
            .collect::<Result<_, _>>()?;
        let keeper = Keeper::new(
            book.clone(),
            disk.clone(),
            Limit::new(c.disk_max_bytes, c.evict_high_percent, c.evict_low_percent),
            mirrors.clone(),
            Arc::new(Metrics::new()),
        );
        Ok(Self {
            config,
            book,
            accounts,
            disk,
            keeper,
            mirrors,
        })
    }

    fn data_dir(&self) -> &Path {
        &self.config.storage.data_dir
    }

    /// Checks every cached file; with `repair`, fixes what is wrong.
    pub async fn verify(&self, repair: bool) -> anyhow::Result<Report> {
        let progress = Progress::new("verify");
        let checker = Checker {
            book: self.book.as_ref(),
            disk: self.disk.as_ref(),
            blobs: self.disk.as_ref(),
            mirrors: &self.mirrors,
            progress: &|done, total| progress.set(done, total),
        };
        let opts = Options {
            repair,
            contents: true,
        };
        let report = checker.run(opts).await;
        progress.finish();
        self.close().await?;
        Ok(report?)
    }

    /// Evicts least recently used files down to `target` bytes (default: the low watermark).
    pub async fn gc(&self, target: Option<u64>) -> anyhow::Result<crate::cache::Evicted> {
        let target = match (target, self.keeper.limit()) {
            (Some(t), _) => t,
            (None, Some(limit)) => limit.low_bytes,
            (None, None) => anyhow::bail!(
                "cache.disk_max_bytes is 0 (no limit) in this configuration: give --to BYTES"
            ),
        };
        let done = self.keeper.evict_to(target).await?;
        self.audit(
            "cache.gc",
            None,
            None,
            &format!("{target} bytes"),
            &done_text(&done),
        )
        .await?;
        self.close().await?;
        Ok(done)
    }

    pub async fn stats(&self) -> anyhow::Result<Vec<RegistryStats>> {
        Ok(self.keeper.stats().await?)
    }

    /// Removes one crate's (or one version's) cached files from a mirror; audited.
    pub async fn purge(&self, registry: &str, spec: &str) -> anyhow::Result<Vec<String>> {
        anyhow::ensure!(
            self.mirrors.iter().any(|m| m.as_str() == registry),
            "`{registry}` is not a mirror registry in this configuration"
        );
        let registry = RegistryName::new(registry)?;
        let (name, version) = parse_spec(spec)?;
        let removed = self
            .keeper
            .purge(&registry, &name, version.as_ref())
            .await?;
        let outcome = format!("ok: {} files removed", removed.len());
        self.audit("cache.purge", Some(&registry), Some(&name), spec, &outcome)
            .await?;
        self.close().await?;
        Ok(removed
            .iter()
            .map(|k| self.data_dir().join(k.rel_path()).display().to_string())
            .collect())
    }

    async fn audit(
        &self,
        action: &str,
        registry: Option<&RegistryName>,
        name: Option<&CrateName>,
        target: &str,
        outcome: &str,
    ) -> anyhow::Result<()> {
        let user = std::env::var("USER").unwrap_or_default();
        let entry = AuditEntry {
            seq: 0,
            time_ms: now_ms(),
            actor: Actor {
                principal: Some(format!("offline-cli:{user}")),
                ..Actor::default()
            },
            source: None,
            action: action.to_owned(),
            registry: registry.map(|r| r.to_string()),
            krate: name.map(|n| n.to_string()),
            target: target.to_owned(),
            outcome: outcome.to_owned(),
        };
        self.accounts.append_audit(&entry).await?;
        Ok(())
    }

    async fn close(&self) -> anyhow::Result<()> {
        self.book
            .flush()
            .await
            .context("cannot flush the bookkeeping")?;
        self.accounts.flush().await?;
        Ok(())
    }
}

fn done_text(done: &crate::cache::Evicted) -> String {
    format!("ok: {} files, {} bytes evicted", done.files, done.bytes)
}

/// `NAME` or `NAME@VERSION`.
pub fn parse_spec(spec: &str) -> anyhow::Result<(CrateName, Option<Version>)> {
    let (name, version) = match spec.split_once('@') {
        Some((n, v)) => (n, Some(Version::new(v)?)),
        None => (spec, None),
    };
    Ok((CrateName::new(name)?.lower(), version))
}

/// The report as lines: one per problem, then a summary.
pub fn report_text(report: &Report, repair: bool) -> String {
    let mut out = String::new();
    for p in &report.problems {
        out.push_str(&format!("BAD {}: {}", p.file, p.problem));
        if let Some(a) = &p.action {
            out.push_str(&format!(" -> {a}"));
        }
        out.push('\n');
    }
    if report.problems_found > report.problems.len() as u64 {
        out.push_str(&format!(
            "(the first {} of {} problems are listed)\n",
            report.problems.len(),
            report.problems_found
        ));
    }
    out.push_str(&format!(
        "{} files ({} bytes) checked, {} problem{}{}\n",
        report.files,
        report.bytes,
        report.problems_found,
        if report.problems_found == 1 { "" } else { "s" },
        if repair && report.problems_found > 0 {
            format!(" repaired ({} adopted)", report.adopted)
        } else {
            String::new()
        }
    ));
    out
}

/// The statistics as a table.
pub fn stats_text(stats: &[RegistryStats]) -> String {
    let rows = stats
        .iter()
        .map(|s| {
            let ratio = match (s.hits, s.lookups) {
                (Some(h), Some(l)) if l > 0 => format!("{:.1}%", h as f64 * 100.0 / l as f64),
                (Some(_), Some(_)) => "-".to_owned(),
                _ => "(online only)".to_owned(),
            };
            vec![
                s.registry.clone(),
                s.index_files.to_string(),
                s.index_bytes.to_string(),
                s.crate_files.to_string(),
                s.crate_bytes.to_string(),
                ratio,
                format!("{} s", s.oldest_use_age_ms / 1000),
            ]
        })
        .collect();
    super::table::table(
        &[
            "REGISTRY",
            "INDEX FILES",
            "INDEX BYTES",
            "CRATE FILES",
            "CRATE BYTES",
            "HIT RATIO",
            "OLDEST USE",
        ],
        rows,
    )
}

/// The offline commands.
#[derive(clap::Subcommand, Debug)]
pub enum CacheOffline {
    /// Sizes and counts of the cached files, by registry.
    Stats {
        #[command(flatten)]
        folder: FolderArgs,
    },
    /// Remove one crate's cached files (NAME, or NAME@VERSION for one version) from a mirror;
    /// they are fetched again when next asked for. Audited.
    Purge {
        spec: String,
        #[arg(long, default_value = "crates-io")]
        registry: String,
        #[command(flatten)]
        folder: FolderArgs,
    },
}

/// Runs an async command on a small runtime.
pub fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}
