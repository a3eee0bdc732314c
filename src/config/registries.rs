//! The registries of a configuration: mirrors of an upstream and private registries.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::policy::{Action, Informational, LicensesConfig};
use super::{ClientAuth, Secret};
use crate::names::CrateGlob;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RegistryConfig {
    Mirror(MirrorConfig),
    Private(PrivateConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Sparse index URL of the upstream, ending in `/` (without the `sparse+` prefix).
    pub upstream: String,
    /// Every request needs a token (or a mapped principal) with `read` on this registry.
    #[serde(default)]
    pub auth_required: bool,
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
    /// The longest an index file counts as fresh, whatever the upstream says.
    #[serde(default = "d::max_freshness_ms")]
    pub max_freshness_ms: u64,
    /// Requests in flight to the upstream at once; more wait for a free one.
    #[serde(default = "d::max_upstream_connections")]
    pub max_connections: u32,
    /// Names that belong to the company's private registries: never served from the upstream.
    #[serde(default)]
    pub reserved_names: Vec<CrateGlob>,
    /// Whether the upstream is crates.io (what a dependency recorded as a crates.io one comes
    /// from); absent: when the upstream is `https://index.crates.io/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crates_io: Option<bool>,
    /// Advisories of the RustSec database: `off`, `warn` (served, logged, counted) or `deny`.
    #[serde(default)]
    pub advisories: Action,
    /// Informational advisory kinds that count like vulnerabilities.
    #[serde(default)]
    pub informational: Vec<Informational>,
    /// Advisory ids that never count.
    #[serde(default)]
    pub ignore: Vec<String>,
    #[serde(default)]
    pub licenses: LicensesConfig,
    /// Affected versions are served as yanked in index files (new resolutions avoid them).
    #[serde(default)]
    pub deny_hides_versions: bool,
    /// Only crates on the allow-list (`cratedock admin curate`) are served.
    #[serde(default)]
    pub curated: bool,
    /// Never contact the upstream; serve index files pruned to the cached versions.
    #[serde(default)]
    pub offline: bool,
    /// Serve index files pruned to the versions whose crate file is cached, the upstream
    /// still used to refresh them.
    #[serde(default)]
    pub serve_only_cached: bool,
}

/// Defaults of the keys (serde needs functions).
pub(in crate::config) mod d {
    use super::ClientAuth;

    pub(in crate::config) fn client_auth() -> ClientAuth {
        ClientAuth::Off
    }
    pub(in crate::config) fn reload_interval_ms() -> u64 {
        10_000
    }
    pub(in crate::config) fn handshake_timeout_ms() -> u64 {
        10_000
    }
    pub(in crate::config) fn system_roots() -> bool {
        true
    }
    pub(in crate::config) fn connect_timeout_ms() -> u64 {
        5_000
    }
    pub(in crate::config) fn request_timeout_ms() -> u64 {
        30_000
    }
    pub(in crate::config) fn download_timeout_ms() -> u64 {
        300_000
    }
    pub(in crate::config) fn retries() -> u32 {
        2
    }
    pub(in crate::config) fn index_ttl_ms() -> u64 {
        60_000
    }
    pub(in crate::config) fn stale_while_revalidate_ms() -> u64 {
        60_000
    }
    pub(in crate::config) fn stale_if_error_max_age_ms() -> u64 {
        7 * 24 * 3600 * 1000
    }
    pub(in crate::config) fn revalidate_wait_ms() -> u64 {
        5_000
    }
    pub(in crate::config) fn negative_ttl_ms() -> u64 {
        30_000
    }
    pub(in crate::config) fn max_upstream_connections() -> u32 {
        32
    }
    pub(in crate::config) fn max_freshness_ms() -> u64 {
        24 * 3600 * 1000
    }
    pub(in crate::config) fn yes() -> bool {
        true
    }
    pub(in crate::config) fn max_concurrent_publishes() -> u32 {
        4
    }
    pub(in crate::config) fn upload_timeout_ms() -> u64 {
        600_000
    }
    pub(in crate::config) fn max_upload_bytes() -> u64 {
        512 * 1024 * 1024
    }
}

impl MirrorConfig {
    pub fn new(upstream: &str) -> Self {
        Self {
            upstream: upstream.to_owned(),
            auth_required: false,
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
            max_freshness_ms: d::max_freshness_ms(),
            max_connections: d::max_upstream_connections(),
            reserved_names: Vec::new(),
            crates_io: None,
            advisories: Action::Off,
            informational: Vec::new(),
            ignore: Vec::new(),
            licenses: LicensesConfig::default(),
            deny_hides_versions: false,
            curated: false,
            offline: false,
            serve_only_cached: false,
        }
    }

    /// Whether the upstream stands for crates.io.
    pub fn is_crates_io(&self) -> bool {
        self.crates_io
            .unwrap_or(self.upstream.trim_end_matches('/') == "https://index.crates.io")
    }
}

/// A registry of crates published to cratedock itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateConfig {
    /// Every request needs a token (or a mapped principal) with `read` on this registry.
    #[serde(default = "d::yes")]
    pub auth_required: bool,
    /// Largest `.crate` file a publish may upload.
    #[serde(default = "d::max_upload_bytes")]
    pub max_upload_bytes: u64,
    /// Largest total size of the files inside a `.crate`.
    #[serde(default = "d::max_upload_bytes")]
    pub max_unpacked_bytes: u64,
    /// Publishes received and checked at once; more wait (each holds its upload in memory).
    #[serde(default = "d::max_concurrent_publishes")]
    pub max_concurrent_publishes: u32,
    /// A publish's body must arrive within this time (its turn is given back otherwise).
    #[serde(default = "d::upload_timeout_ms")]
    pub upload_timeout_ms: u64,
    /// Registries the crates here may depend on besides this one: names of registries of this
    /// cratedock (a mirror stands for its upstream) or index URLs of other registries.
    /// Absent: every mirror of the configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency_registries: Option<Vec<String>>,
    /// Names that may be published here although a mirror's upstream has them.
    #[serde(default)]
    pub allow_upstream_names: Vec<CrateGlob>,
    /// Advisories of the RustSec database: `off`, `warn` (served, logged, counted) or `deny`.
    #[serde(default)]
    pub advisories: Action,
    /// Informational advisory kinds that count like vulnerabilities.
    #[serde(default)]
    pub informational: Vec<Informational>,
    /// Advisory ids that never count.
    #[serde(default)]
    pub ignore: Vec<String>,
    #[serde(default)]
    pub licenses: LicensesConfig,
}

impl Default for PrivateConfig {
    fn default() -> Self {
        Self {
            auth_required: true,
            max_upload_bytes: d::max_upload_bytes(),
            max_unpacked_bytes: d::max_upload_bytes(),
            max_concurrent_publishes: d::max_concurrent_publishes(),
            upload_timeout_ms: d::upload_timeout_ms(),
            dependency_registries: None,
            allow_upstream_names: Vec::new(),
            advisories: Action::Off,
            informational: Vec::new(),
            ignore: Vec::new(),
            licenses: LicensesConfig::default(),
        }
    }
}

impl RegistryConfig {
    pub fn auth_required(&self) -> bool {
        match self {
            Self::Mirror(m) => m.auth_required,
            Self::Private(p) => p.auth_required,
        }
    }
}
