//! `cratedock advisories ...` and `cratedock admin curate ...`: the supply-chain policy of a
//! running server, through the admin API.

use serde_json::{Value, json};

use super::client::Client;
use super::seg;
use super::table::{table, text};

#[derive(clap::Subcommand, Debug)]
pub(super) enum AdvisoriesCommand {
    /// The database in use: how many advisories, from where, how old, the last refresh.
    Status,
    /// Refresh the database now (fetch `advisories.url`, or read `advisories.path` again);
    /// the database in use stays when it fails (exit code 1).
    Sync,
    /// Every cached and private crate version affected by an advisory that counts under its
    /// registry's settings.
    Report {
        /// Only this registry's versions.
        #[arg(long)]
        registry: Option<String>,
    },
}

#[derive(clap::Subcommand, Debug)]
pub(super) enum CurateCommand {
    /// Allow a crate (`serde`), a name pattern (`tokio-*`), optionally with a version
    /// requirement (`serde@^1`, `'tokio@>=1.20, <2'`); an existing entry's requirement is
    /// replaced.
    Add {
        spec: String,
        #[arg(long, default_value = "crates-io")]
        registry: String,
    },
    /// Remove a crate or pattern from the list.
    Remove {
        name: String,
        #[arg(long, default_value = "crates-io")]
        registry: String,
    },
    /// The list of a mirror.
    List {
        #[arg(long, default_value = "crates-io")]
        registry: String,
    },
}

fn shown(v: Value, as_json: bool, text: impl FnOnce(&Value) -> String) -> String {
    if as_json {
        format!("{v:#}\n")
    } else {
        text(&v)
    }
}

fn status_text(v: &Value) -> String {
    if v["loaded"] != true {
        let why = if v["configured"] == true {
            "configured, but none loaded yet (see the server's log)"
        } else {
            "none configured (set [advisories] path or url)"
        };
        return format!("advisory database: {why}\n");
    }
    let mut out = format!(
        "advisory database: {} advisories from {}\nage: {} s{}\n",
        v["advisories"],
        text(&v["source"]),
        v["age_seconds"],
        if v["stale"] == true {
            " (older than advisories.max_age_ms)"
        } else {
            ""
        }
    );
    if let Some(last) = v["last_refresh"].as_object() {
        out.push_str(&format!(
            "last refresh: {}{}\n",
            text(&last["outcome"]),
            last.get("error")
                .map(|e| format!(": {}", text(e)))
                .unwrap_or_default()
        ));
    }
    out
}

pub(super) async fn advisories(
    c: &Client,
    command: AdvisoriesCommand,
    as_json: bool,
) -> anyhow::Result<String> {
    Ok(match command {
        AdvisoriesCommand::Status => {
            shown(c.get("/-/admin/advisories").await?, as_json, status_text)
        }
        AdvisoriesCommand::Sync => {
            let v = c.post("/-/admin/advisories/sync", &json!({})).await?;
            shown(v, as_json, |v| {
                format!(
                    "{}: {} advisories in use\n",
                    text(&v["outcome"]),
                    v["advisories"]
                )
            })
        }
        AdvisoriesCommand::Report { registry } => {
            let mut v = c.get("/-/admin/advisories/report").await?;
            if let (Some(r), Some(list)) = (&registry, v["affected"].as_array_mut()) {
                list.retain(|a| a["registry"].as_str() == Some(r.as_str()));
            }
            shown(v, as_json, |v| {
                let rows: Vec<Vec<String>> = v["affected"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let patched: Vec<String> = a["patched"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(text)
                            .collect();
                        vec![
                            text(&a["registry"]),
                            format!("{} {}", text(&a["name"]), text(&a["version"])),
                            text(&a["advisory"]),
                            text(&a["kind"]),
                            if patched.is_empty() {
                                "none".to_owned()
                            } else {
                                patched.join(", ")
                            },
                            text(&a["action"]),
                            text(&a["title"]),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    return "no cached or private crate version is affected by a counted advisory\n"
                        .to_owned();
                }
                table(
                    &[
                        "REGISTRY", "CRATE", "ADVISORY", "KIND", "PATCHED", "ACTION", "TITLE",
                    ],
                    rows,
                )
            })
        }
    })
}

pub(super) async fn curate(
    c: &Client,
    command: CurateCommand,
    as_json: bool,
) -> anyhow::Result<String> {
    let path = |registry: &str, name: &str| {
        format!(
            "/-/admin/registries/{}/curated/{}",
            seg(registry),
            seg(name)
        )
    };
    let changed = |v: &Value| {
        let mut out = format!(
            "{}: {}\n",
            text(&v["entry"]),
            if v["changed"] == true {
                "done"
            } else {
                "no change"
            }
        );
        if v["enforced"] == false {
            out.push_str("note: this mirror is not curated (set curated = true in its configuration); the list takes effect then\n");
        }
        out
    };
    Ok(match command {
        CurateCommand::Add { spec, registry } => {
            let (name, req) = match spec.split_once('@') {
                Some((n, r)) => (n, Some(r.trim())),
                None => (spec.as_str(), None),
            };
            let body = json!({ "req": req });
            shown(
                c.put_json(&path(&registry, name), &body).await?,
                as_json,
                changed,
            )
        }
        CurateCommand::Remove { name, registry } => {
            let name = name.split_once('@').map_or(name.as_str(), |(n, _)| n);
            shown(c.delete(&path(&registry, name)).await?, as_json, changed)
        }
        CurateCommand::List { registry } => {
            let v = c
                .get(&format!("/-/admin/registries/{}/curated", seg(&registry)))
                .await?;
            shown(v, as_json, |v| {
                let mut out: String = v["curated"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| format!("{}\n", text(e)))
                    .collect();
                if v["enforced"] == false {
                    out.push_str("(this mirror is not curated: curated = false)\n");
                }
                out
            })
        }
    })
}

/// `cratedock advisories ...`: the advisory database of a running server.
#[derive(clap::Args)]
pub struct AdvisoriesArgs {
    #[command(flatten)]
    connection: super::client::Connection,
    #[command(subcommand)]
    command: AdvisoriesCommand,
}

/// Runs one `cratedock advisories` command.
pub fn run_advisories(args: AdvisoriesArgs) -> anyhow::Result<()> {
    let command = args.command;
    args.connection
        .run(|c, as_json| async move { advisories(&c, command, as_json).await })
}
