//! A full disk (a small tmpfs in a mount namespace the test creates): clients still get
//! verified bytes, nothing half-written stays, the failures show in the metrics and in
//! readiness, and writing resumes by itself once space is freed.

use std::path::Path;

use crate::support::*;

/// Bytes free on the filesystem of `path`.
fn free_bytes(path: &Path) -> u64 {
    // statfs(2) of the path itself (df would look the path up in this namespace's mounts).
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    parts.next().unwrap() * parts.next().unwrap()
}

fn fill(path: &Path, bytes: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0xa5u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        if f.write_all(&block[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    let _ = f.sync_all();
}

async fn ready(cd: &Cratedock) -> u16 {
    cd.get("/health/ready").await.status().as_u16()
}

fn download(name: &str) -> String {
    format!("/crates-io/api/v1/crates/{name}/1.0.0/download")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_still_serves_verified_bytes_and_recovers_once_space_is_freed() {
    let up = FakeUpstream::start().await;
    let big = build(CrateSpec::new("big", "1.0.0").padding(400_000));
    let small = build(CrateSpec::new("small", "1.0.0").padding(3_000));
    let later = build(CrateSpec::new("later", "1.0.0").padding(3_000));
    for p in [&big, &small, &later] {
        up.publish(p.clone());
    }
    let config = config_with(&up.index_url(), "memory_max_item_bytes = 100000", "");
    let Some(cd) = Cratedock::start_on_tmpfs(&config, 8 << 20).await else {
        return;
    };
    // The disk fills up (another tenant of the volume, a log gone wild): 64 KiB are left.
    let filler = cd.data_dir.join("filler");
    fill(&filler, free_bytes(&cd.data_dir).saturating_sub(64 * 1024));

    // The large crate cannot be staged on disk: the first try may be cut short, a retry (as
    // cargo does) gets the whole verified file.
    let mut served = false;
    for _ in 0..3 {
        let r = cd.get(&download("big")).await;
        if r.status() == 200 && r.bytes().await.is_ok_and(|b| b == big.tarball) {
            served = true;
            break;
        }
    }
    assert!(
        served,
        "the large crate is served from the upstream\n{}",
        cd.log()
    );
    cd.wait_idle().await;
    // Now nothing is left at all: even a small file cannot be stored.
    fill(&cd.data_dir.join("filler-2"), u64::MAX);
    let r = cd.get(&download("small")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), small.tarball);
    cd.wait_idle().await;
    assert!(cd.metric("disk_write_errors_total", "").await >= 1.0);
    assert_eq!(cd.metric("disk_writable", "").await, 0.0);
    assert_eq!(
        ready(&cd).await,
        503,
        "readiness reports the write failures"
    );
    let tmp: Vec<_> = std::fs::read_dir(cd.data_dir.join("tmp"))
        .unwrap()
        .collect();
    assert!(
        tmp.is_empty(),
        "nothing half-written stays in tmp/: {tmp:?}"
    );
    assert!(
        !cd.data_dir
            .join("crates/crates-io/big/big-1.0.0.crate")
            .exists(),
        "no partial crate file"
    );

    // Space is freed: readiness and writing come back by themselves.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(cd.data_dir.join("filler-2")).unwrap();
    wait_until("readiness comes back", || async { ready(&cd).await == 200 }).await;
    let r = cd.get(&download("later")).await;
    assert_eq!(r.bytes().await.unwrap(), later.tarball);
    cd.wait_idle().await;
    assert!(
        cd.data_dir
            .join("crates/crates-io/later/later-1.0.0.crate")
            .exists(),
        "stored again\n{}",
        cd.log()
    );
    assert_eq!(cd.metric("disk_writable", "").await, 1.0);
    let r = cd.get(&download("big")).await;
    assert_eq!(r.bytes().await.unwrap(), big.tarball);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_store_recovers_from_a_full_disk_without_a_restart() {
    let up = FakeUpstream::start().await;
    let Some(mut cd) =
        Cratedock::start_on_tmpfs(&mirror_config(&up.index_url(), ""), 8 << 20).await
    else {
        return;
    };
    let add = |login: String| {
        let cd = &cd;
        async move {
            let body = format!("{{\"login\":\"{login}\"}}");
            cd.admin_api(reqwest::Method::POST, "/-/admin/users", Some(&body))
                .await
                .status()
        }
    };
    assert!(add("before".into()).await.is_success());
    let filler = cd.data_dir.join("filler");
    fill(&filler, u64::MAX);
    // Changes go on arriving while the disk is full; sled's background flush fails on them.
    let mut n = 0;
    wait_until("the metadata store notices the failed flush", || {
        n += 1;
        let login = format!("during-{n}");
        let cd = &cd;
        async move {
            let _ = add(login).await;
            cd.log().contains("reopening")
        }
    })
    .await;
    std::fs::remove_file(&filler).unwrap();
    wait_until("changes are stored again", || async {
        add(format!("after-{}", rand_suffix())).await.is_success()
    })
    .await;
    assert!(cd.log().contains("open again"), "{}", cd.log());
    let users = cd.admin(&["--json", "user", "list"]);
    let users = String::from_utf8_lossy(&users.stdout);
    assert!(
        users.contains("\"before\"") && users.contains("\"after-"),
        "{users}"
    );
    cd.stop().await;
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
