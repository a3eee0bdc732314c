//! Admin work on accounts: create users and teams, change membership, grant and revoke,
//! issue and revoke tokens, read the audit log. Input is checked here (one message per
//! problem, nothing written when any is found); every change appends an audit record and makes
//! cached identities stale.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use super::input::parse_duration;
use super::input::{email, expiry, shown, text};
use super::{Auth, PlainToken, token::random_id};
use crate::names::{CrateGlob, Handle};
use crate::store::{
    Actor, AuditEntry, AuditQuery, Grant, Permission, Revocation, StoreError, Subject, Team,
    TokenRecord, TokenScope, User, UserChange, now_ms,
};

const MAX_TEXT: usize = 200;
/// Audit log pages hold at most this many records.
pub const MAX_AUDIT_PAGE: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(super) fn invalid<T>(msg: impl Into<String>) -> Result<T, AdminError> {
    Err(AdminError::Invalid(msg.into()))
}

/// Who makes a change and from where, for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub actor: Actor,
    pub source: Option<String>,
}

impl Context {
    /// cratedock itself (the first admin at start-up).
    pub fn system() -> Self {
        Self {
            actor: Actor {
                principal: Some("cratedock".into()),
                ..Actor::default()
            },
            source: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub login: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    pub permission: Permission,
    /// A registry name, or `*` for every registry.
    pub registry: String,
    #[serde(default = "CrateGlob::any")]
    pub crates: CrateGlob,
    /// A duration from now: `90m`, `12h`, `30d`, `2w`.
    #[serde(default)]
    pub expires_in: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub user: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Narrows the token to `read` on every registry.
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub scopes: Option<Vec<TokenScope>>,
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// A token as listed: everything but its hash.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub user: String,
    pub scopes: Option<Vec<TokenScope>>,
    pub expires_ms: Option<u64>,
    pub revoked_ms: Option<u64>,
    pub created_ms: u64,
    pub last_used_ms: Option<u64>,
}

impl From<TokenRecord> for TokenView {
    fn from(t: TokenRecord) -> Self {
        Self {
            id: t.id,
            name: t.name,
            user: t.user,
            scopes: t.scopes,
            expires_ms: t.expires_ms,
            revoked_ms: t.revoked_ms,
            created_ms: t.created_ms,
            last_used_ms: t.last_used_ms,
        }
    }
}

/// An audit record of `action` by `ctx` on `target`, with the outcome `ok` (the store keeps
/// it only if the change happens).
pub fn entry(ctx: &Context, action: &str, registry: Option<&str>, target: &str) -> AuditEntry {
    AuditEntry {
        seq: 0,
        time_ms: now_ms(),
        actor: ctx.actor.clone(),
        source: ctx.source.clone(),
        action: action.to_owned(),
        registry: registry.map(str::to_owned),
        krate: None,
        target: target.to_owned(),
        outcome: "ok".to_owned(),
    }
}

impl Auth {
    /// Appends the record of a refused attempt (a change has its record stored with it).
    pub async fn record_refusal(
        &self,
        ctx: &Context,
        action: &str,
        target: &str,
        why: &str,
    ) -> Result<u64, StoreError> {
        let mut e = entry(ctx, action, None, target);
        e.outcome = format!("denied: {why}");
        self.store.append_audit(&e).await
    }

    async fn existing_user(&self, login: &str) -> Result<User, AdminError> {
        self.store
            .user(login)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no user `{}`", shown(login))))
    }

    fn registry(&self, name: Option<&str>) -> Result<Option<String>, AdminError> {
        match name {
            None | Some("*") => Ok(None),
            Some(r) if self.registries.contains(r) => Ok(Some(r.to_owned())),
            Some(r) => invalid(format!(
                "no registry `{}` is configured (known: {}; `*` means all)",
                shown(r),
                self.registries
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    pub async fn create_user(&self, ctx: &Context, new: NewUser) -> Result<User, AdminError> {
        let login =
            Handle::new(&new.login, "login").map_err(|e| AdminError::Invalid(e.to_string()))?;
        let user = User {
            login: login.to_string(),
            name: text("the name", &new.name, MAX_TEXT)?,
            email: email(&new.email)?,
            admin: new.admin,
            disabled: false,
            created_ms: now_ms(),
        };
        let _serial = self.admin_lock.lock().await;
        if self.store.team(&user.login).await?.is_some() {
            return Err(AdminError::Conflict(format!(
                "`{login}` is a team's name; a principal must name one user or one team"
            )));
        }
        let audit = entry(ctx, "user.create", None, &user.login);
        if !self.store.create_user(&user, &audit).await? {
            return Err(AdminError::Conflict(format!("a user `{login}` exists")));
        }
        self.changed();
        Ok(user)
    }

    pub async fn change_user(
        &self,
        ctx: &Context,
        login: &str,
        mut change: UserChange,
    ) -> Result<User, AdminError> {
        if change == UserChange::default() {
            return invalid("nothing to change: give name, email, admin or disabled");
        }
        if let Some(n) = &change.name {
            change.name = Some(text("the name", n, MAX_TEXT)?);
        }
        if let Some(e) = &change.email {
            change.email = Some(email(e)?);
        }
        // Serialized, so that two admins cannot take away each other's rights at once.
        let _serial = self.admin_lock.lock().await;
        let user = self.existing_user(login).await?;
        let loses_admin = change.disabled == Some(true) || change.admin == Some(false);
        if loses_admin && user.admin && !user.disabled {
            let others = self.store.users().await?;
            if !others
                .iter()
                .any(|u| u.admin && !u.disabled && u.login != login)
            {
                return Err(AdminError::Conflict(format!(
                    "`{login}` is the only enabled admin; make another admin first"
                )));
            }
        }
        let action = match change.disabled {
            Some(true) => "user.disable",
            Some(false) => "user.enable",
            None => "user.change",
        };
        let audit = entry(ctx, action, None, login);
        let Some(user) = self.store.change_user(login, &change, &audit).await? else {
            return Err(AdminError::NotFound(format!("no user `{}`", shown(login))));
        };
        self.changed();
        Ok(user)
    }

    pub async fn create_team(&self, ctx: &Context, new: NewTeam) -> Result<Team, AdminError> {
        let name =
            Handle::new(&new.name, "team name").map_err(|e| AdminError::Invalid(e.to_string()))?;
        let _serial = self.admin_lock.lock().await;
        let mut members = BTreeSet::new();
        for m in &new.members {
            members.insert(self.existing_user(m).await?.login);
        }
        if self.store.user(name.as_str()).await?.is_some() {
            return Err(AdminError::Conflict(format!(
                "`{name}` is a user's login; a principal must name one user or one team"
            )));
        }
        let team = Team {
            name: name.to_string(),
            members,
            created_ms: now_ms(),
        };
        let audit = entry(ctx, "team.create", None, &team.name);
        if !self.store.create_team(&team, &audit).await? {
            return Err(AdminError::Conflict(format!("a team `{name}` exists")));
        }
        self.changed();
        Ok(team)
    }

    pub async fn set_member(
        &self,
        ctx: &Context,
        team: &str,
        login: &str,
        member: bool,
    ) -> Result<Team, AdminError> {
        let _serial = self.admin_lock.lock().await;
        let Some(found) = self.store.team(team).await? else {
            return Err(AdminError::NotFound(format!("no team `{}`", shown(team))));
        };
        if member {
            self.existing_user(login).await?;
        } else if !found.members.contains(login) {
            return Err(AdminError::NotFound(format!(
                "`{}` is not a member of `{}`",
                shown(login),
                shown(team)
            )));
        }
        let action = if member {
            "team.add_member"
        } else {
            "team.remove_member"
        };
        let audit = entry(ctx, action, None, &format!("{team}/{login}"));
        let Some(t) = self.store.set_member(team, login, member, &audit).await? else {
            return Err(AdminError::NotFound(format!("no team `{}`", shown(team))));
        };
        self.changed();
        Ok(t)
    }

    pub async fn add_grant(&self, ctx: &Context, new: NewGrant) -> Result<Grant, AdminError> {
        let _serial = self.admin_lock.lock().await;
        let subject = match (new.user, new.team) {
            (Some(u), None) => Subject::User(self.existing_user(&u).await?.login),
            (None, Some(t)) => match self.store.team(&t).await? {
                Some(team) => Subject::Team(team.name),
                None => return Err(AdminError::NotFound(format!("no team `{}`", shown(&t)))),
            },
            _ => return invalid("a grant names exactly one of `user` or `team`"),
        };
        let grant = Grant {
            id: random_id(6),
            subject,
            permission: new.permission,
            registry: self.registry(Some(&new.registry))?,
            crates: new.crates,
            expires_ms: expiry(new.expires_in.as_deref())?,
            created_ms: now_ms(),
        };
        let target = format!("{} {}", grant.id, describe(&grant));
        let audit = entry(ctx, "grant.add", grant.registry.as_deref(), &target);
        self.store.add_grant(&grant, &audit).await?;
        self.changed();
        Ok(grant)
    }

    pub async fn remove_grant(&self, ctx: &Context, id: &str) -> Result<Grant, AdminError> {
        let _serial = self.admin_lock.lock().await;
        let grants = self.store.grants().await?;
        let Some(grant) = grants.into_iter().find(|g| g.id == id) else {
            return Err(AdminError::NotFound(format!("no grant `{}`", shown(id))));
        };
        let target = format!("{} {}", grant.id, describe(&grant));
        let audit = entry(ctx, "grant.remove", grant.registry.as_deref(), &target);
        let Some(grant) = self.store.remove_grant(id, &audit).await? else {
            return Err(AdminError::NotFound(format!("no grant `{}`", shown(id))));
        };
        self.changed();
        Ok(grant)
    }

    /// Issues a token; the plain token is returned once and never stored.
    pub async fn create_token(
        &self,
        ctx: &Context,
        new: NewToken,
    ) -> Result<(TokenRecord, PlainToken), AdminError> {
        let scopes = match (new.read_only, new.scopes) {
            (true, Some(_)) => return invalid("give `read_only` or `scopes`, not both"),
            (true, None) => Some(vec![TokenScope {
                permission: Permission::Read,
                registry: None,
                crates: CrateGlob::any(),
            }]),
            (false, Some(s)) if s.is_empty() => return invalid("`scopes` is empty"),
            (false, s) => s,
        };
        for s in scopes.iter().flatten() {
            self.registry(s.registry.as_deref())?;
        }
        let name = text("the token name", new.name.as_deref().unwrap_or(""), 100)?;
        let expires_ms = expiry(new.expires_in.as_deref())?;
        let _serial = self.admin_lock.lock().await;
        let user = self.existing_user(&new.user).await?;
        if user.disabled {
            return invalid(format!("user `{}` is disabled", user.login));
        }
        let token = PlainToken::generate();
        let record = TokenRecord {
            id: random_id(8),
            hash: token.hash().hex(),
            name,
            user: user.login,
            scopes,
            expires_ms,
            revoked_ms: None,
            created_ms: now_ms(),
            last_used_ms: None,
        };
        let target = format!("{} of {}", record.id, record.user);
        let audit = entry(ctx, "token.create", None, &target);
        self.store.create_token(&record, &audit).await?;
        self.changed();
        Ok((record, token))
    }

    pub async fn revoke_token(&self, ctx: &Context, id: &str) -> Result<TokenRecord, AdminError> {
        let audit = entry(ctx, "token.revoke", None, id);
        match self.store.revoke_token(id, now_ms(), &audit).await? {
            Revocation::Revoked(t) => {
                self.changed();
                Ok(t)
            }
            Revocation::AlreadyRevoked(t) => Err(AdminError::Conflict(format!(
                "token `{}` was revoked on {}",
                t.id,
                super::rfc3339(t.revoked_ms.unwrap_or_default())
            ))),
            Revocation::Unknown => Err(AdminError::NotFound(format!("no token `{}`", shown(id)))),
        }
    }

    pub async fn tokens(&self, user: Option<&str>) -> Result<Vec<TokenView>, AdminError> {
        let mut all = self.store.tokens().await?;
        all.retain(|t| user.is_none_or(|u| t.user == u));
        all.sort_by_key(|t| t.created_ms);
        Ok(all.into_iter().map(TokenView::from).collect())
    }

    pub async fn audit_log(&self, mut query: AuditQuery) -> Result<Vec<AuditEntry>, AdminError> {
        query.limit = query.limit.clamp(1, MAX_AUDIT_PAGE);
        Ok(self.store.audit(&query).await?)
    }
}

/// A grant in words, for the audit log: `read on crates-io/* to team:ci`.
fn describe(g: &Grant) -> String {
    let to = match &g.subject {
        Subject::User(u) => format!("user:{u}"),
        Subject::Team(t) => format!("team:{t}"),
    };
    let registry = g.registry.as_deref().unwrap_or("*");
    format!(
        "{} on {registry}/{} to {to}",
        g.permission.as_str(),
        g.crates
    )
}
