//! Sends N requests of one kind through cratedock's whole router and middleware, in process,
//! on one thread, against a cache filled once from a fake upstream on loopback (the fixture of
//! `benches/support/hot.rs`). Under valgrind
//! (`benches/instructions.sh`) the difference between two N gives the instructions one request
//! costs, a figure that the speed of a shared machine does not move.
//!
//! ```text
//! cargo run --release --example hot_requests -- index|index304|crate N
//! cargo run --release --example hot_requests -- index-auth|index304-auth|crate-auth N
//! ```
//!
//! The `-auth` kinds send a read token to a mirror with `auth_required = true`; the `-log` kinds
//! (`index-log`, ...) install the log subscriber at `info`, writing to nowhere, so that the
//! difference is what formatting the access log line costs.

// Support modules are shared between test binaries: their `pub` items are for the others.
#![allow(unreachable_pub)]

#[allow(dead_code)]
#[path = "../benches/support/hot.rs"]
mod hot;
#[allow(dead_code)]
#[path = "../tests/it/support/registry.rs"]
mod registry;
#[allow(dead_code)]
#[path = "../tests/it/support/upstream.rs"]
mod upstream;

use hot::{INDEX, SMALL, app, app_with_auth, get_as};
use upstream::FakeUpstream;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).cloned().unwrap_or_default();
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    let (kind, log) = match kind.strip_suffix("-log") {
        Some(k) => (k.to_owned(), true),
        None => (kind.clone(), false),
    };
    let (base, auth) = match kind.strip_suffix("-auth") {
        Some(base) => (base.to_owned(), true),
        None => (kind.clone(), false),
    };
    if log {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(std::io::sink)
            .init();
    }
    anyhow::ensure!(
        ["index", "index304", "crate"].contains(&base.as_str()) && n > 0,
        "usage: hot_requests index|index304|crate[-auth][-log] N"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    rt.block_on(async {
        let up = FakeUpstream::start().await;
        hot::fill(&up);
        let cap = 2 * 1024 * 1024;
        let (router, token) = if auth {
            let (router, token) = app_with_auth(&up.index_url(), dir.path(), cap).await;
            (router, Some(token))
        } else {
            (app(&up.index_url(), dir.path(), cap), None)
        };
        let token = token.as_deref();
        let get = |path, etag| get_as(&router, path, etag, token);
        let first = get(INDEX, None).await;
        anyhow::ensure!(
            first.status == 200,
            "the index file was not cached: {}",
            first.status
        );
        anyhow::ensure!(
            get(SMALL, None).await.status == 200,
            "the crate was not cached"
        );
        for _ in 0..n {
            let status = match base.as_str() {
                "index" => get(INDEX, None).await.status,
                "index304" => get(INDEX, first.etag.as_deref()).await.status,
                _ => get(SMALL, None).await.status,
            };
            anyhow::ensure!(status == 200 || status == 304, "answered {status}");
        }
        drop(up);
        Ok(())
    })
}
