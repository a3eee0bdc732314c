use std::sync::Arc;

use bytes::Bytes;

use super::check::{Checker, Options};
use super::*;
use crate::names::{CrateName, RegistryName, Version};
use crate::store::{Blob, CrateKey, CrateRecord, FsBlobStore, IndexKey, MemoryBook};

fn reg() -> RegistryName {
    RegistryName::new("mirror").unwrap()
}

fn ckey(name: &str, v: &str) -> CrateKey {
    CrateKey::new(
        &reg(),
        &CrateName::new(name).unwrap(),
        &Version::new(v).unwrap(),
    )
}

async fn store(keeper: &Keeper, key: &CrateKey, size: usize, at: u64) {
    let bytes = Bytes::from(vec![b'x'; size]);
    let cksum = crate::index::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    keeper
        .blobs()
        .put(&BlobKey::Crate(key.clone()), bytes)
        .await
        .unwrap();
    let record = CrateRecord {
        cksum,
        size: size as u64,
        stored_at_ms: at,
        license: None,
    };
    keeper.book().put_crate(key, &record).await.unwrap();
}

fn keeper(dir: &std::path::Path, max: u64) -> Keeper {
    let book: Arc<dyn CacheBook> = Arc::new(MemoryBook::default());
    let blobs: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(dir).unwrap());
    Keeper::new(
        book,
        blobs,
        Limit::new(max, 95, 85),
        vec![reg()],
        Arc::new(Metrics::new()),
    )
}

#[tokio::test]
async fn the_least_recently_used_unpinned_files_go_first() {
    let dir = tempfile::tempdir().unwrap();
    let k = keeper(dir.path(), 1000);
    let keys: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| ckey(n, "1.0.0"))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        store(&k, key, 300, 1_000 + i as u64).await;
    }
    // `a` was stored first but used since; `b` is pinned: `c` and then `d` are the oldest.
    k.used(&BlobKey::Crate(keys[0].clone()));
    let pin = Pin::new(&reg(), &CrateName::new("b").unwrap(), None);
    k.book().set_pin(&pin, true).await.unwrap();
    let done = k.evict_to(k.limit().unwrap().low_bytes).await.unwrap();
    assert_eq!(
        (done.files, done.bytes, done.remaining_bytes),
        (2, 600, 600)
    );
    for (key, kept) in keys.iter().zip([true, true, false, false]) {
        let file = dir.path().join(BlobKey::Crate(key.clone()).rel_path());
        assert_eq!(
            k.book().krate(key).await.unwrap().is_some(),
            kept,
            "{key:?}"
        );
        assert_eq!(file.exists(), kept, "{key:?}");
    }
    // Nothing evictable is left but the used one.
    let done = k.evict_to(0).await.unwrap();
    assert_eq!((done.files, done.remaining_bytes), (1, 300));
}

#[tokio::test]
async fn a_file_being_read_survives_its_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let k = keeper(dir.path(), 100);
    let key = ckey("big", "1.0.0");
    store(&k, &key, 1 << 20, 1).await;
    let Some(Blob::Stream { body, len }) =
        k.blobs().open(&BlobKey::Crate(key.clone())).await.unwrap()
    else {
        panic!("a file is streamed")
    };
    assert_eq!(k.evict_to(0).await.unwrap().files, 1);
    let read: Vec<Bytes> = futures_util::StreamExt::collect::<Vec<_>>(body)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(read.concat().len() as u64, len);
}

