//! Sends N requests of one kind through cratedock's whole router and middleware, in process,
//! on one thread, against a cache filled once from a fake upstream on loopback. Under valgrind
//! (`benches/instructions.sh`) the difference between two N gives the instructions one request
//! costs, a figure that the speed of a shared machine does not move.
//!
//! ```text
//! cargo run --release --example hot_requests -- index|index304|crate N
//! ```

// Support modules are shared between test binaries: their `pub` items are for the others.
#![allow(unreachable_pub)]

use std::sync::Arc;

use axum::body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;

#[allow(dead_code)]
#[path = "../tests/it/support/registry.rs"]
mod registry;
#[allow(dead_code)]
#[path = "../tests/it/support/upstream.rs"]
mod upstream;

use registry::{CrateSpec, build};
use upstream::FakeUpstream;

const INDEX: &str = "/crates-io/index/ho/t-/hot-index";
const CRATE: &str = "/crates-io/api/v1/crates/small/1.0.0/download";

async fn get(router: &axum::Router, path: &str, etag: Option<&str>) -> (u16, Option<String>) {
    let mut req = http::Request::get(path);
    if let Some(e) = etag {
        req = req.header("if-none-match", e);
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
    let _ = resp.into_body().collect().await.expect("a whole body");
    (status, etag)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).cloned().unwrap_or_default();
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    anyhow::ensure!(
        ["index", "index304", "crate"].contains(&kind.as_str()) && n > 0,
        "usage: hot_requests index|index304|crate N"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    rt.block_on(async {
        let up = FakeUpstream::start().await;
        // A ~340 KB index file (900 versions) and a 99 KB crate, as in benches/hot_paths.rs.
        for i in 0..900 {
            let spec = CrateSpec::new("hot-index", &format!("1.{i}.0"))
                .dep("serde", "^1")
                .dep("tokio", "^1");
            up.publish(build(spec));
        }
        up.publish(build(CrateSpec::new("small", "1.0.0").padding(99_000)));
        let toml = format!(
            "[storage]\ndata_dir = \"{}\"\n[registries.crates-io]\nkind = \"mirror\"\n\
             upstream = \"{}\"\nindex_ttl_ms = 3600000\n",
            dir.path().display(),
            up.index_url()
        );
        let config = cratedock::config::Config::merge(
            "hot_requests",
            &toml,
            &[],
            &cratedock::config::CliOverrides::default(),
        )?;
        let app = cratedock::app::App::with_book(
            config,
            Arc::new(cratedock::store::MemoryBook::default()),
        )?;
        let router = cratedock::http::router(app);
        let (status, etag) = get(&router, INDEX, None).await;
        anyhow::ensure!(status == 200, "the index file was not cached: {status}");
        anyhow::ensure!(
            get(&router, CRATE, None).await.0 == 200,
            "the crate was not cached"
        );
        for _ in 0..n {
            let (status, _) = match kind.as_str() {
                "index" => get(&router, INDEX, None).await,
                "index304" => get(&router, INDEX, etag.as_deref()).await,
                _ => get(&router, CRATE, None).await,
            };
            anyhow::ensure!(status == 200 || status == 304, "answered {status}");
        }
        drop(up);
        Ok(())
    })
}
