//! Reading the normalized `Cargo.toml` that `cargo package` puts in a `.crate`: the package
//! metadata, the features and the dependencies, with their kind, platform and rename. The
//! registry takes these from the manifest, not from the publish JSON (§3.2), so this module keeps
//! the rule that only a publishable manifest is read: one that still inherits from a workspace,
//! or has a git or path dependency without a version, is refused with what to change. Name and
//! version are returned as written; the caller compares them with the upload.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use toml::Value;

use crate::names::shown;

/// What the registry records of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) license: Option<String>,
    pub(crate) license_file: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) keywords: Vec<String>,
    pub(crate) categories: Vec<String>,
    pub(crate) links: Option<String>,
    pub(crate) rust_version: Option<String>,
    /// As written, including `dep:` and `?/` values.
    pub(crate) features: BTreeMap<String, Vec<String>>,
    pub(crate) deps: Vec<ManifestDep>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DepKind {
    Normal,
    Build,
    Dev,
}

impl DepKind {
    /// The name in the index and the publish JSON.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DepKind::Normal => "normal",
            DepKind::Build => "build",
            DepKind::Dev => "dev",
        }
    }

    fn table(self) -> &'static str {
        match self {
            DepKind::Normal => "dependencies",
            DepKind::Build => "build-dependencies",
            DepKind::Dev => "dev-dependencies",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestDep {
    /// The name in the manifest's table key: the alias when renamed.
    pub(crate) name: String,
    /// The real package name when the dependency is renamed (`package = "..."`).
    pub(crate) package: Option<String>,
    /// Version requirement; "*" when the manifest gives none.
    pub(crate) req: String,
    pub(crate) features: Vec<String>,
    pub(crate) optional: bool,
    pub(crate) default_features: bool,
    /// `cfg(...)` expression or target triple of a `[target.X.dependencies]` table.
    pub(crate) target: Option<String>,
    pub(crate) kind: DepKind,
    /// `registry-index` of the dependency (absent means crates.io in a Cargo.toml).
    pub(crate) registry_index: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    #[error("Cargo.toml in the tarball is not UTF-8")]
    NotUtf8,
    #[error("Cargo.toml in the tarball is not valid: {0}")]
    Invalid(String),
    #[error("Cargo.toml in the tarball has no [package] table")]
    NoPackage,
    #[error("Cargo.toml in the tarball has no `package.{0}`")]
    Missing(&'static str),
    #[error("Cargo.toml still inherits `{0}` from a workspace; publish with cargo >= 1.64")]
    Inherited(String),
    #[error("the package version `{0}` in Cargo.toml is not valid semver: {1}")]
    BadVersion(String, String),
    #[error("dependency `{0}` is a {1} dependency without a `version`; add one to publish")]
    Unpublishable(String, &'static str),
    #[error("dependency `{0}` has an invalid version requirement `{1}`: {2}")]
    BadRequirement(String, String, String),
    #[error("dependency `{0}` names registry `{1}` but no `registry-index`; use `cargo publish`")]
    UnresolvedRegistry(String, String),
}

/// Reads a manifest taken from an uploaded tarball.
pub(crate) fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
    let invalid = |e: toml::de::Error| {
        let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
        let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
        ManifestError::Invalid(format!("{at}{}", shown(e.message())))
    };
    let raw: RawManifest = toml::from_str(text).map_err(invalid)?;
    // The top-level dependency tables are read in a second pass rather than flattened into
    // `RawManifest`: serde's `flatten` would lose toml's error positions.
    let top: DepTables = toml::from_str(text).map_err(invalid)?;
    let package = raw.package.or(raw.project);
    let package = package.ok_or(ManifestError::NoPackage)?;
    let name = package.name.ok_or(ManifestError::Missing("name"))?;
    let version = own("version", package.version)?.ok_or(ManifestError::Missing("version"))?;
    if let Err(e) = semver::Version::parse(&version) {
        return Err(ManifestError::BadVersion(shown(&version), e.to_string()));
    }
    let mut deps = top.into_deps(None)?;
    for (target, tables) in raw.target {
        deps.extend(tables.into_deps(Some(&target))?);
    }
    Ok(Manifest {
        name,
        version,
        license: own("license", package.license)?,
        license_file: own("license-file", package.license_file)?,
        description: own("description", package.description)?,
        keywords: own("keywords", package.keywords)?.unwrap_or_default(),
        categories: own("categories", package.categories)?.unwrap_or_default(),
        links: package.links,
        rust_version: own("rust-version", package.rust_version)?,
        features: raw.features,
        deps,
    })
}

/// The value of a package field, which must not be inherited in a normalized manifest.
fn own<T>(key: &str, field: Option<Field<T>>) -> Result<Option<T>, ManifestError> {
    match field {
        Some(Field::Inherited) => Err(ManifestError::Inherited(key.to_owned())),
        Some(Field::Own(value)) => Ok(Some(value)),
        None => Ok(None),
    }
}

#[derive(Deserialize)]
struct RawManifest {
    package: Option<RawPackage>,
    /// The name of `[package]` before cargo 1.0 (still read by cargo).
    project: Option<RawPackage>,
    #[serde(default)]
    features: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    target: BTreeMap<String, DepTables>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawPackage {
    name: Option<String>,
    version: Option<Field<String>>,
    license: Option<Field<String>>,
    license_file: Option<Field<String>>,
    description: Option<Field<String>>,
    keywords: Option<Field<Vec<String>>>,
    categories: Option<Field<Vec<String>>>,
    links: Option<String>,
    rust_version: Option<Field<String>>,
}

/// A package field, which an unnormalized manifest may give as `{ workspace = true }`.
enum Field<T> {
    Own(T),
    Inherited,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        if value.get("workspace").is_some() {
            return Ok(Field::Inherited);
        }
        Ok(Field::Own(T::deserialize(value).map_err(D::Error::custom)?))
    }
}

/// The dependency tables of the manifest or of one `[target.X]`. The snake-case names are the
/// legacy spellings; as in cargo, the kebab-case table wins when both are given.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct DepTables {
    dependencies: Deps,
    build_dependencies: Deps,
    #[serde(rename = "build_dependencies")]
    build_dependencies_legacy: Deps,
    dev_dependencies: Deps,
    #[serde(rename = "dev_dependencies")]
    dev_dependencies_legacy: Deps,
}

type Deps = Option<BTreeMap<String, RawDep>>;

impl DepTables {
    fn into_deps(self, target: Option<&str>) -> Result<Vec<ManifestDep>, ManifestError> {
        let build = self.build_dependencies.or(self.build_dependencies_legacy);
        let dev = self.dev_dependencies.or(self.dev_dependencies_legacy);
        let kinds = [DepKind::Normal, DepKind::Build, DepKind::Dev];
        let mut deps = Vec::new();
        for (kind, table) in kinds.into_iter().zip([self.dependencies, build, dev]) {
            for (name, raw) in table.unwrap_or_default() {
                deps.extend(dependency(name, raw, kind, target)?);
            }
        }
        Ok(deps)
    }
}

/// A dependency: a version requirement or a table.
struct RawDep(DepFields);

#[derive(Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct DepFields {
    version: Option<String>,
    features: Option<Vec<String>>,
    optional: Option<bool>,
    default_features: Option<bool>,
    #[serde(rename = "default_features")]
    default_features_legacy: Option<bool>,
    package: Option<String>,
    registry_index: Option<String>,
    registry: Option<String>,
    path: Option<String>,
    git: Option<String>,
    workspace: Option<bool>,
}

