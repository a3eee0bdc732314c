//! The RustSec advisory database as cratedock holds it: read from a folder with the `rustsec`
//! crate, then kept as a map from each crate's canonical name to the advisories naming it, with
//! only what a decision or a report shows (descriptions are dropped).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustsec::advisory::Versions;
use serde::Serialize;

use crate::config::Informational;

/// What kind of advisory it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Vulnerability,
    Unmaintained,
    Unsound,
    Notice,
    /// An informational kind this version of cratedock does not know.
    Other,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Vulnerability => "vulnerability",
            Kind::Unmaintained => "unmaintained",
            Kind::Unsound => "unsound",
            Kind::Notice => "notice",
            Kind::Other => "informational",
        }
    }

    /// Whether an informational kind is one that a registry listed.
    pub(crate) fn is(self, listed: Informational) -> bool {
        matches!(
            (self, listed),
            (Kind::Unmaintained, Informational::Unmaintained)
                | (Kind::Unsound, Informational::Unsound)
                | (Kind::Notice, Informational::Notice)
        )
    }
}

/// One advisory.
#[derive(Debug)]
pub(crate) struct Advisory {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) kind: Kind,
    pub(crate) withdrawn: bool,
    /// rustsec.org's page for a RUSTSEC id, else the advisory's own `url`.
    pub(crate) url: Option<String>,
    /// The patched version requirements, as semver writes them (`>=1.0.1`).
    pub(crate) patched: Vec<String>,
    versions: Versions,
}

impl Advisory {
    pub(crate) fn affects(&self, version: &semver::Version) -> bool {
        self.versions.is_vulnerable(version)
    }

    /// `patched: >=1.0.1, ^0.9.3` or `patched: none`.
    pub(crate) fn patched_text(&self) -> String {
        if self.patched.is_empty() {
            "patched: none".to_owned()
        } else {
            format!("patched: {}", self.patched.join(", "))
        }
    }

    /// `RUSTSEC-2024-0001 (Title; patched: >=1.0.1; https://...)`: how refusals and warnings
    /// name an advisory.
    pub(crate) fn described(&self) -> String {
        let mut out = format!("{} ({}; {}", self.id, self.title, self.patched_text());
        if let Some(u) = &self.url {
            out.push_str("; ");
            out.push_str(u);
        }
        out.push(')');
        out
    }
}

/// A loaded database.
#[derive(Debug, Default)]
pub(crate) struct AdvisoryDb {
    /// Canonical crate name (lowercase, `_` as `-`) → the advisories naming it.
    by_name: HashMap<String, Vec<Arc<Advisory>>>,
    count: usize,
}

impl AdvisoryDb {
    /// Reads the database in `root` (which holds `crates/`); blocking, and a whole-database
    /// error when one advisory does not parse (as `cargo audit` does).
    pub(crate) fn open(root: &Path) -> Result<Self, String> {
        let db = rustsec::Database::open(root).map_err(|e| {
            format!(
                "cannot read the advisory database in {}: {e}",
                root.display()
            )
        })?;
        let mut by_name: HashMap<String, Vec<Arc<Advisory>>> = HashMap::new();
        let mut count = 0;
        for a in db.into_iter() {
            if a.metadata.collection != Some(rustsec::Collection::Crates) {
                continue;
            }
            let m = &a.metadata;
            let kind = match &m.informational {
                None => Kind::Vulnerability,
                Some(i) if i.is_unmaintained() => Kind::Unmaintained,
                Some(i) if i.is_unsound() => Kind::Unsound,
                Some(i) if i.is_notice() => Kind::Notice,
                Some(_) => Kind::Other,
            };
            let id = m.id.as_str().to_owned();
            let url = if id.starts_with("RUSTSEC-") {
                Some(format!("https://rustsec.org/advisories/{id}.html"))
            } else {
                m.url.as_ref().map(|u| u.to_string())
            };
            let advisory = Advisory {
                patched: a.versions.patched().iter().map(|r| r.to_string()).collect(),
                title: m.title.clone(),
                withdrawn: m.withdrawn.is_some(),
                kind,
                url,
                id,
                versions: a.versions,
            };
            by_name
                .entry(crate::names::fold(m.package.as_str()))
                .or_default()
                .push(Arc::new(advisory));
            count += 1;
        }
        by_name.shrink_to_fit();
        Ok(Self { by_name, count })
    }

