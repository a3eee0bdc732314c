//! Index lines of the private registry, built as crates.io builds them: from the manifest in
//! the tarball, with `cksum` over the bytes as received, renamed dependencies' `name` and
//! `package` swapped, each dependency's `registry` set (crates.io's canonical URL, another
//! registry's URL, or absent for this registry), new-syntax features in `features2` with
//! `v: 2`, and the publish time in `pubtime`.
//!
//! The rule this module keeps: a line is written once and only its `yanked` flag ever changes;
//! lines round-trip through [`IndexLine`] byte for byte, so a yank rewrites nothing else.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::manifest::{Manifest, ManifestDep};

/// A crate's features: name → what each enables.
type Features = BTreeMap<String, Vec<String>>;

/// The index URL cargo records for crates.io dependencies (its canonical source ID).
pub(crate) const CRATES_IO_INDEX: &str = "https://github.com/rust-lang/crates.io-index";

/// One line of an index file, in crates.io's field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexLine {
    pub(crate) name: String,
    pub(crate) vers: String,
    pub(crate) deps: Vec<IndexDep>,
    pub(crate) cksum: String,
    pub(crate) features: Features,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) features2: Option<Features>,
    pub(crate) yanked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) links: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rust_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pubtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) v: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexDep {
    pub(crate) name: String,
    pub(crate) req: String,
    pub(crate) features: Vec<String>,
    pub(crate) optional: bool,
    pub(crate) default_features: bool,
    pub(crate) target: Option<String>,
    pub(crate) kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) registry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) package: Option<String>,
}

impl IndexDep {
    /// The dependency of `dep`, recorded as coming from `registry` (`None`: this registry).
    pub(crate) fn of(dep: &ManifestDep, registry: Option<String>) -> Self {
        Self {
            name: dep.name.clone(),
            // As cargo sends it (`1` becomes `^1`), which is what crates.io's lines hold.
            req: semver::VersionReq::parse(&dep.req)
                .map(|r| r.to_string())
                .unwrap_or_else(|_| dep.req.clone()),
            features: dep.features.clone(),
            optional: dep.optional,
            default_features: dep.default_features,
            target: dep.target.clone(),
            kind: dep.kind.as_str().to_owned(),
            registry,
            package: dep.package.clone(),
        }
    }
}

impl IndexLine {
    /// The line of a new version. `deps` come with their registries resolved.
    pub(crate) fn new(
        m: &Manifest,
        mut deps: Vec<IndexDep>,
        cksum: String,
        pubtime: String,
    ) -> Self {
        // crates.io's order: normal first, then by name and requirement.
        deps.sort_by(|a, b| {
            let rank = |k: &str| match k {
                "normal" => 0,
                "build" => 1,
                _ => 2,
            };
            (rank(&a.kind), &a.name, &a.req, &a.target).cmp(&(
                rank(&b.kind),
                &b.name,
                &b.req,
                &b.target,
            ))
        });
        let (features, features2) = split_features(&m.features);
        let v = features2.is_some().then_some(2);
        Self {
            name: m.name.clone(),
            vers: m.version.clone(),
            deps,
            cksum,
            features,
            features2,
            yanked: false,
            links: m.links.clone(),
            rust_version: m.rust_version.clone(),
            pubtime: Some(pubtime),
            v,
        }
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an index line serializes")
    }
}

/// Splits features the way crates.io does: those using `dep:` or `?/`, and those that enable
/// such a feature (transitively), go to `features2`, which cargo before 1.60 never reads.
fn split_features(all: &Features) -> (Features, Option<Features>) {
    let mut new_syntax: BTreeSet<&str> = all
        .iter()
        .filter(|(_, values)| {
            values
                .iter()
                .any(|v| v.starts_with("dep:") || v.contains("?/"))
        })
        .map(|(k, _)| k.as_str())
        .collect();
    loop {
        let more: Vec<&str> = all
            .iter()
            .filter(|(k, values)| {
                !new_syntax.contains(k.as_str())
                    && values.iter().any(|v| new_syntax.contains(v.as_str()))
            })
            .map(|(k, _)| k.as_str())
            .collect();
        if more.is_empty() {
            break;
        }
        new_syntax.extend(more);
    }
    if new_syntax.is_empty() {
        return (all.clone(), None);
    }
    let (two, one) = all
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| new_syntax.contains(k.as_str()));
    (one, Some(two))
}

/// Lines of an index body (blank lines skipped).
pub(crate) fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
}

