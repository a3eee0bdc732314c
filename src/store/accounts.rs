//! Accounts: users, teams, grants, token records and the audit log, behind the
//! [`AccountStore`] trait.
//!
//! The rule this module keeps: the records are plain data (what a permission means is decided
//! in `auth`), a token is stored only as its hash, each change that must be atomic is one call,
//! and the audit log has no call that edits or deletes a record.

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::names::CrateGlob;

/// What a grant allows. `publish` and `yank` include `read` on the same scope; `admin` on a
/// registry includes the others there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Publish,
    Yank,
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 4] = [Self::Read, Self::Publish, Self::Yank, Self::Admin];

    /// Whether holding `self` allows what `wanted` allows.
    pub fn implies(self, wanted: Permission) -> bool {
        self == wanted || self == Self::Admin || wanted == Self::Read
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Publish => "publish",
            Self::Yank => "yank",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a permission (read, publish, yank, admin)"))
    }
}

/// Who a grant is given to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    User(String),
    Team(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub login: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: String,
    /// May do everything, the admin API included.
    pub admin: bool,
    /// A disabled user's tokens stop working; the record stays for the audit log.
    pub disabled: bool,
    pub created_ms: u64,
}

/// A change to a user; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    pub name: Option<String>,
    pub email: Option<String>,
    pub admin: Option<bool>,
    pub disabled: Option<bool>,
}

impl UserChange {
    /// The change made to `user`.
    pub fn apply(&self, user: &mut User) {
        if let Some(n) = &self.name {
            user.name.clone_from(n);
        }
        if let Some(e) = &self.email {
            user.email.clone_from(e);
        }
        if let Some(a) = self.admin {
            user.admin = a;
        }
        if let Some(d) = self.disabled {
            user.disabled = d;
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    pub name: String,
    pub members: BTreeSet<String>,
    pub created_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub subject: Subject,
    pub permission: Permission,
    /// `None`: every registry.
    pub registry: Option<String>,
    pub crates: CrateGlob,
    pub expires_ms: Option<u64>,
    pub created_ms: u64,
}

/// A narrowing of a token to part of its owner's permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenScope {
    pub permission: Permission,
    /// `None`: every registry.
    #[serde(default)]
    pub registry: Option<String>,
    #[serde(default = "CrateGlob::any")]
    pub crates: CrateGlob,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// Lowercase hex SHA-256 of the token; the token itself is never stored.
    pub hash: String,
    pub name: String,
    pub user: String,
    /// `None`: everything the owner may do.
    pub scopes: Option<Vec<TokenScope>>,
    pub expires_ms: Option<u64>,
    pub revoked_ms: Option<u64>,
    pub created_ms: u64,
    /// Written lazily, a batch at a time (see `auth`).
    pub last_used_ms: Option<u64>,
}

/// What a revocation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    Revoked(TokenRecord),
    /// Revoked before; nothing changed.
    AlreadyRevoked(TokenRecord),
    Unknown,
}

impl TokenRecord {
    /// Moves the last-used time forward to `at_ms` (never back).
    pub fn used_at(&mut self, at_ms: u64) {
        self.last_used_ms = Some(self.last_used_ms.map_or(at_ms, |l| l.max(at_ms)));
    }
}

/// Without the hash: a token's hash is as good as the token to whoever can write the store, and
/// needs to be in no log.
impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("expires_ms", &self.expires_ms)
            .field("revoked_ms", &self.revoked_ms)
            .finish_non_exhaustive()
    }
}

/// Who did something: a user through a token, or a principal of a client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Assigned by the store when appended; increasing.
    pub seq: u64,
    pub time_ms: u64,
    pub actor: Actor,
    /// The client's address.
    pub source: Option<String>,
    /// What was done, e.g. `user.create`, `token.revoke`.
    pub action: String,
    pub registry: Option<String>,
    #[serde(rename = "crate")]
    pub krate: Option<String>,
    /// What it was done to, e.g. a login or a token id.
    pub target: String,
    /// `ok`, or `denied: ...`.
    pub outcome: String,
}

/// A filter over the audit log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// A user login or a principal.
    pub actor: Option<String>,
    /// An action, or an action prefix ending in `.` (`token.`).
    pub action: Option<String>,
    pub registry: Option<String>,
    pub krate: Option<String>,
    /// Only records older than this sequence number (the cursor of the previous page).
    pub before_seq: Option<u64>,
    pub limit: usize,
}

