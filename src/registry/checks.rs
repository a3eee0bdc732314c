//! The rules a publish must pass that are pure functions of what was uploaded: crates.io's
//! name rules, version uniqueness, the licence, and where each dependency comes from.
//!
//! The rule this module keeps: each refusal names the rule and tells the user what to change.

use super::RegistryError;
use super::line::CRATES_IO_INDEX;
use super::manifest::{Manifest, ManifestDep};
use crate::names::{CrateName, shown};

/// Names crates.io refuses, compared with `-` and `_` alike and case ignored.
const RESERVED_NAMES: &[&str] = &[
    "alloc",
    "arena",
    "ast",
    "builtins",
    "collections",
    "compiler-builtins",
    "compiler-rt",
    "compiletest",
    "core",
    "coretest",
    "debug",
    "driver",
    "flate",
    "fmt_macros",
    "grammar",
    "graphviz",
    "macro",
    "macros",
    "proc_macro",
    "rbml",
    "rust-installer",
    "rustbook",
    "rustc",
    "rustc_back",
    "rustc_borrowck",
    "rustc_driver",
    "rustc_llvm",
    "rustc_resolve",
    "rustc_trans",
    "rustc_typeck",
    "rustdoc",
    "rustllvm",
    "rustuv",
    "serialize",
    "std",
    "syntax",
    "test",
    "unicode",
];

fn canon(name: &str) -> String {
    name.to_ascii_lowercase().replace('-', "_")
}

fn is_windows_device(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if matches!(n.as_str(), "nul" | "con" | "prn" | "aux") {
        return true;
    }
    n.len() == 4
        && (n.starts_with("com") || n.starts_with("lpt"))
        && n.as_bytes()[3].is_ascii_digit()
}

/// A crate name as crates.io accepts it for a new crate: cratedock's name rules, an ASCII
/// letter first, and not a reserved name.
pub(crate) fn crate_name(name: &str) -> Result<CrateName, RegistryError> {
    let parsed = CrateName::new(name).map_err(|e| RegistryError::invalid("name", e.to_string()))?;
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(RegistryError::invalid(
            "name",
            format!(
                "crate name `{}` must start with an ASCII letter",
                shown(name)
            ),
        ));
    }
    let c = canon(name);
    if RESERVED_NAMES.iter().any(|r| canon(r) == c) || is_windows_device(name) {
        return Err(RegistryError::invalid(
            "name",
            format!(
                "cannot publish a crate with a reserved name: `{name}` (a name of Rust's own crates or a Windows device); pick another name"
            ),
        ));
    }
    Ok(parsed)
}

/// A valid version, at most 150 characters.
pub(crate) fn version(vers: &str) -> Result<semver::Version, RegistryError> {
    crate::names::Version::new(vers)
        .map_err(|e| RegistryError::invalid("version", e.to_string()))?;
    semver::Version::parse(vers).map_err(|e| RegistryError::invalid("version", e.to_string()))
}

/// The taken version that `new` collides with: the same version once build metadata is set
/// aside (yanked and deleted versions count).
pub(crate) fn taken<'a>(
    new: &semver::Version,
    existing: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    existing.into_iter().find(|v| {
        semver::Version::parse(v).is_ok_and(|v| {
            (v.major, v.minor, v.patch, &v.pre) == (new.major, new.minor, new.patch, &new.pre)
        })
    })
}

/// A `license` that is a valid SPDX expression, or a `license-file`.
pub(crate) fn licence(m: &Manifest) -> Result<(), RegistryError> {
    match (&m.license, &m.license_file) {
        (Some(expr), _) => spdx::Expression::parse_mode(expr, spdx::ParseMode::LAX)
            .map(|_| ())
            .map_err(|e| {
                RegistryError::invalid(
                    "license",
                    format!(
                        "`license = \"{}\"` in Cargo.toml is not a valid SPDX expression ({}); use identifiers from https://spdx.org/licenses/ such as `MIT OR Apache-2.0`, or set `license-file`",
                        shown(expr),
                        e.reason
                    ),
                )
            }),
        (None, Some(_)) => Ok(()),
        (None, None) => Err(RegistryError::invalid(
            "license",
            "Cargo.toml has neither `license` nor `license-file`: add `license = \"<SPDX expression>\"` (e.g. `MIT OR Apache-2.0`) or `license-file = \"LICENSE\"` to [package]",
        )),
    }
}

