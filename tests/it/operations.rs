//! Operations: metrics, health, graceful shutdown, config checking.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_served() {
    let (_up, cd) = one_crate_mirror("").await;
    let client = http_client();
    assert_eq!(cd.get("/health/live").await.status(), 200);
    assert_eq!(cd.get("/health/ready").await.status(), 200);
    let r = client
        .get(cd.url("/crates-io/api/v1/crates/serde/1.0.0/download"))
        .header("x-request-id", "test-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "test-123");
    // The file is answered before it is stored; the disk gauges count it once it is.
    cd.wait_idle().await;
    let text = cd.metrics_text().await;
    for name in [
        "cratedock_http_requests_total{route=\"/{registry}/api/v1/crates/{name}/{version}/download\",status=\"200\"} 1",
        "cratedock_http_request_duration_seconds_bucket",
        "cratedock_bytes_served_total{kind=\"crate\"}",
        "cratedock_cache_results_total{kind=\"crate\",registry=\"crates-io\",result=\"miss\",tier=\"upstream\"} 1",
        "cratedock_upstream_requests_total{kind=\"crate\",outcome=\"ok\",registry=\"crates-io\"} 1",
        "cratedock_upstream_request_duration_seconds_bucket",
        "cratedock_cache_entries{kind=\"crate\",tier=\"disk\"} 1",
        "cratedock_cache_bytes{kind=\"all\",tier=\"memory\"}",
        concat!(
            "cratedock_build_info{version=\"",
            env!("CARGO_PKG_VERSION"),
            "\"} 1"
        ),
        "cratedock_process_resident_memory_bytes ",
        "cratedock_process_open_fds ",
        "cratedock_process_cpu_seconds_total ",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    assert!(!text.contains("serde"), "no crate names in labels");
    assert!(
        !text.contains("tls_certificate_not_after"),
        "no certificate expiry without TLS"
    );
    // Start-up says where the configuration and the data are, and what each registry is.
    let log = cd.log();
    assert!(
        log.contains("starting") && log.contains("data_dir="),
        "{log}"
    );
    assert!(
        log.contains("registry registry=crates-io kind=\"mirror\""),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigterm_readiness_answers_503_while_requests_are_still_served() {
    let up = FakeUpstream::start().await;
    let env = [("CRATEDOCK__SERVER__SHUTDOWN_DELAY_MS", "3000")];
    let mut cd = Cratedock::start_with_env(&mirror_config(&up.index_url(), ""), &env).await;
    assert_eq!(cd.get("/health/ready").await.status(), 200);
    cd.signal("TERM");
    wait_until("readiness answers 503", || async {
        cd.get("/health/ready").await.status() == 503
    })
    .await;
    // Still serving meanwhile: a load balancer's last requests are answered.
    assert_eq!(cd.get("/health/live").await.status(), 200);
    let status = cd.terminate().await;
    assert!(status.success(), "clean exit: {status}");
    assert!(
        cd.log().contains("reporting not ready while still serving"),
        "{}",
        cd.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let (up, mut cd) = one_crate_mirror("").await;
    up.set_fault(Fault::Delay(Duration::from_millis(800)), Target::Crates);
    let client = http_client();
    let url = cd.url("/crates-io/api/v1/crates/serde/1.0.0/download");
    let in_flight = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    wait_until("the download reached the upstream", || async {
        up.hits("/dl/") == 1
    })
    .await;

    let status = cd.terminate().await;
    assert!(status.success(), "clean exit: {status}");
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the request in flight completed"
    );
    assert!(cd.log().contains("all connections drained"), "{}", cd.log());
    let refused = http_client().get(cd.url("/health/live")).send().await;
    assert!(refused.is_err(), "no longer accepting");
}

/// A forward HTTP proxy on loopback that counts what it forwards.
async fn forward_proxy() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let forwarded = std::sync::Arc::new(AtomicUsize::new(0));
    let count = forwarded.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let count = count.clone();
        async move {
            // A proxied request carries the absolute URL of the target.
            count.fetch_add(1, Ordering::SeqCst);
            let url = req.uri().to_string();
            let resp = http_client().get(&url).send().await.unwrap();
            let status = resp.status();
            let body = resp.bytes().await.unwrap();
            (status, body)
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, forwarded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_requests_go_through_the_proxy_from_the_environment() {
    use std::sync::atomic::Ordering;
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("serde", "1.0.0")));
    let (proxy, forwarded) = forward_proxy().await;
    let proxy_url = format!("http://{proxy}");
    let cd = Cratedock::start_with_env(
        &mirror_config(&up.index_url(), ""),
        &[("HTTP_PROXY", &proxy_url), ("http_proxy", &proxy_url)],
    )
    .await;
    let r = cd
        .get("/crates-io/api/v1/crates/serde/1.0.0/download")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        forwarded.load(Ordering::SeqCst),
        3,
        "config.json, the index file, the crate"
    );

    // NO_PROXY exempts the upstream's host.
    let (proxy, bypassed) = forward_proxy().await;
    let proxy_url = format!("http://{proxy}");
    let cd = Cratedock::start_with_env(
        &mirror_config(&up.index_url(), ""),
        &[("HTTP_PROXY", &proxy_url), ("NO_PROXY", "127.0.0.1")],
    )
    .await;
    let r = cd.get("/crates-io/index/se/rd/serde").await;
    assert_eq!(r.status(), 200);
    assert_eq!(bypassed.load(Ordering::SeqCst), 0);
}

#[test]
fn config_check_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[server]\nlisten = \"0.0.0.0:9000\"\n[registries.internal]\nkind = \"mirror\"\nupstream = \"https://registry.corp.example/index/\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cratedock"))
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 registry: internal)"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[cache]\nmemory_max_byte = 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cratedock"))
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("memory_max_byte") && stderr.contains("bad.toml"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_cratedock"))
        .args(["config", "default"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("[registries.crates-io]"));
}

/// A GET through cratedock's router, as if from `peer`, with an `Authorization` value.
async fn get_from(
    router: &axum::Router,
    peer: &str,
    path: &str,
    authorization: Option<&str>,
) -> u16 {
    use tower::ServiceExt;
    let mut req = http::Request::get(path).header("host", "cd.example");
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let mut req = req.body(axum::body::Body::empty()).unwrap();
    req.extensions_mut().insert(cratedock::net::ConnInfo {
        tls: false,
        peer: Some(peer.parse().unwrap()),
        principal: None,
    });
    router.clone().oneshot(req).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_open_on_loopback_and_need_the_secret_or_a_token_elsewhere() {
    use cratedock::auth::admin::{Context, NewToken, NewUser};
    // In process: a request "from" another host needs no network to be made.
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[storage]\ndata_dir = \"{}\"\n[auth]\nmetrics_token = \"prometheus-secret\"\n\
         [registries.crates-io]\nkind = \"mirror\"\nupstream = \"http://127.0.0.1:9/\"\n",
        dir.path().display()
    );
    let config = cratedock::config::Config::merge(
        "test",
        &toml,
        &[],
        &cratedock::config::CliOverrides::default(),
    )
    .unwrap();
    let app = cratedock::app::App::with_stores(
        config,
        std::sync::Arc::new(cratedock::store::MemoryBook::default()),
        std::sync::Arc::new(cratedock::store::MemoryAccounts::default()),
    )
    .unwrap();
    let ctx = Context::system();
    let user = NewUser {
        login: "grafana".into(),
        name: String::new(),
        email: String::new(),
        admin: false,
    };
    app.auth.create_user(&ctx, user).await.unwrap();
    let new = NewToken {
        user: "grafana".into(),
        name: None,
        read_only: true,
        scopes: None,
        expires_in: None,
    };
    let (_, token) = app.auth.create_token(&ctx, new).await.unwrap();
    let router = cratedock::http::router(app);

    assert_eq!(
        get_from(&router, "127.0.0.1:5000", "/metrics", None).await,
        200
    );
    assert_eq!(get_from(&router, "[::1]:5000", "/metrics", None).await, 200);
    let far = "10.1.2.3:5000";
    assert_eq!(get_from(&router, far, "/metrics", None).await, 401);
    let wrong = Some("Bearer prometheus-secreT");
    assert_eq!(get_from(&router, far, "/metrics", wrong).await, 401);
    let secret = Some("Bearer prometheus-secret");
    assert_eq!(get_from(&router, far, "/metrics", secret).await, 200);
    let bearer = format!("Bearer {}", token.expose());
    assert_eq!(get_from(&router, far, "/metrics", Some(&bearer)).await, 200);
    // Health checks stay open.
    assert_eq!(get_from(&router, far, "/health/live", None).await, 200);
}

fn config_check(file: &std::path::Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cratedock"))
        .args(["config", "check"])
        .arg(file)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_points_at_the_key_takes_host_names_checks_the_folder_and_warns_of_stray_variables()
{
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    let data = dir.path().join("not-yet/data");
    let registry =
        "[registries.crates-io]\nkind = \"mirror\"\nupstream = \"https://index.crates.io/\"\n";
    let write = |extra: &str, data_dir: &std::path::Path| {
        std::fs::write(
            &file,
            format!(
                "[server]\nlisten = \"localhost:9000\"\n\n[storage]\ndata_dir = \"{}\"\n\n{registry}{extra}",
                data_dir.display()
            ),
        )
        .unwrap();
    };
    // A misspelt key inside a registry is named at its own line.
    write("retrys = 3\n", &data);
    let (ok, err) = config_check(&file, &[]);
    assert!(!ok);
    assert!(err.contains("line 10: unknown key `retrys`"), "{err}");
    // A host name is a valid listen address; a folder that does not exist yet but can be
    // created is fine (and is not created by the check).
    write("", &data);
    let (ok, err) = config_check(&file, &[]);
    assert!(ok, "{err}");
    assert!(!data.exists());
    // A variable with single underscores sets nothing: a warning says so.
    let (ok, err) = config_check(&file, &[("CRATEDOCK_SERVER_LISTEN", "0.0.0.0:1")]);
    assert!(ok, "{err}");
    assert!(
        err.contains("CRATEDOCK_SERVER_LISTEN sets nothing")
            && err.contains("CRATEDOCK__SERVER__LISTEN"),
        "{err}"
    );
    // A bad value in the environment names its variable.
    let (ok, err) = config_check(&file, &[("CRATEDOCK__CACHE__MEMORY_MAX_BYTES", "lots")]);
    assert!(!ok);
    assert!(
        err.contains("environment variable CRATEDOCK__CACHE__MEMORY_MAX_BYTES"),
        "{err}"
    );
    // A bad log filter is refused.
    let (ok, err) = config_check(&file, &[("CRATEDOCK__LOG__LEVEL", "info,[[")]);
    assert!(!ok && err.contains("log.level"), "{err}");
    // A data folder that cannot be created is named.
    write("", std::path::Path::new("/proc/cratedock-test/data"));
    let (ok, err) = config_check(&file, &[]);
    assert!(!ok);
    assert!(
        err.contains("storage.data_dir /proc/cratedock-test/data cannot be created"),
        "{err}"
    );
}

#[test]
fn a_data_folder_that_is_not_writable_is_reported_as_such() {
    let probe = Command::new("unshare").args(["-rm", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "SKIPPED: `unshare -rm` is not permitted here, so no read-only mount can be made"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A read-only bind mount of the folder, in a mount namespace of its own (root could write
    // through file permissions).
    let out = Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            "mount --bind \"$0\" \"$0\" && mount -o remount,bind,ro \"$0\" && exec \"$@\"",
        ])
        .arg(dir.path())
        .arg(env!("CARGO_BIN_EXE_cratedock"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not writable"), "{err}");
    assert!(!err.contains("another cratedock"), "{err}");
}