/// `body` with the line of `version` set to `yanked`: `None` when no line has that version,
/// `Some(None)` when it already is in that state.
pub(crate) fn set_yanked(
    body: &[u8],
    version: &str,
    yanked: bool,
) -> Result<Option<Option<Vec<u8>>>, serde_json::Error> {
    let mut out = Vec::with_capacity(body.len() + 1);
    let mut found = None;
    for line in lines(body) {
        let mut parsed: IndexLine = serde_json::from_slice(line)?;
        if parsed.vers == version {
            found = Some(parsed.yanked != yanked);
            parsed.yanked = yanked;
            out.extend_from_slice(parsed.to_json().as_bytes());
        } else {
            out.extend_from_slice(line);
        }
        out.push(b'\n');
    }
    Ok(found.map(|changed| changed.then_some(out)))
}

/// `body` without the line of `version`: `None` when no line has that version.
pub(crate) fn without(body: &[u8], version: &str) -> Result<Option<Vec<u8>>, serde_json::Error> {
    let mut out = Vec::with_capacity(body.len());
    let mut found = false;
    for line in lines(body) {
        let parsed: IndexLine = serde_json::from_slice(line)?;
        if parsed.vers == version {
            found = true;
            continue;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    Ok(found.then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::manifest::DepKind;

    fn manifest(features: &[(&str, &[&str])]) -> Manifest {
        Manifest {
            name: "Foo".into(),
            version: "1.0.0+meta".into(),
            license: Some("MIT".into()),
            license_file: None,
            description: None,
            keywords: vec![],
            categories: vec![],
            links: Some("foo".into()),
            rust_version: Some("1.70".into()),
            features: features
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            deps: vec![],
        }
    }

    fn dep(name: &str, kind: DepKind, package: Option<&str>) -> ManifestDep {
        ManifestDep {
            name: name.into(),
            package: package.map(str::to_owned),
            req: "1".into(),
            features: vec![],
            optional: false,
            default_features: true,
            target: None,
            kind,
            registry_index: None,
        }
    }

    #[test]
    fn lines_are_written_in_crates_io_shape() {
        let m = manifest(&[("default", &["std"]), ("std", &[])]);
        let deps = vec![
            IndexDep::of(&dep("zeta", DepKind::Dev, None), None),
            IndexDep::of(
                &dep("alias", DepKind::Normal, Some("real")),
                Some(CRATES_IO_INDEX.into()),
            ),
            IndexDep::of(&dep("cc", DepKind::Build, None), None),
        ];
        let line = IndexLine::new(&m, deps, "ab".repeat(32), "2026-12-03T10:00:00Z".into());
        let json = line.to_json();
        assert!(json.starts_with(r#"{"name":"Foo","vers":"1.0.0+meta","deps":[{"name":"alias","req":"^1","features":[],"optional":false,"default_features":true,"target":null,"kind":"normal","registry":"https://github.com/rust-lang/crates.io-index","package":"real"},{"name":"cc""#), "{json}");
        assert!(json.ends_with(r#""yanked":false,"links":"foo","rust_version":"1.70","pubtime":"2026-12-03T10:00:00Z"}"#), "{json}");
        assert!(!json.contains("features2") && !json.contains("\"v\""));
        let back: IndexLine = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_json(), json, "lines round-trip byte for byte");
    }

    #[test]
    fn new_feature_syntax_goes_to_features2() {
        let m = manifest(&[
            ("default", &["std"]),
            ("std", &["serde?/std"]),
            ("full", &["default"]),
            ("serde", &["dep:serde"]),
            ("plain", &[]),
        ]);
        let line = IndexLine::new(&m, vec![], "00".repeat(32), "2026-12-03T10:00:00Z".into());
        assert_eq!(line.v, Some(2));
        let two = line.features2.unwrap();
        assert_eq!(
            two.keys().collect::<Vec<_>>(),
            ["default", "full", "serde", "std"]
        );
        assert_eq!(line.features.keys().collect::<Vec<_>>(), ["plain"]);
    }

    #[test]
    fn yank_and_delete_touch_one_line() {
        let m = manifest(&[]);
        let mut body = Vec::new();
        for v in ["1.0.0", "1.1.0"] {
            let mut m = m.clone();
            m.version = v.into();
            let line = IndexLine::new(&m, vec![], "00".repeat(32), "2026-12-03T10:00:00Z".into());
            body.extend_from_slice(line.to_json().as_bytes());
            body.push(b'\n');
        }
        let yanked = set_yanked(&body, "1.0.0", true).unwrap().unwrap().unwrap();
        assert_eq!(yanked.len() + 1, body.len(), "only `false` became `true`");
        assert!(
            set_yanked(&yanked, "1.0.0", true)
                .unwrap()
                .unwrap()
                .is_none()
        );
        assert!(set_yanked(&body, "9.0.0", true).unwrap().is_none());
        let back = set_yanked(&yanked, "1.0.0", false)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back, body);
        let rest = without(&body, "1.0.0").unwrap().unwrap();
        assert_eq!(lines(&rest).count(), 1);
        assert!(without(&body, "2.0.0").unwrap().is_none());
    }
}
