//! Licences: read from the `Cargo.toml` inside a `.crate`, and judged against a registry's
//! licence policy (SPDX expressions parsed as crates.io parses them).

use std::collections::HashMap;
use std::io::Read;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{Action, LicensesConfig};
use crate::index::hex;
use crate::names::shown;
use crate::store::Licence;
use crate::tarball::{Flow, Limits, read_all, scan};

/// Files read whole while looking for the licence: the manifest, and a licence file.
const MAX_READ: u64 = 1024 * 1024;

#[derive(Deserialize)]
struct Manifest {
    package: Package,
}

#[derive(Deserialize)]
struct Package {
    license: Option<String>,
    #[serde(rename = "license-file")]
    license_file: Option<String>,
}

/// Reads the licence a `.crate` declares, stopping as soon as it is known. A `.crate` whose
/// manifest cannot be found or read gives a [`Licence`] that says why.
pub(crate) fn read(crate_file: impl Read) -> Licence {
    let mut manifest: Option<Package> = None;
    let mut problem: Option<String> = None;
    // SHA-256 of the small files seen before the manifest, by path below the package folder.
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut file_sha256 = None;
    let limits = Limits {
        max_unpacked: 1 << 30,
        max_entries: 1 << 20,
        dot_prefix: false,
    };
    let walked = scan(crate_file, limits, &mut |v, entry| {
        if v.is_dir || v.parts.len() < 2 || v.size > MAX_READ {
            return Ok(Flow::Next);
        }
        let rel = v.parts[1..].join("/");
        match &manifest {
            None if rel == "Cargo.toml" => {
                let bytes = read_all(entry)?;
                let parsed = std::str::from_utf8(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|t| toml::from_str::<Manifest>(t).map_err(|e| e.to_string()));
                match parsed {
                    Ok(m) => {
                        let file = m.package.license_file.as_deref().map(normal);
                        file_sha256 = file.as_ref().and_then(|f| seen.get(f).cloned());
                        let done = file.is_none() || file_sha256.is_some();
                        manifest = Some(m.package);
                        return Ok(if done { Flow::Stop } else { Flow::Next });
                    }
                    Err(e) => {
                        problem = Some(format!("its Cargo.toml cannot be read: {}", shown(&e)));
                        return Ok(Flow::Stop);
                    }
                }
            }
            // Files at the package's root, where licence files lie, are hashed in case the
            // manifest names one of them.
            None if v.parts.len() == 2 => {
                seen.insert(rel, hex(&Sha256::digest(read_all(entry)?)));
            }
            None => {}
            Some(m) if m.license_file.as_deref().map(normal).as_deref() == Some(rel.as_str()) => {
                file_sha256 = Some(hex(&Sha256::digest(read_all(entry)?)));
                return Ok(Flow::Stop);
            }
            Some(_) => {}
        }
        Ok(Flow::Next)
    });
    if let Err(e) = walked {
        problem.get_or_insert_with(|| format!("the .crate cannot be read: {e}"));
    }
    match manifest {
        Some(p) => Licence {
            expression: p.license,
            file: p.license_file,
            file_sha256,
            unreadable: None,
        },
        None => Licence {
            unreadable: Some(problem.unwrap_or_else(|| "it has no Cargo.toml".to_owned())),
            ..Licence::default()
        },
    }
}

/// A `license-file` path as it lies in the package folder (`./LICENSE` is `LICENSE`; a file
/// outside the package is packaged under its file name).
fn normal(path: &str) -> String {
    let p = path.trim_start_matches("./");
    if p.starts_with("../") {
        p.rsplit('/').next().unwrap_or(p).to_owned()
    } else {
        p.to_owned()
    }
}

/// A registry's licence policy, ready to judge.
#[derive(Debug, Default)]
pub(crate) struct Rules {
    pub(crate) action: Action,
    allow: Vec<String>,
    exceptions: Vec<Exception>,
    /// The configuration key, for messages.
    key: String,
}

