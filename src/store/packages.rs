//! The records of private crates: who owns each crate, what it says about itself for search,
//! and every version ever published (deleted ones stay as tombstones, so a version number is
//! never reused). The index files and `.crate` files themselves are blobs, not records.
//!
//! The rule this module keeps: every change is one call that stores the change and its audit
//! record together, and the change itself is a pure function of the old record
//! ([`PackageChange::apply`]) that each backend runs inside its own transaction.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{AccountStore, AuditEntry, StoreError};

/// An owner of a private crate: a user (by login) or a team (by name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Owner {
    User(String),
    Team(String),
}

impl Owner {
    /// How `cargo owner` spells it: a login, or `team:NAME`.
    pub fn login(&self) -> String {
        match self {
            Self::User(u) => u.clone(),
            Self::Team(t) => format!("team:{t}"),
        }
    }
}

/// One published version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub cksum: String,
    pub size: u64,
    pub published_ms: u64,
    /// The publishing user's login (or principal).
    pub publisher: Option<String>,
    /// When an admin deleted it; the number stays taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_ms: Option<u64>,
}

/// A private crate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    pub registry: String,
    /// The name as first published (its case and `-`/`_` are the crate's for good).
    pub name: String,
    pub owners: BTreeSet<Owner>,
    pub description: Option<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// By version string (build metadata kept).
    #[serde(default)]
    pub versions: BTreeMap<String, VersionRecord>,
}

impl PackageRecord {
    /// Bytes of the crate files it holds (deleted versions' files are gone).
    pub fn stored_bytes(&self) -> u64 {
        self.versions
            .values()
            .filter(|v| v.deleted_ms.is_none())
            .map(|v| v.size)
            .sum()
    }
}

/// A change to a crate's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageChange {
    /// A version was published: it joins the versions; description and keywords follow it.
    Published {
        version: String,
        record: VersionRecord,
        description: Option<String>,
        keywords: Vec<String>,
    },
    AddOwners(Vec<Owner>),
    RemoveOwners(Vec<Owner>),
    /// An admin deleted a version.
    Deleted {
        version: String,
        at_ms: u64,
    },
}

impl PackageChange {
    /// Applies the change at `now_ms`; `false` when it changes nothing (then no audit record
    /// is stored).
    pub fn apply(&self, r: &mut PackageRecord, now_ms: u64) -> bool {
        let changed = match self {
            Self::Published {
                version,
                record,
                description,
                keywords,
            } => {
                let new = !r.versions.contains_key(version);
                if new {
                    // Search shows what the newest version says, not a backport's.
                    let newest = semver::Version::parse(version).is_ok_and(|v| {
                        r.versions
                            .keys()
                            .filter_map(|o| semver::Version::parse(o).ok())
                            .all(|o| o <= v)
                    });
                    if newest || r.versions.is_empty() {
                        r.description.clone_from(description);
                        r.keywords.clone_from(keywords);
                    }
                    r.versions.insert(version.clone(), record.clone());
                }
                new
            }
            Self::AddOwners(owners) => {
                let before = r.owners.len();
                r.owners.extend(owners.iter().cloned());
                r.owners.len() != before
            }
            Self::RemoveOwners(owners) => {
                let before = r.owners.len();
                r.owners.retain(|o| !owners.contains(o));
                r.owners.len() != before
            }
            Self::Deleted { version, at_ms } => match r.versions.get_mut(version) {
                Some(v) if v.deleted_ms.is_none() => {
                    v.deleted_ms = Some(*at_ms);
                    true
                }
                _ => false,
            },
        };
        if changed {
            r.updated_ms = now_ms;
        }
        changed
    }
}

/// Where the records of private crates live. `canonical` is the crate's name folded as cargo
/// compares names (lowercase, `_` as `-`): one record per name however it is spelled.
#[async_trait]
pub trait PackageStore: Send + Sync + 'static {
    async fn package(
        &self,
        registry: &str,
        canonical: &str,
    ) -> Result<Option<PackageRecord>, StoreError>;
    /// Every crate of `registry`.
    async fn packages(&self, registry: &str) -> Result<Vec<PackageRecord>, StoreError>;
    /// Stores a new crate's record with its audit record; `false` (nothing stored) when the
    /// name is taken.
    async fn create_package(
        &self,
        canonical: &str,
        record: &PackageRecord,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError>;
    /// Applies `change` and stores it with `audit` when it changes something; the record
    /// after the change (`None`: no such crate).
    async fn change_package(
        &self,
        registry: &str,
        canonical: &str,
        change: &PackageChange,
        audit: &AuditEntry,
    ) -> Result<Option<PackageRecord>, StoreError>;
}

