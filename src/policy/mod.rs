//! Supply-chain policy: RustSec advisories, licences and curated allow-lists, as each registry's
//! configuration applies them to downloads, index files and publishes.
//!
//! The rules this module keeps:
//! - a refusal names what was found (the advisory, its title, the patched versions and its
//!   page; the licence expression and the terms not allowed) and what to do about it;
//! - the database is swapped whole, and only for one that loads; policies apply whatever is
//!   loaded (nothing, when nothing is);
//! - on a download's path the check is a hash lookup of the crate's name: a version is parsed
//!   only for a crate that has advisories;
//! - withdrawn advisories never count; informational ones count only when the registry lists
//!   their kind; ignored ids never count.

pub(crate) mod advisories;
mod curated;
pub(crate) mod licenses;
pub(crate) mod report;
mod source;

pub(crate) use advisories::{Advisory, Kind};
pub(crate) use curated::{Allowed, Curation};
pub(crate) use source::AdvisorySource;

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{Action, Informational, RegistryConfig};
use crate::index::LineEdit;
use crate::metrics::Metrics;
use crate::names::{CrateName, RegistryName, Version};
use crate::store::Licence;

/// Why a policy refuses a request.
#[derive(Debug, Clone)]
pub(crate) enum Refusal {
    /// 403: the crate or version exists but policy denies it.
    Denied(String),
    /// 404: a curated mirror does not offer it.
    NotOffered(String),
}

/// One registry's policy.
pub(crate) struct Policy {
    registry: RegistryName,
    pub(crate) advisories: Action,
    informational: Vec<Informational>,
    ignore: HashSet<String>,
    hides: bool,
    curated: bool,
    licenses: licenses::Rules,
    source: Arc<AdvisorySource>,
    curation: Arc<Curation>,
    metrics: Arc<Metrics>,
    /// (crate, version, advisory) already logged under `warn`.
    warned: moka::sync::Cache<String, ()>,
}

impl Policy {
    pub(crate) fn new(
        registry: &RegistryName,
        cfg: &RegistryConfig,
        source: Arc<AdvisorySource>,
        curation: Arc<Curation>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let keys = cfg.policy();
        Self {
            registry: registry.clone(),
            advisories: keys.advisories,
            informational: keys.informational.to_vec(),
            ignore: keys.ignore.iter().cloned().collect(),
            hides: keys.deny_hides_versions,
            curated: keys.curated,
            licenses: licenses::Rules::new(registry.as_str(), keys.licenses),
            source,
            curation,
            metrics,
            warned: moka::sync::Cache::new(100_000),
        }
    }

    /// Whether `a` counts under this registry's settings (whatever its action).
    pub(crate) fn counts(&self, a: &Advisory) -> bool {
        !a.withdrawn
            && !self.ignore.contains(&a.id)
            && (a.kind == Kind::Vulnerability || self.informational.iter().any(|k| a.kind.is(*k)))
    }

