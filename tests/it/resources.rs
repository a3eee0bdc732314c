//! Bounded resources under abuse: large index files are streamed from disk (never read whole
//! per request) and clients that stop reading are dropped after the send timeout.

use tokio::io::AsyncWriteExt;

use crate::support::*;

/// Resident memory of the server, in bytes (its own gauge).
async fn rss(cd: &Cratedock) -> f64 {
    cd.metric("process_resident_memory_bytes", "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_index_file_is_streamed_from_disk_and_stalled_readers_are_dropped() {
    let up = FakeUpstream::start().await;
    let real = build(CrateSpec::new("huge", "1.0.0"));
    up.publish(real.clone());
    // About 30 MB of index lines: far above the memory tier's 2 MiB item limit.
    let pad = "x".repeat(250);
    for i in 0..110_000 {
        let mut p = real.clone();
        p.tarball = Vec::new();
        p.line = real.line.replacen(
            "\"vers\":\"1.0.0\"",
            &format!("\"vers\":\"0.{i}.0\",\"description_pad\":\"{pad}\""),
            1,
        );
        up.publish(p);
    }
    let cd = Cratedock::start(&config_with(&up.index_url(), "", "index_ttl_ms = 3600000")).await;
    let path = "/crates-io/index/hu/ge/huge";
    let first = cd.get(path).await;
    assert_eq!(first.status(), 200);
    let body = first.bytes().await.unwrap();
    assert!(body.len() > 25_000_000, "{} bytes", body.len());
    cd.wait_idle().await;
    let again = cd.get(path).await;
    assert_eq!(
        again.headers()["content-length"].to_str().unwrap(),
        body.len().to_string()
    );
    assert_eq!(again.bytes().await.unwrap(), body, "served whole from disk");
    let before = rss(&cd).await;

    // 40 clients ask for it and never read a byte of the answer.
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", cd.port))
            .await
            .unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        stalled.push(s);
    }
    // Every one of them has been answered as far as its socket lets it.
    wait_until("the stalled requests are under way", || async {
        cd.metric("http_requests_total", "route=\"/{registry}/index/{*path}\"")
            .await
            >= 42.0
    })
    .await;
    let during = rss(&cd).await;
    assert!(
        during - before < 300.0 * 1024.0 * 1024.0,
        "40 stalled readers of a 30 MB file took {} MiB more",
        ((during - before) / 1024.0 / 1024.0) as u64
    );
    // A normal request is still answered meanwhile, and a conditional one reads nothing.
    let etag = {
        let r = cd.get(path).await;
        let e = r.headers()["etag"].clone();
        assert_eq!(r.bytes().await.unwrap().len(), body.len());
        e
    };
    let r = http_client()
        .get(cd.url(path))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let up = FakeUpstream::start().await;
    // Larger than the socket buffers on both sides can absorb.
    let p = build(CrateSpec::new("big", "1.0.0").padding(40_000_000));
    up.publish(p.clone());
    let cd = Cratedock::start(&format!(
        "[server]\nsend_timeout_ms = 500\n\n{}",
        config_with(&up.index_url(), "", "")
    ))
    .await;
    let url = "/crates-io/api/v1/crates/big/1.0.0/download";
    assert_eq!(cd.get(url).await.bytes().await.unwrap(), p.tarball);
    cd.wait_idle().await;
    let fds = cd.metric("process_open_fds", "").await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", cd.port))
        .await
        .unwrap();
    s.write_all(format!("GET {url} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    wait_until("the response is under way", || async {
        cd.metric("process_open_fds", "").await > fds
    })
    .await;
    // The server gives up on the connection (its socket and its open crate file go).
    wait_until("the stalled connection is closed", || async {
        cd.metric("process_open_fds", "").await <= fds
    })
    .await;
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_keep_a_normal_request_from_an_answer() {
    // The test and the server (which inherits the limit) each need over a thousand.
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0);
    if soft < 2_100 {
        eprintln!("SKIPPED: the open-files limit ({soft}) is below the 2,100 this test needs");
        return;
    }
    let up = FakeUpstream::start().await;
    let p = build(CrateSpec::new("serde", "1.0.0"));
    up.publish(p.clone());
    let cd = Cratedock::start(&config_with(&up.index_url(), "", "")).await;
    // Slowloris: each connection sends part of a request head, then nothing.
    let mut idle = Vec::new();
    for i in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", cd.port))
            .await
            .unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /crates-io/index/config.json HTTP/1.1\r\nx-slow: ")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    wait_until("the server holds them all", || async {
        cd.metric("process_open_fds", "").await >= 1000.0
    })
    .await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap();
    let r = client
        .get(cd.url("/crates-io/api/v1/crates/serde/1.0.0/download"))
        .send()
        .await
        .expect("answered while a thousand connections idle");
    assert_eq!(r.bytes().await.unwrap(), p.tarball);
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_descriptors_and_memory_stay_bounded_under_a_storm_of_distinct_cold_keys() {
    let up = FakeUpstream::start().await;
    let crates: Vec<_> = (0..300)
        .map(|i| build(CrateSpec::new(&format!("cold{i}"), "1.0.0").padding(20_000)))
        .collect();
    for p in &crates {
        up.publish(p.clone());
    }
    let cd = Cratedock::start(&config_with(&up.index_url(), "", "")).await;
    let fds_before = cd.metric("process_open_fds", "").await;
    let rss_before = rss(&cd).await;
    let client = http_client();
    let mut peak_fds = 0f64;
    for batch in crates.chunks(60) {
        let gets = batch.iter().map(|p| {
            let url = cd.url(&format!(
                "/crates-io/api/v1/crates/{}/1.0.0/download",
                p.spec.name
            ));
            let client = client.clone();
            async move { client.get(url).send().await.unwrap().bytes().await.unwrap() }
        });
        let bodies = futures_util::future::join_all(gets).await;
        for (p, b) in batch.iter().zip(bodies) {
            assert_eq!(b, p.tarball);
        }
        peak_fds = peak_fds.max(cd.metric("process_open_fds", "").await);
    }
    cd.wait_idle().await;
    // 60 client connections at once, 32 upstream connections at most, the database's files.
    assert!(
        peak_fds - fds_before < 150.0,
        "{fds_before} -> peak {peak_fds}"
    );
    // Once the clients hang up, what stays open is the upstream's connection pool (at most
    // max_connections, 32): nothing leaks per file.
    drop(client);
    wait_until("the clients' connections are closed", || async {
        cd.metric("process_open_fds", "").await - fds_before <= 45.0
    })
    .await;
    let rss_after = rss(&cd).await;
    assert!(
        rss_after - rss_before < 200.0 * 1024.0 * 1024.0,
        "{rss_before} -> {rss_after}"
    );
    assert!(cd.metric("upstream_requests_total", "kind=\"crate\"").await >= 300.0);
}
