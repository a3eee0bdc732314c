//! The allow-lists of curated mirrors, held in memory (the bookkeeping keeps them): which
//! crates, and which of their versions, a curated mirror serves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::names::{CrateName, RegistryName};
use crate::store::Curated;

#[derive(Debug)]
struct Entry {
    registry: RegistryName,
    spec: Curated,
    /// `None`: every version.
    req: Option<semver::VersionReq>,
}

/// Every curated mirror's allow-list.
#[derive(Debug, Default)]
pub(crate) struct Curation {
    entries: RwLock<Arc<Vec<Entry>>>,
    generation: AtomicU64,
    /// Held by a change from its write to its reload, so that changes land in order.
    pub(crate) changes: tokio::sync::Mutex<()>,
}

/// What a list allows of one crate.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Allowed {
    No,
    Every,
    /// The versions matching any of these.
    Matching(Vec<semver::VersionReq>),
}

impl Allowed {
    pub(crate) fn version(&self, version: &str) -> bool {
        match self {
            Allowed::No => false,
            Allowed::Every => true,
            Allowed::Matching(reqs) => {
                semver::Version::parse(version).is_ok_and(|v| reqs.iter().any(|r| r.matches(&v)))
            }
        }
    }
}

impl Curation {
    /// Replaces the lists with `all` (as the bookkeeping holds them).
    pub(crate) fn set(&self, all: Vec<Curated>) {
        let entries = all
            .into_iter()
            .filter_map(|spec| {
                let req = match spec.req.as_deref().map(str::parse) {
                    None => None,
                    Some(Ok(r)) => Some(r),
                    // Fails closed: an entry whose requirement no longer parses allows nothing.
                    Some(Err(e)) => {
                        tracing::warn!(entry = %spec.spec(), error = %e, "curated entry ignored: its requirement does not parse");
                        return None;
                    }
                };
                Some(Entry {
                    registry: spec.registry.clone(),
                    req,
                    spec,
                })
            })
            .collect();
        *self.entries.write().expect("curation lock") = Arc::new(entries);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// What the list of `registry` allows of crate `name`.
    pub(crate) fn allows(&self, registry: &RegistryName, name: &CrateName) -> Allowed {
        let entries = self.entries.read().expect("curation lock").clone();
        let mut reqs = Vec::new();
        for e in entries.iter() {
            if e.registry != *registry || !e.spec.name.matches(name) {
                continue;
            }
            match &e.req {
                None => return Allowed::Every,
                Some(r) => reqs.push(r.clone()),
            }
        }
        if reqs.is_empty() {
            Allowed::No
        } else {
            Allowed::Matching(reqs)
        }
    }

    /// The entries of `registry`, as `name` or `name@req`.
    pub(crate) fn list(&self, registry: &RegistryName) -> Vec<String> {
        let entries = self.entries.read().expect("curation lock").clone();
        let mut out: Vec<String> = entries
            .iter()
            .filter(|e| e.registry == *registry)
            .map(|e| e.spec.spec())
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::CrateGlob;

    #[test]
    fn lists_allow_names_patterns_and_versions_per_registry() {
        let r = RegistryName::new("crates-io").unwrap();
        let other = RegistryName::new("other").unwrap();
        let c = Curation::default();
        let entry = |name: &str, req: Option<&str>| Curated {
            registry: r.clone(),
            name: CrateGlob::new(name).unwrap(),
            req: req.map(str::to_owned),
        };
        c.set(vec![entry("serde", Some("^1")), entry("tokio-*", None)]);
        let n = |s: &str| CrateName::new(s).unwrap();
        let serde = c.allows(&r, &n("Serde"));
        assert!(serde.version("1.0.200") && !serde.version("0.9.0"));
        assert_eq!(c.allows(&r, &n("tokio_util")), Allowed::Every);
        assert_eq!(c.allows(&r, &n("rand")), Allowed::No);
        assert_eq!(c.allows(&other, &n("serde")), Allowed::No);
        assert_eq!(c.list(&r), ["serde@^1", "tokio-*"]);
        let g = c.generation();
        c.set(vec![]);
        assert!(c.generation() > g);
    }
}
