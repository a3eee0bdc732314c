//! The `cratedock` command: `serve`, `config check`, `config default`, `health`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Exit 0 when the server at URL answers its liveness check (for container health checks).
    Health {
        #[arg(long, default_value = "http://127.0.0.1:8080/health/live")]
        url: String,
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
        } => Config::load(Some(&file), &CliOverrides::default())
            .map(|c| {
                println!(
                    "{}: ok ({} registr{}: {})",
                    file.display(),
                    c.registries.len(),
                    if c.registries.len() == 1 { "y" } else { "ies" },
                    c.registries.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            })
            .map_err(Into::into),
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
        Command::Health { url } => health(&url),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Human => builder.init(),
    }
}

fn serve(config_path: Option<PathBuf>, cli: CliOverrides) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref(), &cli)?;
    init_logging(&config);
    let _ =
        rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listen = config.server.listen;
        let app = cratedock::app::App::open(config)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        cratedock::server::serve(app, listener, cratedock::server::shutdown_signal()).await
    })
}

fn health(url: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .tls_backend_preconfigured(
                rustls::ClientConfig::builder_with_provider(cratedock::crypto_provider())
                    .with_safe_default_protocol_versions()?
                    .with_root_certificates(cratedock::upstream::system_roots())
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
