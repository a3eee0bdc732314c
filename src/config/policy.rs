//! The supply-chain policy keys: where the advisory database comes from (`[advisories]`), and
//! each registry's advisory, licence and curation settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::RegistryConfig;

/// What a policy does with what it finds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Off,
    Warn,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::Warn => "warn",
            Action::Deny => "deny",
        }
    }
}

/// Kinds of informational advisories that may be made to count like vulnerabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Informational {
    Unmaintained,
    Unsound,
    Notice,
}

/// Where the RustSec advisory database comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdvisoriesConfig {
    /// A folder holding the database (a checkout or an unpacked archive of advisory-db).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// A `.tar.gz` archive of the advisory-db repository, fetched again every
    /// `refresh_interval_ms` with a conditional GET.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Extra PEM CA bundle trusted for `url`, on top of the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    pub refresh_interval_ms: u64,
    /// A database older than this is reported (metric and log); policy keeps applying it.
    pub max_age_ms: u64,
}

impl Default for AdvisoriesConfig {
    fn default() -> Self {
        Self {
            path: None,
            url: None,
            ca_bundle: None,
            refresh_interval_ms: 3_600_000,
            max_age_ms: 7 * 24 * 3_600_000,
        }
    }
}

impl AdvisoriesConfig {
    /// Whether a database is configured at all.
    pub fn configured(&self) -> bool {
        self.path.is_some() || self.url.is_some()
    }
}

/// A registry's licence policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LicensesConfig {
    /// Absent: `deny` when `allow` lists something, else `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// SPDX licence identifiers that may be used (`WITH` exceptions are allowed with them).
    pub allow: Vec<String>,
    pub exceptions: Vec<LicenseException>,
}

impl LicensesConfig {
    pub fn action(&self) -> Action {
        self.action.unwrap_or(if self.allow.is_empty() {
            Action::Off
        } else {
            Action::Deny
        })
    }
}

/// A crate let through the licence policy: with any licence, or with more licences allowed, or
/// (for a crate with only `license-file`) with a licence file of a known SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseException {
    pub name: String,
    /// A semver requirement the version must match; absent: every version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// More SPDX identifiers allowed for this crate; empty: any licence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// The lowercase hex SHA-256 a `license-file` must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_file_sha256: Option<String>,
}

/// The policy keys of one registry, whichever its kind.
#[derive(Debug, Clone, Copy)]
pub struct PolicyKeys<'a> {
    pub advisories: Action,
    pub informational: &'a [Informational],
    pub ignore: &'a [String],
    pub deny_hides_versions: bool,
    pub curated: bool,
    pub licenses: &'a LicensesConfig,
}

impl RegistryConfig {
    pub fn policy(&self) -> PolicyKeys<'_> {
        match self {
            RegistryConfig::Mirror(m) => PolicyKeys {
                advisories: m.advisories,
                informational: &m.informational,
                ignore: &m.ignore,
                deny_hides_versions: m.deny_hides_versions,
                curated: m.curated,
                licenses: &m.licenses,
            },
            RegistryConfig::Private(p) => PolicyKeys {
                advisories: p.advisories,
                informational: &p.informational,
                ignore: &p.ignore,
                deny_hides_versions: false,
                curated: false,
                licenses: &p.licenses,
            },
        }
    }
}

/// Checks the policy keys of registry `name`; the error names the key.
pub(super) fn validate(name: &str, keys: &PolicyKeys<'_>) -> Result<(), String> {
    let key = |k: &str| format!("registries.{name}.{k}");
    for id in keys.ignore {
        let ok = id.len() <= 64
            && !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
        if !ok {
            return Err(format!(
                "{}: `{id}` is not an advisory id (like RUSTSEC-2024-0001)",
                key("ignore")
            ));
        }
    }
    if keys.deny_hides_versions && keys.advisories != Action::Deny {
        return Err(format!(
            "{} needs {} = \"deny\"",
            key("deny_hides_versions"),
            key("advisories")
        ));
    }
    let licence_id = |id: &str, k: &str| -> Result<(), String> {
        if spdx::license_id(id).is_some() || id.starts_with("LicenseRef-") {
            Ok(())
        } else {
            Err(format!(
                "{k}: `{id}` is not an SPDX licence identifier (see https://spdx.org/licenses/)"
            ))
        }
    };
    for id in &keys.licenses.allow {
        licence_id(id, &key("licenses.allow"))?;
    }
    for (i, e) in keys.licenses.exceptions.iter().enumerate() {
        let k = key(&format!("licenses.exceptions[{i}]"));
        crate::names::CrateName::new(&e.name).map_err(|err| format!("{k}.name: {err}"))?;
        if let Some(v) = &e.version {
            semver::VersionReq::parse(v).map_err(|err| {
                format!("{k}.version: `{v}` is not a version requirement ({err})")
            })?;
        }
        for id in &e.allow {
            licence_id(id, &format!("{k}.allow"))?;
        }
        if let Some(h) = &e.license_file_sha256
            && !(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(format!(
                "{k}.license_file_sha256: a SHA-256 is 64 hex digits"
            ));
        }
    }
    Ok(())
}

/// Checks `[advisories]`.
pub(super) fn validate_source(a: &AdvisoriesConfig) -> Result<(), String> {
    if let Some(url) = &a.url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(format!(
            "advisories.url: `{url}` must be an http:// or https:// URL of a .tar.gz archive"
        ));
    }
    if a.url.is_some() && a.refresh_interval_ms < 100 {
        return Err("advisories.refresh_interval_ms must be at least 100".into());
    }
    Ok(())
}
