//! Auth: who a request is ([`Auth::authenticate`]: a token or a client certificate's
//! principal, resolved to an [`Identity`]), what it may do ([`grants`]), the admin work on
//! users, teams, grants and tokens ([`admin`]), and the first admin ([`bootstrap`]).
//!
//! The rule this module keeps: a hot request costs a hash and a memory lookup, never a store
//! read or write. Resolved identities are cached, and every change through this module makes
//! the cached ones stale at once (a generation counter); last-used times are written in
//! batches.

pub mod admin;
mod bootstrap;
mod grants;
mod input;
mod token;

pub use bootstrap::{ADMIN_TOKEN_FILE, first_admin};
pub use grants::{Denial, Identity, rfc3339};
pub use token::{Malformed, PlainToken, TOKEN_PREFIX, TokenHash, token_in_header};

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::metrics::Metrics;
use crate::store::{AccountStore, Grant, StoreError, Team, now_ms};

/// How long a token's use is noted in memory before it is noted again.
const NOTE_USE_EVERY_MS: u64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{}", .0.detail())]
    Denied(Denial),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a cache slot holds.
type Answer = Result<Arc<Identity>, Denial>;

#[derive(Clone, PartialEq, Eq)]
enum CacheKey {
    Token(TokenHash),
    Principal(Arc<str>),
}

/// A cache slot: who, as resolved in a generation. A slot of an older generation is never
/// looked up again, so an answer resolved from data that changed meanwhile is never used.
#[derive(Clone, PartialEq, Eq)]
struct Slot {
    generation: u64,
    key: CacheKey,
}

impl Hash for Slot {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match &self.key {
            // A SHA-256 is already uniform: its first 8 bytes are as good a hash as any.
            CacheKey::Token(t) => h.write_u64(u64::from_le_bytes(
                t.0[..8].try_into().expect("8 of 32 bytes"),
            )),
            CacheKey::Principal(p) => p.hash(h),
        }
        h.write_u64(self.generation);
    }
}

/// Teams and grants as of a generation: what every resolution in it reads.
struct Snapshot {
    generation: u64,
    teams: Vec<Team>,
    grants: Vec<Grant>,
}

/// The cache's hasher: a token key's bytes as they are, FNV-1a for principals (names from the
/// configuration's certificate rules, not chosen by clients). Every request with a token
/// hashes its key, so this saves a SipHash of 32 bytes per request.
struct KeyHasher(u64);

impl Default for KeyHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

pub struct Auth {
    store: Arc<dyn AccountStore>,
    registries: BTreeSet<String>,
    cache: moka::sync::Cache<Slot, Answer, BuildHasherDefault<KeyHasher>>,
    /// Bumped after every change to users, teams, grants or tokens.
    generation: AtomicU64,
    /// Held while resolving a miss: concurrent misses (all tokens at once, after a change)
    /// resolve one at a time, each finding what the others put in the cache, and share one
    /// read of the teams and grants per generation.
    resolving: tokio::sync::Mutex<Option<Arc<Snapshot>>>,
    /// Serializes admin changes, so that checks across records (the last enabled admin) hold.
    admin_lock: tokio::sync::Mutex<()>,
    /// Token id → last use, waiting to be written.
    used: Mutex<HashMap<Arc<str>, u64>>,
    metrics: Arc<Metrics>,
    /// The counter of allowed decisions, resolved once (it is counted on every request).
    allowed: prometheus::IntCounter,
}

impl Auth {
    /// `registries` are the configured names a grant may name.
    pub fn new(
        store: Arc<dyn AccountStore>,
        registries: BTreeSet<String>,
        cache_entries: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        let allowed = metrics.auth_decisions.with_label_values(&["allowed", "ok"]);
        Self {
            store,
            registries,
            cache: moka::sync::Cache::builder()
                .max_capacity(cache_entries)
                .build_with_hasher(BuildHasherDefault::default()),
            generation: AtomicU64::new(0),
            resolving: tokio::sync::Mutex::default(),
            admin_lock: tokio::sync::Mutex::default(),
            used: Mutex::default(),
            metrics,
            allowed,
        }
    }

    pub fn store(&self) -> &dyn AccountStore {
        &*self.store
    }

