//! After publish: yank and unyank, owners, and an admin's delete of a version.
//!
//! The rule this module keeps: only owners (a user, or a member of an owner team), admins, and
//! holders of `admin` on the crate change a crate, and each with a token that allows the change;
//! a change that changes nothing stores nothing.

use super::line::{set_yanked, without};
use super::{Caller, Private, RegistryError};
use crate::auth::admin::{Context, entry};
use crate::auth::{Denial, Identity};
use crate::names::{CrateName, Version, shown};
use crate::store::{Owner, PackageChange, PackageRecord, Permission, now_ms};

/// Adding or removing owners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnersChange {
    Add,
    Remove,
}

/// An owner as `cargo owner --list` shows it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct OwnerView {
    pub(crate) id: u32,
    pub(crate) login: String,
    pub(crate) name: Option<String>,
}

/// The crate's name as first published (its index file and `.crate` files are under it).
fn published_name(record: &PackageRecord) -> Result<CrateName, RegistryError> {
    CrateName::new(&record.name).map_err(|e| {
        RegistryError::from(crate::store::StoreError::Meta(format!(
            "unreadable crate record: {e}"
        )))
    })
}

/// The owner a login names, whether or not the user or team still exists.
fn owner_spelled(login: &str) -> Owner {
    match login.strip_prefix("team:") {
        Some(team) => Owner::Team(team.to_owned()),
        None => Owner::User(login.to_owned()),
    }
}

/// Most logins one owners request may name (as crates.io).
const MAX_LOGINS: usize = 10;

/// A stable number for a login (cargo wants a `u32` id).
fn id_of(login: &str) -> u32 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(login.as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]]) & 0x7fff_ffff
}

impl Private {
    /// The record of crate `name`, or a 404 that says so.
    async fn record(&self, name: &CrateName) -> Result<PackageRecord, RegistryError> {
        self.meta
            .package(self.name.as_str(), &name.canonical())
            .await?
            .ok_or_else(|| {
                RegistryError::not_found(format!(
                    "crate `{name}` does not exist in `{}`",
                    self.name
                ))
            })
    }

