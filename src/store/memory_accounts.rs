//! [`AccountStore`] in memory, for tests and benchmarks that need no persistence (and no
//! background threads: the instruction-counting benchmark must count requests only).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use super::StoreError;
use super::accounts::{
    AccountStore, AuditEntry, AuditQuery, Grant, Team, TokenRecord, User, UserChange,
};

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
}

#[async_trait]
impl AccountStore for MemoryAccounts {
    async fn user(&self, login: &str) -> Result<Option<User>, StoreError> {
        Ok(self.state().users.get(login).cloned())
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        Ok(self.state().users.values().cloned().collect())
    }

    async fn create_user(&self, user: &User) -> Result<bool, StoreError> {
        let mut s = self.state();
        if s.users.contains_key(&user.login) {
            return Ok(false);
        }
        s.users.insert(user.login.clone(), user.clone());
        Ok(true)
    }

    async fn change_user(
        &self,
        login: &str,
        change: &UserChange,
    ) -> Result<Option<User>, StoreError> {
        let mut s = self.state();
        Ok(s.users.get_mut(login).map(|u| {
            change.apply(u);
            u.clone()
        }))
    }

    async fn team(&self, name: &str) -> Result<Option<Team>, StoreError> {
        Ok(self.state().teams.get(name).cloned())
    }

    async fn teams(&self) -> Result<Vec<Team>, StoreError> {
        Ok(self.state().teams.values().cloned().collect())
    }

    async fn create_team(&self, team: &Team) -> Result<bool, StoreError> {
        let mut s = self.state();
        if s.teams.contains_key(&team.name) {
            return Ok(false);
        }
        s.teams.insert(team.name.clone(), team.clone());
        Ok(true)
    }

    async fn set_member(
        &self,
        team: &str,
        login: &str,
        member: bool,
    ) -> Result<Option<Team>, StoreError> {
        let mut s = self.state();
        let Some(t) = s.teams.get_mut(team) else {
            return Ok(None);
        };
        if member {
            t.members.insert(login.to_owned());
        } else {
            t.members.remove(login);
        }
        Ok(Some(t.clone()))
    }

    async fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        Ok(self.state().grants.values().cloned().collect())
    }

    async fn add_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        let mut s = self.state();
        if s.grants.contains_key(&grant.id) {
            return Err(StoreError::Meta(format!("grant id {} exists", grant.id)));
        }
        s.grants.insert(grant.id.clone(), grant.clone());
        Ok(())
    }

    async fn remove_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        Ok(self.state().grants.remove(id))
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.state().tokens.get(hash).cloned())
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self.state().tokens.values().cloned().collect())
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let mut s = self.state();
        if s.tokens.contains_key(&token.hash) || s.token_by_id(&token.id).is_some() {
            return Err(StoreError::Meta(format!("token {} exists", token.id)));
        }
        s.tokens.insert(token.hash.clone(), token.clone());
        Ok(())
    }

    async fn revoke_token(&self, id: &str, at_ms: u64) -> Result<Option<TokenRecord>, StoreError> {
        let mut s = self.state();
        Ok(s.token_by_id(id).map(|t| {
            t.revoked_ms.get_or_insert(at_ms);
            t.clone()
        }))
    }

    async fn touch_tokens(&self, used: &[(String, u64)]) -> Result<(), StoreError> {
        let mut s = self.state();
        for (id, at) in used {
            if let Some(t) = s.token_by_id(id) {
                t.last_used_ms = Some(t.last_used_ms.map_or(*at, |l| l.max(*at)));
            }
        }
        Ok(())
    }

    async fn create_first_admin(
        &self,
        user: &User,
        token: &TokenRecord,
    ) -> Result<bool, StoreError> {
        let mut s = self.state();
        if s.users.values().any(|u| u.admin && !u.disabled) || s.users.contains_key(&user.login) {
            return Ok(false);
        }
        s.users.insert(user.login.clone(), user.clone());
        s.tokens.insert(token.hash.clone(), token.clone());
        Ok(true)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        let mut s = self.state();
        let seq = s.audit.len() as u64 + 1;
        let mut entry = entry.clone();
        entry.seq = seq;
        s.audit.push(entry);
        Ok(seq)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledAccounts;
    use crate::store::accounts::fixtures::user;

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
            let mut a = Vec::new();
            a.push(format!("{:?}", s.create_user(&user("a", false)).await));
            a.push(format!("{:?}", s.create_user(&user("a", true)).await));
            a.push(format!(
                "{:?}",
                s.create_first_admin(&user("root", true), &token("r")).await
            ));
            a.push(format!(
                "{:?}",
                s.create_first_admin(&user("x", true), &token("x")).await
            ));
            a.push(format!("{:?}", s.create_token(&token("t")).await));
            a.push(format!("{:?}", s.create_token(&token("t")).await.is_err()));
            a.push(format!("{:?}", s.revoke_token("t", 9).await));
            a.push(format!("{:?}", s.touch_tokens(&[("r".into(), 4)]).await));
            a.push(format!("{:?}", s.token_by_hash("hash-r").await));
            let change = UserChange {
                disabled: Some(true),
                ..UserChange::default()
            };
            a.push(format!("{:?}", s.change_user("a", &change).await));
            let mut users = s.users().await.unwrap();
            users.sort_by(|x, y| x.login.cmp(&y.login));
            a.push(format!("{users:?}"));
            answers.push(a);
        }
        assert_eq!(answers[0], answers[1]);
    }
}