impl<'de> Deserialize<'de> for RawDep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(req) => Ok(RawDep(DepFields {
                version: Some(req),
                ..Default::default()
            })),
            t @ Value::Table(_) => Ok(RawDep(DepFields::deserialize(t).map_err(D::Error::custom)?)),
            other => {
                let what = other.type_str();
                let msg = format!("a dependency is a version string or a table, not {what}");
                Err(D::Error::custom(msg))
            }
        }
    }
}

/// Turns one manifest entry into a dependency; `None` for a dev-dependency that cargo drops.
fn dependency(
    name: String,
    RawDep(raw): RawDep,
    kind: DepKind,
    target: Option<&str>,
) -> Result<Option<ManifestDep>, ManifestError> {
    use ManifestError as E;
    if raw.workspace.is_some() {
        return Err(E::Inherited(format!("{}.{}", kind.table(), shown(&name))));
    }
    let req = match (raw.version, raw.git.is_some(), raw.path.is_some()) {
        (Some(req), ..) => req,
        // A dev-dependency without a version only matters where the source is at hand.
        (None, true, _) | (None, _, true) if kind == DepKind::Dev => return Ok(None),
        (None, true, _) => return Err(E::Unpublishable(shown(&name), "git")),
        (None, _, true) => return Err(E::Unpublishable(shown(&name), "path")),
        (None, false, false) => "*".to_owned(),
    };
    if let Err(e) = semver::VersionReq::parse(&req) {
        return Err(E::BadRequirement(shown(&name), shown(&req), e.to_string()));
    }
    if let (Some(registry), None) = (&raw.registry, &raw.registry_index) {
        return Err(E::UnresolvedRegistry(shown(&name), shown(registry)));
    }
    let mut features = raw.features.unwrap_or_default();
    features.retain(|f| !f.is_empty());
    let default_features = raw.default_features.or(raw.default_features_legacy);
    Ok(Some(ManifestDep {
        name,
        package: raw.package,
        req,
        features,
        optional: raw.optional.unwrap_or(false),
        default_features: default_features.unwrap_or(true),
        target: target.map(str::to_owned),
        kind,
        registry_index: raw.registry_index,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What cargo 1.95 writes for a package with renamed, optional, registry and platform
    /// dependencies; the versionless path dev-dependency is added by hand (cargo drops it).
    const NORMALIZED: &str = r#"# THIS FILE IS AUTOMATICALLY GENERATED BY CARGO

[package]
edition = "2024"
rust-version = "1.85"
name = "acme-widgets"
version = "1.2.3-beta.1+build.7"
authors = ["Jane Doe <jane@example.com>"]
build = "build.rs"
autobins = false
description = "Widgets for Acme"
keywords = [
    "widgets",
    "acme",
]
categories = ["gui"]
license = "MIT OR Apache-2.0"
license-file = "LICENSE-ACME"
links = "acmewidgets"

[features]
default = ["std"]
std = []
x = [
    "dep:serde",
    "serde?/std",
]

[dependencies.bar]
version = "0.3"
package = "real-bar"

[dependencies.internal-util]
version = "^2.1"
registry-index = "sparse+http://127.0.0.1:1234/internal/index/"

[dependencies.serde]
version = "1.0.200"
features = ["derive"]
optional = true
default-features = false

[dev-dependencies.helper]
path = "../helper"

[dev-dependencies.tokio]
version = "1"
features = ["macros"]

[build-dependencies.cc]
version = "1.1"

[target."cfg(unix)".dependencies.libc]
version = "0.2.150"

[lints.rust]
unsafe_code = "forbid"
"#;

    /// Each dependency on one line (all but `registry_index`), to compare whole lists.
    fn rows(m: &Manifest) -> Vec<String> {
        let row = |d: &ManifestDep| {
            let rest = (&d.package, &d.features, d.optional, d.default_features);
            format!("{:?} {:?} {} {} {rest:?}", d.kind, d.target, d.name, d.req)
        };
        m.deps.iter().map(row).collect()
    }

    /// A small valid manifest with `extra` after its `[package]`.
    fn with(extra: &str) -> String {
        format!("[package]\nname = \"a\"\nversion = \"1.0.0\"\n{extra}\n")
    }

    #[track_caller]
    fn refused(toml: &str, says: &str) {
        let err = parse(toml.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(says), "{err:?} does not say {says:?}");
    }

    #[test]
    fn a_manifest_normalized_by_cargo_is_read() {
        let m = parse(NORMALIZED.as_bytes()).unwrap();
        assert_eq!(m.name, "acme-widgets");
        assert_eq!(m.version, "1.2.3-beta.1+build.7");
        assert_eq!(m.license.as_deref(), Some("MIT OR Apache-2.0"));
        assert_eq!(m.license_file.as_deref(), Some("LICENSE-ACME"));
        assert_eq!(m.description.as_deref(), Some("Widgets for Acme"));
        assert_eq!(m.keywords, ["widgets", "acme"]);
        assert_eq!(m.categories, ["gui"]);
        assert_eq!(m.links.as_deref(), Some("acmewidgets"));
        assert_eq!(m.rust_version.as_deref(), Some("1.85"));
        let features = r#"{"default": ["std"], "std": [], "x": ["dep:serde", "serde?/std"]}"#;
        assert_eq!(format!("{:?}", m.features), features);
        let expected = [
            r#"Normal None bar 0.3 (Some("real-bar"), [], false, true)"#,
            r#"Normal None internal-util ^2.1 (None, [], false, true)"#,
            r#"Normal None serde 1.0.200 (None, ["derive"], true, false)"#,
            r#"Build None cc 1.1 (None, [], false, true)"#,
            r#"Dev None tokio 1 (None, ["macros"], false, true)"#,
            r#"Normal Some("cfg(unix)") libc 0.2.150 (None, [], false, true)"#,
        ];
        assert_eq!(rows(&m), expected);
        let indexes: Vec<_> = m.deps.iter().map(|d| d.registry_index.as_deref()).collect();
        let internal = Some("sparse+http://127.0.0.1:1234/internal/index/");
        assert_eq!(indexes, [None, internal, None, None, None, None]);
    }

    #[test]
    fn legacy_spellings_and_short_forms_are_read() {
        let toml = r#"[project]
name = "old"
version = "0.1.0"
[dependencies]
plain = "1.0"
any = {}
odd = { version = "2", default_features = false, features = ["", "a"] }
[dev_dependencies]
t = "0.1"
[build_dependencies]
b = "3"
[target.x86_64-pc-windows-msvc.build-dependencies]
w = "0.3"
"#;
        let m = parse(toml.as_bytes()).unwrap();
        assert!(m.name == "old" && m.license.is_none() && m.features.is_empty());
        let expected = [
            r#"Normal None any * (None, [], false, true)"#,
            r#"Normal None odd 2 (None, ["a"], false, false)"#,
            r#"Normal None plain 1.0 (None, [], false, true)"#,
            r#"Build None b 3 (None, [], false, true)"#,
            r#"Dev None t 0.1 (None, [], false, true)"#,
            r#"Build Some("x86_64-pc-windows-msvc") w 0.3 (None, [], false, true)"#,
        ];
        assert_eq!(rows(&m), expected);
    }

    #[test]
    fn inherited_fields_and_dependencies_are_refused() {
        let says =
            "Cargo.toml still inherits `license` from a workspace; publish with cargo >= 1.64";
        refused(&with("license.workspace = true"), says);
        let cases = [
            ("rust-version.workspace = true", "rust-version`"),
            ("keywords = { workspace = true }", "keywords`"),
            ("[dependencies]\nx.workspace = true", "dependencies.x`"),
        ];
        for (extra, key) in cases {
            refused(&with(extra), &format!("inherits `{key} from a workspace"));
        }
        let dev = with("[dev-dependencies]\nt.workspace = true");
        refused(&dev, "inherits `dev-dependencies.t` from a workspace");
        let version = "[package]\nname = \"a\"\nversion.workspace = true";
        refused(version, "inherits `version` from a workspace");
    }

    #[test]
    fn git_and_path_dependencies_without_a_version_are_refused_unless_dev() {
        let git = "git = \"https://example.com/x.git\"";
        let normal_git = with(&format!("[dependencies.x]\n{git}"));
        refused(&normal_git, "`x` is a git dependency without a `version`");
        let build_path = with("[build-dependencies.y]\npath = \"../y\"");
        refused(&build_path, "`y` is a path dependency without a `version`");
        let target_path = with("[target.'cfg(unix)'.dependencies.z]\npath = \"z\"");
        refused(&target_path, "`z` is a path dependency");
        let versioned = with(&format!("[dependencies.x]\n{git}\nversion = \"1\""));
        assert_eq!(parse(versioned.as_bytes()).unwrap().deps[0].req, "1");
        let dev = format!("[dev-dependencies.x]\n{git}\n[dev-dependencies.y]\npath = \"y\"");
        assert!(parse(with(&dev).as_bytes()).unwrap().deps.is_empty());
    }

    #[test]
    fn malformed_manifests_are_refused_with_what_is_wrong() {
        let bad_req = with("[dependencies]\nx = \"one\"");
        refused(&bad_req, "`x` has an invalid version requirement `one`");
        let bad_dep = with("[dependencies]\nx = 3");
        refused(&bad_dep, "line 5: a dependency is a version string");
        let no_index = with("[dependencies.x]\nregistry = \"corp\"");
        refused(&no_index, "registry `corp` but no `registry-index`");
        let bad_version = with("").replace("1.0.0", "1.0");
        refused(&bad_version, "`1.0` in Cargo.toml is not valid semver");
        let long_version = with("").replace("1.0.0", &"x".repeat(300));
        refused(&long_version, &format!("version `{}…`", "x".repeat(80)));
        refused(&with("keywords = \"one\""), "line 4: invalid type: string");
        refused("[package]\nname = \"a\"", "no `package.version`");
        refused("[package]\nversion = \"1.0.0\"", "no `package.name`");
        refused("[lib]\nname = \"a\"", "no [package] table");
        refused("[package\nname = \"a\"", "not valid: line 1:");
        let not_utf8 = parse(b"name = \"\xff\"");
        assert!(matches!(not_utf8, Err(ManifestError::NotUtf8)));
    }
}