#[derive(Debug)]
struct Exception {
    /// Canonical crate name.
    name: String,
    version: Option<semver::VersionReq>,
    allow: Vec<String>,
    license_file_sha256: Option<String>,
}

impl Rules {
    /// The rules of registry `registry` (the configuration was validated).
    pub(crate) fn new(registry: &str, cfg: &LicensesConfig) -> Self {
        Self {
            action: cfg.action(),
            allow: cfg.allow.clone(),
            exceptions: cfg
                .exceptions
                .iter()
                .map(|e| Exception {
                    name: crate::names::fold(&e.name),
                    version: e.version.as_deref().and_then(|v| v.parse().ok()),
                    allow: e.allow.clone(),
                    license_file_sha256: e.license_file_sha256.as_ref().map(|h| h.to_lowercase()),
                })
                .collect(),
            key: format!("registries.{registry}.licenses"),
        }
    }

    /// Why `name@version` with `licence` is not allowed, or `None` when it is.
    pub(crate) fn judge(&self, name: &str, version: &str, licence: &Licence) -> Option<String> {
        if self.action == Action::Off {
            return None;
        }
        let canonical = crate::names::fold(name);
        let semver = semver::Version::parse(version).ok();
        let exceptions: Vec<&Exception> = self
            .exceptions
            .iter()
            .filter(|e| {
                e.name == canonical
                    && e.version
                        .as_ref()
                        .is_none_or(|r| semver.as_ref().is_some_and(|v| r.matches(v)))
            })
            .collect();
        let who = format!("crate `{name}@{version}`");
        let ask = format!(
            "ask an admin to allow it in {} (or add an exception for the crate to {}.exceptions)",
            self.key, self.key
        );
        if exceptions
            .iter()
            .any(|e| e.allow.is_empty() && e.license_file_sha256.is_none())
        {
            return None;
        }
        let Some(expr) = &licence.expression else {
            if let Some(why) = &licence.unreadable {
                return Some(format!(
                    "{who} has no licence cratedock could read ({why}); {ask}"
                ));
            }
            let Some(file) = &licence.file else {
                return Some(format!(
                    "{who} declares no licence (neither `license` nor `license-file` in its Cargo.toml); {ask}"
                ));
            };
            let sha = licence
                .file_sha256
                .as_deref()
                .unwrap_or("not found in the .crate");
            if licence.file_sha256.as_deref().is_some_and(|sha| {
                exceptions
                    .iter()
                    .any(|e| e.license_file_sha256.as_deref() == Some(sha))
            }) {
                return None;
            }
            return Some(format!(
                "{who} has only a license-file (`{}`, sha256 {sha}) and no SPDX `license` expression; its terms cannot be checked: {ask} with license_file_sha256 = \"{sha}\" once its text was reviewed",
                shown(file)
            ));
        };
        let parsed = match spdx::Expression::parse_mode(expr, spdx::ParseMode::LAX) {
            Ok(p) => p,
            Err(e) => {
                return Some(format!(
                    "{who} has licence `{}`, which is not a valid SPDX expression ({}); {ask}",
                    shown(expr),
                    e.reason
                ));
            }
        };
        let more: Vec<&String> = exceptions.iter().flat_map(|e| &e.allow).collect();
        let allowed = |req: &spdx::LicenseReq| {
            let id = match &req.license {
                spdx::LicenseItem::Spdx { id, .. } => id.name.to_owned(),
                spdx::LicenseItem::Other(r) => format!("LicenseRef-{}", r.lic_ref),
            };
            self.allow
                .iter()
                .chain(more.iter().copied())
                .any(|a| *a == id)
        };
        match parsed.evaluate_with_failures(allowed) {
            Ok(()) => None,
            Err(failed) => {
                let terms: Vec<String> = failed.iter().map(|f| f.req.to_string()).collect();
                Some(format!(
                    "{who} has licence `{}`, which {} does not allow (not allowed: {}; allowed: {}); {ask}",
                    shown(expr),
                    self.key,
                    terms.join(", "),
                    if self.allow.is_empty() {
                        "none".to_owned()
                    } else {
                        self.allow.join(", ")
                    }
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LicenseException;

    fn tarball(files: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, data.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn expr(e: &str) -> Licence {
        Licence {
            expression: Some(e.into()),
            ..Licence::default()
        }
    }

    #[test]
    fn the_licence_is_read_from_the_manifest_and_a_licence_file_is_hashed() {
        let t = tarball(&[
            (
                "a-1.0.0/Cargo.toml",
                "[package]\nname = \"a\"\nlicense = \"MIT\"\n",
            ),
            ("a-1.0.0/src/lib.rs", ""),
        ]);
        assert_eq!(read(&t[..]).expression.as_deref(), Some("MIT"));
        // The licence file before the manifest, and after it.
        for files in [
            [
                ("b-1.0.0/COPYING", "terms"),
                (
                    "b-1.0.0/Cargo.toml",
                    "[package]\nlicense-file = \"./COPYING\"\n",
                ),
            ],
            [
                (
                    "b-1.0.0/Cargo.toml",
                    "[package]\nlicense-file = \"COPYING\"\n",
                ),
                ("b-1.0.0/COPYING", "terms"),
            ],
        ] {
            let l = read(&tarball(&files)[..]);
            assert_eq!(l.expression, None);
            assert_eq!(l.file_sha256, Some(hex(&Sha256::digest(b"terms"))));
        }
        let broken = read(&tarball(&[("c-1.0.0/Cargo.toml", "[package")])[..]);
        assert!(
            broken
                .unreadable
                .unwrap()
                .contains("Cargo.toml cannot be read")
        );
        assert!(read(&b"not gzip"[..]).unreadable.is_some());
    }

    #[test]
    fn expressions_are_judged_with_exceptions() {
        let mut cfg = LicensesConfig {
            allow: vec!["MIT".into(), "Apache-2.0".into()],
            ..LicensesConfig::default()
        };
        let rules = Rules::new("r", &cfg);
        assert_eq!(
            rules.judge("a", "1.0.0", &expr("MIT OR GPL-3.0-only")),
            None
        );
        assert_eq!(rules.judge("a", "1.0.0", &expr("MIT/Apache-2.0")), None);
        let no = rules.judge("a", "1.0.0", &expr("GPL-3.0-only")).unwrap();
        assert!(no.contains("`GPL-3.0-only`") && no.contains("not allowed: GPL-3.0-only"));
        let and = rules.judge("a", "1.0.0", &expr("MIT AND GPL-3.0-only"));
        assert!(and.unwrap().contains("not allowed: GPL-3.0-only"));
        let file = Licence {
            file: Some("LICENSE".into()),
            file_sha256: Some("ab".repeat(32)),
            ..Licence::default()
        };
        assert!(
            rules
                .judge("a", "1.0.0", &file)
                .unwrap()
                .contains("license-file")
        );
        assert!(rules.judge("a", "1.0.0", &Licence::default()).is_some());
        cfg.exceptions = vec![
            LicenseException {
                name: "gpl_thing".into(),
                version: Some("^1".into()),
                allow: vec!["GPL-3.0-only".into()],
                license_file_sha256: None,
            },
            LicenseException {
                name: "a".into(),
                version: None,
                allow: vec![],
                license_file_sha256: Some("AB".repeat(32)),
            },
            LicenseException {
                name: "anything".into(),
                version: None,
                allow: vec![],
                license_file_sha256: None,
            },
        ];
        let rules = Rules::new("r", &cfg);
        assert_eq!(
            rules.judge("gpl-thing", "1.2.0", &expr("GPL-3.0-only")),
            None
        );
        assert!(
            rules
                .judge("gpl-thing", "2.0.0", &expr("GPL-3.0-only"))
                .is_some()
        );
        assert_eq!(rules.judge("a", "1.0.0", &file), None);
        assert_eq!(rules.judge("anything", "0.1.0", &Licence::default()), None);
        let off = Rules::new("r", &LicensesConfig::default());
        assert_eq!(off.judge("a", "1.0.0", &expr("GPL-3.0-only")), None);
    }
}