    /// Makes every cached identity stale; called after each change, once it is stored.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.invalidate_all();
    }

    /// Who the request is: its `Authorization` header when it has one, else the principal of
    /// its client certificate; `Ok(None)` when it has neither.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        principal: Option<&Arc<str>>,
    ) -> Result<Option<Arc<Identity>>, AuthError> {
        let key = match (authorization, principal) {
            (Some(value), _) => match token_in_header(value) {
                Ok(token) => CacheKey::Token(TokenHash::of(token)),
                Err(m) => return Err(AuthError::Denied(Denial::Malformed(m.detail()))),
            },
            (None, Some(p)) => CacheKey::Principal(p.clone()),
            (None, None) => return Ok(None),
        };
        let slot = Slot {
            generation: self.generation.load(Ordering::SeqCst),
            key,
        };
        let answer = match self.cache.get(&slot) {
            Some(answer) => answer,
            None => self.resolve_miss(slot).await?,
        };
        let identity = answer.map_err(AuthError::Denied)?;
        let now = now_ms();
        if let Some(at_ms) = identity.token_expires_ms
            && now >= at_ms
        {
            return Err(AuthError::Denied(Denial::Expired { at_ms }));
        }
        self.note_use(&identity, now);
        Ok(Some(identity))
    }

    async fn resolve_miss(&self, slot: Slot) -> Result<Answer, StoreError> {
        let mut snapshot = self.resolving.lock().await;
        if let Some(answer) = self.cache.get(&slot) {
            return Ok(answer);
        }
        let current = match &*snapshot {
            Some(snap) if snap.generation == slot.generation => snap.clone(),
            _ => {
                // Read now, it is at least as new as the slot's generation.
                let snap = Arc::new(Snapshot {
                    generation: slot.generation,
                    teams: self.store.teams().await?,
                    grants: self.store.grants().await?,
                });
                *snapshot = Some(snap.clone());
                snap
            }
        };
        let answer = self.resolve(&slot.key, &current).await?;
        self.cache.insert(slot, answer.clone());
        Ok(answer)
    }

    /// Reads what a token or principal stands for from the store.
    async fn resolve(&self, key: &CacheKey, snap: &Snapshot) -> Result<Answer, StoreError> {
        let s = &self.store;
        let (teams, grants) = (&snap.teams, &snap.grants);
        match key {
            CacheKey::Token(hash) => {
                let Some(token) = s.token_by_hash(&hash.hex()).await? else {
                    return Ok(Err(Denial::Unknown));
                };
                if let Some(at_ms) = token.revoked_ms {
                    return Ok(Err(Denial::Revoked { at_ms }));
                }
                let Some(user) = s.user(&token.user).await? else {
                    return Ok(Err(Denial::Unknown));
                };
                if user.disabled {
                    return Ok(Err(Denial::Disabled { login: user.login }));
                }
                let id = Identity::of_user(&user, teams, grants, Some(&token), None);
                Ok(Ok(Arc::new(id)))
            }
            CacheKey::Principal(p) => {
                if let Some(user) = s.user(p).await? {
                    if user.disabled {
                        return Ok(Err(Denial::Disabled { login: user.login }));
                    }
                    let id = Identity::of_user(&user, teams, grants, None, Some(p));
                    return Ok(Ok(Arc::new(id)));
                }
                match teams.iter().find(|t| *t.name == **p) {
                    Some(team) => Ok(Ok(Arc::new(Identity::of_team(team, grants, p)))),
                    None => {
                        tracing::warn!(principal = %p, "a client certificate's principal names no user or team");
                        Ok(Err(Denial::Unknown))
                    }
                }
            }
        }
    }

    /// Remembers that a token was used, at most once a second per token, without I/O.
    fn note_use(&self, identity: &Identity, now: u64) {
        let Some(id) = &identity.token_id else { return };
        let noted = identity.noted_use_ms.load(Ordering::Relaxed);
        if now.saturating_sub(noted) < NOTE_USE_EVERY_MS
            || identity
                .noted_use_ms
                .compare_exchange(noted, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let mut used = self.used.lock().expect("last-used lock");
        used.insert(id.clone(), now);
    }

    /// Writes the last-used times noted since the previous call; on failure they wait for the
    /// next.
    pub async fn write_last_used(&self) -> Result<(), StoreError> {
        let batch: Vec<(Arc<str>, u64)> = {
            let mut used = self.used.lock().expect("last-used lock");
            used.drain().collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        let owned: Vec<(String, u64)> =
            batch.iter().map(|(id, at)| (id.to_string(), *at)).collect();
        let written = self.store.touch_tokens(&owned).await;
        if written.is_err() {
            let mut used = self.used.lock().expect("last-used lock");
            for (id, at) in batch {
                let slot = used.entry(id).or_insert(at);
                *slot = (*slot).max(at);
            }
        }
        written
    }

    /// Writes last-used times every `interval` until `stop` says so, then once more.
    pub async fn write_last_used_every(
        self: Arc<Self>,
        interval: std::time::Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            if let Err(e) = self.write_last_used().await {
                // The next tick is the back-off.
                tracing::warn!(error = %e, "cannot write tokens' last-used times; will retry");
            }
        }
        if let Err(e) = self.write_last_used().await {
            tracing::warn!(error = %e, "cannot write tokens' last-used times at shutdown");
        }
    }

    /// Writes what is pending and makes the account store durable (at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.write_last_used().await?;
        self.store.flush().await
    }

    /// Counts one decision in the metrics.
    pub fn count(&self, outcome: Result<(), &Denial>) {
        match outcome {
            Ok(()) => self.allowed.inc(),
            Err(d) => self
                .metrics
                .auth_decisions
                .with_label_values(&["denied", d.reason()])
                .inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SledAccounts, User};

    #[tokio::test]
    async fn identities_are_cached_until_something_changes() {
        let store = Arc::new(SledAccounts::temporary().unwrap());
        let auth = Auth::new(
            store,
            BTreeSet::from(["crates-io".to_owned()]),
            100,
            Arc::new(Metrics::new()),
        );
        let ctx = admin::Context::system();
        let alice = admin::NewUser {
            login: "alice".into(),
            name: String::new(),
            email: String::new(),
            admin: false,
        };
        auth.create_user(&ctx, alice).await.unwrap();
        let new = admin::NewToken {
            user: "alice".into(),
            name: None,
            read_only: false,
            scopes: None,
            expires_in: None,
        };
        let (record, token) = auth.create_token(&ctx, new).await.unwrap();
        let header = format!("Bearer {}", token.expose());
        let who = auth.authenticate(Some(header.as_bytes()), None).await;
        assert_eq!(who.unwrap().unwrap().user.as_deref(), Some("alice"));

        // A change made behind the cache's back is not seen (the cache works) ...
        let behind = admin::entry(&ctx, "token.revoke", None, &record.id);
        let revoked = auth.store().revoke_token(&record.id, 5, &behind).await;
        assert!(matches!(revoked, Ok(crate::store::Revocation::Revoked(_))));
        assert!(
            auth.authenticate(Some(header.as_bytes()), None)
                .await
                .is_ok()
        );
        // ... one made through auth is seen at once (this one finds it revoked already, and
        // says so; any change makes the cached identities stale).
        assert!(auth.revoke_token(&ctx, &record.id).await.is_err());
        let bob = admin::NewUser {
            login: "bob".into(),
            name: String::new(),
            email: String::new(),
            admin: false,
        };
        auth.create_user(&ctx, bob).await.unwrap();
        let denied = auth.authenticate(Some(header.as_bytes()), None).await;
        assert!(matches!(
            denied,
            Err(AuthError::Denied(Denial::Revoked { at_ms: 5 }))
        ));

        // Uses are written in a batch.
        let (record, token) = auth
            .create_token(
                &ctx,
                admin::NewToken {
                    user: "alice".into(),
                    name: Some("second".into()),
                    read_only: true,
                    scopes: None,
                    expires_in: None,
                },
            )
            .await
            .unwrap();
        auth.authenticate(Some(token.expose().as_bytes()), None)
            .await
            .unwrap();
        auth.write_last_used().await.unwrap();
        let stored = auth
            .store()
            .token_by_hash(&record.hash)
            .await
            .unwrap()
            .unwrap();
        assert!(stored.last_used_ms.is_some());
        let _: Option<User> = auth.store().user("alice").await.unwrap();
    }
}
