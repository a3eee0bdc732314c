//! The pull-through path as cargo sees it.

use std::time::Duration;

use crate::support::*;

/// `a 1.0.0` depends on `b ^1`; `b` has 1.0.0 and 1.1.0.
fn small_registry(up: &FakeUpstream) {
    up.publish(build(CrateSpec::new("a", "1.0.0").dep("b", "^1")));
    up.publish(build(CrateSpec::new("b", "1.0.0")));
    up.publish(build(CrateSpec::new("b", "1.1.0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_fetch_then_offline_build_goes_through_the_mirror() {
    let up = FakeUpstream::start().await;
    small_registry(&up);
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    let project = CargoProject::new(&cd.index_url(), &[("a", "1")]);

    project.ok(&["generate-lockfile"]);
    let lock = project.lockfile();
    assert!(lock.contains("name = \"b\"\nversion = \"1.1.0\""), "{lock}");
    assert!(
        lock.contains("registry+https://github.com/rust-lang/crates.io-index"),
        "a replaced crates.io keeps its identity in the lockfile:\n{lock}"
    );
    project.ok(&["fetch"]);
    project.ok(&["build", "--offline"]);

    assert_eq!(up.hits("/dl/"), 2, "one download of each crate");
    assert_eq!(up.hits("/index/config.json"), 1);
    assert_eq!(
        cd.metric(
            "cache_results_total",
            "kind=\"crate\",registry=\"crates-io\",result=\"miss\""
        )
        .await,
        2.0
    );
    assert_eq!(cd.stored_crates().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_fetch_succeeds_with_the_upstream_stopped() {
    let mut up = FakeUpstream::start().await;
    small_registry(&up);
    // Every index file is stale at once, so each request tries the upstream first.
    let cd = Cratedock::start(&mirror_config(
        &up.index_url(),
        "index_ttl_ms = 0\nstale_while_revalidate_ms = 0\nconnect_timeout_ms = 500",
    ))
    .await;
    let first = CargoProject::new(&cd.index_url(), &[("a", "1")]);
    first.ok(&["generate-lockfile"]);
    first.ok(&["fetch"]);
    cd.wait_idle().await;

    up.stop().await;

    let second = CargoProject::new(&cd.index_url(), &[("a", "1")]);
    second.ok(&["generate-lockfile"]);
    second.ok(&["fetch"]);
    second.ok(&["build", "--offline"]);
    assert!(second.lockfile().contains("version = \"1.1.0\""));
    assert!(
        cd.metric(
            "cache_results_total",
            "kind=\"index\",registry=\"crates-io\",result=\"stale\""
        )
        .await
            >= 2.0
    );
    assert!(
        cd.metric("upstream_requests_total", "outcome=\"connect\"")
            .await
            >= 1.0,
        "the upstream was tried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_downloads_of_one_uncached_crate_make_one_upstream_request() {
    let up = FakeUpstream::start().await;
    let big = build(CrateSpec::new("big", "1.0.0").padding(3 * 1024 * 1024));
    let expected = big.cksum.clone();
    up.publish(big);
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    up.set_fault(Fault::Delay(Duration::from_millis(500)), Target::Crates);

    let client = http_client();
    let url = cd.url("/crates-io/api/v1/crates/big/1.0.0/download");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let r = client.get(url).send().await.unwrap();
                (r.status().as_u16(), r.bytes().await.unwrap())
            })
        })
        .collect();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(sha256_hex(&body), expected);
    }
    assert_eq!(up.hits("/dl/"), 1, "exactly one upstream download");
    assert_eq!(up.hits("/index/bi/g/big"), 0, "3-letter names use 3/b/big");
    assert_eq!(up.hits("/index/3/b/big"), 1, "exactly one index fetch");
    let waiters = cd.metric("coalesced_waiters_total", "kind=\"crate\"").await;
    assert!(waiters >= 1.0, "{waiters} waiters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_get_304() {
    let up = FakeUpstream::start().await;
    small_registry(&up);
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    let client = http_client();
    let url = cd.url("/crates-io/index/1/b");

    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-type"], "text/plain; charset=utf-8");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong ETag: {etag}"
    );
    let body = first.text().await.unwrap();
    assert_eq!(body.lines().count(), 2);

    for sent in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
    ] {
        let again = client
            .get(&url)
            .header("if-none-match", &sent)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "If-None-Match: {sent}");
        assert_eq!(again.headers()["etag"], etag.as_str());
    }
    let changed = client
        .get(&url)
        .header("if-none-match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);

    // Cargo itself revalidates with If-None-Match when asked to update.
    let project = CargoProject::new(&cd.index_url(), &[("a", "1")]);
    project.ok(&["generate-lockfile"]);
    project.ok(&["generate-lockfile"]);
    assert!(cd.metric("http_requests_total", "status=\"304\"").await >= 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newly_published_upstream_version_appears_after_the_ttl() {
    let up = FakeUpstream::start().await;
    small_registry(&up);
    let cd = Cratedock::start(&mirror_config(
        &up.index_url(),
        "index_ttl_ms = 1000\nstale_while_revalidate_ms = 0",
    ))
    .await;
    let project = CargoProject::new(&cd.index_url(), &[("a", "1")]);
    project.ok(&["generate-lockfile"]);
    assert!(project.lockfile().contains("version = \"1.1.0\""));

    up.publish(build(CrateSpec::new("b", "1.2.0")));
    project.ok(&["update"]);
    assert!(
        !project.lockfile().contains("1.2.0"),
        "within the TTL the cached index is served"
    );

    // Past the TTL, the next update sees the new version.
    wait_until("the index file is past its TTL", || async {
        project.ok(&["update"]);
        project.lockfile().contains("version = \"1.2.0\"")
    })
    .await;
    assert!(
        project.lockfile().contains("version = \"1.2.0\""),
        "{}",
        project.lockfile()
    );
    project.ok(&["fetch"]);

    // An unchanged file past its TTL is revalidated with a conditional request: 304 upstream.
    wait_until("an index file is revalidated", || async {
        project.ok(&["update"]);
        cd.metric("cache_results_total", "result=\"revalidated\"")
            .await
            >= 1.0
    })
    .await;
    assert!(
        cd.metric("cache_results_total", "result=\"revalidated\"")
            .await
            >= 1.0
    );
    assert!(
        cd.metric("upstream_requests_total", "outcome=\"not_modified\"")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_max_age_is_honoured() {
    let up = FakeUpstream::start().await;
    small_registry(&up);
    up.set_cache_control(Some("public, max-age=3600"));
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "index_ttl_ms = 0")).await;
    for _ in 0..3 {
        let r = cd.get("/crates-io/index/1/b").await;
        assert_eq!(r.status(), 200);
        let cc = r.headers()["cache-control"].to_str().unwrap().to_owned();
        assert!(
            cc.starts_with("public, max-age=35") || cc.starts_with("public, max-age=36"),
            "{cc}"
        );
    }
    assert_eq!(
        up.hits("/index/1/b"),
        1,
        "fresh for an hour: no revalidation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_freshness_beyond_the_cap_and_a_private_answer_are_served_as_such() {
    let up = FakeUpstream::start().await;
    small_registry(&up);
    // A year of freshness from the upstream counts for max_freshness_ms only.
    up.set_cache_control(Some("public, max-age=31536000"));
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "max_freshness_ms = 60000")).await;
    let r = cd.get("/crates-io/index/1/b").await;
    let cc = r.headers()["cache-control"].to_str().unwrap().to_owned();
    assert!(
        cc == "public, max-age=60" || cc == "public, max-age=59",
        "{cc}"
    );
    // What the upstream marks private is not handed on as public.
    up.set_cache_control(Some("private, max-age=600"));
    let r = cd.get("/crates-io/index/1/a").await;
    assert_eq!(r.status(), 200);
    let cc = r.headers()["cache-control"].to_str().unwrap().to_owned();
    assert!(cc.starts_with("private, max-age="), "{cc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_whole_cache() {
    let mut up = FakeUpstream::start().await;
    small_registry(&up);
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    let project = CargoProject::new(&cd.index_url(), &[("a", "1")]);
    project.ok(&["generate-lockfile"]);
    project.ok(&["fetch"]);

    let cd = cd.restart().await;
    up.stop().await;

    let fresh = project.fresh_home(&cd.index_url());
    fresh.ok(&["fetch"]);
    fresh.ok(&["build", "--offline"]);
    assert_eq!(
        cd.metric(
            "cache_results_total",
            "kind=\"crate\",registry=\"crates-io\",result=\"hit\",tier=\"disk\""
        )
        .await,
        2.0
    );
    assert_eq!(cd.metric("upstream_requests_total", "").await, 0.0);
    assert_eq!(
        cd.metric("cache_entries", "kind=\"crate\",tier=\"disk\"")
            .await,
        2.0
    );
    assert_eq!(
        cd.metric("cache_entries", "kind=\"index\",tier=\"disk\"")
            .await,
        3.0,
        "a, b, config.json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crates_that_do_not_exist_get_404_and_a_short_negative_cache() {
    let up = FakeUpstream::start().await;
    small_registry(&up);
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "negative_ttl_ms = 60000")).await;
    for _ in 0..3 {
        let r = cd.get("/crates-io/index/no/pe/nope").await;
        assert_eq!(r.status(), 404);
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert!(
            body["errors"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("nope")
        );
    }
    assert_eq!(up.hits("/index/no/pe/nope"), 1, "the 404 was cached");
    assert_eq!(
        cd.metric("cache_results_total", "result=\"negative\"")
            .await,
        2.0
    );

    let r = cd.get("/crates-io/api/v1/crates/b/9.9.9/download").await;
    assert_eq!(r.status(), 404, "a version missing from the index");

    let project = CargoProject::new(&cd.index_url(), &[("nope", "1")]);
    let out = project.cargo(&["generate-lockfile"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no matching package named `nope` found"),
        "{stderr}"
    );
}

/// cargo asks every `http://` request to upgrade to HTTP/2 (`Upgrade: h2c`); cratedock
/// upgrades, so cargo multiplexes on one connection. With the upgrade off it stays HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cargo_over_plain_http_is_upgraded_to_http2_unless_turned_off() {
    let up = FakeUpstream::start().await;
    small_registry(&up);
    for (extra, upgraded) in [("", true), ("[server]\nh2c_upgrade = false\n", false)] {
        let cd = Cratedock::start(&format!("{extra}{}", mirror_config(&up.index_url(), ""))).await;
        let h1_before = cd
            .metric("http_requests_by_version_total", "version=\"HTTP/1.1\"")
            .await;
        let project = CargoProject::new(&cd.index_url(), &[("a", "1")]);
        project.ok(&["generate-lockfile"]);
        project.ok(&["fetch"]);
        project.ok(&["build", "--offline"]);

        let h2 = cd
            .metric("http_requests_by_version_total", "version=\"HTTP/2.0\"")
            .await;
        let h1 = cd
            .metric("http_requests_by_version_total", "version=\"HTTP/1.1\"")
            .await;
        let upgrades = cd
            .metric("plain_connections_total", "opening=\"h2c-upgrade\"")
            .await;
        if upgraded {
            // config.json, a, b and two downloads: every cargo request went over HTTP/2.
            assert!(h2 >= 5.0, "HTTP/2 requests: {h2}");
            assert!(upgrades >= 1.0, "h2c upgrades: {upgrades}");
            // Only the test's own metric reads (reqwest, no upgrade) are HTTP/1.1.
            assert!(
                h1 - h1_before <= 3.0,
                "HTTP/1.1 requests: {h1} - {h1_before}"
            );
        } else {
            assert_eq!((h2, upgrades), (0.0, 0.0));
            assert!(
                h1 - h1_before >= 5.0,
                "HTTP/1.1 requests: {h1} - {h1_before}"
            );
        }
    }
}

/// A download streams to the clients while it is still arriving from the upstream (each
/// reads behind the writer), and is stored once whole and verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crate_downloads_stream_to_clients_while_they_arrive() {
    let up = FakeUpstream::start().await;
    let p = build(CrateSpec::new("big", "1.0.0").padding(3_000_000));
    up.publish(p.clone());
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    let gate = Gate::default();
    up.set_fault(Fault::HalfThenWait(gate.clone()), Target::Crates);
    let url = cd.url("/crates-io/api/v1/crates/big/1.0.0/download");
    let client = http_client();

    // The first client gets the status, the length and the first half while the upstream
    // holds back the second half.
    let mut first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.content_length(), Some(p.tarball.len() as u64));
    let mut got = Vec::new();
    while got.len() < p.tarball.len() / 2 - 1 {
        got.extend_from_slice(&first.chunk().await.unwrap().expect("more bytes"));
    }
    // A second client joins the same download and starts from the first byte.
    let second = client.get(&url).send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert!(
        cd.stored_crates().is_empty(),
        "not stored before it is whole"
    );

    gate.open();
    while let Some(chunk) = first.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, p.tarball, "byte-exact");
    assert_eq!(second.bytes().await.unwrap().as_ref(), p.tarball.as_slice());
    assert_eq!(up.hits("/dl/"), 1, "one upstream download for both");
    cd.wait_idle().await;
    assert_eq!(cd.stored_crates().len(), 1);
    let tmp = std::fs::read_dir(cd.data_dir.join("tmp")).unwrap().count();
    assert_eq!(tmp, 0, "no temp files left");
}
