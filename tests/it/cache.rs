//! The disk cache's lifecycle through the real server: a size bound held by least recently
//! used eviction (pinned files kept), and verify/repair/gc/stats/purge on a data folder with
//! injected faults.

use crate::support::publish::{body, publish};
use crate::support::*;

fn download(name: &str) -> String {
    format!("/crates-io/api/v1/crates/{name}/1.0.0/download")
}

async fn disk_bytes(cd: &Cratedock) -> f64 {
    cd.metric("cache_bytes", "tier=\"disk\"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_cache_stays_within_its_limit_and_evicts_the_least_recently_used() {
    let up = FakeUpstream::start().await;
    let names = ["c0", "c1", "c2", "c3", "c4", "c5"];
    let published: Vec<_> = names
        .iter()
        .map(|n| build(CrateSpec::new(n, "1.0.0").padding(20_000)))
        .collect();
    for p in &published {
        up.publish(p.clone());
    }
    let size = published[0].tarball.len() as u64;
    // Room for four crates (and their index files) below the limit: high 95%, low 85%.
    let max = size * 9 / 2;
    let config = config_with(
        &up.index_url(),
        &format!("memory_max_item_bytes = 1000\ndisk_max_bytes = {max}"),
        "",
    );
    let cd = Cratedock::start(&format!(
        "{config}\n[registries.internal]\nkind = \"private\"\n"
    ))
    .await;
    cd.admin(&["cache", "pin", "c0"]);
    // A private crate: never evicted, and not counted against the limit.
    let token = cd.admin_token();
    let answer = publish(
        &cd,
        "internal",
        Some(&token),
        body("private-thing", "1.0.0"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let private_file = cd
        .data_dir
        .join("crates/internal/private-thing/private-thing-1.0.0.crate");
    assert!(private_file.exists());
    let fetch = |i: usize| {
        let cd = &cd;
        let p = &published[i];
        async move {
            let r = cd.get(&download(names[i])).await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.bytes().await.unwrap(), p.tarball, "byte-exact");
            cd.wait_idle().await;
        }
    };
    for i in 0..4 {
        fetch(i).await;
    }
    assert_eq!(cd.metric("cache_evictions_total", "").await, 0.0);
    // c1 is used again: c2 and c3 are now the least recently used.
    fetch(1).await;
    for i in 4..6 {
        fetch(i).await;
        // The bound holds at every step: a file that would not fit makes room first.
        assert!(
            disk_bytes(&cd).await <= max as f64,
            "over the limit after c{i}"
        );
        wait_until(
            "eviction brings the disk below the high watermark",
            || async { disk_bytes(&cd).await <= max as f64 * 0.95 },
        )
        .await;
    }
    assert!(cd.metric("cache_evictions_total", "kind=\"crate\"").await >= 2.0);
    assert!(disk_bytes(&cd).await <= max as f64);
    let on_disk = |n: &str| {
        cd.data_dir
            .join(format!("crates/crates-io/{n}/{n}-1.0.0.crate"))
            .exists()
    };
    assert!(on_disk("c0"), "pinned");
    assert!(on_disk("c1") && on_disk("c5"), "recently used");
    assert!(!on_disk("c2"), "least recently used goes first");
    assert_eq!(cd.metric("cache_disk_limit_bytes", "").await, max as f64);
    // An evicted crate is fetched again.
    let before = up.hits("/dl/");
    fetch(2).await;
    assert_eq!(up.hits("/dl/"), before + 1);
    // Stats through the admin API: the mirror's files and its hit ratio.
    let stats = cd.admin(&["--json", "cache", "stats"]);
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    let reg = &v["registries"][0];
    assert_eq!(reg["registry"], "crates-io");
    assert!(reg["crate_files"].as_u64().unwrap() >= 3, "{v:#}");
    assert!(reg["hits"].as_u64().unwrap() >= 1, "{v:#}");
    // gc to a size now: only the pinned crate is left of the crate files.
    let out = cd.admin(&["cache", "gc", "--to", "0"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("evicted"));
    assert_eq!(
        cd.stored_crates().len(),
        2,
        "the pinned one and the private one stay"
    );
    assert!(private_file.exists(), "private crates are never evicted");
    let r = http_client()
        .get(cd.url("/internal/api/v1/crates/private-thing/1.0.0/download"))
        .header("authorization", token.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let audit = cd.admin(&["--json", "audit"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.contains("cache.pin") && audit.contains("cache.gc"),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_bad_files_and_repair_brings_the_books_and_files_back_together() {
    let up = FakeUpstream::start().await;
    let published: Vec<_> = ["alpha", "beta", "gamma", "delta"]
        .iter()
        .map(|n| build(CrateSpec::new(n, "1.0.0").padding(5_000)))
        .collect();
    for p in &published {
        up.publish(p.clone());
    }
    let mut cd = Cratedock::start(&config_with(
        &up.index_url(),
        "memory_max_item_bytes = 1000",
        "",
    ))
    .await;
    for p in &published {
        assert_eq!(cd.get(&download(&p.spec.name)).await.status(), 200);
    }
    cd.wait_idle().await;
    let online = cd.admin(&["cache", "verify"]);
    assert!(String::from_utf8_lossy(&online.stdout).contains("0 problems"));
    cd.stop().await;

    let file = |n: &str| {
        cd.data_dir
            .join(format!("crates/crates-io/{n}/{n}-1.0.0.crate"))
    };
    // Corrupt one byte of alpha; remove beta's file; leave a truncated copy of gamma; and put
    // a file nobody recorded (a crash between a download's file and its record) for epsilon.
    let mut bytes = std::fs::read(file("alpha")).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(file("alpha"), &bytes).unwrap();
    std::fs::remove_file(file("beta")).unwrap();
    let g = std::fs::read(file("gamma")).unwrap();
    std::fs::write(file("gamma"), &g[..g.len() / 2]).unwrap();
    std::fs::create_dir_all(file("zzz").parent().unwrap()).unwrap();
    std::fs::write(file("zzz"), b"not a crate").unwrap();

    let out = cd.offline(&["verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "problems make verify fail:\n{text}");
    for n in ["alpha", "beta", "gamma", "zzz"] {
        assert!(
            text.contains(&format!("{n}-1.0.0.crate")),
            "{n} named:\n{text}"
        );
    }
    assert!(!text.contains("delta"), "{text}");
    assert!(file("alpha").exists(), "verify alone changes nothing");

    let out = cd.offline(&["verify", "--repair"]);
    assert!(!out.status.success(), "it still reports what it found");
    let out = cd.offline(&["verify"]);
    assert!(
        out.status.success(),
        "clean after the repair:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!file("alpha").exists() && !file("zzz").exists());

    let stats = cd.offline(&["cache", "stats"]);
    assert!(String::from_utf8_lossy(&stats.stdout).contains("crates-io"));
    let purge = cd.offline(&["cache", "purge", "delta@1.0.0"]);
    assert!(
        purge.status.success(),
        "{}",
        String::from_utf8_lossy(&purge.stderr)
    );
    assert!(!file("delta").exists());
    let gc = cd.offline(&["gc"]);
    assert!(!gc.status.success(), "no limit and no --to: refused");
    assert!(String::from_utf8_lossy(&gc.stderr).contains("--to"));

    // Served again, byte for byte, every one of them.
    let cd = cd.start_again().await;
    for p in &published {
        let r = cd.get(&download(&p.spec.name)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), p.tarball);
    }
    let audit = cd.admin(&["--json", "audit"]);
    assert!(String::from_utf8_lossy(&audit.stdout).contains("cache.purge"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_left_without_its_record_is_adopted_at_start_once_checked() {
    let up = FakeUpstream::start().await;
    let p = build(CrateSpec::new("serde", "1.0.0").padding(5_000));
    up.publish(p.clone());
    let mut cd = Cratedock::start(&config_with(
        &up.index_url(),
        "memory_max_item_bytes = 1000",
        "",
    ))
    .await;
    assert_eq!(cd.get(&download("serde")).await.status(), 200);
    cd.wait_idle().await;
    cd.stop().await;
    // The bookkeeping forgets the crate (as if killed between the file and its record).
    let purge_record_only = cd.data_dir.join("crates/crates-io/serde/serde-1.0.0.crate");
    let kept = std::fs::read(&purge_record_only).unwrap();
    assert!(
        cd.offline(&["cache", "purge", "serde@1.0.0"])
            .status
            .success()
    );
    std::fs::create_dir_all(purge_record_only.parent().unwrap()).unwrap();
    std::fs::write(&purge_record_only, &kept).unwrap();
    let cd = cd.start_again().await;
    assert!(cd.log().contains("adopted"), "{}", cd.log());
    let hits = up.hits("/dl/");
    let r = cd.get(&download("serde")).await;
    assert_eq!(r.bytes().await.unwrap(), p.tarball);
    assert_eq!(up.hits("/dl/"), hits, "served from the adopted file");
}
