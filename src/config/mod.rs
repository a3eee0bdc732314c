//! Configuration: the typed keys and their defaults ([`merge`] layers them, [`validate`] checks
//! what types cannot).
//!
//! The rule this module keeps: `defaults < file < environment < command line`, merged by the
//! pure function [`Config::merge`] that tests call directly. Unknown keys are errors that name
//! the key; `config/default.toml` documents every key and is the embedded default.

mod merge;
mod policy;
#[cfg(test)]
mod props;
mod registries;
mod validate;

pub use policy::{
    Action, AdvisoriesConfig, Informational, LicenseException, LicensesConfig, PolicyKeys,
};
pub use registries::{MirrorConfig, PrivateConfig, RegistryConfig};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use registries::d;

/// The embedded default configuration; it documents every key.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of environment variables that override keys: `CRATEDOCK__SECTION__KEY`.
pub const ENV_PREFIX: &str = "CRATEDOCK__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub cache: CacheConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    /// The RustSec advisory database that registries' `advisories` policies use.
    pub advisories: AdvisoriesConfig,
    /// Registries by name; the name is the first path segment of their routes.
    pub registries: BTreeMap<String, RegistryConfig>,
    /// What loading noticed without refusing it (stray environment variables); logged at
    /// start, printed by `config check`.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(deserialize_with = "address")]
    pub listen: SocketAddr,
    /// Base URL clients reach cratedock at; empty means the connection's scheme (`http://` or
    /// `https://`) plus the request's Host.
    pub public_url: String,
    pub shutdown_grace_ms: u64,
    /// On SIGTERM, report not ready while still serving for this long, then drain.
    pub shutdown_delay_ms: u64,
    /// A connection with no new request for this long is closed (gracefully).
    pub idle_timeout_ms: u64,
    /// Open connections at most (plain and HTTPS together); beyond it, accepting waits.
    pub max_connections: usize,
    /// A client must send a request's headers within this time, or the connection is closed.
    pub header_read_timeout_ms: u64,
    /// A write to a client that has waited this long for the client to read ends the
    /// connection.
    pub send_timeout_ms: u64,
    /// Upgrade plain connections to HTTP/2 when the first request asks (`Upgrade: h2c`).
    pub h2c_upgrade: bool,
    /// The HTTPS listener, beside the plain one; absent means no TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    Off,
    Optional,
    Required,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(deserialize_with = "address")]
    pub listen: SocketAddr,
    /// PEM: the server certificate first, then the intermediates.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC; RSA, ECDSA or Ed25519).
    pub key_file: PathBuf,
    #[serde(default = "d::client_auth")]
    pub client_auth: ClientAuth,
    /// PEM: the CA(s) that issue client certificates; needed unless `client_auth` is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
    #[serde(default = "d::reload_interval_ms")]
    pub reload_interval_ms: u64,
    #[serde(default = "d::handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Verified client certificates that map to a principal, first match wins.
    #[serde(default)]
    pub principals: Vec<PrincipalRule>,
}

/// Maps a verified client certificate to a principal by its subject CN or one of its SANs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalRule {
    pub principal: String,
    /// The subject's common name, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_cn: Option<String>,
    /// A DNS, URI or e-mail SAN, exactly; `*.example.com` matches DNS names below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub san: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub memory_max_bytes: u64,
    pub memory_max_item_bytes: u64,
    pub max_crate_bytes: u64,
    pub coalesce_wait_ms: u64,
    /// Disk limit of the mirrors' files (0: none).
    pub disk_max_bytes: u64,
    pub evict_high_percent: u8,
    pub evict_low_percent: u8,
    pub usage_write_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A bearer secret that Prometheus may send for `/metrics` from a non-loopback address
    /// (any user's valid token works too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<Secret>,
    /// Resolved tokens and principals held in memory.
    pub identity_cache_entries: u64,
    /// How often tokens' last-used times are written.
    pub last_used_write_interval_ms: u64,
    /// Who users ask for a token, shown on the login page (`/-/login`).
    pub admin_contact: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            metrics_token: None,
            identity_cache_entries: 100_000,
            last_used_write_interval_ms: 60_000,
            admin_contact: String::new(),
        }
    }
}