impl AuditQuery {
    pub fn matches(&self, e: &AuditEntry) -> bool {
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        self.since_ms.is_none_or(|s| e.time_ms >= s)
            && self.until_ms.is_none_or(|u| e.time_ms < u)
            && self.before_seq.is_none_or(|b| e.seq < b)
            && self.actor.as_deref().is_none_or(|a| {
                e.actor.user.as_deref() == Some(a) || e.actor.principal.as_deref() == Some(a)
            })
            && self
                .action
                .as_deref()
                .is_none_or(|a| match a.strip_suffix('.') {
                    Some(prefix) => e.action.split('.').next() == Some(prefix),
                    None => e.action == a,
                })
            && eq(&self.registry, e.registry.as_deref())
            && eq(&self.krate, e.krate.as_deref())
    }
}

/// Where accounts live. Reads of missing records are `Ok(None)`; a create of a record that
/// exists is `Ok(false)`, so the caller can say what collided. Every change takes the audit
/// record that describes it and stores both in one transaction, or neither: a change the audit
/// log does not show never happens. (The store assigns the record's `seq`.)
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    async fn user(&self, login: &str) -> Result<Option<User>, StoreError>;
    async fn users(&self) -> Result<Vec<User>, StoreError>;
    async fn create_user(&self, user: &User, audit: &AuditEntry) -> Result<bool, StoreError>;
    /// Applies the change; `None` (and no record) when there is no such user.
    async fn change_user(
        &self,
        login: &str,
        change: &UserChange,
        audit: &AuditEntry,
    ) -> Result<Option<User>, StoreError>;

    async fn team(&self, name: &str) -> Result<Option<Team>, StoreError>;
    async fn teams(&self) -> Result<Vec<Team>, StoreError>;
    async fn create_team(&self, team: &Team, audit: &AuditEntry) -> Result<bool, StoreError>;
    /// Adds (`member`) or removes a login; `None` (and no record) when there is no such team.
    async fn set_member(
        &self,
        team: &str,
        login: &str,
        member: bool,
        audit: &AuditEntry,
    ) -> Result<Option<Team>, StoreError>;

    async fn grants(&self) -> Result<Vec<Grant>, StoreError>;
    async fn add_grant(&self, grant: &Grant, audit: &AuditEntry) -> Result<(), StoreError>;
    async fn remove_grant(&self, id: &str, audit: &AuditEntry)
    -> Result<Option<Grant>, StoreError>;

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    async fn create_token(&self, token: &TokenRecord, audit: &AuditEntry)
    -> Result<(), StoreError>;
    /// Marks the token revoked at `at_ms` (no record unless it was revoked now).
    async fn revoke_token(
        &self,
        id: &str,
        at_ms: u64,
        audit: &AuditEntry,
    ) -> Result<Revocation, StoreError>;
    /// Moves each token's last-used time forward (never back); not audited.
    async fn touch_tokens(&self, used: &[(String, u64)]) -> Result<(), StoreError>;

    /// Creates an admin and its token, with their audit records, unless an enabled admin holds
    /// a token that is neither revoked nor expired at `now_ms`, or the login is taken
    /// (`Ok(false)`).
    async fn create_first_admin(
        &self,
        user: &User,
        token: &TokenRecord,
        now_ms: u64,
        audit: &[AuditEntry],
    ) -> Result<bool, StoreError>;

    /// Appends a record that goes with no change (a refused attempt); returns its `seq`.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StoreError>;
    /// Records matching the query, newest first, at most `query.limit`.
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;

    async fn flush(&self) -> Result<(), StoreError>;
}

/// Whether some enabled admin holds a live token: then no first admin is needed.
pub(crate) fn has_working_admin(users: &[User], tokens: &[TokenRecord], now_ms: u64) -> bool {
    users.iter().filter(|u| u.admin && !u.disabled).any(|u| {
        tokens.iter().any(|t| {
            t.user == u.login && t.revoked_ms.is_none() && t.expires_ms.is_none_or(|e| now_ms < e)
        })
    })
}

/// Records for the stores' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{AccountStore, Actor, AuditEntry, AuditQuery, TokenRecord, User};

    /// The actions the audit log holds, oldest first.
    pub(crate) async fn actions(s: &dyn AccountStore) -> Vec<String> {
        let q = AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        };
        let mut all: Vec<String> = s
            .audit(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        all.reverse();
        all
    }

    pub(crate) fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            seq: 0,
            time_ms: 1,
            actor: Actor::default(),
            source: None,
            action: action.into(),
            registry: None,
            krate: None,
            target: String::new(),
            outcome: "ok".into(),
        }
    }

    pub(crate) fn user(login: &str, admin: bool) -> User {
        User {
            login: login.into(),
            name: String::new(),
            email: String::new(),
            admin,
            disabled: false,
            created_ms: 1,
        }
    }

    /// A token of `user` whose hash is `hash-{id}`.
    pub(crate) fn token(id: &str, user: &str) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            hash: format!("hash-{id}"),
            name: "t".into(),
            user: user.into(),
            scopes: None,
            expires_ms: None,
            revoked_ms: None,
            created_ms: 1,
            last_used_ms: None,
        }
    }
}
