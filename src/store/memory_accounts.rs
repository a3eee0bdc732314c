//! [`AccountStore`] in memory, for tests and benchmarks that need no persistence (and no
//! background threads: the instruction-counting benchmark must count requests only).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::StoreError;
use super::accounts::{
    AccountStore, AuditEntry, AuditQuery, Grant, Revocation, Team, TokenRecord, User, UserChange,
    has_working_admin,
};
use super::now_ms;
use super::packages::{PackageChange, PackageRecord, PackageStore, package_key};

#[derive(Default)]
pub struct MemoryAccounts {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    users: BTreeMap<String, User>,
    teams: BTreeMap<String, Team>,
    grants: BTreeMap<String, Grant>,
    /// By hash.
    tokens: HashMap<String, TokenRecord>,
    audit: Vec<AuditEntry>,
    /// By `{registry}/{canonical name}`.
    packages: BTreeMap<String, PackageRecord>,
}

impl MemoryAccounts {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory accounts lock")
    }
}

impl State {
    fn token_by_id(&mut self, id: &str) -> Option<&mut TokenRecord> {
        self.tokens.values_mut().find(|t| t.id == id)
    }

    /// Appends `entry` when `changed`, and passes `out` on.
    fn audited<T>(&mut self, entry: &AuditEntry, (out, changed): (T, bool)) -> T {
        if changed {
            self.append(entry);
        }
        out
    }

    fn append(&mut self, entry: &AuditEntry) -> u64 {
        let seq = self.audit.len() as u64 + 1;
        self.audit.push(AuditEntry {
            seq,
            ..entry.clone()
        });
        seq
    }
}

#[async_trait]
impl AccountStore for MemoryAccounts {
    async fn user(&self, login: &str) -> Result<Option<User>, StoreError> {
        Ok(self.state().users.get(login).cloned())
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        Ok(self.state().users.values().cloned().collect())
    }

    async fn create_user(&self, user: &User, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut s = self.state();
        let created = !s.users.contains_key(&user.login);
        if created {
            s.users.insert(user.login.clone(), user.clone());
        }
        Ok(s.audited(audit, (created, created)))
    }

    async fn change_user(
        &self,
        login: &str,
        change: &UserChange,
        audit: &AuditEntry,
    ) -> Result<Option<User>, StoreError> {
        let mut s = self.state();
        let changed = s.users.get_mut(login).map(|u| {
            change.apply(u);
            u.clone()
        });
        let found = changed.is_some();
        Ok(s.audited(audit, (changed, found)))
    }

    async fn team(&self, name: &str) -> Result<Option<Team>, StoreError> {
        Ok(self.state().teams.get(name).cloned())
    }

    async fn teams(&self) -> Result<Vec<Team>, StoreError> {
        Ok(self.state().teams.values().cloned().collect())
    }

    async fn create_team(&self, team: &Team, audit: &AuditEntry) -> Result<bool, StoreError> {
        let mut s = self.state();
        let created = !s.teams.contains_key(&team.name);
        if created {
            s.teams.insert(team.name.clone(), team.clone());
        }
        Ok(s.audited(audit, (created, created)))
    }

    async fn set_member(
        &self,
        team: &str,
        login: &str,
        member: bool,
        audit: &AuditEntry,
    ) -> Result<Option<Team>, StoreError> {
        let mut s = self.state();
        let Some(t) = s.teams.get_mut(team) else {
            return Ok(None);
        };
        let changed = if member {
            t.members.insert(login.to_owned())
        } else {
            t.members.remove(login)
        };
        let t = t.clone();
        Ok(s.audited(audit, (Some(t), changed)))
    }

