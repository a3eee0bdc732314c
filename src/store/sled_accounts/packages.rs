//! [`PackageStore`] on sled: one tree of crate records keyed `{registry}/{canonical name}`,
//! each change stored in one transaction with its audit record.

use async_trait::async_trait;

use super::{SledAccounts, decode, meta_err, tx_get, tx_put};
use crate::store::packages::{PackageChange, PackageRecord, PackageStore, package_key};
use crate::store::{AuditEntry, StoreError, now_ms};

#[async_trait]
impl PackageStore for SledAccounts {
    async fn package(
        &self,
        registry: &str,
        canonical: &str,
    ) -> Result<Option<PackageRecord>, StoreError> {
        Self::get(&self.tree("packages")?, &package_key(registry, canonical))
    }

    async fn packages(&self, registry: &str) -> Result<Vec<PackageRecord>, StoreError> {
        self.tree("packages")?
            .scan_prefix(format!("{registry}/"))
            .map(|item| {
                let (k, v) = item.map_err(meta_err)?;
                decode(&k, &v)
            })
            .collect()
    }

    async fn create_package(
        &self,
        canonical: &str,
        record: &PackageRecord,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let key = package_key(&record.registry, canonical);
        self.audited(&self.tree("packages")?, audit, |t| {
            if t.get(key.as_bytes())?.is_some() {
                return Ok((false, false));
            }
            tx_put(t, &key, record)?;
            Ok((true, true))
        })
    }

    async fn change_package(
        &self,
        registry: &str,
        canonical: &str,
        change: &PackageChange,
        audit: &AuditEntry,
    ) -> Result<Option<PackageRecord>, StoreError> {
        let key = package_key(registry, canonical);
        let now = now_ms();
        self.audited(&self.tree("packages")?, audit, |t| {
            let Some(mut record) = tx_get::<PackageRecord>(t, &key)? else {
                return Ok((None, false));
            };
            let changed = change.apply(&mut record, now);
            if changed {
                tx_put(t, &key, &record)?;
            }
            Ok((Some(record), changed))
        })
    }
}