/// The metadata store: accounts, the audit log and private crates' records, in one backend so
/// that a change and its audit record are stored together.
pub trait MetaStore: AccountStore + PackageStore {}

impl<T: AccountStore + PackageStore> MetaStore for T {}

/// The storage key of a crate's record.
pub(crate) fn package_key(registry: &str, canonical: &str) -> String {
    format!("{registry}/{canonical}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> PackageRecord {
        PackageRecord {
            registry: "internal".into(),
            name: "Foo_bar".into(),
            owners: [Owner::User("alice".into())].into(),
            description: None,
            keywords: vec![],
            created_ms: 1,
            updated_ms: 1,
            versions: BTreeMap::new(),
        }
    }

    fn version(size: u64) -> VersionRecord {
        VersionRecord {
            cksum: "ab".into(),
            size,
            published_ms: 2,
            publisher: Some("alice".into()),
            deleted_ms: None,
        }
    }

    #[test]
    fn changes_report_whether_they_changed_anything() {
        let mut r = record();
        let publish = PackageChange::Published {
            version: "1.0.0".into(),
            record: version(10),
            description: Some("d".into()),
            keywords: vec!["k".into()],
        };
        assert!(publish.apply(&mut r, 5));
        assert_eq!((r.updated_ms, r.description.as_deref()), (5, Some("d")));
        assert!(!publish.apply(&mut r, 6), "a version is published once");
        let backport = PackageChange::Published {
            version: "0.9.1".into(),
            record: version(1),
            description: Some("old".into()),
            keywords: vec![],
        };
        assert!(backport.apply(&mut r, 6));
        assert_eq!(
            r.description.as_deref(),
            Some("d"),
            "the newest version's words stay"
        );
        assert!(
            PackageChange::Deleted {
                version: "0.9.1".into(),
                at_ms: 6
            }
            .apply(&mut r, 6)
        );
        let bob = Owner::Team("core".into());
        assert!(PackageChange::AddOwners(vec![bob.clone()]).apply(&mut r, 7));
        assert!(!PackageChange::AddOwners(vec![bob.clone()]).apply(&mut r, 8));
        assert!(PackageChange::RemoveOwners(vec![bob]).apply(&mut r, 9));
        assert_eq!(r.stored_bytes(), 10);
        let delete = PackageChange::Deleted {
            version: "1.0.0".into(),
            at_ms: 10,
        };
        assert!(delete.apply(&mut r, 10));
        assert!(!delete.apply(&mut r, 11));
        assert_eq!(r.stored_bytes(), 0);
        assert!(r.versions.contains_key("1.0.0"), "the number stays taken");
        assert_eq!(Owner::Team("core".into()).login(), "team:core");
    }

    /// The same calls give the same records and audit records in both stores; a refused or
    /// empty change stores no audit record.
    #[tokio::test]
    async fn sled_and_memory_stores_agree() {
        use crate::store::accounts_fixtures::{actions, entry};
        use crate::store::{MemoryAccounts, SledAccounts};
        let sled = SledAccounts::temporary().unwrap();
        let memory = MemoryAccounts::default();
        let stores: [&dyn MetaStore; 2] = [&sled, &memory];
        let mut seen = Vec::new();
        for s in stores {
            assert!(
                s.create_package("foo-bar", &record(), &entry("crate.create"))
                    .await
                    .unwrap()
            );
            assert!(
                !s.create_package("foo-bar", &record(), &entry("crate.create"))
                    .await
                    .unwrap()
            );
            let publish = PackageChange::Published {
                version: "1.0.0".into(),
                record: version(10),
                description: Some("d".into()),
                keywords: vec![],
            };
            let after = s
                .change_package("internal", "foo-bar", &publish, &entry("crate.publish"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(after.versions.len(), 1);
            s.change_package("internal", "foo-bar", &publish, &entry("crate.publish"))
                .await
                .unwrap();
            assert!(
                s.change_package("internal", "nope", &publish, &entry("crate.publish"))
                    .await
                    .unwrap()
                    .is_none()
            );
            let mut other = record();
            other.registry = "other".into();
            assert!(
                s.create_package("foo-bar", &other, &entry("crate.create"))
                    .await
                    .unwrap()
            );
            let mut found = s.packages("internal").await.unwrap();
            found.iter_mut().for_each(|r| r.updated_ms = 0);
            seen.push((found, actions(s).await));
        }
        assert_eq!(seen[0], seen[1]);
        assert_eq!(seen[0].0.len(), 1, "records of other registries are apart");
        assert_eq!(seen[0].1, ["crate.create", "crate.publish", "crate.create"]);
    }
}
