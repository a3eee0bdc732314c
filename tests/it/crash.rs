//! `kill -9` at several moments of a storm of cold downloads and index fetches: after each
//! restart nothing corrupt or partial is served, the bookkeeping matches the files (verify
//! finds nothing), `tmp/` holds nothing, and every request works.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_storm_of_cold_fetches_loses_nothing_and_serves_nothing_broken() {
    let up = FakeUpstream::start().await;
    // Small crates (answered from memory, stored after) and large ones (staged in tmp/).
    let crates: Vec<_> = (0..36)
        .map(|i| {
            let padding = if i % 3 == 0 { 300_000 } else { 2_000 };
            build(CrateSpec::new(&format!("storm{i}"), "1.0.0").padding(padding))
        })
        .collect();
    for p in &crates {
        up.publish(p.clone());
    }
    let crates = Arc::new(crates);
    let config = config_with(&up.index_url(), "memory_max_item_bytes = 100000", "");
    let mut cd = Cratedock::start(&config).await;

    // Three storms, each killed once some of its requests have been answered.
    for (round, kill_after) in [(0, 3), (1, 10), (2, 20)] {
        let answered = Arc::new(AtomicUsize::new(0));
        let enough = Arc::new(tokio::sync::Notify::new());
        let port = cd.port;
        let mut tasks = Vec::new();
        for worker in 0..6 {
            let (crates, answered, enough) = (crates.clone(), answered.clone(), enough.clone());
            tasks.push(tokio::spawn(async move {
                let client = http_client();
                // Each worker walks the crates from its own starting point: distinct cold keys.
                for step in 0..crates.len() {
                    let p = &crates[(worker * 6 + step + round * 7) % crates.len()];
                    let name = &p.spec.name;
                    let base = format!("http://127.0.0.1:{port}/crates-io");
                    let index = format!("{base}/index/{}", index_path(name));
                    let dl = format!("{base}/api/v1/crates/{name}/1.0.0/download");
                    let ok = async {
                        client.get(&index).send().await.ok()?.bytes().await.ok()?;
                        client.get(&dl).send().await.ok()?.bytes().await.ok()
                    }
                    .await;
                    if ok.is_none() {
                        return; // the server is gone
                    }
                    if answered.fetch_add(1, Ordering::SeqCst) + 1 == kill_after {
                        enough.notify_one();
                    }
                }
            }));
        }
        tokio::time::timeout(Duration::from_secs(60), enough.notified())
            .await
            .expect("the storm gets answers");
        cd.signal("KILL");
        for t in tasks {
            let _ = t.await;
        }
        cd = cd.restart_after_kill().await;

        let tmp = std::fs::read_dir(cd.data_dir.join("tmp")).unwrap().count();
        assert_eq!(tmp, 0, "round {round}: nothing left in tmp/");
        let verify = cd.admin(&["cache", "verify"]);
        let report = String::from_utf8_lossy(&verify.stdout);
        assert!(report.contains(" 0 problems"), "round {round}: {report}");
        // Every file is served whole and right, from the cache or fetched again.
        for p in crates.iter() {
            let name = &p.spec.name;
            let r = cd
                .get(&format!("/crates-io/api/v1/crates/{name}/1.0.0/download"))
                .await;
            assert_eq!(r.status(), 200, "round {round}: {name}");
            assert_eq!(r.bytes().await.unwrap(), p.tarball, "round {round}: {name}");
            let r = cd
                .get(&format!("/crates-io/index/{}", index_path(name)))
                .await;
            assert_eq!(
                r.text().await.unwrap().trim(),
                p.line,
                "round {round}: {name}"
            );
        }
        cd.wait_idle().await;
    }
}