/// A secret from the configuration (an upstream token). Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: String::new(),
            shutdown_grace_ms: 30_000,
            shutdown_delay_ms: 2_000,
            idle_timeout_ms: 120_000,
            send_timeout_ms: 60_000,
            max_connections: 10_000,
            header_read_timeout_ms: 30_000,
            h2c_upgrade: true,
            tls: None,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./cratedock-data"),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory_max_bytes: 64 * 1024 * 1024,
            memory_max_item_bytes: 2 * 1024 * 1024,
            max_crate_bytes: 256 * 1024 * 1024,
            coalesce_wait_ms: 60_000,
            disk_max_bytes: 0,
            evict_high_percent: 95,
            evict_low_percent: 85,
            usage_write_interval_ms: 30_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut registries = BTreeMap::new();
        registries.insert(
            "crates-io".to_owned(),
            RegistryConfig::Mirror(MirrorConfig::new("https://index.crates.io/")),
        );
        registries.insert(
            "internal".to_owned(),
            RegistryConfig::Private(PrivateConfig::default()),
        );
        Self {
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            cache: CacheConfig::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            advisories: AdvisoriesConfig::default(),
            registries,
            warnings: Vec::new(),
        }
    }
}

/// A listen address: `IP:PORT`, or `HOST:PORT` with a host name that resolves (its first
/// address; `localhost:8080` is loopback).
fn address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    use std::net::ToSocketAddrs;
    let text = String::deserialize(d)?;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let resolved = text.to_socket_addrs().map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is neither IP:PORT nor HOST:PORT with a host name that resolves ({e})"
        ))
    })?;
    let addrs: Vec<SocketAddr> = resolved.collect();
    // IPv4 first, as `localhost` means 127.0.0.1 to most tools.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| serde::de::Error::custom(format!("`{text}` resolves to no address")))
}

/// The few settings the command line can override.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// The public base URL without a trailing slash, when one is configured.
    pub fn public_url(&self) -> Option<&str> {
        let u = self.server.public_url.trim_end_matches('/');
        (!u.is_empty()).then_some(u)
    }
}

impl Config {
    /// The default configuration with every optional key set: the shape of every key, for
    /// typing environment overrides and for checking that `config/default.toml` documents all.
    pub(crate) fn with_every_key() -> Self {
        let mut full = Config::default();
        full.auth.metrics_token = Some(Secret::new("x"));
        if let Some(RegistryConfig::Mirror(m)) = full.registries.get_mut("crates-io") {
            m.token = Some(Secret::new("x"));
            m.ca_bundle = Some("x".into());
            m.client_cert_file = Some("x".into());
            m.client_key_file = Some("x".into());
            m.crates_io = Some(true);
            m.reserved_names = vec![crate::names::CrateGlob::any()];
            m.licenses.action = Some(Action::Deny);
        }
        full.advisories.path = Some("x".into());
        full.advisories.url = Some("x".into());
        full.advisories.ca_bundle = Some("x".into());
        if let Some(RegistryConfig::Private(p)) = full.registries.get_mut("internal") {
            p.allow_upstream_names = vec![crate::names::CrateGlob::any()];
            p.dependency_registries = Some(vec!["crates-io".into()]);
        }
        full.server.tls = Some(TlsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 1)),
            cert_file: "c".into(),
            key_file: "k".into(),
            client_auth: ClientAuth::Required,
            client_ca_file: Some("ca".into()),
            reload_interval_ms: 1,
            handshake_timeout_ms: 1,
            principals: vec![PrincipalRule {
                principal: "p".into(),
                subject_cn: Some("cn".into()),
                san: Some("san".into()),
            }],
        });
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_equals_code_defaults() {
        let parsed =
            Config::merge("default.toml", DEFAULT_TOML, &[], &CliOverrides::default()).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn default_toml_documents_every_key() {
        // Every key the code knows (with optional keys filled in) appears in the file.
        let full = Config::with_every_key();
        let known = toml::Value::try_from(full).unwrap();
        let documented = DEFAULT_TOML
            .lines()
            .map(|l| l.trim_start_matches(['#', ' ']))
            .collect::<Vec<_>>()
            .join("\n");
        fn keys(v: &toml::Value, out: &mut Vec<String>) {
            if let toml::Value::Table(t) = v {
                for (k, v) in t {
                    out.push(k.clone());
                    keys(v, out);
                }
            }
        }
        let mut all = Vec::new();
        keys(&known, &mut all);
        for k in all {
            let as_key = format!("\n{k} =");
            let as_table = format!("[{k}]");
            let in_table = format!(".{k}]");
            let parent_table = format!("[{k}.");
            assert!(
                documented.contains(&as_key)
                    || documented.contains(&as_table)
                    || documented.contains(&in_table)
                    || documented.contains(&parent_table),
                "key `{k}` is not documented in config/default.toml"
            );
        }
    }
}
