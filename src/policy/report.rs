//! The advisory report: every cached (mirror) and private crate version affected by an advisory
//! that counts under its registry's settings.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Policy;
use crate::names::RegistryName;
use crate::store::{CacheBook, MetaStore, SCAN_PAGE, StoreError};

/// One affected version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(crate) struct Affected {
    pub(crate) registry: String,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) advisory: String,
    pub(crate) kind: String,
    pub(crate) title: String,
    pub(crate) patched: Vec<String>,
    pub(crate) url: Option<String>,
    /// The registry's `advisories` action.
    pub(crate) action: String,
}

fn affected(policy: &Policy, name: &str, version: &str, out: &mut Vec<Affected>) {
    let Ok(v) = semver::Version::parse(version) else {
        return;
    };
    for a in policy.affecting(name, &v) {
        out.push(Affected {
            registry: policy.registry().to_string(),
            name: name.to_owned(),
            version: version.to_owned(),
            advisory: a.id.clone(),
            kind: a.kind.as_str().to_owned(),
            title: a.title.clone(),
            patched: a.patched.clone(),
            url: a.url.clone(),
            action: policy.advisories.as_str().to_owned(),
        });
    }
}

/// Builds the report over the mirrors' bookkeeping and the private registries' records.
pub(crate) async fn build(
    mirrors: &BTreeMap<RegistryName, &Policy>,
    book: &dyn CacheBook,
    privates: &BTreeMap<RegistryName, &Policy>,
    meta: &dyn MetaStore,
) -> Result<Vec<Affected>, StoreError> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = book.crate_page(after.as_ref(), SCAN_PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.key.clone());
        for seen in &page {
            let k = &seen.key;
            if let Some(policy) = mirrors.get(&k.registry)
                && !policy.naming(k.name.as_str()).is_empty()
            {
                affected(policy, k.name.as_str(), k.version.as_str(), &mut out);
            }
        }
        if page.len() < SCAN_PAGE {
            break;
        }
        tokio::task::yield_now().await;
    }
    for (registry, policy) in privates {
        for package in meta.packages(registry.as_str()).await? {
            if policy.naming(&package.name).is_empty() {
                continue;
            }
            for (version, record) in &package.versions {
                if record.deleted_ms.is_none() {
                    affected(policy, &package.name, version, &mut out);
                }
            }
        }
    }
    out.sort();
    Ok(out)
}