    async fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        Ok(self.state().grants.values().cloned().collect())
    }

    async fn add_grant(&self, grant: &Grant, audit: &AuditEntry) -> Result<(), StoreError> {
        let mut s = self.state();
        if s.grants.contains_key(&grant.id) {
            return Err(StoreError::Meta(format!("grant id {} exists", grant.id)));
        }
        s.grants.insert(grant.id.clone(), grant.clone());
        s.append(audit);
        Ok(())
    }

    async fn remove_grant(
        &self,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<Option<Grant>, StoreError> {
        let mut s = self.state();
        let removed = s.grants.remove(id);
        let changed = removed.is_some();
        Ok(s.audited(audit, (removed, changed)))
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.state().tokens.get(hash).cloned())
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self.state().tokens.values().cloned().collect())
    }

    async fn create_token(
        &self,
        token: &TokenRecord,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let mut s = self.state();
        if s.tokens.contains_key(&token.hash) || s.token_by_id(&token.id).is_some() {
            return Err(StoreError::Meta(format!("token {} exists", token.id)));
        }
        s.tokens.insert(token.hash.clone(), token.clone());
        s.append(audit);
        Ok(())
    }

    async fn revoke_token(
        &self,
        id: &str,
        at_ms: u64,
        audit: &AuditEntry,
    ) -> Result<Revocation, StoreError> {
        let mut s = self.state();
        let answer = match s.token_by_id(id) {
            None => Revocation::Unknown,
            Some(t) if t.revoked_ms.is_some() => Revocation::AlreadyRevoked(t.clone()),
            Some(t) => {
                t.revoked_ms = Some(at_ms);
                Revocation::Revoked(t.clone())
            }
        };
        let changed = matches!(answer, Revocation::Revoked(_));
        Ok(s.audited(audit, (answer, changed)))
    }

    async fn touch_tokens(&self, used: &[(String, u64)]) -> Result<(), StoreError> {
        let mut s = self.state();
        for (id, at) in used {
            if let Some(t) = s.token_by_id(id) {
                t.used_at(*at);
            }
        }
        Ok(())
    }

    async fn create_first_admin(
        &self,
        user: &User,
        token: &TokenRecord,
        now_ms: u64,
        audit: &[AuditEntry],
    ) -> Result<bool, StoreError> {
        let mut s = self.state();
        let users: Vec<User> = s.users.values().cloned().collect();
        let tokens: Vec<TokenRecord> = s.tokens.values().cloned().collect();
        if has_working_admin(&users, &tokens, now_ms) || s.users.contains_key(&user.login) {
            return Ok(false);
        }
        s.users.insert(user.login.clone(), user.clone());
        s.tokens.insert(token.hash.clone(), token.clone());
        for e in audit {
            s.append(e);
        }
        Ok(true)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        Ok(self.state().append(entry))
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let s = self.state();
        Ok(s.audit
            .iter()
            .rev()
            .filter(|e| query.matches(e))
            .take(query.limit)
            .cloned()
            .collect())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl PackageStore for MemoryAccounts {
    async fn package(
        &self,
        registry: &str,
        canonical: &str,
    ) -> Result<Option<PackageRecord>, StoreError> {
        let key = package_key(registry, canonical);
        Ok(self.state().packages.get(&key).cloned())
    }

    async fn packages(&self, registry: &str) -> Result<Vec<PackageRecord>, StoreError> {
        let prefix = format!("{registry}/");
        let s = self.state();
        Ok(s.packages
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn create_package(
        &self,
        canonical: &str,
        record: &PackageRecord,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let key = package_key(&record.registry, canonical);
        let mut s = self.state();
        let created = !s.packages.contains_key(&key);
        if created {
            s.packages.insert(key, record.clone());
        }
        Ok(s.audited(audit, (created, created)))
    }

    async fn change_package(
        &self,
        registry: &str,
        canonical: &str,
        change: &PackageChange,
        audit: &AuditEntry,
    ) -> Result<Option<PackageRecord>, StoreError> {
        let key = package_key(registry, canonical);
        let mut s = self.state();
        let Some(record) = s.packages.get_mut(&key) else {
            return Ok(None);
        };
        let changed = change.apply(record, now_ms());
        let out = record.clone();
        Ok(s.audited(audit, (Some(out), changed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledAccounts;
    use crate::store::accounts::fixtures::{actions, entry, user};

    fn token(id: &str) -> TokenRecord {
        crate::store::accounts::fixtures::token(id, "a")
    }

    /// The same calls give the same answers from both stores.
    #[tokio::test]
    async fn memory_and_sled_accounts_agree() {
        let stores: [Box<dyn AccountStore>; 2] = [
            Box::new(MemoryAccounts::default()),
            Box::new(SledAccounts::temporary().unwrap()),
        ];
        let mut answers = Vec::new();
        for s in &stores {
            let e = entry;
            let mut a = Vec::new();
            a.push(format!(
                "{:?}",
                s.create_user(&user("a", false), &e("1")).await
            ));
            a.push(format!(
                "{:?}",
                s.create_user(&user("a", true), &e("2")).await
            ));
            let first = [e("3")];
            let (root, x) = (
                (user("root", true), token("r")),
                (user("x", true), token("x")),
            );
            let admin = s.create_first_admin(&root.0, &root.1, 0, &first).await;
            a.push(format!("{admin:?}"));
            let again = s.create_first_admin(&x.0, &x.1, 0, &first).await;
            a.push(format!("{again:?}"));
            a.push(format!("{:?}", s.create_token(&token("t"), &e("4")).await));
            a.push(format!(
                "{:?}",
                s.create_token(&token("t"), &e("5")).await.is_err()
            ));
            a.push(format!("{:?}", s.revoke_token("t", 9, &e("6")).await));
            a.push(format!("{:?}", s.revoke_token("t", 10, &e("7")).await));
            a.push(format!("{:?}", s.touch_tokens(&[("r".into(), 4)]).await));
            a.push(format!("{:?}", s.token_by_hash("hash-r").await));
            let change = UserChange {
                disabled: Some(true),
                ..UserChange::default()
            };
            a.push(format!("{:?}", s.change_user("a", &change, &e("8")).await));
            let mut users = s.users().await.unwrap();
            users.sort_by(|x, y| x.login.cmp(&y.login));
            a.push(format!("{users:?}"));
            let log = actions(&**s).await;
            a.push(format!("{log:?}"));
            answers.push(a);
        }
        assert_eq!(answers[0], answers[1]);
    }
}
