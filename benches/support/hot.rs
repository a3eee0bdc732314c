//! The hot-path fixture shared by `benches/hot_paths.rs` and `examples/hot_requests.rs`: a fake
//! upstream holding a ~340 KB index file (900 versions), a 99 KB crate and a 1.5 MB crate, an
//! in-process router over it, and a GET through that router.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::registry::{CrateSpec, build};
use crate::upstream::FakeUpstream;

pub const INDEX: &str = "/crates-io/index/ho/t-/hot-index";
pub const SMALL: &str = "/crates-io/api/v1/crates/small/1.0.0/download";
pub const LARGE: &str = "/crates-io/api/v1/crates/large/1.0.0/download";

/// Publishes the fixture's crates on `up`.
pub fn fill(up: &FakeUpstream) {
    for i in 0..900 {
        let spec = CrateSpec::new("hot-index", &format!("1.{i}.0"))
            .dep("serde", "^1")
            .dep("tokio", "^1");
        up.publish(build(spec));
    }
    up.publish(build(CrateSpec::new("small", "1.0.0").padding(99_000)));
    up.publish(build(CrateSpec::new("large", "1.0.0").padding(1_500_000)));
}

/// cratedock's router over `upstream`, with files up to `memory_item_cap` bytes in memory and
/// the bookkeeping in memory.
pub fn app(upstream: &str, dir: &Path, memory_item_cap: u64) -> axum::Router {
    cratedock::http::router(new_app(upstream, dir, memory_item_cap, false))
}

/// [`app`] with `auth_required = true`, and a read-only token of a user whose team may read the
/// mirror (the identity is resolved from the store once, then from memory).
pub async fn app_with_auth(
    upstream: &str,
    dir: &Path,
    memory_item_cap: u64,
) -> (axum::Router, String) {
    use cratedock::auth::admin::{Context, NewGrant, NewTeam, NewToken, NewUser};
    let app = new_app(upstream, dir, memory_item_cap, true);
    let ctx = Context::system();
    let user = NewUser {
        login: "ci".into(),
        name: String::new(),
        email: String::new(),
        admin: false,
    };
    app.auth.create_user(&ctx, user).await.expect("a user");
    let team = NewTeam {
        name: "builders".into(),
        members: vec!["ci".into()],
    };
    app.auth.create_team(&ctx, team).await.expect("a team");
    let grant: NewGrant =
        serde_json::from_str(r#"{"team":"builders","permission":"read","registry":"crates-io"}"#)
            .expect("a grant");
    app.auth.add_grant(&ctx, grant).await.expect("a grant");
    let token = NewToken {
        user: "ci".into(),
        name: None,
        read_only: true,
        scopes: None,
        expires_in: None,
    };
    let (_, token) = app.auth.create_token(&ctx, token).await.expect("a token");
    (cratedock::http::router(app), token.expose().to_owned())
}

fn new_app(
    upstream: &str,
    dir: &Path,
    memory_item_cap: u64,
    auth: bool,
) -> Arc<cratedock::app::App> {
    let toml = format!(
        "[storage]\ndata_dir = \"{}\"\n[cache]\nmemory_max_item_bytes = {memory_item_cap}\n\
         [registries.crates-io]\nkind = \"mirror\"\nupstream = \"{upstream}\"\n\
         index_ttl_ms = 3600000\nauth_required = {auth}\n",
        dir.display()
    );
    let config = cratedock::config::Config::merge(
        "bench",
        &toml,
        &[],
        &cratedock::config::CliOverrides::default(),
    )
    .expect("bench config");
    cratedock::app::App::with_stores(
        config,
        Arc::new(cratedock::store::MemoryBook::default()),
        Arc::new(cratedock::store::MemoryAccounts::default()),
    )
    .expect("app")
}

/// What a GET through the router answered.
pub struct Answer {
    pub status: u16,
    pub etag: Option<String>,
    pub len: usize,
}

/// A GET of `path` (conditional with `etag`), its body read whole.
pub async fn get(router: &axum::Router, path: &str, etag: Option<&str>) -> Answer {
    get_as(router, path, etag, None).await
}

/// [`get`] with a token, sent as cargo sends it (the raw value).
pub async fn get_as(
    router: &axum::Router,
    path: &str,
    etag: Option<&str>,
    token: Option<&str>,
) -> Answer {
    let mut req = http::Request::get(path);
    if let Some(e) = etag {
        req = req.header("if-none-match", e);
    }
    if let Some(t) = token {
        req = req.header("authorization", t);
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::empty()).expect("a valid request"))
        .await
        .expect("the router answers");
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.into_body().collect().await.expect("a whole body");
    Answer {
        status,
        etag,
        len: body.to_bytes().len(),
    }
}
