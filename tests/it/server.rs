//! The server's own behaviour: the `config.json` it serves, the connection cap, and the
//! header read timeout.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn config_json(cd: &Cratedock) -> serde_json::Value {
    let r = cd.get("/crates-io/index/config.json").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_json_points_back_at_cratedock_by_host_or_public_url() {
    let up = FakeUpstream::start().await;
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    let v = config_json(&cd).await;
    let base = format!("http://127.0.0.1:{}", cd.port);
    assert_eq!(v["dl"], format!("{base}/crates-io/api/v1/crates"));
    assert_eq!(v["api"], format!("{base}/crates-io"));

    let r = http_client()
        .get(cd.url("/crates-io/index/config.json"))
        .header("host", "user@evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a Host that is not host[:port]");

    let cd = Cratedock::start(&format!(
        "[server]\npublic_url = \"https://cratedock.corp.example/mirror/\"\n{}",
        mirror_config(&up.index_url(), "")
    ))
    .await;
    let v = config_json(&cd).await;
    assert_eq!(
        v["dl"],
        "https://cratedock.corp.example/mirror/crates-io/api/v1/crates"
    );
    assert_eq!(v["api"], "https://cratedock.corp.example/mirror/crates-io");
    assert_eq!(up.hits("/"), 0, "served without the upstream");
}

/// Sends a GET on `conn` and reads until the end of the response head.
async fn request(conn: &mut TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a response");
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_wait_for_a_free_slot() {
    let up = FakeUpstream::start().await;
    let cd = Cratedock::start(&format!(
        "[server]\nmax_connections = 1\n{}",
        mirror_config(&up.index_url(), "")
    ))
    .await;
    let addr = format!("127.0.0.1:{}", cd.port);
    let mut first = TcpStream::connect(&addr).await.unwrap();
    assert!(
        request(&mut first, "/health/live")
            .await
            .starts_with("HTTP/1.1 200")
    );

    // The second connection is not served while the first holds the only slot. (Nothing can
    // be observed of a connection not accepted: half a second without an answer stands for
    // "not served", and a loaded machine only makes the check weaker, never flaky.)
    let mut second = TcpStream::connect(&addr).await.unwrap();
    let waiting = tokio::spawn(async move { request(&mut second, "/health/live").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "served beyond max_connections");

    drop(first);
    let head = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("served once the slot is free")
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// Whether the server closes `conn` (EOF) within a generous bound.
async fn closed_by_server(mut conn: TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_do_not_send_their_headers_in_time_are_disconnected() {
    let up = FakeUpstream::start().await;
    for h2c in [true, false] {
        let cd = Cratedock::start(&format!(
            "[server]\nheader_read_timeout_ms = 2000\nh2c_upgrade = {h2c}\n{}",
            mirror_config(&up.index_url(), "")
        ))
        .await;
        let addr = format!("127.0.0.1:{}", cd.port);
        // Half a request head, then nothing.
        let mut partial = TcpStream::connect(&addr).await.unwrap();
        partial
            .write_all(b"GET /health/live HTTP/1.1\r\n")
            .await
            .unwrap();
        assert!(
            closed_by_server(partial).await,
            "h2c_upgrade = {h2c}: partial head"
        );
        // Nothing at all.
        let silent = TcpStream::connect(&addr).await.unwrap();
        assert!(
            closed_by_server(silent).await,
            "h2c_upgrade = {h2c}: silence"
        );
        // A client that keeps up is served.
        let mut ok = TcpStream::connect(&addr).await.unwrap();
        assert!(
            request(&mut ok, "/health/live")
                .await
                .starts_with("HTTP/1.1 200")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_tls_reloads_the_log_level_and_the_server_keeps_serving() {
    let up = FakeUpstream::start().await;
    let quiet = "level = \"info,cratedock::access=warn\"";
    let config = format!("[log]\n{quiet}\n\n{}", mirror_config(&up.index_url(), ""));
    // The log level comes from the file (RUST_LOG empty), so that a reload can change it.
    let mut cd = Cratedock::start_with_env(&config, &[("RUST_LOG", "")]).await;
    let access_lines = |cd: &Cratedock| cd.log().matches("cratedock::access").count();
    assert_eq!(cd.get("/health/live").await.status(), 200);
    assert_eq!(access_lines(&cd), 0, "the access log is turned down");
    std::fs::write(cd.config_path(), config.replace(quiet, "level = \"info\"")).unwrap();
    cd.signal("HUP");
    wait_until("the SIGHUP is logged", || {
        let log = cd.log();
        async move {
            log.contains("SIGHUP: log filter reloaded") && log.contains("no TLS files to reload")
        }
    })
    .await;
    assert_eq!(cd.get("/health/live").await.status(), 200);
    wait_until("the access log is on after the reload", || {
        let n = access_lines(&cd);
        async move { n >= 1 }
    })
    .await;
    config_json(&cd).await;
    assert!(cd.terminate().await.success(), "a clean exit after SIGHUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_urls_and_request_heads_get_414_and_431() {
    let up = FakeUpstream::start().await;
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    let long_path = format!("/crates-io/index/{}", "a".repeat(9000));
    let r = cd.get(&long_path).await;
    assert_eq!(r.status(), 414);
    assert!(detail(r).await.contains("longer than 8192 bytes"));

    // A request head over 64 KiB: refused before any handler runs, and the server goes on.
    let mut conn = TcpStream::connect(("127.0.0.1", cd.port)).await.unwrap();
    let big = "x".repeat(70 * 1024);
    let req = format!("GET /health/live HTTP/1.1\r\nhost: localhost\r\nx-big: {big}\r\n\r\n");
    // The server may answer and close before it has read everything.
    let _ = conn.write_all(req.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(cd.get("/health/live").await.status(), 200);
    assert_eq!(up.hits("/"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_client_gives_up_its_connection_slot_after_the_idle_timeout() {
    let up = FakeUpstream::start().await;
    let cd = Cratedock::start(&format!(
        "[server]\nmax_connections = 1\nidle_timeout_ms = 500\n{}",
        mirror_config(&up.index_url(), "")
    ))
    .await;
    // An HTTP/2 client (prior knowledge) makes one request and stays connected: it answers
    // the server's pings, so only the idle timeout frees its slot.
    let idle = reqwest::Client::builder()
        .http2_prior_knowledge()
        .http2_keep_alive_interval(Duration::from_millis(100))
        .http2_keep_alive_while_idle(true)
        .build()
        .unwrap();
    let r = idle.get(cd.url("/health/live")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);

    // Another client is served once the idle one's connection is closed.
    let other = tokio::time::timeout(
        Duration::from_secs(20),
        http_client().get(cd.url("/health/live")).send(),
    )
    .await
    .expect("served once the idle connection was closed")
    .unwrap();
    assert_eq!(other.status(), 200);
    assert!(
        cd.log().contains("closing an idle connection"),
        "{}",
        cd.log()
    );
    drop(idle);
}
