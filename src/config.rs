//! Configuration: typed, every key with a default, merged from four layers.
//!
//! The rule this module keeps: `defaults < file < environment < command line`, merged by the
//! pure function [`Config::merge`] that tests call directly. Unknown keys are errors that name
//! the key; `config/default.toml` documents every key and is the embedded default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::names::RegistryName;

/// The embedded default configuration; it documents every key.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

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
    /// Registries by name; the name is the first path segment of their routes.
    pub registries: BTreeMap<String, RegistryConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Base URL clients reach cratedock at; empty means `http://` plus the request's Host.
    pub public_url: String,
    pub shutdown_grace_ms: u64,
    /// Open connections at most (plain and HTTPS together); beyond it, accepting waits.
    pub max_connections: usize,
    /// A client must send a request's headers within this time, or the connection is closed.
    pub header_read_timeout_ms: u64,
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
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RegistryConfig {
    Mirror(MirrorConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Sparse index URL of the upstream, ending in `/` (without the `sparse+` prefix).
    pub upstream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// Trust the system's roots (plus `ca_bundle`); `false` trusts `ca_bundle` alone.
    #[serde(default = "d::system_roots")]
    pub system_roots: bool,
    /// PEM client certificate chain and key presented to the upstream (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    #[serde(default = "d::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "d::request_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default = "d::download_timeout_ms")]
    pub download_timeout_ms: u64,
    #[serde(default = "d::retries")]
    pub retries: u32,
    #[serde(default = "d::index_ttl_ms")]
    pub index_ttl_ms: u64,
    #[serde(default = "d::stale_while_revalidate_ms")]
    pub stale_while_revalidate_ms: u64,
    #[serde(default = "d::stale_if_error_max_age_ms")]
    pub stale_if_error_max_age_ms: u64,
    #[serde(default = "d::revalidate_wait_ms")]
    pub revalidate_wait_ms: u64,
    #[serde(default = "d::negative_ttl_ms")]
    pub negative_ttl_ms: u64,
}

/// Defaults of the mirror keys (serde needs functions).
mod d {
    use super::ClientAuth;

    pub fn client_auth() -> ClientAuth {
        ClientAuth::Off
    }
    pub fn reload_interval_ms() -> u64 {
        10_000
    }
    pub fn handshake_timeout_ms() -> u64 {
        10_000
    }
    pub fn system_roots() -> bool {
        true
    }
    pub fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub fn request_timeout_ms() -> u64 {
        30_000
    }
    pub fn download_timeout_ms() -> u64 {
        300_000
    }
    pub fn retries() -> u32 {
        2
    }
    pub fn index_ttl_ms() -> u64 {
        60_000
    }
    pub fn stale_while_revalidate_ms() -> u64 {
        60_000
    }
    pub fn stale_if_error_max_age_ms() -> u64 {
        7 * 24 * 3600 * 1000
    }
    pub fn revalidate_wait_ms() -> u64 {
        5_000
    }
    pub fn negative_ttl_ms() -> u64 {
        30_000
    }
}

impl MirrorConfig {
    pub fn new(upstream: &str) -> Self {
        Self {
            upstream: upstream.to_owned(),
            token: None,
            ca_bundle: None,
            system_roots: d::system_roots(),
            client_cert_file: None,
            client_key_file: None,
            connect_timeout_ms: d::connect_timeout_ms(),
            request_timeout_ms: d::request_timeout_ms(),
            download_timeout_ms: d::download_timeout_ms(),
            retries: d::retries(),
            index_ttl_ms: d::index_ttl_ms(),
            stale_while_revalidate_ms: d::stale_while_revalidate_ms(),
            stale_if_error_max_age_ms: d::stale_if_error_max_age_ms(),
            revalidate_wait_ms: d::revalidate_wait_ms(),
            negative_ttl_ms: d::negative_ttl_ms(),
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
        Self {
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            cache: CacheConfig::default(),
            log: LogConfig::default(),
            registries,
        }
    }
}

/// The few settings the command line can override.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Reads `path` (or the embedded default when `None`), then applies the process environment
    /// and the command line.
    pub fn load(path: Option<&Path>, cli: &CliOverrides) -> Result<Self, ConfigError> {
        let (origin, text) = match path {
            Some(p) => (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?,
            ),
            None => ("embedded default".to_owned(), DEFAULT_TOML.to_owned()),
        };
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Self::merge(&origin, &text, &env, cli)
    }

    /// Merges the layers: code defaults, the file's text, `CRATEDOCK__…` variables, the CLI.
    ///
    /// A file that declares `[registries]` replaces the default set of registries; the other
    /// sections are merged key by key.
    pub fn merge(
        origin: &str,
        file_text: &str,
        env: &[(String, String)],
        cli: &CliOverrides,
    ) -> Result<Self, ConfigError> {
        // Parse the file on its own first: that error carries line, column and key name.
        toml::from_str::<Config>(file_text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        let file: toml::Table = toml::from_str(file_text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;

        let mut merged = match toml::Value::try_from(Config::default()) {
            Ok(toml::Value::Table(t)) => t,
            _ => unreachable!("the default config serializes to a table"),
        };
        for (key, value) in file {
            match (merged.get_mut(&key), value) {
                (Some(toml::Value::Table(base)), toml::Value::Table(over))
                    if key != "registries" =>
                {
                    deep_merge(base, over)
                }
                (_, value) => {
                    merged.insert(key, value);
                }
            }
        }
        for (name, raw) in env {
            apply_env(&mut merged, name, raw)?;
        }
        if let Some(listen) = cli.listen {
            set(
                &mut merged,
                &["server", "listen"],
                listen.to_string().into(),
            );
        }
        if let Some(dir) = &cli.data_dir {
            set(
                &mut merged,
                &["storage", "data_dir"],
                dir.display().to_string().into(),
            );
        }

        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
                ConfigError::Parse {
                    origin: format!("{origin} with environment and command-line overrides"),
                    message: format!("key `{}`: {}", e.path(), e.inner()),
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: names, URLs and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !self.server.public_url.is_empty() {
            let u = &self.server.public_url;
            if !(u.starts_with("http://") || u.starts_with("https://"))
                || u.parse::<http::Uri>().is_err()
            {
                return invalid(format!(
                    "server.public_url `{u}` must be an absolute http:// or https:// URL"
                ));
            }
        }
        if let Some(tls) = &self.server.tls {
            if tls.client_auth != ClientAuth::Off && tls.client_ca_file.is_none() {
                return invalid(
                    "server.tls.client_ca_file is needed when server.tls.client_auth is not off"
                        .into(),
                );
            }
            if tls.listen == self.server.listen && tls.listen.port() != 0 {
                return invalid("server.tls.listen and server.listen are the same address".into());
            }
            for (i, rule) in tls.principals.iter().enumerate() {
                if rule.subject_cn.is_some() == rule.san.is_some() || rule.principal.is_empty() {
                    return invalid(format!(
                        "server.tls.principals[{i}] needs a principal and exactly one of subject_cn or san"
                    ));
                }
            }
            if tls.reload_interval_ms == 0 || tls.handshake_timeout_ms == 0 {
                return invalid(
                    "server.tls.reload_interval_ms and handshake_timeout_ms must be positive"
                        .into(),
                );
            }
        }
        if self.server.max_connections == 0 || self.server.header_read_timeout_ms == 0 {
            return invalid(
                "server.max_connections and server.header_read_timeout_ms must be positive".into(),
            );
        }
        if self.cache.memory_max_item_bytes > self.cache.memory_max_bytes {
            return invalid(
                "cache.memory_max_item_bytes is larger than cache.memory_max_bytes".into(),
            );
        }
        if self.cache.max_crate_bytes == 0 || self.cache.coalesce_wait_ms == 0 {
            return invalid(
                "cache.max_crate_bytes and cache.coalesce_wait_ms must be positive".into(),
            );
        }
        if self.registries.is_empty() {
            return invalid("no registries are configured".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid(format!(
                "log.level `{}` is not a valid filter",
                self.log.level
            ));
        }
        for (name, registry) in &self.registries {
            RegistryName::new(name)
                .map_err(|e| ConfigError::Invalid(format!("registries.{name}: {e}")))?;
            let RegistryConfig::Mirror(m) = registry;
            let u = &m.upstream;
            let scheme_ok = u.starts_with("http://") || u.starts_with("https://");
            if !scheme_ok || !u.ends_with('/') || u.parse::<http::Uri>().is_err() {
                return invalid(format!(
                    "registries.{name}.upstream `{u}` must be an http:// or https:// sparse index URL ending in `/` (without the `sparse+` prefix)"
                ));
            }
            for (key, v) in [
                ("connect_timeout_ms", m.connect_timeout_ms),
                ("request_timeout_ms", m.request_timeout_ms),
                ("download_timeout_ms", m.download_timeout_ms),
            ] {
                if v == 0 {
                    return invalid(format!("registries.{name}.{key} must be positive"));
                }
            }
            if m.client_cert_file.is_some() != m.client_key_file.is_some() {
                return invalid(format!(
                    "registries.{name}: client_cert_file and client_key_file go together"
                ));
            }
            if !m.system_roots && m.ca_bundle.is_none() && u.starts_with("https://") {
                return invalid(format!(
                    "registries.{name}: system_roots = false needs a ca_bundle to trust"
                ));
            }
            if m.retries > 10 {
                return invalid(format!("registries.{name}.retries is at most 10"));
            }
        }
        Ok(())
    }

    /// The public base URL without a trailing slash, when one is configured.
    pub fn public_url(&self) -> Option<&str> {
        let u = self.server.public_url.trim_end_matches('/');
        (!u.is_empty()).then_some(u)
    }
}

fn deep_merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => deep_merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn set(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut t = table;
    for p in parents {
        t = match t
            .entry((*p).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(inner) => inner,
            other => {
                *other = toml::Value::Table(toml::Table::new());
                other.as_table_mut().expect("just set")
            }
        };
    }
    t.insert((*last).to_owned(), value);
}

/// Applies `CRATEDOCK__A__B__C=value`. Segments are matched to existing keys ignoring case and
/// treating `_` and `-` alike (so `REGISTRIES__CRATES_IO` finds `crates-io`). The value is read
/// as a TOML value when it parses as one (numbers, booleans, arrays), else as a string.
fn apply_env(table: &mut toml::Table, var: &str, raw: &str) -> Result<(), ConfigError> {
    let rest = &var[ENV_PREFIX.len()..];
    let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if segments.iter().any(String::is_empty) {
        return Err(ConfigError::Parse {
            origin: format!("environment variable {var}"),
            message: "empty key segment".into(),
        });
    }
    let norm = |s: &str| s.replace('-', "_");
    let mut t = &mut *table;
    let mut resolved = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let key = t
            .keys()
            .find(|k| norm(&k.to_ascii_lowercase()) == norm(seg))
            .cloned()
            .unwrap_or_else(|| seg.clone());
        resolved.push(key.clone());
        if i + 1 == segments.len() {
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut v| v.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
            t.insert(key, value);
        } else {
            let entry = t
                .entry(key)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            t = entry.as_table_mut().ok_or_else(|| ConfigError::Parse {
                origin: format!("environment variable {var}"),
                message: format!("`{}` is not a section", resolved.join(".")),
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merge(text: &str, env: &[(&str, &str)], cli: &CliOverrides) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::merge("test.toml", text, &env, cli)
    }

    #[test]
    fn embedded_default_equals_code_defaults() {
        let parsed = merge(DEFAULT_TOML, &[], &CliOverrides::default()).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn default_toml_documents_every_key() {
        // Every key the code knows (with optional keys filled in) appears in the file.
        let mut full = Config::default();
        let RegistryConfig::Mirror(m) = full.registries.get_mut("crates-io").unwrap();
        m.token = Some(Secret::new("x"));
        m.ca_bundle = Some("x".into());
        m.client_cert_file = Some("x".into());
        m.client_key_file = Some("x".into());
        full.server.tls = Some(TlsConfig {
            listen: "127.0.0.1:1".parse().unwrap(),
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

    #[test]
    fn layers_apply_in_order() {
        let text = r#"
            [server]
            listen = "127.0.0.1:9000"
            [cache]
            memory_max_bytes = 10000000
        "#;
        let cli = CliOverrides {
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            data_dir: Some("/tmp/x".into()),
        };
        let c = merge(
            text,
            &[
                ("CRATEDOCK__CACHE__MEMORY_MAX_BYTES", "20000000"),
                ("CRATEDOCK__SERVER__LISTEN", "127.0.0.1:9050"),
                ("CRATEDOCK__REGISTRIES__CRATES_IO__TOKEN", "secret"),
            ],
            &cli,
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9100, "CLI beats env");
        assert_eq!(c.cache.memory_max_bytes, 20_000_000, "env beats file");
        assert_eq!(c.cache.coalesce_wait_ms, 60_000, "defaults fill the rest");
        assert_eq!(c.storage.data_dir, PathBuf::from("/tmp/x"));
        let RegistryConfig::Mirror(m) = &c.registries["crates-io"];
        assert_eq!(m.token.as_ref().unwrap().expose(), "secret");
        assert_eq!(format!("{:?}", m.token), "Some(Secret(***))");
    }

    #[test]
    fn a_file_with_registries_replaces_the_default_set() {
        let c = merge(
            r#"
            [registries.internal]
            kind = "mirror"
            upstream = "http://127.0.0.1:1/index/"
            index_ttl_ms = 5
            "#,
            &[],
            &CliOverrides::default(),
        )
        .unwrap();
        assert_eq!(c.registries.keys().collect::<Vec<_>>(), ["internal"]);
        let RegistryConfig::Mirror(m) = &c.registries["internal"];
        assert_eq!(m.index_ttl_ms, 5);
        assert_eq!(m.retries, 2);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = merge(
            "[server]\nlisten_addr = \"x\"\n",
            &[],
            &CliOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("listen_addr"), "{e}");
        let e = merge(
            "[registries.x]\nkind = \"mirror\"\nupstream = \"https://a/\"\ntimeout = 1\n",
            &[],
            &CliOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("timeout"), "{e}");
        let e = merge(
            "",
            &[("CRATEDOCK__CACHE__BOGUS", "1")],
            &CliOverrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_the_key() {
        for (text, needle) in [
            (
                "[registries.x]\nkind = \"mirror\"\nupstream = \"https://a/index\"\n",
                "registries.x.upstream",
            ),
            (
                "[registries.metrics]\nkind = \"mirror\"\nupstream = \"https://a/\"\n",
                "registries.metrics",
            ),
            ("[registries.x]\nkind = \"private\"\n", "private"),
            ("[server]\npublic_url = \"ftp://x\"\n", "server.public_url"),
            ("[cache]\nmemory_max_bytes = -1\n", "memory_max_bytes"),
        ] {
            let e = merge(text, &[], &CliOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
