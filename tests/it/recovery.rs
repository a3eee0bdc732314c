//! The review's bugs, each with the behaviour a user expects: lost files are fetched again, an
//! upstream's brief 404 does not throw away a good copy, failed writes lose nothing, retries
//! back off and honour `Retry-After`, and waiters give up with a clear 504.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crate_whose_file_was_removed_is_fetched_again() {
    let up = FakeUpstream::start().await;
    let p = build(CrateSpec::new("serde", "1.0.0").padding(20_000));
    up.publish(p.clone());
    // Small enough a memory tier that the crate is served from disk.
    let cd = Cratedock::start(&config_with(
        &up.index_url(),
        "memory_max_item_bytes = 1000",
        "retries = 0",
    ))
    .await;
    let url = "/crates-io/api/v1/crates/serde/1.0.0/download";
    assert_eq!(cd.get(url).await.bytes().await.unwrap(), p.tarball);
    cd.wait_idle().await;
    let stored = cd.stored_crates();
    assert_eq!(stored.len(), 1);

    // An operator's `rm` (or a crash, or an eviction) takes the file but not its record.
    std::fs::remove_file(&stored[0]).unwrap();
    for _ in 0..2 {
        let r = cd.get(url).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), p.tarball, "byte-exact");
    }
    assert_eq!(
        up.hits("/dl/"),
        2,
        "fetched once more, then served from disk again"
    );
    cd.wait_idle().await;
    assert_eq!(cd.stored_crates().len(), 1);
    assert!(cd.log().contains("crate record without its file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_404_is_a_hiccup_until_it_outlasts_the_negative_ttl() {
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("serde", "1.0.0")));
    let cd = Cratedock::start(&mirror_config(
        &up.index_url(),
        "index_ttl_ms = 0\nstale_while_revalidate_ms = 0\nnegative_ttl_ms = 3000",
    ))
    .await;
    let path = "/crates-io/index/se/rd/serde";
    let good = cd.get(path).await.text().await.unwrap();
    cd.wait_idle().await;

    // A CDN hiccup: the upstream answers 404 for a while, then serves the file again.
    up.set_fault(Fault::Status(404), Target::Index);
    let r = cd.get(path).await;
    assert_eq!(r.status(), 200, "the good copy stands in");
    assert_eq!(r.text().await.unwrap(), good);
    assert!(cd.log().contains("serving a stale index file"));
    up.set_fault(Fault::None, Target::All);
    assert_eq!(cd.get(path).await.text().await.unwrap(), good);
    assert!(
        cd.data_dir.join("index/crates-io/se/rd/serde").exists(),
        "the copy on disk is kept"
    );

    // A real removal: the 404s outlast the negative TTL, and then the crate is gone.
    up.set_fault(Fault::Status(404), Target::Index);
    let first_404 = std::time::Instant::now();
    assert_eq!(cd.get(path).await.status(), 200, "a new hiccup at first");
    wait_until("the removal takes effect", || async {
        cd.get(path).await.status() == 404
    })
    .await;
    assert!(
        first_404.elapsed() >= Duration::from_millis(3000),
        "removed only once the 404s lasted negative_ttl_ms: {:?}",
        first_404.elapsed()
    );
    let r = cd.get(path).await;
    assert_eq!(r.status(), 404);
    assert!(detail(r).await.contains("does not exist"));
    cd.wait_idle().await;
    assert!(!cd.data_dir.join("index/crates-io/se/rd/serde").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_disk_write_still_answers_and_leaves_nothing_half_written() {
    let up = FakeUpstream::start().await;
    let p = build(CrateSpec::new("serde", "1.0.0"));
    up.publish(p.clone());
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    // A file where the crates folder should be: every crate write fails.
    std::fs::write(cd.data_dir.join("crates"), b"in the way").unwrap();

    let url = "/crates-io/api/v1/crates/serde/1.0.0/download";
    let r = cd.get(url).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap(),
        p.tarball,
        "the client gets its bytes"
    );
    cd.wait_idle().await;
    assert_eq!(
        cd.metric("store_failures_total", "registry=\"crates-io\"")
            .await,
        1.0
    );
    let tmp = std::fs::read_dir(cd.data_dir.join("tmp")).unwrap().count();
    assert_eq!(tmp, 0, "no partial file left behind");
    assert_eq!(
        cd.metric("cache_entries", "kind=\"crate\",tier=\"disk\"")
            .await,
        0.0,
        "no record of a file that is not there"
    );
    // Memory still has it.
    assert_eq!(cd.get(url).await.bytes().await.unwrap(), p.tarball);
    assert_eq!(up.hits("/dl/"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_retried_with_backoff_and_retry_after() {
    let up = FakeUpstream::start().await;
    let p = build(CrateSpec::new("serde", "1.0.0"));
    up.publish(p.clone());
    up.publish(build(CrateSpec::new("syn", "2.0.0")));
    up.publish(build(CrateSpec::new("quote", "1.0.0")));
    let cd = Cratedock::start(&config_with(&up.index_url(), "", "retries = 2")).await;
    let gaps = |arrivals: Vec<std::time::Instant>| -> Vec<Duration> {
        arrivals.windows(2).map(|w| w[1] - w[0]).collect()
    };

    // An index file: one 429 asking for a second, then the file.
    up.fail_next("/index/se/rd/serde", 1, 429, Some(1));
    let r = cd.get("/crates-io/index/se/rd/serde").await;
    assert_eq!(r.status(), 200);
    let g = gaps(up.arrivals("/index/se/rd/serde"));
    assert_eq!(g.len(), 1);
    assert!(
        g[0] >= Duration::from_secs(1),
        "Retry-After honoured: {g:?}"
    );

    // A crate download: two 503s asking for a second each, then the file.
    up.fail_next("/dl/serde/", 2, 503, Some(1));
    let r = cd
        .get("/crates-io/api/v1/crates/serde/1.0.0/download")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), p.tarball);
    let g = gaps(up.arrivals("/dl/serde/"));
    assert_eq!(g.len(), 2);
    assert!(g.iter().all(|d| *d >= Duration::from_secs(1)), "{g:?}");
    assert_eq!(
        cd.metric("upstream_retries_total", "kind=\"crate\"").await,
        2.0
    );

    // Without Retry-After: exponential backoff, bounded, then a clear 502.
    up.fail_next("/dl/syn/", 5, 500, None);
    let r = cd.get("/crates-io/api/v1/crates/syn/2.0.0/download").await;
    assert_eq!(r.status(), 502);
    assert!(detail(r).await.contains("answered HTTP 500"));
    let g = gaps(up.arrivals("/dl/syn/"));
    assert_eq!(g.len(), 2, "the first attempt and two retries");
    assert!(
        g[0] >= Duration::from_millis(100) && g[1] >= Duration::from_millis(200),
        "{g:?}"
    );

    // A Retry-After longer than cratedock waits: the failure stands at once.
    up.fail_next("/dl/quote/", 1, 429, Some(3600));
    let r = cd
        .get("/crates-io/api/v1/crates/quote/1.0.0/download")
        .await;
    assert_eq!(r.status(), 502);
    assert_eq!(up.hits("/dl/quote/"), 1);
    // Each attempt is counted once in the upstream metrics.
    assert_eq!(
        cd.metric("upstream_requests_total", "kind=\"crate\"").await,
        7.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_give_up_after_the_coalescing_wait_with_a_504() {
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("serde", "1.0.0")));
    let cd = Cratedock::start(&config_with(
        &up.index_url(),
        "coalesce_wait_ms = 300",
        "retries = 0\nrequest_timeout_ms = 10000",
    ))
    .await;
    up.set_fault(Fault::Delay(Duration::from_secs(3)), Target::Index);
    let client = http_client();
    let url = cd.url("/crates-io/index/se/rd/serde");
    let (a, b) = tokio::join!(client.get(&url).send(), client.get(&url).send());
    for r in [a.unwrap(), b.unwrap()] {
        assert_eq!(r.status(), 504);
        let d = detail(r).await;
        assert!(d.contains("timed out after 300 ms waiting"), "{d}");
    }
    assert_eq!(
        up.hits("/index/se/rd/serde"),
        1,
        "one upstream request for both"
    );
    // The fetch goes on and fills the cache for the next request.
    cd.wait_idle().await;
    up.set_fault(Fault::None, Target::All);
    let r = cd.get("/crates-io/index/se/rd/serde").await;
    assert_eq!(r.status(), 200);
    assert_eq!(up.hits("/index/se/rd/serde"), 1);
}
