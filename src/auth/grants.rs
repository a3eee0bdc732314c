//! Grant resolution: the [`Identity`] a token or a principal resolves to (its user or team,
//! the grants that reach it, the token's narrowing) and the decision whether it may do
//! something on a registry and a crate.
//!
//! The rule this module keeps: decisions are pure functions of an identity and the time, so
//! an identity can be cached and still expire on time.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::names::{CrateGlob, CrateName};
use crate::store::{Grant, Permission, Subject, Team, TokenRecord, TokenScope, User};

/// Who a request acts as, with everything needed to decide what it may do.
#[derive(Debug)]
pub struct Identity {
    /// The user's login (a token's owner, or a principal that names a user).
    pub user: Option<Arc<str>>,
    /// The principal of a client certificate.
    pub principal: Option<Arc<str>>,
    pub token_id: Option<Arc<str>>,
    pub(super) token_expires_ms: Option<u64>,
    admin: bool,
    grants: Vec<Grant>,
    scopes: Option<Vec<TokenScope>>,
    /// When this process last noted the token as used (see `Auth::note_use`).
    pub(super) noted_use_ms: AtomicU64,
}

/// Why a request may not do what it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    NoToken,
    Malformed(&'static str),
    Unknown,
    Expired { at_ms: u64 },
    Revoked { at_ms: u64 },
    Disabled { login: String },
    Insufficient { lacks: String },
}

impl Denial {
    /// The metric label of the reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoToken => "no_token",
            Self::Malformed(_) => "malformed",
            Self::Unknown => "unknown",
            Self::Expired { .. } => "expired",
            Self::Revoked { .. } => "revoked",
            Self::Disabled { .. } => "disabled",
            Self::Insufficient { .. } => "insufficient",
        }
    }

    /// What the client is told; never the token.
    pub fn detail(&self) -> String {
        match self {
            Self::NoToken => "this registry requires a token".to_owned(),
            Self::Malformed(why) => (*why).to_owned(),
            Self::Unknown => {
                "the token is unknown to this cratedock (mistyped, or deleted)".to_owned()
            }
            Self::Expired { at_ms } => format!("the token expired on {}", rfc3339(*at_ms)),
            Self::Revoked { at_ms } => format!("the token was revoked on {}", rfc3339(*at_ms)),
            Self::Disabled { login } => format!("the token's user `{login}` is disabled"),
            Self::Insufficient { lacks } => format!("the token lacks {lacks}"),
        }
    }

    /// The denial of `permission` on `registry` (and `krate`).
    pub fn lacks(permission: Permission, registry: &str, krate: Option<&CrateName>) -> Self {
        let on = match krate {
            Some(k) => format!("{registry}/{k}"),
            None => registry.to_owned(),
        };
        Self::Insufficient {
            lacks: format!("`{}` on `{on}`", permission.as_str()),
        }
    }
}

