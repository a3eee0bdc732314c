//! [`AccountStore`] on sled: one tree per kind of record (JSON values, so fields can be added
//! without a migration), tokens keyed by their hash with an id → hash tree beside, the audit
//! log keyed by a big-endian sequence number so that it iterates in order.

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use std::sync::Arc;

use super::StoreError;
use super::accounts::{
    AccountStore, AuditEntry, AuditQuery, Grant, Revocation, Team, TokenRecord, User, UserChange,
    has_working_admin,
};
use super::sled_meta::SledMeta;

/// Its trees: `users`, `teams`, `grants`, `tokens`, `token_ids`, `audit`, `packages`, taken
/// from the database on each operation (see [`SledMeta`]).
pub struct SledAccounts {
    meta: Arc<SledMeta>,
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
    /// The account trees in an open database.
    pub fn with_meta(meta: Arc<SledMeta>) -> Result<Self, StoreError> {
        Ok(Self { meta })
    }

    /// A store in a temporary database, removed when dropped (tests and benchmarks).
    pub fn temporary() -> Result<Self, StoreError> {
        Self::with_meta(SledMeta::temporary()?)
    }

    fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.meta.tree(name)
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
                let changed = serde_json::from_slice::<T>(old).and_then(|mut v| {
                    f(&mut v);
                    serde_json::to_vec(&v)
                });
                match changed {
                    Ok(bytes) => Some(bytes),
                    Err(e) => {
                        failure = Some(e.to_string());
                        Some(old.to_vec())
                    }
                }
            })
            .map_err(meta_err)?;
        if let Some(why) = failure {
            let key = key.to_owned();
            return Err(StoreError::Unreadable { key, why });
        }
        updated.map(|v| decode(key.as_bytes(), &v)).transpose()
    }

    /// The next audit sequence number (increasing across restarts: sled persists the counter).
    fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.meta.db()?.generate_id().map_err(meta_err)? + 1)
    }

    /// The audit record to store, with its sequence number.
    fn sealed(&self, audit: &AuditEntry) -> Result<(u64, Vec<u8>), StoreError> {
        let seq = self.next_seq()?;
        let entry = AuditEntry {
            seq,
            ..audit.clone()
        };
        Ok((seq, encode(&entry)?))
    }

    /// Runs `f` on `tree` and stores `audit` beside its change, in one transaction; `f` says
    /// whether it changed anything (no change, no record).
    fn audited<T>(
        &self,
        tree: &sled::Tree,
        audit: &AuditEntry,
        f: impl Fn(&Tx) -> TxResult<(T, bool)>,
    ) -> Result<T, StoreError> {
        let (seq, entry) = self.sealed(audit)?;
        (tree, &self.tree("audit")?)
            .transaction(|(t, a)| {
                let (out, changed) = f(t)?;
                if changed {
                    a.insert(&seq.to_be_bytes(), entry.as_slice())?;
                }
                Ok(out)
            })
            .map_err(tx_err)
    }
}

type Tx = sled::transaction::TransactionalTree;
type TxResult<T> = Result<T, ConflictableTransactionError<String>>;

fn tx_get<T: DeserializeOwned>(t: &Tx, key: &str) -> TxResult<Option<T>> {
    match t.get(key)? {
        // The key is left out: in the token tree it is a token's hash.
        Some(v) => serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| abort(format!("unreadable record: {e}"))),
        None => Ok(None),
    }
}

fn tx_put<T: Serialize>(t: &Tx, key: &str, value: &T) -> TxResult<()> {
    t.insert(key.as_bytes(), serde_json::to_vec(value).map_err(abort)?)?;
    Ok(())
}

/// A token record that cannot be read is reported without its key (the token's hash).
fn hide_key(e: StoreError) -> StoreError {
    match e {
        StoreError::Unreadable { why, .. } => StoreError::Unreadable {
            key: "a token record".into(),
            why,
        },
        e => e,
    }
}

// sled's reads and writes go to its page cache and log in memory, so they run inline; only
// `flush` waits for the disk.
#[async_trait]
impl AccountStore for SledAccounts {
    async fn user(&self, login: &str) -> Result<Option<User>, StoreError> {
        Self::get(&self.tree("users")?, login)
    }

    async fn users(&self) -> Result<Vec<User>, StoreError> {
        Self::all(&self.tree("users")?)
    }

    async fn create_user(&self, user: &User, audit: &AuditEntry) -> Result<bool, StoreError> {
        self.audited(&self.tree("users")?, audit, |t| {
            if tx_get::<User>(t, &user.login)?.is_some() {
                return Ok((false, false));
            }
            tx_put(t, &user.login, user)?;
            Ok((true, true))
        })
    }

    async fn change_user(
        &self,
        login: &str,
        change: &UserChange,
        audit: &AuditEntry,
    ) -> Result<Option<User>, StoreError> {
        self.audited(&self.tree("users")?, audit, |t| {
            let Some(mut user) = tx_get::<User>(t, login)? else {
                return Ok((None, false));
            };
            change.apply(&mut user);
            tx_put(t, login, &user)?;
            Ok((Some(user), true))
        })
    }

    async fn team(&self, name: &str) -> Result<Option<Team>, StoreError> {
        Self::get(&self.tree("teams")?, name)
    }

    async fn teams(&self) -> Result<Vec<Team>, StoreError> {
        Self::all(&self.tree("teams")?)
    }

    async fn create_team(&self, team: &Team, audit: &AuditEntry) -> Result<bool, StoreError> {
        self.audited(&self.tree("teams")?, audit, |t| {
            if tx_get::<Team>(t, &team.name)?.is_some() {
                return Ok((false, false));
            }
            tx_put(t, &team.name, team)?;
            Ok((true, true))
        })
    }