/// Most dependencies, features, and values of one feature a crate may have (crates.io's
/// defaults): an index line stays a size cargo handles well.
const MAX_DEPENDENCIES: usize = 500;
const MAX_FEATURES: usize = 300;

fn feature_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
}

/// A feature value: `feat`, `dep/feat`, `dep:dep` or `dep?/feat`.
fn feature_value_ok(value: &str) -> bool {
    if let Some(dep) = value.strip_prefix("dep:") {
        return CrateName::new(dep).is_ok();
    }
    match value.split_once('/') {
        Some((dep, feat)) => {
            let dep = dep.strip_suffix('?').unwrap_or(dep);
            CrateName::new(dep).is_ok() && feature_name_ok(feat)
        }
        None => feature_name_ok(value),
    }
}

/// The parts of the manifest that go into the index line, in a shape cargo reads: a line that
/// cargo cannot read makes the version unusable for everyone.
pub(crate) fn index_fields(m: &Manifest) -> Result<(), RegistryError> {
    let refuse = |detail: String| Err(RegistryError::invalid("manifest", detail));
    if m.deps.len() > MAX_DEPENDENCIES {
        return refuse(format!(
            "the crate has {} dependencies; at most {MAX_DEPENDENCIES} are accepted",
            m.deps.len()
        ));
    }
    if m.features.len() > MAX_FEATURES {
        return refuse(format!(
            "the crate has {} features; at most {MAX_FEATURES} are accepted",
            m.features.len()
        ));
    }
    for (name, values) in &m.features {
        if !feature_name_ok(name) {
            return refuse(format!("feature name `{}` is invalid", shown(name)));
        }
        if values.len() > MAX_FEATURES {
            return refuse(format!(
                "feature `{name}` enables {} values; at most {MAX_FEATURES} are accepted",
                values.len()
            ));
        }
        if let Some(bad) = values.iter().find(|v| !feature_value_ok(v)) {
            return refuse(format!(
                "feature `{name}` enables `{}`, which is not `feat`, `dep/feat`, `dep:dep` or `dep?/feat`",
                shown(bad)
            ));
        }
    }
    if let Some(rv) = &m.rust_version {
        // cargo's partial versions: 1 to 3 numbers, no leading zeros, no operator.
        let parts: Vec<&str> = rv.split('.').collect();
        let numeric = parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && (*p == "0" || !p.starts_with('0'))
        });
        if !(1..=3).contains(&parts.len()) || !numeric {
            return refuse(format!(
                "`rust-version = \"{}\"` is not a Rust version such as `1.70` or `1.70.0`",
                shown(rv)
            ));
        }
    }
    for dep in &m.deps {
        if let Some(target) = &dep.target {
            let balanced = target.chars().try_fold(0i32, |depth, c| match c {
                '(' => Some(depth + 1),
                ')' if depth > 0 => Some(depth - 1),
                ')' => None,
                _ => Some(depth),
            }) == Some(0);
            let shaped = match target.strip_prefix("cfg(") {
                Some(rest) => rest.ends_with(')'),
                None => target
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
            };
            if target.is_empty() || !balanced || !shaped {
                return refuse(format!(
                    "dependency `{}` has the target `{}`, which is neither `cfg(...)` nor a target triple",
                    dep.name,
                    shown(target)
                ));
            }
        }
    }
    Ok(())
}

