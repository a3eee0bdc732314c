//! An upstream that misbehaves: nothing bad is cached, stale copies stand in, errors are clear.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_is_refused_and_not_cached() {
    let (up, cd) = one_crate_mirror("negative_ttl_ms = 4000").await;
    up.set_fault(Fault::WrongBytes, Target::Crates);

    let project = CargoProject::new(&cd.index_url(), &[("serde", "1")]);
    project.ok(&["generate-lockfile"]);
    let out = project.cargo(&["fetch"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The bytes stream to cargo while they download; the last byte is held back until the
    // checksum is checked, so cargo sees either the 502 (when the check came first) or a
    // transfer broken off one byte short (an HTTP/2 stream reset, or a closed HTTP/1.1
    // connection), never a complete wrong file.
    assert!(
        stderr.contains("checksum mismatch for crate serde 1.0.0")
            || stderr.contains("was not closed cleanly")
            || stderr.contains("1 bytes remaining"),
        "{stderr}"
    );
    assert!(cd.stored_crates().is_empty(), "nothing stored");
    assert_eq!(
        cd.metric("checksum_failures_total", "registry=\"crates-io\"")
            .await,
        1.0
    );

    // cargo's retry (and anyone else) gets the clear error at once, for `negative_ttl_ms`.
    let out = project.cargo(&["fetch"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("502"), "{stderr}");
    assert!(
        stderr.contains("checksum mismatch for crate serde 1.0.0"),
        "{stderr}"
    );
    let r = cd
        .get("/crates-io/api/v1/crates/serde/1.0.0/download")
        .await;
    assert_eq!(r.status(), 502);
    assert!(detail(r).await.contains("checksum mismatch"));
    assert_eq!(up.hits("/dl/"), 1);

    // Then it is fetched again: a bad copy was never cached.
    up.set_fault(Fault::None, Target::All);
    wait_until("the refusal expires", || async {
        cd.get("/crates-io/api/v1/crates/serde/1.0.0/download")
            .await
            .status()
            == 200
    })
    .await;
    project.ok(&["fetch"]);
    assert_eq!(up.hits("/dl/"), 2);
    assert_eq!(cd.stored_crates().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_5xx_and_timeouts_serve_stale_index_files() {
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("serde", "1.0.0")));
    let cd = Cratedock::start(&mirror_config(
        &up.index_url(),
        "index_ttl_ms = 0\nstale_while_revalidate_ms = 0\nrequest_timeout_ms = 300",
    ))
    .await;
    let client = http_client();
    let url = cd.url("/crates-io/index/se/rd/serde");
    let good = client.get(&url).send().await.unwrap().text().await.unwrap();
    // A request joining a fetch that is still writing to disk gets that fetch's answer; let
    // it end, so that each request below goes to the (failing) upstream itself.
    cd.wait_idle().await;

    for fault in [
        Fault::Status(500),
        Fault::Status(503),
        Fault::Delay(Duration::from_secs(2)),
        Fault::Html200,
        Fault::Empty200,
        Fault::CutOff,
    ] {
        up.set_fault(fault.clone(), Target::Index);
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{fault:?}");
        assert_eq!(r.text().await.unwrap(), good, "{fault:?}: the stale copy");
    }
    assert_eq!(
        cd.metric(
            "cache_results_total",
            "kind=\"index\",registry=\"crates-io\",result=\"stale\""
        )
        .await,
        6.0
    );
    assert!(
        cd.metric("upstream_requests_total", "outcome=\"timeout\"")
            .await
            >= 1.0
    );
    assert!(
        cd.metric("upstream_requests_total", "outcome=\"status_5xx\"")
            .await
            >= 2.0
    );

    // After the faults, the good file is still what is cached and served.
    up.set_fault(Fault::None, Target::All);
    assert_eq!(
        client.get(&url).send().await.unwrap().text().await.unwrap(),
        good
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_stale_copy_upstream_failures_are_clear_gateway_errors() {
    let (up, cd) = one_crate_mirror("request_timeout_ms = 300").await;
    let client = http_client();
    let url = cd.url("/crates-io/index/se/rd/serde");

    for (fault, status, words) in [
        (Fault::Status(500), 502, "answered HTTP 500"),
        (Fault::Delay(Duration::from_secs(2)), 504, "timed out"),
        (Fault::Html200, 502, "invalid data"),
        (Fault::Empty200, 502, "invalid data"),
        (Fault::CutOff, 502, "cut off"),
    ] {
        up.set_fault(fault.clone(), Target::Index);
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{fault:?}");
        let d = detail(r).await;
        assert!(
            d.contains(words) && d.contains("crates-io"),
            "{fault:?}: {d}"
        );
    }
    // None of it was cached: with the upstream healthy, the real file arrives.
    up.set_fault(Fault::None, Target::All);
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("\"name\":\"serde\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_crate_downloads_are_never_stored() {
    let up = FakeUpstream::start().await;
    let p = build(CrateSpec::new("serde", "1.0.0").padding(200_000));
    up.publish(p.clone());
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "download_timeout_ms = 500")).await;
    let client = http_client();
    let url = cd.url("/crates-io/api/v1/crates/serde/1.0.0/download");

    for (fault, status) in [
        (Fault::CutOff, 502),
        (Fault::Html200, 502),
        (Fault::Status(503), 502),
        (Fault::Delay(Duration::from_secs(2)), 504),
    ] {
        up.set_fault(fault.clone(), Target::Crates);
        let r = client.get(&url).send().await.unwrap();
        if fault == Fault::CutOff && r.status() == 200 {
            // The download had started streaming to the client: the transfer breaks off.
            assert!(r.bytes().await.is_err(), "{fault:?}: cut short");
        } else {
            let code = r.status().as_u16();
            let d = detail(r).await;
            assert_eq!(code, status, "{fault:?}: {d}\n{}", cd.log());
            assert!(d.contains("serde 1.0.0"), "{fault:?}");
        }
        assert!(cd.stored_crates().is_empty(), "{fault:?}: nothing stored");
    }
    let tmp = std::fs::read_dir(cd.data_dir.join("tmp")).unwrap().count();
    assert_eq!(tmp, 0, "no partial files left behind");

    up.set_fault(Fault::None, Target::All);
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-encoding").is_none());
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        p.tarball.as_slice(),
        "byte-exact"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_cargo_shaped_4xx_and_touches_nothing() {
    let up = FakeUpstream::start().await;
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    let client = http_client();
    let long = "a".repeat(300);
    let cases = [
        ("/crates-io/index/..%2F..%2Fetc/passwd".to_owned(), 400),
        ("/crates-io/index/se/rd/SERDE".to_owned(), 400),
        ("/crates-io/index/xx/yy/serde".to_owned(), 400),
        ("/crates-io/index/se/rd/ser%00de".to_owned(), 400),
        (format!("/crates-io/index/aa/aa/{long}"), 400),
        (
            "/crates-io/api/v1/crates/..%2F..%2Fx/1.0.0/download".to_owned(),
            400,
        ),
        (
            "/crates-io/api/v1/crates/serde/not-a-version/download".to_owned(),
            400,
        ),
        (
            "/crates-io/api/v1/crates/serde/1.0/download".to_owned(),
            400,
        ),
        (
            "/crates-io/api/v1/crates/ser%2Fde/1.0.0/download".to_owned(),
            400,
        ),
        ("/nope/index/se/rd/serde".to_owned(), 404),
        ("/nope/index/config.json".to_owned(), 404),
        ("/crates-io/whatever".to_owned(), 404),
    ];
    for (path, status) in &cases {
        let r = cd.get(path).await;
        assert_eq!(r.status().as_u16(), *status, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        let d = detail(r).await;
        assert!(!d.is_empty() && d.len() < 400, "{path}: {d}");
    }
    let r = cd.get("/crates-io/api/v1/crates?q=serde&per_page=10").await;
    assert_eq!(r.status(), 404);
    assert!(detail(r).await.contains("is a mirror"));
    let r = client
        .post(cd.url("/crates-io/index/se/rd/serde"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(detail(r).await.contains("POST"));

    assert_eq!(up.hits("/"), 0, "nothing reached the upstream");
    assert!(!cd.data_dir.join("index").exists(), "nothing was written");
    assert!(!cd.data_dir.join("crates").exists(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_upstream_max_age_is_capped_not_a_crash() {
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("serde", "1.0.0")));
    up.set_cache_control(Some("max-age=18446744073709551615"));
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    for _ in 0..2 {
        let r = cd.get("/crates-io/index/se/rd/serde").await;
        assert_eq!(r.status(), 200);
    }
    let r = cd
        .get("/crates-io/api/v1/crates/serde/1.0.0/download")
        .await;
    assert_eq!(r.status(), 200, "config.json and the index are usable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_revalidation_serves_the_stale_copy_and_finishes_in_the_background() {
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("serde", "1.0.0")));
    let cd = Cratedock::start(&mirror_config(
        &up.index_url(),
        "index_ttl_ms = 0\nstale_while_revalidate_ms = 0\nrevalidate_wait_ms = 200",
    ))
    .await;
    let client = http_client();
    let url = cd.url("/crates-io/index/se/rd/serde");
    let v1 = client.get(&url).send().await.unwrap().text().await.unwrap();
    cd.wait_idle().await;

    up.publish(build(CrateSpec::new("serde", "1.1.0")));
    up.set_fault(Fault::Delay(Duration::from_millis(1500)), Target::Index);
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        v1,
        "the stale copy, without waiting for the upstream"
    );
    assert!(cd.log().contains("serving a stale index file"));

    // The revalidation finished on its own and stored 1.1.0: the next check is a 304.
    cd.wait_idle().await;
    up.set_fault(Fault::None, Target::All);
    let r = client.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(r.contains("1.1.0"), "{r}");
    assert!(
        cd.metric("cache_results_total", "result=\"revalidated\"")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_token_never_goes_to_another_origin() {
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("serde", "1.0.0")));
    // Same server, other origin: `dl` says localhost, the index URL says 127.0.0.1.
    let port = up.base.rsplit(':').next().unwrap().to_owned();
    up.set_dl_base(&format!("http://localhost:{port}"));
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "token = \"secret-token\"")).await;
    let r = cd
        .get("/crates-io/api/v1/crates/serde/1.0.0/download")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        up.authorized("/index/"),
        2,
        "config.json and the index file carry the token"
    );
    assert_eq!(up.hits("/dl/"), 1);
    assert_eq!(
        up.authorized("/dl/"),
        0,
        "the download on another origin does not"
    );
    assert!(
        !cd.log().contains("secret-token"),
        "the token is never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_an_upstream_are_bounded_by_max_connections() {
    let up = FakeUpstream::start().await;
    let names: Vec<String> = (0..16).map(|i| format!("cold{i:02}")).collect();
    for n in &names {
        up.publish(build(CrateSpec::new(n, "1.0.0")));
    }
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "max_connections = 4")).await;
    let delay = Duration::from_millis(300);
    up.set_fault(Fault::Delay(delay), Target::Index);
    let client = http_client();
    let requests = names.iter().map(|n| {
        let url = cd.url(&format!("/crates-io/index/co/ld/{n}"));
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().status() }
    });
    for status in futures_util::future::join_all(requests).await {
        assert_eq!(status, 200);
    }
    // With at most 4 in flight, the 5th request can only start once one of the 4 before it
    // has had its answer, which the upstream holds back for `delay`.
    let arrivals = up.arrivals("/index/co/ld/");
    assert_eq!(arrivals.len(), names.len());
    for (k, first) in arrivals.iter().enumerate() {
        if let Some(fifth) = arrivals.get(k + 4) {
            assert!(
                fifth.duration_since(*first) >= delay,
                "more than 4 requests in flight: {arrivals:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_fails_after_its_status_was_sent_is_logged_and_counted_as_cut_short() {
    let up = FakeUpstream::start().await;
    let p = build(CrateSpec::new("serde", "1.0.0").padding(400_000));
    up.publish(p.clone());
    let cd = Cratedock::start(&mirror_config(
        &up.index_url(),
        "download_timeout_ms = 1000",
    ))
    .await;
    // The upstream sends half the file, then nothing: the client has its 200 already.
    let gate = Gate::default();
    up.set_fault(Fault::HalfThenWait(gate.clone()), Target::Crates);
    let r = cd
        .get("/crates-io/api/v1/crates/serde/1.0.0/download")
        .await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "the transfer is cut short");
    gate.open();
    wait_until("the cut is counted", || async {
        cd.metric("responses_cut_short_total", "cause=\"timeout\"")
            .await
            == 1.0
    })
    .await;
    assert!(
        cd.log().contains("cut short after its status was sent"),
        "{}",
        cd.log()
    );
    assert!(
        cd.metric("upstream_requests_total", "outcome=\"timeout\"")
            .await
            >= 1.0
    );
    assert!(cd.stored_crates().is_empty());
}
