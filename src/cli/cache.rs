//! `cratedock admin cache ...`: the disk cache of a running server, through the admin API.

use serde_json::{Value, json};

use super::client::Client;
use super::offline::{parse_spec, report_text, stats_text};
use super::progress::Progress;
use super::seg;
use crate::cache::RegistryStats;
use crate::cache::check::Report;

#[derive(clap::Subcommand, Debug)]
pub(super) enum CacheCommand {
    /// Sizes, counts and hit ratios (since start) by registry, and the disk limit.
    Stats,
    /// Evict least recently used files now, down to the low watermark or --to BYTES.
    Gc {
        #[arg(long)]
        to: Option<u64>,
    },
    /// Check every cached file's size and SHA-256 against the bookkeeping and the index
    /// lines (a job on the server; this waits for it). Exits non-zero when it finds a problem.
    Verify {
        /// Remove what is corrupt and fix the bookkeeping.
        #[arg(long)]
        repair: bool,
    },
    /// Remove one crate's cached files (NAME, or NAME@VERSION) from a mirror. Audited.
    Purge {
        spec: String,
        #[arg(long, default_value = "crates-io")]
        registry: String,
    },
    /// Keep a crate's files (NAME, a pattern like 'tokio-*', or NAME@VERSION) from eviction; or,
    /// with --lockfile, every crates.io version a Cargo.lock names.
    Pin {
        #[arg(required_unless_present = "lockfile")]
        spec: Option<String>,
        /// A Cargo.lock file (or a folder searched for them); may be given more than once.
        #[arg(long)]
        lockfile: Vec<std::path::PathBuf>,
        #[arg(long, default_value = "crates-io")]
        registry: String,
    },
    /// Let eviction remove a pinned crate's files again.
    Unpin {
        spec: String,
        #[arg(long, default_value = "crates-io")]
        registry: String,
    },
    /// List a mirror's pins.
    Pins {
        #[arg(long, default_value = "crates-io")]
        registry: String,
    },
}

fn spec_path(registry: &str, what: &str, spec: &str) -> anyhow::Result<String> {
    // A pattern (`tokio-*`) for pins: the server checks it.
    if what == "pins" && spec.ends_with('*') && !spec.contains('@') {
        return Ok(format!(
            "/-/admin/registries/{}/pins/{}",
            seg(registry),
            seg(spec)
        ));
    }
    let (name, version) = parse_spec(spec)?;
    let mut path = format!(
        "/-/admin/registries/{}/{what}/{}",
        seg(registry),
        seg(name.as_str())
    );
    if let Some(v) = version {
        path.push('/');
        path.push_str(&seg(v.as_str()));
    }
    Ok(path)
}

pub(super) async fn execute(
    c: &Client,
    command: CacheCommand,
    as_json: bool,
) -> anyhow::Result<String> {
    let shown = |v: Value, text: &dyn Fn(&Value) -> anyhow::Result<String>| {
        if as_json {
            Ok(format!("{v:#}\n"))
        } else {
            text(&v)
        }
    };
    match command {
        CacheCommand::Stats => shown(c.get("/-/admin/cache").await?, &|v| {
            let stats: Vec<RegistryStats> = serde_json::from_value(v["registries"].clone())?;
            let limit = match v["disk_max_bytes"].as_u64() {
                Some(max) => format!(
                    "{max} bytes (evicting above {}, down to {})",
                    v["evict_above_bytes"], v["evict_down_to_bytes"]
                ),
                None => "none".to_owned(),
            };
            Ok(format!(
                "{}disk: {} bytes; limit: {limit}\n",
                stats_text(&stats),
                v["disk_bytes"]
            ))
        }),
        CacheCommand::Gc { to } => {
            let body = match to {
                Some(t) => json!({ "target_bytes": t }),
                None => json!({}),
            };
            shown(c.post("/-/admin/cache/gc", &body).await?, &|v| {
                Ok(format!(
                    "evicted {} files ({} bytes); {} bytes remain\n",
                    v["files"], v["bytes"], v["remaining_bytes"]
                ))
            })
        }
        CacheCommand::Verify { repair } => {
            let started = c
                .post("/-/admin/cache/verify", &json!({ "repair": repair }))
                .await?;
            let status = started["status"].as_str().unwrap_or_default().to_owned();
            let progress = Progress::new("verify");
            let job = loop {
                let job = c.get(&status).await?;
                if job["state"] != "running" {
                    break job;
                }
                let n = |k: &str| job[k].as_u64().unwrap_or(0);
                progress.set(n("files_done"), n("files_total"));
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            };
            progress.finish();
            if job["state"] != "done" {
                anyhow::bail!("the check failed: {}", job["error"]);
            }
            let report: Report = serde_json::from_value(job["report"].clone())?;
            let out = if as_json {
                format!("{:#}\n", job["report"])
            } else {
                report_text(&report, repair)
            };
            if report.problems_found == 0 {
                Ok(out)
            } else {
                print!("{out}");
                anyhow::bail!("{} problems found", report.problems_found)
            }
        }
        CacheCommand::Purge { spec, registry } => {
            let v = c.delete(&spec_path(&registry, "cache", &spec)?).await?;
            shown(v, &|v| {
                let files = v["removed"].as_array().map_or(0, Vec::len);
                Ok(format!(
                    "removed {files} cached files of {spec} from `{registry}`\n"
                ))
            })
        }
        CacheCommand::Pin {
            spec,
            lockfile,
            registry,
        } => {
            let mut specs: Vec<String> = spec.into_iter().collect();
            specs.extend(
                super::mirroring::locked(&lockfile)?
                    .into_iter()
                    .map(|(n, v)| format!("{n}@{v}")),
            );
            let mut pinned = Vec::new();
            for spec in &specs {
                pinned.push(c.put(&spec_path(&registry, "pins", spec)?).await?);
            }
            shown(Value::Array(pinned), &|_| {
                Ok(format!("pinned {} in `{registry}`\n", specs.join(", ")))
            })
        }
        CacheCommand::Unpin { spec, registry } => {
            let v = c.delete(&spec_path(&registry, "pins", &spec)?).await?;
            shown(v, &|_| Ok(format!("unpinned {spec} in `{registry}`\n")))
        }
        CacheCommand::Pins { registry } => {
            let v = c
                .get(&format!("/-/admin/registries/{}/pins", seg(&registry)))
                .await?;
            shown(v, &|v| {
                let pins = v["pins"].as_array().cloned().unwrap_or_default();
                Ok(pins
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|p| format!("{p}\n"))
                    .collect())
            })
        }
    }
}