/// Where a dependency comes from, as this registry sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// This registry: recorded without `registry`.
    Same,
    /// crates.io: recorded as its canonical index URL.
    CratesIo,
    /// Another registry of this cratedock, by name; recorded as the manifest's URL.
    Local { registry: String, url: String },
    /// A registry elsewhere; recorded as the manifest's URL.
    External(String),
}

impl Source {
    /// The dependency's `registry` value in the index line.
    pub(crate) fn index_value(&self) -> Option<String> {
        match self {
            Self::Same => None,
            Self::CratesIo => Some(CRATES_IO_INDEX.to_owned()),
            Self::Local { url, .. } | Self::External(url) => Some(url.clone()),
        }
    }
}

/// An index URL without `sparse+`, a trailing `/` or ASCII case: the form URLs are compared in.
pub(crate) fn url_key(url: &str) -> String {
    url.trim_start_matches("sparse+")
        .trim_end_matches('/')
        .to_ascii_lowercase()
}

/// Tells where dependencies come from.
pub(crate) struct Sources<'a> {
    /// This registry's name.
    pub(crate) registry: &'a str,
    /// The configured public base URL: the only one another registry of this cratedock is
    /// recognised by, since its URL is copied into index lines for every consumer.
    pub(crate) public: Option<&'a str>,
    /// The base URL of the request (from its Host header): trusted only to recognise this
    /// registry itself, which index lines record as no URL at all.
    pub(crate) request: Option<&'a str>,
    /// Every registry of this cratedock.
    pub(crate) registries: Vec<&'a str>,
}

impl Sources<'_> {
    pub(crate) fn of(&self, dep: &ManifestDep) -> Source {
        let Some(url) = &dep.registry_index else {
            // In a published Cargo.toml, no registry means crates.io.
            return Source::CratesIo;
        };
        let key = url_key(url);
        if key == url_key(CRATES_IO_INDEX) || key == "https://index.crates.io" {
            return Source::CratesIo;
        }
        let at = |base: Option<&str>, r: &str| {
            base.is_some_and(|b| key == url_key(&format!("{b}/{r}/index")))
        };
        if at(self.public, self.registry) || at(self.request, self.registry) {
            return Source::Same;
        }
        for r in &self.registries {
            if *r != self.registry && at(self.public, r) {
                return Source::Local {
                    registry: (*r).to_owned(),
                    url: url.clone(),
                };
            }
        }
        Source::External(url.clone())
    }
}