    async fn set_member(
        &self,
        team: &str,
        login: &str,
        member: bool,
        audit: &AuditEntry,
    ) -> Result<Option<Team>, StoreError> {
        self.audited(&self.tree("teams")?, audit, |t| {
            let Some(mut found) = tx_get::<Team>(t, team)? else {
                return Ok((None, false));
            };
            let changed = if member {
                found.members.insert(login.to_owned())
            } else {
                found.members.remove(login)
            };
            tx_put(t, team, &found)?;
            Ok((Some(found), changed))
        })
    }

    async fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        Self::all(&self.tree("grants")?)
    }

    async fn add_grant(&self, grant: &Grant, audit: &AuditEntry) -> Result<(), StoreError> {
        self.audited(&self.tree("grants")?, audit, |t| {
            if tx_get::<Grant>(t, &grant.id)?.is_some() {
                return Err(abort(format!("grant id {} exists", grant.id)));
            }
            tx_put(t, &grant.id, grant)?;
            Ok(((), true))
        })
    }

    async fn remove_grant(
        &self,
        id: &str,
        audit: &AuditEntry,
    ) -> Result<Option<Grant>, StoreError> {
        self.audited(&self.tree("grants")?, audit, |t| {
            let found = tx_get::<Grant>(t, id)?;
            if found.is_some() {
                t.remove(id.as_bytes())?;
            }
            let changed = found.is_some();
            Ok((found, changed))
        })
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        Self::get(&self.tree("tokens")?, hash).map_err(hide_key)
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        Self::all(&self.tree("tokens")?).map_err(hide_key)
    }

    async fn create_token(
        &self,
        token: &TokenRecord,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let value = encode(token)?;
        let (seq, entry) = self.sealed(audit)?;
        (
            &self.tree("tokens")?,
            &self.tree("token_ids")?,
            &self.tree("audit")?,
        )
            .transaction(|(tokens, ids, a)| {
                if ids.get(&token.id)?.is_some() || tokens.get(&token.hash)?.is_some() {
                    return Err(abort(format!("token {} exists", token.id)));
                }
                tokens.insert(token.hash.as_bytes(), value.as_slice())?;
                ids.insert(token.id.as_bytes(), token.hash.as_bytes())?;
                a.insert(&seq.to_be_bytes(), entry.as_slice())?;
                Ok(())
            })
            .map_err(tx_err)
    }

    async fn revoke_token(
        &self,
        id: &str,
        at_ms: u64,
        audit: &AuditEntry,
    ) -> Result<Revocation, StoreError> {
        let Some(hash) = self.tree("token_ids")?.get(id).map_err(meta_err)? else {
            return Ok(Revocation::Unknown);
        };
        let hash = String::from_utf8_lossy(&hash).into_owned();
        self.audited(&self.tree("tokens")?, audit, |t| {
            match tx_get::<TokenRecord>(t, &hash)? {
                None => Ok((Revocation::Unknown, false)),
                Some(token) if token.revoked_ms.is_some() => {
                    Ok((Revocation::AlreadyRevoked(token), false))
                }
                Some(mut token) => {
                    token.revoked_ms = Some(at_ms);
                    tx_put(t, &hash, &token)?;
                    Ok((Revocation::Revoked(token), true))
                }
            }
        })
    }

    async fn touch_tokens(&self, used: &[(String, u64)]) -> Result<(), StoreError> {
        for (id, at) in used {
            let Some(hash) = self.tree("token_ids")?.get(id).map_err(meta_err)? else {
                continue;
            };
            let hash = String::from_utf8_lossy(&hash).into_owned();
            Self::change(&self.tree("tokens")?, &hash, |t: &mut TokenRecord| {
                t.used_at(*at);
            })
            .map_err(hide_key)?;
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
        // One process owns the database and bootstraps before it serves, so nothing can add
        // an admin between this scan and the transaction.
        let users: Vec<User> = Self::all(&self.tree("users")?)?;
        let tokens: Vec<TokenRecord> = Self::all(&self.tree("tokens")?).map_err(hide_key)?;
        if has_working_admin(&users, &tokens, now_ms) {
            return Ok(false);
        }
        let (u, t) = (encode(user)?, encode(token)?);
        let entries = audit
            .iter()
            .map(|e| self.sealed(e))
            .collect::<Result<Vec<_>, _>>()?;
        (
            &self.tree("users")?,
            &self.tree("tokens")?,
            &self.tree("token_ids")?,
            &self.tree("audit")?,
        )
            .transaction(|(users, tokens, ids, a)| {
                if users.get(&user.login)?.is_some() {
                    return Ok(false);
                }
                users.insert(user.login.as_bytes(), u.as_slice())?;
                tokens.insert(token.hash.as_bytes(), t.as_slice())?;
                ids.insert(token.id.as_bytes(), token.hash.as_bytes())?;
                for (seq, entry) in &entries {
                    a.insert(&seq.to_be_bytes(), entry.as_slice())?;
                }
                Ok(true)
            })
            .map_err(tx_err)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        let (seq, bytes) = self.sealed(entry)?;
        self.tree("audit")?
            .insert(seq.to_be_bytes(), bytes)
            .map_err(meta_err)?;
        Ok(seq)
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let end = query.before_seq.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        for item in self.tree("audit")?.range(..end.to_be_bytes()).rev() {
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
        self.meta.db()?.flush_async().await.map_err(meta_err)?;
        Ok(())
    }
}

mod packages;

#[cfg(test)]
mod tests;
