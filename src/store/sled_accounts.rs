//! [`AccountStore`] on sled: one tree per kind of record (JSON values, so fields can be added
//! without a migration), tokens keyed by their hash with an id → hash tree beside, the audit
//! log keyed by a big-endian sequence number so that it iterates in order.

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::StoreError;
use super::accounts::{
    AccountStore, AuditEntry, AuditQuery, Grant, Team, TokenRecord, User, UserChange,
};

pub struct SledAccounts {
    db: sled::Db,
    users: sled::Tree,
    teams: sled::Tree,
    grants: sled::Tree,
    tokens: sled::Tree,
    token_ids: sled::Tree,
    audit: sled::Tree,
}

fn meta_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Meta(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(meta_err)
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Unreadable {
        key: String::from_utf8_lossy(key).into_owned(),
        why: e.to_string(),
    })
}

fn tx_err(e: TransactionError<String>) -> StoreError {
    match e {
        TransactionError::Abort(e) => StoreError::Meta(e),
        TransactionError::Storage(e) => meta_err(e),
    }
}

fn abort(e: impl std::fmt::Display) -> ConflictableTransactionError<String> {
    ConflictableTransactionError::Abort(e.to_string())
}

impl SledAccounts {
    /// The account trees in an open database (see `open_db`).
    pub fn with_db(db: sled::Db) -> Result<Self, StoreError> {
        let tree = |name: &str| db.open_tree(name).map_err(meta_err);
        Ok(Self {
            users: tree("users")?,
            teams: tree("teams")?,
            grants: tree("grants")?,
            tokens: tree("tokens")?,
            token_ids: tree("token_ids")?,
            audit: tree("audit")?,
            db,
        })
    }

    /// A store in a temporary database, removed when dropped (tests and benchmarks).
    pub fn temporary() -> Result<Self, StoreError> {
        // No background flusher: a temporary store is never read back.
        let db = sled::Config::new()
            .temporary(true)
            .flush_every_ms(None)
            .open()
            .map_err(meta_err)?;
        Self::with_db(db)
    }

    fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &str) -> Result<Option<T>, StoreError> {
        match tree.get(key).map_err(meta_err)? {
            Some(v) => decode(key.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    fn all<T: DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<T>, StoreError> {
        tree.iter()
            .map(|item| {
                let (k, v) = item.map_err(meta_err)?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Inserts `value` under `key` unless the key exists.
    fn create<T: Serialize>(tree: &sled::Tree, key: &str, value: &T) -> Result<bool, StoreError> {
        let swapped = tree
            .compare_and_swap(key, None::<&[u8]>, Some(encode(value)?))
            .map_err(meta_err)?;
        Ok(swapped.is_ok())
    }

    /// Changes the record under `key` with `f`, atomically (sled retries `f` on a conflict);
    /// the changed record, or `None` when there is none.
    fn change<T: Serialize + DeserializeOwned>(
        tree: &sled::Tree,
        key: &str,
        f: impl Fn(&mut T),
    ) -> Result<Option<T>, StoreError> {
        let mut failure = None;
        let updated = tree
            .update_and_fetch(key, |old| {
                let old = old?;
                match serde_json::from_slice::<T>(old) {
                    Ok(mut v) => {
                        f(&mut v);
                        match serde_json::to_vec(&v) {
                            Ok(bytes) => Some(bytes),
                            Err(e) => {
                                failure = Some(e.to_string());
                                Some(old.to_vec())
                            }
                        }
                    }
                    Err(e) => {
                        failure = Some(e.to_string());
                        Some(old.to_vec())
                    }
                }
            })
            .map_err(meta_err)?;
        if let Some(why) = failure {
            return Err(StoreError::Unreadable {
                key: key.to_owned(),
                why,
            });
        }
        updated.map(|v| decode(key.as_bytes(), &v)).transpose()
    }
}

// sled's reads and writes go to its page cache and log in memory, so they run inline; only
// `flush` waits for the disk.
#[async_trait]
impl AccountStore for SledAccounts {
    async fn user(&self, login: &str) -> Result<Option<User>, StoreError> {
        Self::get(&self.users, login)
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        Self::all(&self.users)
    }

    async fn create_user(&self, user: &User) -> Result<bool, StoreError> {
        Self::create(&self.users, &user.login, user)
    }

    async fn change_user(
        &self,
        login: &str,
        change: &UserChange,
    ) -> Result<Option<User>, StoreError> {
        Self::change(&self.users, login, |u: &mut User| change.apply(u))
    }

    async fn team(&self, name: &str) -> Result<Option<Team>, StoreError> {
        Self::get(&self.teams, name)
    }

    async fn teams(&self) -> Result<Vec<Team>, StoreError> {
        Self::all(&self.teams)
    }

    async fn create_team(&self, team: &Team) -> Result<bool, StoreError> {
        Self::create(&self.teams, &team.name, team)
    }

    async fn set_member(
        &self,
        team: &str,
        login: &str,
        member: bool,
    ) -> Result<Option<Team>, StoreError> {
        Self::change(&self.teams, team, |t: &mut Team| {
            if member {
                t.members.insert(login.to_owned());
            } else {
                t.members.remove(login);
            }
        })
    }

    async fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        Self::all(&self.grants)
    }

    async fn add_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        if Self::create(&self.grants, &grant.id, grant)? {
            Ok(())
        } else {
            Err(StoreError::Meta(format!("grant id {} exists", grant.id)))
        }
    }

    async fn remove_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        match self.grants.remove(id).map_err(meta_err)? {
            Some(v) => decode(id.as_bytes(), &v).map(Some),
            None => Ok(None),
        }
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        Self::get(&self.tokens, hash)
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Self::all(&self.tokens)
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let value = encode(token)?;
        (&self.tokens, &self.token_ids)
            .transaction(|(tokens, ids)| {
                if ids.get(&token.id)?.is_some() || tokens.get(&token.hash)?.is_some() {
                    return Err(abort(format!("token {} exists", token.id)));
                }
                tokens.insert(token.hash.as_bytes(), value.as_slice())?;
                ids.insert(token.id.as_bytes(), token.hash.as_bytes())?;
                Ok(())
            })
            .map_err(tx_err)
    }

    async fn revoke_token(&self, id: &str, at_ms: u64) -> Result<Option<TokenRecord>, StoreError> {
        let Some(hash) = self.token_ids.get(id).map_err(meta_err)? else {
            return Ok(None);
        };
        let hash = String::from_utf8_lossy(&hash).into_owned();
        Self::change(&self.tokens, &hash, |t: &mut TokenRecord| {
            t.revoked_ms.get_or_insert(at_ms);
        })
    }

    async fn touch_tokens(&self, used: &[(String, u64)]) -> Result<(), StoreError> {
        for (id, at) in used {
            let Some(hash) = self.token_ids.get(id).map_err(meta_err)? else {
                continue;
            };
            let hash = String::from_utf8_lossy(&hash).into_owned();
            Self::change(&self.tokens, &hash, |t: &mut TokenRecord| {
                t.last_used_ms = Some(t.last_used_ms.map_or(*at, |l| l.max(*at)));
            })?;
        }
        Ok(())
    }

    async fn create_first_admin(
        &self,
        user: &User,
        token: &TokenRecord,
    ) -> Result<bool, StoreError> {
        // One process owns the database and bootstraps before it serves, so nothing can add
        // an admin between this scan and the transaction.
        let users: Vec<User> = Self::all(&self.users)?;
        if users.iter().any(|u| u.admin && !u.disabled) {
            return Ok(false);
        }
        let (u, t) = (encode(user)?, encode(token)?);
        (&self.users, &self.tokens, &self.token_ids)
            .transaction(|(users, tokens, ids)| {
                if users.get(&user.login)?.is_some() {
                    return Err(abort(format!("user {} exists", user.login)));
                }
                users.insert(user.login.as_bytes(), u.as_slice())?;
                tokens.insert(token.hash.as_bytes(), t.as_slice())?;
                ids.insert(token.id.as_bytes(), token.hash.as_bytes())?;
                Ok(())
            })
            .map_err(tx_err)?;
        Ok(true)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        // Increasing across restarts: sled persists the counter.
        let seq = self.db.generate_id().map_err(meta_err)? + 1;
        let mut entry = entry.clone();
        entry.seq = seq;
        self.audit
            .insert(seq.to_be_bytes(), encode(&entry)?)
            .map_err(meta_err)?;
        Ok(seq)
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let end = query.before_seq.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        for item in self.audit.range(..end.to_be_bytes()).rev() {
            if out.len() >= query.limit {
                break;
            }
            let (k, v) = item.map_err(meta_err)?;
            let entry: AuditEntry = decode(&k, &v)?;
            // Records are appended in time order (give or take clock steps): far enough
            // before `since`, nothing older can match.
            if let Some(since) = query.since_ms
                && entry.time_ms.saturating_add(60_000) < since
            {
                break;
            }
            if query.matches(&entry) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await.map_err(meta_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::CrateGlob;
    use crate::store::accounts::fixtures::{token, user};
    use crate::store::accounts::{Actor, Permission, Subject};

    #[tokio::test]
    async fn records_round_trip_and_creates_do_not_overwrite() {
        let s = SledAccounts::temporary().unwrap();
        assert!(s.create_user(&user("alice", false)).await.unwrap());
        assert!(!s.create_user(&user("alice", true)).await.unwrap());
        assert!(!s.user("alice").await.unwrap().unwrap().admin);
        let change = UserChange {
            disabled: Some(true),
            ..UserChange::default()
        };
        assert!(
            s.change_user("alice", &change)
                .await
                .unwrap()
                .unwrap()
                .disabled
        );
        assert!(s.change_user("bob", &change).await.unwrap().is_none());

        let team = Team {
            name: "dev".into(),
            members: Default::default(),
            created_ms: 1,
        };
        assert!(s.create_team(&team).await.unwrap());
        let t = s.set_member("dev", "alice", true).await.unwrap().unwrap();
        assert!(t.members.contains("alice"));
        assert!(s.set_member("nope", "alice", true).await.unwrap().is_none());

        let grant = Grant {
            id: "g1".into(),
            subject: Subject::Team("dev".into()),
            permission: Permission::Read,
            registry: None,
            crates: CrateGlob::any(),
            expires_ms: None,
            created_ms: 1,
        };
        s.add_grant(&grant).await.unwrap();
        assert_eq!(s.grants().await.unwrap(), vec![grant.clone()]);
        assert_eq!(s.remove_grant("g1").await.unwrap(), Some(grant));
        assert!(s.grants().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn tokens_are_found_by_hash_revoked_by_id_and_touched_forward() {
        let s = SledAccounts::temporary().unwrap();
        s.create_token(&token("t1", "alice")).await.unwrap();
        assert!(s.create_token(&token("t1", "alice")).await.is_err());
        let r = s.revoke_token("t1", 50).await.unwrap().unwrap();
        assert_eq!(r.revoked_ms, Some(50));
        let r = s.revoke_token("t1", 99).await.unwrap().unwrap();
        assert_eq!(r.revoked_ms, Some(50), "the first revocation stays");
        s.touch_tokens(&[("t1".into(), 10)]).await.unwrap();
        s.touch_tokens(&[("t1".into(), 5), ("gone".into(), 7)])
            .await
            .unwrap();
        let t = s.token_by_hash("hash-t1").await.unwrap().unwrap();
        assert_eq!(t.last_used_ms, Some(10));
    }

    #[tokio::test]
    async fn the_first_admin_is_created_once() {
        let s = SledAccounts::temporary().unwrap();
        assert!(
            s.create_first_admin(&user("admin", true), &token("a", "admin"))
                .await
                .unwrap()
        );
        assert!(
            !s.create_first_admin(&user("admin-2", true), &token("b", "admin-2"))
                .await
                .unwrap()
        );
        assert!(s.token_by_hash("hash-b").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_audit_log_pages_newest_first_with_filters() {
        let s = SledAccounts::temporary().unwrap();
        for i in 0..5u64 {
            let e = AuditEntry {
                seq: 0,
                time_ms: 1_000 + i,
                actor: Actor {
                    user: Some(if i % 2 == 0 { "alice" } else { "bob" }.into()),
                    ..Actor::default()
                },
                source: None,
                action: format!("user.{}", if i == 4 { "disable" } else { "create" }),
                registry: None,
                krate: None,
                target: format!("u{i}"),
                outcome: "ok".into(),
            };
            s.append_audit(&e).await.unwrap();
        }
        let q = |f: fn(&mut AuditQuery)| {
            let mut q = AuditQuery {
                limit: 10,
                ..AuditQuery::default()
            };
            f(&mut q);
            q
        };
        let all = s.audit(&q(|_| {})).await.unwrap();
        let targets: Vec<_> = all.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(targets, ["u4", "u3", "u2", "u1", "u0"]);
        let page = s.audit(&q(|q| q.limit = 2)).await.unwrap();
        let next = s
            .audit(&q(|q| {
                q.limit = 2;
                q.before_seq = Some(3);
            }))
            .await
            .unwrap();
        assert_eq!(page.len(), 2);
        assert!(next.iter().all(|e| e.seq < 3));
        let alice = s
            .audit(&q(|q| q.actor = Some("alice".into())))
            .await
            .unwrap();
        assert_eq!(alice.len(), 3);
        let created = s
            .audit(&q(|q| q.action = Some("user.create".into())))
            .await
            .unwrap();
        assert_eq!(created.len(), 4);
        let users = s
            .audit(&q(|q| q.action = Some("user.".into())))
            .await
            .unwrap();
        assert_eq!(users.len(), 5);
        let since = s.audit(&q(|q| q.since_ms = Some(1_003))).await.unwrap();
        assert_eq!(since.len(), 2);
    }
}
