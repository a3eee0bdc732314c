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
    app_of(&toml)
}

/// The app of a configuration, over in-memory metadata stores.
fn app_of(toml: &str) -> Arc<cratedock::app::App> {
    let config = cratedock::config::Config::merge(
        "bench",
        toml,
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

/// The index file and a download of the private crate that [`app_with_private`] publishes.
pub const PRIVATE_INDEX: &str = "/internal/index/pr/iv/private-hot";
pub const PRIVATE_CRATE: &str = "/internal/api/v1/crates/private-hot/1.0.0/download";

/// cratedock's router with the private registry `internal` (open for reading) beside the
/// mirror, holding `private-hot` in 300 versions of ~99 KB each (an index file of ~60 KB).
pub async fn app_with_private(upstream: &str, dir: &Path) -> axum::Router {
    use cratedock::auth::admin::{Context, NewGrant, NewToken, NewUser};
    let toml = format!(
        "[storage]\ndata_dir = \"{}\"\n\
         [registries.crates-io]\nkind = \"mirror\"\nupstream = \"{upstream}\"\n\
         [registries.internal]\nkind = \"private\"\nauth_required = false\n",
        dir.display()
    );
    let app = app_of(&toml);
    let ctx = Context::system();
    let user = NewUser {
        login: "dev".into(),
        name: String::new(),
        email: String::new(),
        admin: false,
    };
    app.auth.create_user(&ctx, user).await.expect("a user");
    let grant: NewGrant =
        serde_json::from_str(r#"{"user":"dev","permission":"publish","registry":"internal"}"#)
            .expect("a grant");
    app.auth.add_grant(&ctx, grant).await.expect("a grant");
    let token = NewToken {
        user: "dev".into(),
        name: None,
        read_only: false,
        scopes: None,
        expires_in: None,
    };
    let (_, token) = app.auth.create_token(&ctx, token).await.expect("a token");
    let router = cratedock::http::router(app);
    for i in 0..300 {
        let version = if i == 0 {
            "1.0.0".to_owned()
        } else {
            format!("1.0.{i}")
        };
        let body = publish_body("private-hot", &version, 99_000);
        let req = http::Request::put("/internal/api/v1/crates/new")
            .header("authorization", token.expose())
            .body(Body::from(body))
            .expect("a valid request");
        let resp = router
            .clone()
            .oneshot(req)
            .await
            .expect("the router answers");
        assert_eq!(resp.status(), 200, "publishing {version}");
    }
    router
}

/// The body `cargo publish` sends for a crate with a library of `padding` pseudo-random bytes.
fn publish_body(name: &str, version: &str, padding: usize) -> Vec<u8> {
    use std::io::Write;
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"{version}\"\nedition = \"2021\"\nlicense = \"MIT\"\n"
    );
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let lib: String = (0..padding)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, data) in [
        ("Cargo.toml", manifest.as_bytes()),
        ("src/lib.rs", lib.as_bytes()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("{name}-{version}/{path}"), data)
            .expect("a tar entry");
    }
    let tarball = tar
        .into_inner()
        .and_then(|gz| gz.finish())
        .expect("a tarball");
    let json = format!(r#"{{"name":"{name}","vers":"{version}"}}"#);
    let mut body = Vec::new();
    body.write_all(&(json.len() as u32).to_le_bytes())
        .expect("memory");
    body.write_all(json.as_bytes()).expect("memory");
    body.write_all(&(tarball.len() as u32).to_le_bytes())
        .expect("memory");
    body.write_all(&tarball).expect("memory");
    body
}