#[tokio::test]
async fn purge_takes_one_crate_or_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let k = keeper(dir.path(), 0);
    for key in [ckey("a", "1.0.0"), ckey("a", "2.0.0"), ckey("ab", "1.0.0")] {
        store(&k, &key, 10, 1).await;
    }
    let a = CrateName::new("a").unwrap();
    let one = k
        .purge(&reg(), &a, Some(&Version::new("2.0.0").unwrap()))
        .await
        .unwrap();
    assert_eq!(one, vec![BlobKey::Crate(ckey("a", "2.0.0"))]);
    let all = k.purge(&reg(), &a, None).await.unwrap();
    assert_eq!(all, vec![BlobKey::Crate(ckey("a", "1.0.0"))]);
    assert_eq!(k.book().totals().crate_files, 1, "`ab` stays");
    let stats = k.stats().await.unwrap();
    assert_eq!(
        (stats.len(), stats[0].crate_files, stats[0].crate_bytes),
        (1, 1, 10)
    );
}

#[tokio::test]
async fn verify_names_bad_files_and_repair_fixes_the_books() {
    let dir = tempfile::tempdir().unwrap();
    let k = keeper(dir.path(), 0);
    let name = CrateName::new("a").unwrap();
    let line = |v: &str, body: &[u8]| {
        let ck = crate::index::hex(&<sha2::Sha256 as sha2::Digest>::digest(body));
        format!(
            "{{\"name\":\"a\",\"vers\":\"{v}\",\"deps\":[],\"cksum\":\"{ck}\",\"features\":{{}},\"yanked\":false}}\n"
        )
    };
    let good = vec![b'x'; 10];
    let index = format!(
        "{}{}{}",
        line("1.0.0", &good),
        line("2.0.0", &good),
        line("3.0.0", &good)
    );
    // The index file is an orphan (a crash before its record), and so are 2.0.0 (good) and
    // 3.0.0 (bad bytes); 1.0.0 is recorded but corrupt on disk; 4.0.0 is recorded, no file.
    let ikey = IndexKey::krate(&reg(), &name);
    k.blobs()
        .put(&BlobKey::Index(ikey.clone()), Bytes::from(index))
        .await
        .unwrap();
    store(&k, &ckey("a", "1.0.0"), 10, 1).await;
    std::fs::write(
        dir.path()
            .join(BlobKey::Crate(ckey("a", "1.0.0")).rel_path()),
        b"yyyyyyyyyy",
    )
    .unwrap();
    k.blobs()
        .put(
            &BlobKey::Crate(ckey("a", "2.0.0")),
            Bytes::from(good.clone()),
        )
        .await
        .unwrap();
    k.blobs()
        .put(
            &BlobKey::Crate(ckey("a", "3.0.0")),
            Bytes::from_static(b"bad"),
        )
        .await
        .unwrap();
    store(&k, &ckey("a", "4.0.0"), 10, 1).await;
    k.blobs()
        .delete(&BlobKey::Crate(ckey("a", "4.0.0")))
        .await
        .unwrap();

    let mirrors = [reg()];
    let checker = Checker {
        book: k.book().as_ref(),
        disk: k.blobs().as_ref(),
        blobs: k.blobs().as_ref(),
        mirrors: &mirrors,
        progress: &|_, _| {},
    };
    let check = Options {
        repair: false,
        contents: true,
    };
    let report = checker.run(check).await.unwrap();
    let mut bad: Vec<_> = report.problems.iter().map(|p| p.file.clone()).collect();
    bad.sort();
    assert_eq!(bad.len(), 5, "{report:#?}");
    assert!(report.problems.iter().all(|p| p.action.is_none()));

    let report = checker
        .run(Options {
            repair: true,
            ..check
        })
        .await
        .unwrap();
    assert_eq!(
        (report.problems.len(), report.adopted),
        (5, 2),
        "{report:#?}"
    );
    let after = checker.run(check).await.unwrap();
    assert!(after.problems.is_empty(), "{after:#?}");
    assert_eq!(after.files, 2, "the index file and 2.0.0 remain");
    assert!(k.book().krate(&ckey("a", "2.0.0")).await.unwrap().is_some());
    assert!(
        !dir.path()
            .join(BlobKey::Crate(ckey("a", "3.0.0")).rel_path())
            .exists()
    );
}