/// A time in milliseconds since the epoch as RFC 3339 UTC, to the second.
pub fn rfc3339(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

fn registry_ok(scope: &Option<String>, registry: &str) -> bool {
    scope.as_deref().is_none_or(|r| r == registry)
}

impl Identity {
    /// A user, reached by a token (`token`) or by a principal that names it.
    pub fn of_user(
        user: &User,
        teams: &[Team],
        grants: &[Grant],
        token: Option<&TokenRecord>,
        principal: Option<&str>,
    ) -> Self {
        let teams: Vec<&str> = teams
            .iter()
            .filter(|t| t.members.contains(&user.login))
            .map(|t| t.name.as_str())
            .collect();
        let grants = grants
            .iter()
            .filter(|g| match &g.subject {
                Subject::User(u) => *u == user.login,
                Subject::Team(t) => teams.contains(&t.as_str()),
            })
            .cloned()
            .collect();
        Self {
            user: Some(Arc::from(user.login.as_str())),
            principal: principal.map(Arc::from),
            token_id: token.map(|t| Arc::from(t.id.as_str())),
            token_expires_ms: token.and_then(|t| t.expires_ms),
            admin: user.admin,
            grants,
            scopes: token.and_then(|t| t.scopes.clone()),
            noted_use_ms: AtomicU64::new(0),
        }
    }

    /// A principal that names a team: the team's grants.
    pub fn of_team(team: &Team, grants: &[Grant], principal: &str) -> Self {
        let grants = grants
            .iter()
            .filter(|g| matches!(&g.subject, Subject::Team(t) if *t == team.name))
            .cloned()
            .collect();
        Self {
            user: None,
            principal: Some(Arc::from(principal)),
            token_id: None,
            token_expires_ms: None,
            admin: false,
            grants,
            scopes: None,
            noted_use_ms: AtomicU64::new(0),
        }
    }

    /// Whether it may do `permission` on `registry`, on `krate` (or, for `None`, on some
    /// crate of the registry that both the token and the grants allow), at `now_ms`.
    pub fn allows(
        &self,
        permission: Permission,
        registry: &str,
        krate: Option<&CrateName>,
        now_ms: u64,
    ) -> bool {
        match (krate, &self.scopes) {
            (Some(k), _) => {
                let matches = |g: &CrateGlob| g.matches(k);
                self.narrowed(permission, registry, matches)
                    && self.granted(permission, registry, matches, now_ms)
            }
            (None, None) => self.granted(permission, registry, |_| true, now_ms),
            (None, Some(scopes)) => scopes
                .iter()
                .filter(|s| s.permission.implies(permission) && registry_ok(&s.registry, registry))
                .any(|s| self.granted(permission, registry, |g| g.overlaps(&s.crates), now_ms)),
        }
    }

    /// Whether it may do `permission` on every crate of `registry`: then which crate a request
    /// names does not matter, and it need not be read.
    pub fn allows_every_crate(&self, permission: Permission, registry: &str, now_ms: u64) -> bool {
        self.narrowed(permission, registry, CrateGlob::is_any)
            && self.granted(permission, registry, CrateGlob::is_any, now_ms)
    }

    /// Whether the token's narrowing (if any) allows it.
    fn narrowed(
        &self,
        permission: Permission,
        registry: &str,
        crates: impl Fn(&CrateGlob) -> bool,
    ) -> bool {
        self.scopes.as_ref().is_none_or(|scopes| {
            scopes.iter().any(|s| {
                s.permission.implies(permission)
                    && registry_ok(&s.registry, registry)
                    && crates(&s.crates)
            })
        })
    }

    /// Whether the admin flag or an unexpired grant allows it.
    fn granted(
        &self,
        permission: Permission,
        registry: &str,
        crates: impl Fn(&CrateGlob) -> bool,
        now_ms: u64,
    ) -> bool {
        self.admin
            || self.grants.iter().any(|g| {
                g.expires_ms.is_none_or(|e| now_ms < e)
                    && g.permission.implies(permission)
                    && registry_ok(&g.registry, registry)
                    && crates(&g.crates)
            })
    }

    /// Whether it may use the admin API: the admin flag, or `admin` on every registry and
    /// crate, and a token not narrowed below that.
    pub fn is_admin(&self, now_ms: u64) -> bool {
        let everything = |p: Permission, r: &Option<String>, c: &CrateGlob| {
            p == Permission::Admin && r.is_none() && c.is_any()
        };
        let narrowed = self.scopes.as_ref().is_none_or(|scopes| {
            scopes
                .iter()
                .any(|s| everything(s.permission, &s.registry, &s.crates))
        });
        narrowed
            && (self.admin
                || self.grants.iter().any(|g| {
                    g.expires_ms.is_none_or(|e| now_ms < e)
                        && everything(g.permission, &g.registry, &g.crates)
                }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::accounts_fixtures::user;

    fn grant(subject: Subject, p: Permission, registry: Option<&str>, glob: &str) -> Grant {
        Grant {
            id: "g".into(),
            subject,
            permission: p,
            registry: registry.map(Into::into),
            crates: CrateGlob::new(glob).unwrap(),
            expires_ms: None,
            created_ms: 0,
        }
    }

    fn team(name: &str, members: &[&str]) -> Team {
        Team {
            name: name.into(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            created_ms: 0,
        }
    }

    fn name(s: &str) -> CrateName {
        CrateName::new(s).unwrap()
    }

    use Permission::*;

    #[test]
    fn user_and_team_grants_combine_and_scope_by_registry_and_crate() {
        let grants = [
            grant(Subject::User("alice".into()), Read, Some("crates-io"), "*"),
            grant(
                Subject::Team("acme".into()),
                Publish,
                Some("internal"),
                "acme-*",
            ),
            grant(Subject::Team("other".into()), Admin, None, "*"),
        ];
        let teams = [team("acme", &["alice"]), team("other", &["bob"])];
        let alice = Identity::of_user(&user("alice", false), &teams, &grants, None, None);
        assert!(alice.allows(Read, "crates-io", Some(&name("serde")), 0));
        assert!(alice.allows(Read, "crates-io", None, 0));
        assert!(!alice.allows(Publish, "crates-io", Some(&name("serde")), 0));
        // Publish implies read, on its own scope only.
        assert!(alice.allows(Read, "internal", Some(&name("acme-core")), 0));
        assert!(alice.allows(Publish, "internal", Some(&name("ACME_core")), 0));
        assert!(!alice.allows(Read, "internal", Some(&name("secret")), 0));
        assert!(
            alice.allows(Read, "internal", None, 0),
            "some pattern of it"
        );
        assert!(!alice.allows(Yank, "internal", Some(&name("acme-core")), 0));
        assert!(!alice.is_admin(0));
        // A global admin grant is admin everywhere, the admin API included.
        let bob = Identity::of_user(&user("bob", false), &teams, &grants, None, None);
        assert!(bob.allows(Yank, "internal", Some(&name("x")), 0));
        assert!(bob.is_admin(0));
        // A registry admin grant is not the admin API.
        let reg_admin = [grant(
            Subject::User("c".into()),
            Admin,
            Some("internal"),
            "*",
        )];
        let c = Identity::of_user(&user("c", false), &[], &reg_admin, None, None);
        assert!(c.allows(Publish, "internal", Some(&name("x")), 0));
        assert!(!c.allows(Read, "crates-io", None, 0));
        assert!(!c.is_admin(0));
    }

    #[test]
    fn expired_grants_stop_counting_and_the_admin_flag_allows_all() {
        let mut g = grant(Subject::User("dave".into()), Read, None, "*");
        g.expires_ms = Some(1_000);
        let dave = Identity::of_user(&user("dave", false), &[], &[g], None, None);
        assert!(dave.allows(Read, "crates-io", None, 999));
        assert!(!dave.allows(Read, "crates-io", None, 1_000));
        let root = Identity::of_user(&user("root", true), &[], &[], None, None);
        assert!(root.allows(Admin, "anything", Some(&name("x")), 0));
        assert!(root.is_admin(0));
    }

    #[test]
    fn a_narrowed_token_gets_the_intersection() {
        let token = TokenRecord {
            id: "t".into(),
            hash: "h".into(),
            name: "ci".into(),
            user: "root".into(),
            scopes: Some(vec![TokenScope {
                permission: Read,
                registry: None,
                crates: CrateGlob::any(),
            }]),
            expires_ms: None,
            revoked_ms: None,
            created_ms: 0,
            last_used_ms: None,
        };
        let ci = Identity::of_user(&user("root", true), &[], &[], Some(&token), None);
        assert!(ci.allows(Read, "internal", Some(&name("x")), 0));
        assert!(!ci.allows(Publish, "internal", Some(&name("x")), 0));
        assert!(
            !ci.is_admin(0),
            "a read-only token of an admin is not an admin"
        );
        // For the registry as a whole, the narrowing and the grants must meet on some crate.
        let mut acme = token.clone();
        acme.scopes = Some(vec![TokenScope {
            permission: Read,
            registry: None,
            crates: CrateGlob::new("acme-*").unwrap(),
        }]);
        let serde_only = [grant(Subject::User("s".into()), Read, None, "serde")];
        let s = Identity::of_user(&user("s", false), &[], &serde_only, Some(&acme), None);
        assert!(!s.allows(Read, "internal", None, 0));
        let acme_grant = [grant(Subject::User("s".into()), Read, None, "acme-core")];
        let s = Identity::of_user(&user("s", false), &[], &acme_grant, Some(&acme), None);
        assert!(s.allows(Read, "internal", None, 0));
        // The narrowing cannot widen: a user without grants gets nothing.
        let nobody = Identity::of_user(&user("n", false), &[], &[], Some(&token), None);
        assert!(!nobody.allows(Read, "internal", None, 0));
    }

    #[test]
    fn a_principal_naming_a_team_gets_the_teams_grants() {
        let grants = [
            grant(Subject::Team("farm".into()), Read, Some("crates-io"), "*"),
            grant(Subject::User("farm".into()), Admin, None, "*"),
        ];
        let farm = Identity::of_team(&team("farm", &[]), &grants, "farm");
        assert!(farm.allows(Read, "crates-io", Some(&name("serde")), 0));
        assert!(!farm.allows(Read, "internal", None, 0));
        assert!(!farm.is_admin(0));
    }

    #[test]
    fn denials_name_what_is_wrong() {
        assert_eq!(
            Denial::lacks(Publish, "internal", Some(&name("acme-core"))).detail(),
            "the token lacks `publish` on `internal/acme-core`"
        );
        assert_eq!(
            Denial::Expired { at_ms: 86_400_000 }.detail(),
            "the token expired on 1970-01-02T00:00:00Z"
        );
    }
}