/// The refusal of a dependency from a registry this one may not depend on.
pub(crate) fn forbidden_source(
    dep: &ManifestDep,
    source: &Source,
    registry: &str,
) -> RegistryError {
    let from = match source {
        Source::Same => "this registry".to_owned(),
        Source::CratesIo => "crates.io".to_owned(),
        Source::Local { registry, .. } => format!("registry `{registry}`"),
        Source::External(url) => format!("`{}`", shown(url)),
    };
    RegistryError::invalid(
        "dependency",
        format!(
            "dependency `{}` comes from {from}, which crates in `{registry}` may not depend on; an admin can allow it in registries.{registry}.dependency_registries",
            dep.name
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_crates_io() {
        assert!(crate_name("serde_json").is_ok());
        for bad in [
            "_x",
            "1x",
            "std",
            "STD",
            "proc-macro",
            "nul",
            "COM1",
            "lpt9",
            "a b",
            "",
        ] {
            assert!(crate_name(bad).is_err(), "{bad} was accepted");
        }
        assert!(crate_name("com10").is_ok() && crate_name("console").is_ok());
    }

    #[test]
    fn index_fields_are_in_a_shape_cargo_reads() {
        let m = |features: &[(&str, &[&str])], rust_version: Option<&str>| Manifest {
            name: "x".into(),
            version: "1.0.0".into(),
            license: None,
            license_file: None,
            description: None,
            keywords: vec![],
            categories: vec![],
            links: None,
            rust_version: rust_version.map(str::to_owned),
            features: features
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            deps: vec![],
        };
        let good: &[(&str, &[&str])] = &[
            (
                "default",
                &["std", "serde/derive", "dep:serde", "serde?/std"],
            ),
            ("std", &[]),
            ("1.0-compat+x", &[]),
        ];
        assert!(index_fields(&m(good, Some("1.70"))).is_ok());
        assert!(index_fields(&m(good, Some("1.70.1"))).is_ok());
        assert!(index_fields(&m(good, Some("1"))).is_ok());
        for rv in ["abc", "1.070", ">=1.70", "1.70.0.1", "1..2", ""] {
            assert!(index_fields(&m(good, Some(rv))).is_err(), "{rv}");
        }
        let with_target = |target: &str| {
            let mut x = m(good, None);
            x.deps.push(ManifestDep {
                name: "d".into(),
                package: None,
                req: "1".into(),
                features: vec![],
                optional: false,
                default_features: true,
                target: Some(target.into()),
                kind: super::super::manifest::DepKind::Normal,
                registry_index: None,
            });
            index_fields(&x)
        };
        assert!(with_target("cfg(all(unix, not(target_os = \"macos\")))").is_ok());
        assert!(with_target("x86_64-unknown-linux-gnu").is_ok());
        for bad in ["cfg(unix", "cfg(unix))", "x y", "", "cfg)("] {
            assert!(with_target(bad).is_err(), "{bad}");
        }
        for bad in [
            &[("a b", &[][..])][..],
            &[("-x", &[])],
            &[("f", &["dep:"])],
            &[("f", &["a/b/c"])],
            &[("f", &["\"quoted\""])],
        ] {
            assert!(index_fields(&m(bad, None)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions_collide_without_build_metadata() {
        let v = |s| version(s).unwrap();
        let existing = ["1.0.0", "1.1.0-beta.1+x"];
        assert_eq!(taken(&v("1.0.0+build"), existing), Some("1.0.0"));
        assert_eq!(taken(&v("1.1.0-beta.1"), existing), Some("1.1.0-beta.1+x"));
        assert_eq!(taken(&v("1.1.0"), existing), None);
        assert!(version("1.0").is_err());
    }

    #[test]
    fn dependency_sources_are_told_apart() {
        let sources = Sources {
            registry: "internal",
            public: Some("https://cd.example"),
            request: Some("http://127.0.0.1:8080"),
            registries: vec!["internal", "crates-io", "other"],
        };
        let dep = |url: Option<&str>| ManifestDep {
            name: "d".into(),
            package: None,
            req: "^1".into(),
            features: vec![],
            optional: false,
            default_features: true,
            target: None,
            kind: super::super::manifest::DepKind::Normal,
            registry_index: url.map(str::to_owned),
        };
        assert_eq!(sources.of(&dep(None)), Source::CratesIo);
        let same = dep(Some("sparse+http://127.0.0.1:8080/internal/index/"));
        assert_eq!(sources.of(&same), Source::Same);
        assert_eq!(sources.of(&same).index_value(), None);
        let public_same = dep(Some("sparse+https://cd.example/internal/index/"));
        assert_eq!(sources.of(&public_same), Source::Same);
        let other = sources.of(&dep(Some("sparse+https://cd.example/other/index/")));
        assert!(matches!(other, Source::Local { ref registry, .. } if registry == "other"));
        // The Host header of a request names no other registry: its URL would be copied.
        let by_host = sources.of(&dep(Some("sparse+http://127.0.0.1:8080/other/index/")));
        assert!(matches!(by_host, Source::External(_)));
        let far = sources.of(&dep(Some("sparse+https://x.example/index/")));
        assert_eq!(
            far.index_value().as_deref(),
            Some("sparse+https://x.example/index/")
        );
        assert_eq!(
            sources
                .of(&dep(Some(CRATES_IO_INDEX)))
                .index_value()
                .as_deref(),
            Some(CRATES_IO_INDEX)
        );
    }
}
