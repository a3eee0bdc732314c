//! `cratedock admin ...`: a client of the admin API (sled allows one process per data folder,
//! so admin work goes through the running server). Tables for people, `--json` for scripts;
//! `token create` prints the token alone on stdout so that `$(...)` captures it.
//!
//! The rule this module keeps: a token is read from a file or the environment, never from the
//! command line, and never printed except by `token create`.

mod bundle;
mod cache;
mod client;
mod import;
mod mirroring;
pub mod offline;
mod policy;
mod progress;
mod table;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use client::{Client, Connection};
pub use mirroring::{ExportArgs, ImportArgs, PrefetchArgs, run_export, run_import, run_prefetch};
pub use policy::{AdvisoriesArgs, run_advisories};
use table::{grants, table, teams, text, time, tokens, users};

#[derive(Args)]
pub struct AdminArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Users: add, list, disable, enable.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Teams: add, list, add-member, remove-member.
    Team {
        #[command(subcommand)]
        command: TeamCommand,
    },
    /// Grant a permission (`grant --user LOGIN --permission read --registry crates-io`), or
    /// `grant list`, `grant remove ID`.
    #[command(args_conflicts_with_subcommands = true)]
    Grant {
        #[command(subcommand)]
        command: Option<GrantCommand>,
        #[command(flatten)]
        new: NewGrantArgs,
    },
    /// Tokens: create, list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The audit log, newest first.
    Audit(AuditArgs),
    /// Publish existing .crate files (and folders of them) through the same checks as
    /// `cargo publish`, e.g. when moving from another registry. Versions already there are
    /// skipped; the importing admin becomes the owner of new crates.
    Import {
        /// .crate files, or folders searched for them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The private registry to publish to.
        #[arg(long, default_value = "internal")]
        registry: String,
    },
    /// The disk cache of mirrors: stats, gc, verify, purge, pins.
    Cache {
        #[command(subcommand)]
        command: cache::CacheCommand,
    },
    /// Private crates: `crate delete NAME VERSION --registry R` (legal takedown; audited).
    Crate {
        #[command(subcommand)]
        command: CrateCommand,
    },
    /// A curated mirror's allow-list: `curate add serde@^1`, `curate remove serde`,
    /// `curate list` (audited; in effect at once).
    Curate {
        #[command(subcommand)]
        command: policy::CurateCommand,
    },
    /// The advisory database: status, sync, report (the same as `cratedock advisories`).
    Advisories {
        #[command(subcommand)]
        command: policy::AdvisoriesCommand,
    },
    /// A mirror's offline mode: `offline on|off|status` (audited; until the next start).
    Offline {
        #[arg(value_parser = ["on", "off", "status"])]
        state: String,
        #[arg(long, default_value = "crates-io")]
        registry: String,
    },
}

