//! The `cratedock` command: `serve`, `admin ...`, `config check`, `config default`, `health`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cratedock::cli::offline;
use cratedock::config::{CliOverrides, Config, DEFAULT_TOML, LogFormat};

#[derive(Parser)]
#[command(
    version,
    about = "Caching pull-through proxy and private registry for Cargo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (with the embedded default configuration unless --config is given).
    Serve {
        /// TOML configuration file; keys not in it take their defaults.
        #[arg(long, short, env = "CRATEDOCK_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address, overriding server.listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data folder, overriding storage.data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Manage users, teams, grants and tokens, and read the audit log, through a running
    /// server's admin API.
    Admin(cratedock::cli::AdminArgs),
    /// The RustSec advisory database of a running server: status, sync (refresh now),
    /// report (the cached and private versions affected).
    Advisories(cratedock::cli::AdvisoriesArgs),
    /// Fill a mirror's cache ahead of need from Cargo.lock files or a list, through a running
    /// server (a job with a progress bar; resumable; `--status` shows the latest).
    Prefetch(cratedock::cli::PrefetchArgs),
    /// Write an air-gap bundle (a tar of index files, crate files and a checksummed manifest)
    /// of a mirror's crates, through a running server.
    Export(cratedock::cli::ExportArgs),
    /// Import an air-gap bundle into a running server's mirror cache (or, with --into, publish
    /// its crates to a private registry), after checking every file.
    Import(cratedock::cli::ImportArgs),
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Exit 0 when the server answers its liveness check (for container health checks): at
    /// URL, or at the listener the configuration file names (loopback for 0.0.0.0). Never
    /// through a proxy.
    Health {
        #[arg(long, conflicts_with = "config")]
        url: Option<String>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check every cached file's size and SHA-256 against the bookkeeping and the index lines,
    /// on a data folder with the server stopped (`cratedock admin cache verify` checks a
    /// running one). Names each bad file; exits non-zero when it finds a problem.
    Verify {
        #[command(flatten)]
        folder: cratedock::cli::offline::FolderArgs,
        /// Remove what is corrupt, drop records without files, adopt checked orphan files.
        #[arg(long)]
        repair: bool,
    },
    /// Evict least recently used mirror files now (server stopped; `cratedock admin cache gc`
    /// for a running one), down to cache.disk_max_bytes' low watermark or --to BYTES.
    Gc {
        #[command(flatten)]
        folder: cratedock::cli::offline::FolderArgs,
        #[arg(long)]
        to: Option<u64>,
    },
    /// The disk cache of a data folder with the server stopped: stats, purge.
    Cache {
        #[command(subcommand)]
        command: cratedock::cli::offline::CacheOffline,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (with the environment's overrides applied).
    Check { file: PathBuf },
    /// Print the embedded default configuration, which documents every key.
    Default,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => serve(config, CliOverrides { listen, data_dir }),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => check(&file),
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
        Command::Health { url, config } => health(url, config),
        Command::Verify { folder, repair } => offline::block_on(async {
            let report = offline::Folder::open(&folder)?.verify(repair).await?;
            print!("{}", offline::report_text(&report, repair));
            anyhow::ensure!(
                report.problems_found == 0,
                "{} problems found",
                report.problems_found
            );
            Ok(())
        }),
        Command::Gc { folder, to } => offline::block_on(async {
            let done = offline::Folder::open(&folder)?.gc(to).await?;
            println!(
                "evicted {} files ({} bytes); {} bytes remain",
                done.files, done.bytes, done.remaining_bytes
            );
            Ok(())
        }),
        Command::Cache { command } => offline::block_on(async {
            match command {
                offline::CacheOffline::Stats { folder } => {
                    let stats = offline::Folder::open(&folder)?.stats().await?;
                    print!("{}", offline::stats_text(&stats));
                }
                offline::CacheOffline::Purge {
                    spec,
                    registry,
                    folder,
                } => {
                    let removed = offline::Folder::open(&folder)?
                        .purge(&registry, &spec)
                        .await?;
                    for f in &removed {
                        println!("removed {f}");
                    }
                    println!("{} files removed", removed.len());
                }
            }
            Ok(())
        }),
        Command::Admin(args) => cratedock::cli::run(args),
        Command::Advisories(args) => cratedock::cli::run_advisories(args),
        Command::Prefetch(args) => cratedock::cli::run_prefetch(args),
        Command::Export(args) => cratedock::cli::run_export(args),
        Command::Import(args) => cratedock::cli::run_import(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Validates a config file, including the TLS files and CA bundles it names.
fn check(file: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(Some(file), &CliOverrides::default())?;
    if let Some(tls) = &config.server.tls {
        let metrics = std::sync::Arc::new(cratedock::metrics::Metrics::new());
        cratedock::net::TlsServer::new(tls, metrics).context("server.tls")?;
    }
    cratedock::app::App::check_upstreams(&config)?;
    cratedock::app::data_folder_usable(&config.storage.data_dir)?;
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "{}: ok ({} registr{}: {})",
        file.display(),
        config.registries.len(),
        if config.registries.len() == 1 {
            "y"
        } else {
            "ies"
        },
        config
            .registries
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Where SIGHUP sets the log filter anew.
type FilterHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// The log filter: `RUST_LOG` when set, else `log.level`.
fn log_filter(config: &Config) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(&v).unwrap_or_else(|_| EnvFilter::new(&config.log.level))
        }
        _ => EnvFilter::new(&config.log.level),
    }
}

fn init_logging(config: &Config) -> FilterHandle {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(log_filter(config));
    // Colours only on a terminal: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let registry = tracing_subscriber::registry().with(filter);
    match config.log.format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().flatten_event(true))
            .init(),
        LogFormat::Human => registry
            .with(tracing_subscriber::fmt::layer().with_ansi(ansi))
            .init(),
    }
    handle
}

/// Threads for disk work; see `serve`.
const BLOCKING_THREADS: usize = 32;

fn serve(config_path: Option<PathBuf>, cli: CliOverrides) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref(), &cli)?;
    let filter = init_logging(&config);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let origin = config_path.as_deref().map_or_else(
        || "the embedded default".to_owned(),
        |p| p.display().to_string(),
    );
    tracing::info!(
        config = %origin,
        data_dir = %config.storage.data_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "starting"
    );
    for (name, registry) in &config.registries {
        match registry {
            cratedock::config::RegistryConfig::Mirror(m) => tracing::info!(
                registry = %name,
                kind = "mirror",
                upstream = %m.upstream,
                auth_required = m.auth_required,
                "registry"
            ),
            cratedock::config::RegistryConfig::Private(p) => tracing::info!(
                registry = %name,
                kind = "private",
                auth_required = p.auth_required,
                "registry"
            ),
        }
    }
    let _ =
        rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Disk work (reads of cold files, writes after downloads) goes to the blocking pool.
        // A burst of misses would otherwise start a thread per file; a bounded pool queues
        // them instead, which costs less than hundreds of thread starts.
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listen = config.server.listen;
        let tls_config = config.server.tls.clone();
        // SIGHUP would end the process by default, start-up included: it is taken from the
        // first moment. With TLS the certificate reloader acts on it too.
        take_hangups(tls_config.is_none(), filter, config_path.clone(), cli.clone());
        let app = cratedock::app::App::open(config)?;
        app.prepare().await?;
        let tls = match tls_config {
            Some(t) => {
                let server = cratedock::net::TlsServer::new(&t, app.metrics.clone())
                    .context("server.tls")?;
                let listener =
                    tokio::net::TcpListener::bind(t.listen)
                        .await
                        .with_context(|| {
                            format!("cannot listen on {} (server.tls.listen)", t.listen)
                        })?;
                Some((listener, std::sync::Arc::new(server)))
            }
            None => None,
        };
        let plain = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        warn_open_registries(&app);
        let listeners = cratedock::net::Listeners { plain, tls };
        if let Some(file) = cratedock::auth::first_admin(&app.auth, &app.config.storage.data_dir)
            .await
            .context("cannot create the first admin")?
        {
            tracing::info!(
                file = %file.display(),
                "created the first admin user; its token is in this file (mode 0600): create named admins and tokens with it, then revoke it"
            );
        }
        let (stop_writer, stop) = tokio::sync::watch::channel(false);
        let interval =
            std::time::Duration::from_millis(app.config.auth.last_used_write_interval_ms);
        let mut keeper_stop = stop.clone();
        let writer = tokio::spawn(app.auth.clone().write_last_used_every(interval, stop));
        let keeper = tokio::spawn(app.keeper().clone().run(
            std::time::Duration::from_millis(app.config.cache.usage_write_interval_ms),
            async move {
                let _ = keeper_stop.wait_for(|stop| *stop).await;
            },
        ));
        let stop_advisories = std::sync::Arc::new(tokio::sync::Notify::new());
        app.spawn_advisory_refresh(stop_advisories.clone());
        tracing::info!(registries = ?app.registry_names().collect::<Vec<_>>(), "serving");
        let serving = cratedock::net::Serving {
            router: cratedock::http::router(app.clone()),
            server: app.config.server.clone(),
            metrics: app.metrics.clone(),
            readiness: app.readiness.clone(),
        };
        let deadline =
            cratedock::net::serve(serving, listeners, cratedock::net::shutdown_signal()).await?;
        // Answers may have gone out before their files were stored: let those writes end.
        app.settle(deadline).await;
        stop_advisories.notify_one();
        let _ = stop_writer.send(true);
        if let Err(e) = writer.await {
            tracing::warn!(error = %e, "the last-used writer failed");
        }
        if let Err(e) = keeper.await {
            tracing::warn!(error = %e, "the cache keeper failed");
        }
        app.flush().await
    })
}