    /// The advisories naming the crate whose canonical name is `canonical`.
    pub(crate) fn for_crate(&self, canonical: &str) -> &[Arc<Advisory>] {
        self.by_name.get(canonical).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }
}

/// Finds the root of an unpacked database: `dir` itself when it holds `crates/`, else its one
/// sub-folder that does (GitHub's archives put everything under `advisory-db-main/`).
pub(crate) fn root_of(dir: &Path) -> Result<std::path::PathBuf, String> {
    if dir.join("crates").is_dir() {
        return Ok(dir.to_owned());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.join("crates").is_dir() {
            found.push(path);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!(
            "{} has no `crates/` folder, neither at its root nor in one folder below: it is not an advisory database",
            dir.display()
        )),
        _ => Err(format!(
            "{} has several folders with a `crates/` folder; it must hold one database",
            dir.display()
        )),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Tiny advisory databases written in code.

    use std::path::Path;

    /// One advisory file: package, id, patched requirements, and extra front-matter lines
    /// (`informational = "unmaintained"`, `withdrawn = "2024-02-01"`, `unaffected = [...]`
    /// under `[versions]` is given as `versions_extra`).
    pub(crate) struct Fixture<'a> {
        pub(crate) package: &'a str,
        pub(crate) id: &'a str,
        pub(crate) patched: &'a [&'a str],
        pub(crate) advisory_extra: &'a str,
        pub(crate) versions_extra: &'a str,
    }

    pub(crate) fn write(root: &Path, list: &[Fixture<'_>]) {
        std::fs::create_dir_all(root.join("crates")).unwrap();
        for f in list {
            let dir = root.join("crates").join(f.package);
            std::fs::create_dir_all(&dir).unwrap();
            let patched: Vec<String> = f.patched.iter().map(|p| format!("\"{p}\"")).collect();
            let text = format!(
                "```toml\n[advisory]\nid = \"{}\"\npackage = \"{}\"\ndate = \"2024-01-01\"\n{}\n\n[versions]\npatched = [{}]\n{}\n```\n\n# Trouble in {}\n\nSomething is wrong.\n",
                f.id,
                f.package,
                f.advisory_extra,
                patched.join(", "),
                f.versions_extra,
                f.package
            );
            std::fs::write(dir.join(format!("{}.md", f.id)), text).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{Fixture, write};
    use super::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    #[test]
    fn a_database_is_read_indexed_by_canonical_name_and_matched() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                Fixture {
                    package: "Foo_bar",
                    id: "RUSTSEC-2024-0001",
                    patched: &[">= 1.0.1"],
                    advisory_extra: "",
                    versions_extra: "unaffected = [\"< 0.5\"]",
                },
                Fixture {
                    package: "old",
                    id: "RUSTSEC-2024-0002",
                    patched: &[],
                    advisory_extra: "informational = \"unmaintained\"\nwithdrawn = \"2024-02-01\"",
                    versions_extra: "",
                },
            ],
        );
        let db = AdvisoryDb::open(dir.path()).unwrap();
        assert_eq!(db.len(), 2);
        let foo = db.for_crate("foo-bar");
        assert_eq!(foo.len(), 1);
        assert!(foo[0].affects(&v("1.0.0")) && foo[0].affects(&v("0.5.0")));
        assert!(!foo[0].affects(&v("1.0.1")) && !foo[0].affects(&v("0.4.0")));
        assert_eq!(foo[0].patched, [">=1.0.1"]);
        assert_eq!(
            foo[0].url.as_deref(),
            Some("https://rustsec.org/advisories/RUSTSEC-2024-0001.html")
        );
        let old = &db.for_crate("old")[0];
        assert!(old.withdrawn && old.kind == Kind::Unmaintained);
        assert_eq!(old.patched_text(), "patched: none");
        assert!(db.for_crate("other").is_empty());
    }

    #[test]
    fn a_folder_without_a_database_or_with_a_broken_advisory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            root_of(dir.path())
                .unwrap_err()
                .contains("no `crates/` folder")
        );
        let inner = dir.path().join("advisory-db-main");
        write(&inner, &[]);
        assert_eq!(root_of(dir.path()).unwrap(), inner);
        std::fs::create_dir_all(inner.join("crates/x")).unwrap();
        std::fs::write(
            inner.join("crates/x/RUSTSEC-2024-0003.md"),
            "not an advisory",
        )
        .unwrap();
        assert!(AdvisoryDb::open(&inner).is_err());
    }
}