    async fn is_owner(&self, id: &Identity, record: &PackageRecord) -> Result<bool, RegistryError> {
        for owner in &record.owners {
            match owner {
                Owner::User(u) if id.user.as_deref() == Some(u.as_str()) => return Ok(true),
                Owner::User(_) => {}
                Owner::Team(t) => {
                    if id.user.is_none() && id.principal.as_deref() == Some(t.as_str()) {
                        return Ok(true);
                    }
                    if let Some(u) = &id.user
                        && let Some(team) = self.meta.team(t).await?
                        && team.members.contains(&**u)
                    {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Refuses a caller who may not change the crate of `record`.
    pub(super) async fn check_owner(
        &self,
        caller: &Caller,
        record: &PackageRecord,
        name: &CrateName,
        now: u64,
    ) -> Result<(), RegistryError> {
        let id = &caller.identity;
        if id.is_admin(now)
            || id.allows(Permission::Admin, self.name.as_str(), Some(name), now)
            || self.is_owner(id, record).await?
        {
            return Ok(());
        }
        let owners: Vec<String> = record.owners.iter().map(Owner::login).collect();
        Err(RegistryError::forbidden(
            "owner",
            format!(
                "you are not an owner of `{}` (owners: {}); ask one of them or an admin to run `cargo owner --add <your login> {} --registry <this registry>`",
                record.name,
                owners.join(", "),
                record.name
            ),
        ))
    }

    fn check_permission(
        &self,
        caller: &Caller,
        p: Permission,
        name: &CrateName,
    ) -> Result<u64, RegistryError> {
        let now = now_ms();
        if caller
            .identity
            .allows(p, self.name.as_str(), Some(name), now)
        {
            Ok(now)
        } else {
            let denial = Denial::lacks(p, self.name.as_str(), Some(name));
            Err(RegistryError::forbidden("permission", denial.detail()))
        }
    }

    /// Yanks (`yanked`) or unyanks a version.
    pub(crate) async fn yank(
        &self,
        caller: &Caller,
        name: &CrateName,
        version: &Version,
        yanked: bool,
    ) -> Result<(), RegistryError> {
        let now = self.check_permission(caller, Permission::Yank, name)?;
        let _held = self.lock(name).lock().await;
        let record = self.record(name).await?;
        self.check_owner(caller, &record, name, now).await?;
        // The published spelling: `foo-bar` names the crate `foo_bar` too.
        let name = &published_name(&record)?;
        let lower = name.lower();
        let missing = || {
            RegistryError::not_found(format!(
                "crate `{}` has no version `{version}` in `{}`",
                record.name, self.name
            ))
        };
        let doc = self.load(&lower).await?.ok_or_else(missing)?;
        let changed = set_yanked(&doc.body, version.as_str(), yanked)
            .map_err(|e| {
                RegistryError::from(crate::store::StoreError::Meta(format!(
                    "unreadable index line: {e}"
                )))
            })?
            .ok_or_else(missing)?;
        let Some(body) = changed else {
            return Ok(());
        };
        // The audit entry first (durably): a yank is never in force without its record. If
        // the index write then fails, a second record says so.
        let action = if yanked { "yank" } else { "unyank" };
        let mut audit = entry(
            &caller.ctx,
            &format!("crate.{action}"),
            Some(self.name.as_str()),
            &format!("{}@{version}", record.name),
        );
        audit.krate = Some(record.name.clone());
        self.meta.append_audit(&audit).await?;
        self.meta.flush().await?;
        if let Err(e) = self.store_index(&lower, body).await {
            audit.outcome = "failed: the index could not be written; nothing changed".into();
            let recorded = match self.meta.append_audit(&audit).await {
                Ok(_) => self.meta.flush().await,
                Err(e) => Err(e),
            };
            if let Err(again) = recorded {
                tracing::error!(error = %again, "cannot record a failed {action}");
            }
            return Err(e.into());
        }
        self.metrics
            .yanks
            .with_label_values(&[self.name.as_str(), action])
            .inc();
        Ok(())
    }

    /// The owners of crate `name`.
    pub(crate) async fn owners(&self, name: &CrateName) -> Result<Vec<OwnerView>, RegistryError> {
        let record = self.record(name).await?;
        let mut out = Vec::new();
        for owner in &record.owners {
            let login = owner.login();
            // No e-mail: the list is open to every reader of the registry.
            let name = match owner {
                Owner::User(u) => self
                    .meta
                    .user(u)
                    .await?
                    .map(|user| user.name)
                    .filter(|n| !n.is_empty()),
                Owner::Team(t) => Some(format!("team {t}")),
            };
            out.push(OwnerView {
                id: id_of(&login),
                login,
                name,
            });
        }
        Ok(out)
    }

    /// Adds or removes owners; the message cargo prints.
    pub(crate) async fn change_owners(
        &self,
        caller: &Caller,
        name: &CrateName,
        logins: &[String],
        change: OwnersChange,
    ) -> Result<String, RegistryError> {
        if logins.is_empty() || logins.len() > MAX_LOGINS {
            return Err(RegistryError::invalid(
                "owners",
                format!("name 1 to {MAX_LOGINS} owners at a time"),
            ));
        }
        let now = self.check_permission(caller, Permission::Publish, name)?;
        let _held = self.lock(name).lock().await;
        let record = self.record(name).await?;
        self.check_owner(caller, &record, name, now).await?;
        let mut owners = Vec::with_capacity(logins.len());
        for login in logins {
            owners.push(match change {
                OwnersChange::Add => self.owner_named(login).await?,
                // A departed (disabled or removed) user can still be taken off.
                OwnersChange::Remove => owner_spelled(login),
            });
        }
        let (action, change) = match change {
            OwnersChange::Add => ("owner.add", PackageChange::AddOwners(owners.clone())),
            OwnersChange::Remove => {
                let strangers: Vec<String> = owners
                    .iter()
                    .filter(|o| !record.owners.contains(o))
                    .map(Owner::login)
                    .collect();
                if !strangers.is_empty() {
                    return Err(RegistryError::invalid(
                        "owners",
                        format!("not owners of `{}`: {}", record.name, strangers.join(", ")),
                    ));
                }
                if record.owners.iter().all(|o| owners.contains(o)) {
                    return Err(RegistryError::invalid(
                        "owners",
                        format!(
                            "`{}` must keep at least one owner; add the new owner first",
                            record.name
                        ),
                    ));
                }
                ("owner.remove", PackageChange::RemoveOwners(owners.clone()))
            }
        };
        let named: Vec<String> = owners.iter().map(Owner::login).collect();
        let mut audit = entry(
            &caller.ctx,
            action,
            Some(self.name.as_str()),
            &format!("{}: {}", record.name, named.join(", ")),
        );
        audit.krate = Some(record.name.clone());
        self.meta
            .change_package(self.name.as_str(), &name.canonical(), &change, &audit)
            .await?;
        // Durable before the answer, like every change of a private crate.
        self.meta.flush().await?;
        Ok(match action {
            "owner.add" => format!(
                "{} now own{} `{}`",
                named.join(", "),
                if named.len() == 1 { "s" } else { "" },
                record.name
            ),
            _ => format!(
                "{} no longer own{} `{}`",
                named.join(", "),
                if named.len() == 1 { "s" } else { "" },
                record.name
            ),
        })
    }

    /// The owner a `cargo owner` login names: a user's login or `team:NAME`, which must exist.
    async fn owner_named(&self, login: &str) -> Result<Owner, RegistryError> {
        if let Some(team) = login.strip_prefix("team:") {
            return match self.meta.team(team).await? {
                Some(t) => Ok(Owner::Team(t.name)),
                None => Err(RegistryError::not_found(format!(
                    "no team named `{}`",
                    shown(team)
                ))),
            };
        }
        match self.meta.user(login).await? {
            Some(u) if !u.disabled => Ok(Owner::User(u.login)),
            Some(u) => Err(RegistryError::invalid(
                "owners",
                format!("user `{}` is disabled", u.login),
            )),
            None => Err(RegistryError::not_found(format!(
                "no user with login `{}` (teams are written `team:NAME`)",
                shown(login)
            ))),
        }
    }

    /// An admin's delete of a version: its line leaves the index, its file is removed, and the
    /// number stays taken. The exception to "published is forever", for legal takedowns.
    pub(crate) async fn delete_version(
        &self,
        ctx: &Context,
        name: &CrateName,
        version: &Version,
    ) -> Result<(), RegistryError> {
        let _held = self.lock(name).lock().await;
        let record = self.record(name).await?;
        let name = &published_name(&record)?;
        let lower = name.lower();
        let doc = self.load(&lower).await?;
        let in_index = doc
            .as_ref()
            .map(|d| crate::index::find_version(&d.body, version.as_str()).is_some())
            .unwrap_or(false);
        let Some(known) = record.versions.get(version.as_str()).cloned() else {
            return Err(if in_index {
                RegistryError::conflict(
                    "unrecorded",
                    format!(
                        "`{}@{version}` is in the index without its record (a publish that a crash cut off): publish the same .crate again to complete it, then delete it",
                        record.name
                    ),
                )
            } else {
                RegistryError::not_found(format!(
                    "crate `{}` has no version `{version}`",
                    record.name
                ))
            });
        };
        // The tombstone first: if anything below fails, a retry finishes the job and the number
        // can never be published again in between.
        let mut audit = entry(
            ctx,
            "crate.delete",
            Some(self.name.as_str()),
            &format!("{}@{version}", record.name),
        );
        audit.krate = Some(record.name.clone());
        let change = PackageChange::Deleted {
            version: version.to_string(),
            at_ms: now_ms(),
        };
        self.meta
            .change_package(self.name.as_str(), &name.canonical(), &change, &audit)
            .await?;
        // Durable before the answer, like every change of a private crate.
        self.meta.flush().await?;
        if let Some(doc) = doc
            && let Some(body) = without(&doc.body, version.as_str()).map_err(|e| {
                RegistryError::from(crate::store::StoreError::Meta(format!(
                    "unreadable index line: {e}"
                )))
            })?
        {
            self.store_index(&lower, body).await?;
        }
        self.blobs.delete(&self.crate_key(name, version)).await?;
        if known.deleted_ms.is_some() && !in_index {
            // Deleted before; the steps above only finished what a crash may have left.
            return Err(RegistryError::not_found(format!(
                "`{}@{version}` was already deleted",
                record.name
            )));
        }
        if known.deleted_ms.is_none() {
            self.stored_bytes.fetch_sub(
                known.size.min(self.stored_bytes()),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        Ok(())
    }
}