#[derive(Subcommand)]
enum CrateCommand {
    /// Delete one version of a private crate: its index line and file go, its number stays
    /// taken. The one exception to "published is forever"; prefer `cargo yank`.
    Delete {
        name: String,
        version: String,
        #[arg(long, default_value = "internal")]
        registry: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user.
    Add {
        login: String,
        /// May do everything, the admin API included.
        #[arg(long)]
        admin: bool,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
    },
    /// List users.
    List,
    /// Stops the user's tokens at once.
    Disable { login: String },
    /// Lets a disabled user's tokens work again.
    Enable { login: String },
}

#[derive(Subcommand)]
enum TeamCommand {
    /// Create a team (its name may be a client certificate's principal).
    Add {
        name: String,
        /// A member's login; repeat for more.
        #[arg(long = "member")]
        members: Vec<String>,
    },
    /// List teams and their members.
    List,
    /// Add a user to a team.
    AddMember { team: String, login: String },
    /// Take a user out of a team.
    RemoveMember { team: String, login: String },
}

#[derive(Args)]
struct NewGrantArgs {
    /// The user to grant to.
    #[arg(long, conflicts_with = "team")]
    user: Option<String>,
    /// The team to grant to.
    #[arg(long)]
    team: Option<String>,
    /// read, publish, yank or admin.
    #[arg(long)]
    permission: Option<String>,
    /// A registry name, or `*` for all.
    #[arg(long)]
    registry: Option<String>,
    /// A crate-name glob: `*`, `acme-*`, `serde`.
    #[arg(long, default_value = "*")]
    crates: String,
    /// e.g. 90d; absent: never.
    #[arg(long)]
    expires_in: Option<String>,
}

#[derive(Subcommand)]
enum GrantCommand {
    /// List grants (of one user or team).
    List {
        #[arg(long, conflicts_with = "team")]
        user: Option<String>,
        #[arg(long)]
        team: Option<String>,
    },
    /// Remove a grant by its id (from `grant list`).
    Remove { id: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Prints the new token alone on stdout (shown once).
    Create {
        /// The token's owner.
        #[arg(long)]
        user: String,
        /// What the token is for (e.g. `laptop`, `ci-main`).
        #[arg(long)]
        name: Option<String>,
        /// Narrow the token to `read` (for CI and build agents).
        #[arg(long)]
        read_only: bool,
        /// e.g. 30d; absent: never.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List tokens (never the tokens themselves).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a token by its id (from `token list`); it stops working at once.
    Revoke { id: String },
}

#[derive(Args)]
struct AuditArgs {
    /// RFC 3339 time, or a duration ago (24h).
    #[arg(long)]
    since: Option<String>,
    /// RFC 3339 time, or a duration ago (1h).
    #[arg(long)]
    until: Option<String>,
    /// A user login or a principal.
    #[arg(long)]
    actor: Option<String>,
    /// An action (`token.revoke`) or a prefix with a dot (`token.`).
    #[arg(long)]
    action: Option<String>,
    #[arg(long)]
    registry: Option<String>,
    #[arg(long = "crate")]
    krate: Option<String>,
    /// Records at most (all pages are fetched up to this many).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// One JSON record per line (for export).
    #[arg(long, conflicts_with = "json")]
    jsonl: bool,
}

/// Runs one admin command; what it prints goes to stdout.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let command = args.command;
    args.connection
        .run(|c, as_json| async move { execute(&c, command, as_json).await })
}

async fn execute(c: &Client, command: AdminCommand, as_json: bool) -> anyhow::Result<String> {
    let shown = |v: Value, table: fn(&Value) -> String| {
        if as_json {
            format!("{v:#}\n")
        } else {
            table(&v)
        }
    };
    Ok(match command {
        AdminCommand::Import { paths, registry } => import::import(c, &registry, &paths).await?,
        AdminCommand::Cache { command } => cache::execute(c, command, as_json).await?,
        AdminCommand::Curate { command } => policy::curate(c, command, as_json).await?,
        AdminCommand::Advisories { command } => policy::advisories(c, command, as_json).await?,
        AdminCommand::Offline { state, registry } => {
            let path = format!("/-/admin/registries/{}/offline", seg(&registry));
            let v = match state.as_str() {
                "status" => c.get(&path).await?,
                s => c.put_json(&path, &json!({ "offline": s == "on" })).await?,
            };
            shown(v, |v| {
                format!(
                    "`{}` is {}\n",
                    text(&v["registry"]),
                    if v["offline"] == true {
                        "offline: it serves only what is cached"
                    } else {
                        "online"
                    }
                )
            })
        }
        AdminCommand::Crate {
            command:
                CrateCommand::Delete {
                    name,
                    version,
                    registry,
                },
        } => {
            let path = format!(
                "/-/admin/registries/{}/crates/{}/{}",
                seg(&registry),
                seg(&name),
                seg(&version)
            );
            c.delete(&path).await?;
            format!("deleted {name}@{version} from `{registry}`\n")
        }
        AdminCommand::User { command } => match command {
            UserCommand::Add {
                login,
                admin,
                name,
                email,
            } => {
                let body = json!({"login": login, "admin": admin, "name": name.unwrap_or_default(), "email": email.unwrap_or_default()});
                shown(c.post("/-/admin/users", &body).await?, |v| {
                    users(&json!([v]))
                })
            }
            UserCommand::List => shown(c.get("/-/admin/users").await?, users),
            UserCommand::Disable { login } => {
                let v = c
                    .patch(
                        &format!("/-/admin/users/{}", seg(&login)),
                        &json!({"disabled": true}),
                    )
                    .await?;
                shown(v, |v| users(&json!([v])))
            }
            UserCommand::Enable { login } => {
                let v = c
                    .patch(
                        &format!("/-/admin/users/{}", seg(&login)),
                        &json!({"disabled": false}),
                    )
                    .await?;
                shown(v, |v| users(&json!([v])))
            }
        },
        AdminCommand::Team { command } => match command {
            TeamCommand::Add { name, members } => {
                let v = c
                    .post("/-/admin/teams", &json!({"name": name, "members": members}))
                    .await?;
                shown(v, |v| teams(&json!([v])))
            }
            TeamCommand::List => shown(c.get("/-/admin/teams").await?, teams),
            TeamCommand::AddMember { team, login } => {
                let v = c
                    .put(&format!(
                        "/-/admin/teams/{}/members/{}",
                        seg(&team),
                        seg(&login)
                    ))
                    .await?;
                shown(v, |v| teams(&json!([v])))
            }
            TeamCommand::RemoveMember { team, login } => {
                let v = c
                    .delete(&format!(
                        "/-/admin/teams/{}/members/{}",
                        seg(&team),
                        seg(&login)
                    ))
                    .await?;
                shown(v, |v| teams(&json!([v])))
            }
        },
        AdminCommand::Grant { command, new } => match command {
            Some(GrantCommand::List { user, team }) => {
                let mut q = Vec::new();
                if let Some(u) = user {
                    q.push(format!("user={}", seg(&u)));
                }
                if let Some(t) = team {
                    q.push(format!("team={}", seg(&t)));
                }
                let path = format!("/-/admin/grants?{}", q.join("&"));
                shown(c.get(&path).await?, grants)
            }
            Some(GrantCommand::Remove { id }) => {
                let v = c.delete(&format!("/-/admin/grants/{}", seg(&id))).await?;
                shown(v, |v| grants(&json!([v])))
            }
            None => {
                anyhow::ensure!(
                    new.user.is_some() || new.team.is_some(),
                    "give --user LOGIN or --team NAME (or use `grant list` / `grant remove ID`)"
                );
                let (Some(permission), Some(registry)) = (new.permission, new.registry) else {
                    anyhow::bail!(
                        "give --permission (read, publish, yank, admin) and --registry (a name, or `*`)"
                    );
                };
                let body = json!({"user": new.user, "team": new.team, "permission": permission,
                    "registry": registry, "crates": new.crates, "expires_in": new.expires_in});
                shown(c.post("/-/admin/grants", &body).await?, |v| {
                    grants(&json!([v]))
                })
            }
        },
        AdminCommand::Token { command } => match command {
            TokenCommand::Create {
                user,
                name,
                read_only,
                expires_in,
            } => {
                let body = json!({"user": user, "name": name, "read_only": read_only, "expires_in": expires_in});
                let v = c.post("/-/admin/tokens", &body).await?;
                let token = v["token"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("the server's answer holds no token"))?;
                format!("{token}\n")
            }
            TokenCommand::List { user } => {
                let path = match user {
                    Some(u) => format!("/-/admin/tokens?user={}", seg(&u)),
                    None => "/-/admin/tokens".to_owned(),
                };
                shown(c.get(&path).await?, tokens)
            }
            TokenCommand::Revoke { id } => {
                let v = c.delete(&format!("/-/admin/tokens/{}", seg(&id))).await?;
                shown(v, |v| tokens(&json!([v])))
            }
        },
        AdminCommand::Audit(a) => audit(c, a, as_json).await?,
    })
}

async fn audit(c: &Client, a: AuditArgs, as_json: bool) -> anyhow::Result<String> {
    let mut q = Vec::new();
    for (key, value) in [
        ("since", &a.since),
        ("until", &a.until),
        ("actor", &a.actor),
        ("action", &a.action),
        ("registry", &a.registry),
        ("crate", &a.krate),
    ] {
        if let Some(v) = value {
            q.push(format!("{key}={}", seg(v)));
        }
    }
    let mut records = Vec::new();
    let mut before: Option<u64> = None;
    while records.len() < a.limit {
        let page = (a.limit - records.len()).min(1000);
        let mut path = format!("/-/admin/audit?limit={page}&{}", q.join("&"));
        if let Some(b) = before {
            path.push_str(&format!("&before={b}"));
        }
        let v = c.get(&path).await?;
        records.extend(v["records"].as_array().cloned().unwrap_or_default());
        match v["next_before"].as_u64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    Ok(if a.jsonl {
        records.iter().map(|r| format!("{r}\n")).collect()
    } else if as_json {
        format!("{:#}\n", Value::Array(records))
    } else {
        let rows = records
            .iter()
            .map(|r| {
                let actor = &r["actor"];
                let who = match (
                    actor["user"].as_str(),
                    actor["token"].as_str(),
                    actor["principal"].as_str(),
                ) {
                    (Some(u), Some(t), _) => format!("{u} (token {t})"),
                    (Some(u), None, _) => u.to_owned(),
                    (None, _, Some(p)) => format!("principal {p}"),
                    _ => "-".to_owned(),
                };
                vec![
                    time(&r["time_ms"]),
                    who,
                    text(&r["source"]),
                    text(&r["action"]),
                    text(&r["target"]),
                    text(&r["outcome"]),
                ]
            })
            .collect();
        table(
            &["TIME", "ACTOR", "SOURCE", "ACTION", "TARGET", "OUTCOME"],
            rows,
        )
    })
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}
