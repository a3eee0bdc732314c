//! The supply-chain policy of a publish: the crate's own licence, each dependency's
//! requirement against the versions it admits, and a packaged `Cargo.lock`'s locked versions
//! (as `cargo audit` reads it: packages from crates.io).
//!
//! A requirement that admits only affected versions is refused under `deny` (warned under
//! `warn`); one that also admits a patched version publishes with a warning cargo prints.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use super::checks::Source;
use super::manifest::{DepKind, Manifest};
use super::{Private, RegistryError};
use crate::config::Action;
use crate::names::{CrateName, shown};
use crate::policy::Advisory;

/// The advisories of a list, each once, as refusals and warnings name them.
fn described(found: &[Arc<Advisory>]) -> String {
    let mut seen = BTreeMap::new();
    for a in found {
        seen.entry(a.id.clone()).or_insert_with(|| a.described());
    }
    seen.into_values().collect::<Vec<_>>().join(", ")
}

impl Private {
    /// The licence check of a publish: the refusal, or a warning for cargo to print.
    pub(super) async fn licence_policy(
        &self,
        m: &Manifest,
        tarball: &bytes::Bytes,
    ) -> Result<Vec<String>, RegistryError> {
        if !self.policy.licenses_active() {
            return Ok(Vec::new());
        }
        let tarball = tarball.clone();
        let licence =
            tokio::task::spawn_blocking(move || crate::policy::licenses::read(&tarball[..]))
                .await
                .map_err(|e| {
                    RegistryError::invalid("tarball", format!("the tarball could not be read: {e}"))
                })?;
        match self.policy.publish_licence(&m.name, &m.version, &licence) {
            Ok(warning) => Ok(warning.into_iter().collect()),
            Err(why) => Err(RegistryError::forbidden("license", why)),
        }
    }

    /// The advisory checks of a publish; the warnings for cargo to print.
    pub(super) async fn audit(
        &self,
        m: &Manifest,
        sources: &[Source],
        lockfile: Option<&[u8]>,
    ) -> Result<Vec<String>, RegistryError> {
        let action = self.policy.advisories;
        if action == Action::Off {
            return Ok(Vec::new());
        }
        let mut refusals = Vec::new();
        let mut warnings = Vec::new();
        for (dep, source) in m.deps.iter().zip(sources) {
            // Dev-dependencies never reach the crate's users.
            if dep.kind == DepKind::Dev {
                continue;
            }
            let package = dep.package.as_deref().unwrap_or(&dep.name);
            if self.policy.naming(package).is_empty() {
                continue;
            }
            let Ok(req) = semver::VersionReq::parse(&dep.req) else {
                continue;
            };
            let versions = match self.versions_of(package, source).await {
                Ok(Some(v)) => v,
                Ok(None) => continue,
                Err(e) => {
                    warnings.push(format!(
                        "dependency `{package}` could not be checked against advisories: {e}"
                    ));
                    continue;
                }
            };
            let matching: Vec<semver::Version> = versions
                .iter()
                .filter(|(_, yanked)| !yanked)
                .filter_map(|(v, _)| semver::Version::parse(v).ok())
                .filter(|v| req.matches(v))
                .collect();
            let mut found = Vec::new();
            let mut affected = 0;
            for v in &matching {
                let a = self.policy.affecting(package, v);
                affected += usize::from(!a.is_empty());
                found.extend(a);
            }
            if affected == 0 {
                continue;
            }
            let list = described(&found);
            if affected == matching.len() {
                let text = format!(
                    "dependency `{package}` (requirement `{}`) admits only versions affected by {list}: require a patched version",
                    shown(&dep.req)
                );
                match action {
                    Action::Deny => refusals.push(text),
                    _ => warnings.push(text),
                }
            } else {
                warnings.push(format!(
                    "dependency `{package}` (requirement `{}`) admits versions affected by {list}; a new resolution takes the newest matching version, and `cargo update -p {package}` moves a lock file off an affected one",
                    shown(&dep.req)
                ));
            }
        }
        if let Some(lock) = lockfile {
            match self.locked(lock) {
                Ok(found) => match action {
                    Action::Deny => refusals.extend(found),
                    _ => warnings.extend(found),
                },
                // A lock file newer than cratedock reads is no reason to refuse the crate.
                Err(why) => warnings.push(why),
            }
        }
        if !refusals.is_empty() {
            self.policy.publish_decided(Action::Deny);
            return Err(RegistryError::forbidden(
                "advisory",
                format!(
                    "{}; registries.{}.advisories = \"deny\" refuses the publish",
                    refusals.join("; "),
                    self.name
                ),
            ));
        }
        if !warnings.is_empty() {
            self.policy.publish_decided(Action::Warn);
        }
        Ok(warnings)
    }

    /// What a `Cargo.lock` locks from crates.io that counted advisories affect.
    fn locked(&self, lock: &[u8]) -> Result<Vec<String>, String> {
        let parsed = std::str::from_utf8(lock)
            .map_err(|e| e.to_string())
            .and_then(|t| rustsec::Lockfile::from_str(t).map_err(|e| e.to_string()));
        let lockfile = match parsed {
            Ok(l) => l,
            Err(e) => {
                return Err(format!(
                    "the packaged Cargo.lock cannot be read ({}), so its locked versions were not checked against advisories",
                    shown(&e)
                ));
            }
        };
        let mut out = Vec::new();
        for p in &lockfile.packages {
            if !p.source.as_ref().is_some_and(|s| s.is_default_registry()) {
                continue;
            }
            let found = self.policy.affecting(p.name.as_str(), &p.version);
            if !found.is_empty() {
                out.push(format!(
                    "Cargo.lock locks `{} {}`, affected by {}; run `cargo update -p {}` and publish again",
                    p.name,
                    p.version,
                    described(&found),
                    p.name
                ));
            }
        }
        Ok(out)
    }

    /// The versions (with whether each is yanked) of a dependency, from where it comes;
    /// `None` when cratedock cannot see that registry.
    async fn versions_of(
        &self,
        package: &str,
        source: &Source,
    ) -> Result<Option<Vec<(String, bool)>>, String> {
        let name = CrateName::new(package).map_err(|e| e.to_string())?;
        let mirror = match source {
            Source::Same => {
                let doc = self.load(&name.lower()).await.map_err(|e| e.to_string())?;
                return Ok(doc.map(|d| crate::index::versions(&d.body)));
            }
            Source::CratesIo => self.mirrors.iter().find(|m| m.is_crates_io()),
            Source::Local { registry, .. } => {
                self.mirrors.iter().find(|m| m.name().as_str() == registry)
            }
            Source::External(_) => None,
        };
        let Some(mirror) = mirror else {
            return Ok(None);
        };
        mirror.versions(&name).await.map_err(|e| e.to_string())
    }
}