    /// The counted advisories of crate `name` (canonical or not) that affect `version`.
    pub(crate) fn affecting(&self, name: &str, version: &semver::Version) -> Vec<Arc<Advisory>> {
        let canonical = crate::names::fold(name);
        self.source
            .with(|db| {
                db.for_crate(&canonical)
                    .iter()
                    .filter(|a| self.counts(a) && a.affects(version))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The counted advisories naming crate `name`, whatever the version.
    pub(crate) fn naming(&self, name: &str) -> Vec<Arc<Advisory>> {
        let canonical = crate::names::fold(name);
        self.source
            .with(|db| {
                db.for_crate(&canonical)
                    .iter()
                    .filter(|a| self.counts(a))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn decided(&self, policy: &str, action: &str) {
        self.metrics
            .policy_decisions
            .with_label_values(&[self.registry.as_str(), policy, action])
            .inc();
    }

    /// Logs a warning once per (crate, version, advisory or licence).
    fn warn_once(&self, key: String, message: &str) {
        if self.warned.contains_key(&key) {
            return;
        }
        self.warned.insert(key, ());
        tracing::warn!(registry = %self.registry, "{message}");
    }

    /// The advisory and curation check of a download, made before anything is fetched.
    pub(crate) fn check_download(
        &self,
        name: &CrateName,
        version: &Version,
    ) -> Result<(), Refusal> {
        if self.curated
            && !self
                .curation
                .allows(&self.registry, name)
                .version(version.as_str())
        {
            self.decided("curated", "deny");
            return Err(Refusal::NotOffered(self.not_curated(name, Some(version))));
        }
        if self.advisories == Action::Off {
            return Ok(());
        }
        let found = name.with_canonical(|c| {
            self.source.with(|db| {
                let all = db.for_crate(c);
                if all.is_empty() {
                    return Vec::new();
                }
                let Ok(v) = semver::Version::parse(version.as_str()) else {
                    return Vec::new();
                };
                all.iter()
                    .filter(|a| self.counts(a) && a.affects(&v))
                    .cloned()
                    .collect()
            })
        });
        let found = found.unwrap_or_default();
        if found.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = found.iter().map(|a| a.described()).collect();
        let message = format!(
            "crate `{name}@{version}` is affected by {}",
            list.join(", ")
        );
        if self.advisories == Action::Deny {
            self.decided("advisory", "deny");
            return Err(Refusal::Denied(format!(
                "{message}: registries.{}.advisories = \"deny\" refuses its download; upgrade to a patched version (`cargo update -p {name}`), or ask an admin to add the advisory to registries.{}.ignore",
                self.registry, self.registry
            )));
        }
        self.decided("advisory", "warn");
        for a in &found {
            self.warn_once(
                format!("{name}@{version}/{}", a.id),
                &format!("served {name}@{version}, affected by {}", a.described()),
            );
        }
        Ok(())
    }

    /// Why a curated mirror offers no version of `name` (its list's requirement matches none).
    pub(crate) fn not_offered(&self, name: &CrateName) -> String {
        format!(
            "no version of `{name}` matches the curated list of mirror `{r}`; ask an admin to widen it: `cratedock admin curate add {name}@REQUIREMENT --registry {r}`",
            r = self.registry
        )
    }

    fn not_curated(&self, name: &CrateName, version: Option<&Version>) -> String {
        let what = match version {
            Some(v) => format!("`{name}@{v}`"),
            None => format!("`{name}`"),
        };
        format!(
            "{what} is not on the curated list of mirror `{r}`; ask an admin to add it: `cratedock admin curate add {name}[@REQUIREMENT] --registry {r}`",
            r = self.registry
        )
    }

    /// A curated mirror's refusal of a crate's index file, when its list does not name it.
    pub(crate) fn check_index(&self, name: &CrateName) -> Result<(), Refusal> {
        if self.curated && self.curation.allows(&self.registry, name) == Allowed::No {
            self.decided("curated", "deny");
            return Err(Refusal::NotOffered(self.not_curated(name, None)));
        }
        Ok(())
    }

    /// How the lines of crate `name`'s index file are served, when a policy changes them:
    /// versions outside a curated requirement are dropped, versions with counted advisories
    /// are yanked under `deny_hides_versions`.
    pub(crate) fn index_edit(&self, name: &CrateName) -> Option<impl Fn(&str, bool) -> LineEdit> {
        let allowed = if self.curated {
            match self.curation.allows(&self.registry, name) {
                Allowed::Every => None,
                other => Some(other),
            }
        } else {
            None
        };
        let hidden = if self.hides {
            self.naming(name.as_str())
        } else {
            Vec::new()
        };
        if allowed.is_none() && hidden.is_empty() {
            return None;
        }
        Some(move |vers: &str, yanked: bool| {
            if allowed.as_ref().is_some_and(|a| !a.version(vers)) {
                return LineEdit::Drop;
            }
            if !yanked
                && !hidden.is_empty()
                && semver::Version::parse(vers).is_ok_and(|v| hidden.iter().any(|a| a.affects(&v)))
            {
                return LineEdit::Yank;
            }
            LineEdit::Keep
        })
    }

    /// What changes what [`Policy::index_edit`] gives (a new database, a changed list).
    pub(crate) fn generation(&self) -> u64 {
        self.source.generation() * 1_000_003 + self.curation.generation()
    }

    pub(crate) fn licenses_active(&self) -> bool {
        self.licenses.action != Action::Off
    }

    /// Why `name@version` with `licence` is against the licence policy, if it is (the result
    /// depends on nothing else: it may be kept).
    pub(crate) fn judge_licence(
        &self,
        name: &str,
        version: &str,
        licence: &Licence,
    ) -> Option<Arc<str>> {
        self.licenses.judge(name, version, licence).map(Arc::from)
    }

    /// Applies a licence judgement to a download: refused under `deny`, served and noted under
    /// `warn`.
    pub(crate) fn apply_licence(
        &self,
        name: &CrateName,
        version: &Version,
        why: Option<&str>,
    ) -> Result<(), Refusal> {
        let Some(why) = why else {
            return Ok(());
        };
        match self.licenses.action {
            Action::Off => Ok(()),
            Action::Warn => {
                self.decided("license", "warn");
                self.warn_once(
                    format!("{name}@{version}/licence"),
                    &format!("served: {why}"),
                );
                Ok(())
            }
            Action::Deny => {
                self.decided("license", "deny");
                Err(Refusal::Denied(why.to_owned()))
            }
        }
    }

    /// The licence check of a publish: the refusal under `deny`, a warning under `warn`.
    pub(crate) fn publish_licence(
        &self,
        name: &str,
        version: &str,
        licence: &Licence,
    ) -> Result<Option<String>, String> {
        let Some(why) = self.licenses.judge(name, version, licence) else {
            return Ok(None);
        };
        match self.licenses.action {
            Action::Deny => {
                self.decided("license", "deny");
                Err(why)
            }
            Action::Warn => {
                self.decided("license", "warn");
                Ok(Some(why))
            }
            Action::Off => Ok(None),
        }
    }

    /// Notes a publish decision of the advisory policy.
    pub(crate) fn publish_decided(&self, action: Action) {
        self.decided("advisory", action.as_str());
    }

    pub(crate) fn registry(&self) -> &RegistryName {
        &self.registry
    }
}