/// One warning when a listener others can reach serves registries anyone may read.
fn warn_open_registries(app: &cratedock::app::App) {
    let server = &app.config.server;
    let exposed = !server.listen.ip().is_loopback()
        || server
            .tls
            .as_ref()
            .is_some_and(|t| !t.listen.ip().is_loopback());
    let open: Vec<&str> = app
        .registry_names()
        .filter(|r| app.auth_required(r) == Some(false))
        .collect();
    if exposed && !open.is_empty() {
        tracing::warn!(
            registries = ?open,
            "a listener on a non-loopback address serves registries without auth_required: anyone who can reach it can read them (set registries.NAME.auth_required = true)"
        );
    }
}

fn health(url: Option<String>, config: Option<PathBuf>) -> anyhow::Result<()> {
    let url = match (url, config) {
        (Some(u), _) => u,
        (None, config) => {
            let config = Config::load(config.as_deref(), &CliOverrides::default())?;
            // The plain listener when there is one on a loopback-reachable address; TLS
            // otherwise would need the CA, so the plain one is always used.
            let mut addr = config.server.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("http://{addr}/health/live")
        }
    };
    let url = url.as_str();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            // HTTP_PROXY in a container's environment must not catch a loopback check.
            .no_proxy()
            .tls_backend_preconfigured(
                rustls::ClientConfig::builder_with_provider(cratedock::crypto_provider())
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(cratedock::system_roots())
                    .with_no_client_auth(),
            )
            .build()?;
        let resp = client.get(url).send().await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "{url} answered {}",
            resp.status()
        );
        Ok(())
    })
}

/// Takes SIGHUP (the usual "reload" signal) so that it never stops cratedock; `log`: say so
/// (without TLS nothing reloads on it; with TLS the certificate reloader logs its reload).
fn take_hangups(log: bool, filter: FilterHandle, config_path: Option<PathBuf>, cli: CliOverrides) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    // The log level: read again from the configuration file (a file that does
                    // not load keeps the level in use).
                    match Config::load(config_path.as_deref(), &cli) {
                        Ok(config) => match filter.reload(log_filter(&config)) {
                            Ok(()) => {
                                tracing::info!(level = %config.log.level, "SIGHUP: log filter reloaded")
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "SIGHUP: cannot reload the log filter")
                            }
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "SIGHUP: the configuration does not load; the log filter stays")
                        }
                    }
                    if log {
                        tracing::info!("SIGHUP: no TLS files to reload; still serving");
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot take SIGHUP; it would stop cratedock"),
    }
}
