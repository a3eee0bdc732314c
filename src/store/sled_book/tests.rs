//! The sled book against the in-memory one, and records of older versions.

use super::*;
use crate::names::{CrateName, RegistryName, Version};
use crate::store::MemoryBook;

async fn exercise(book: &dyn CacheBook) {
    let reg = RegistryName::new("r").unwrap();
    let name = CrateName::new("Serde").unwrap();
    let ck = CrateKey::new(&reg, &name, &Version::new("1.0.0").unwrap());
    assert!(book.krate(&ck).await.unwrap().is_none());
    let rec = CrateRecord {
        cksum: "ab".into(),
        size: 10,
        stored_at_ms: 1,
        license: None,
    };
    book.put_crate(&ck, &rec).await.unwrap();
    book.put_crate(&ck, &CrateRecord { size: 12, ..rec })
        .await
        .unwrap();
    assert_eq!(book.krate(&ck).await.unwrap().unwrap().size, 12);
    let ik = IndexKey::krate(&reg, &name);
    let irec = IndexRecord {
        etag: "\"e\"".into(),
        upstream_etag: None,
        upstream_last_modified: None,
        fresh_until_ms: 5,
        lifetime_ms: 1,
        checked_at_ms: 4,
        size: 100,
        missing_since_ms: None,
        missing_seen_ms: None,
        private: false,
    };
    book.put_index(&ik, &irec).await.unwrap();
    assert_eq!(book.index(&ik).await.unwrap(), Some(irec.clone()));
    let t = book.totals();
    assert_eq!((t.crate_files, t.crate_bytes), (1, 12));
    assert_eq!((t.index_files, t.index_bytes), (1, 100));
    book.touch(&[
        (BlobKey::Index(ik.clone()), 77),
        (BlobKey::Crate(ck.clone()), 99),
    ])
    .await
    .unwrap();
    let page = book.index_page(None, 10).await.unwrap();
    assert_eq!((page.len(), page[0].used_ms), (1, Some(77)));
    assert_eq!(page[0].key, ik);
    assert!(book.index_page(Some(&ik), 10).await.unwrap().is_empty());
    let page = book.crate_page(None, 10).await.unwrap();
    assert_eq!(page[0].record.as_ref().unwrap().size, 12);
    assert_eq!(page[0].used_ms, Some(99));
    book.remove_index(&ik).await.unwrap();
    book.remove_index(&ik).await.unwrap();
    assert_eq!(book.totals().index_files, 0);
    // A record stored again starts without the last use of the removed one.
    book.put_index(&ik, &irec).await.unwrap();
    assert_eq!(book.index_page(None, 1).await.unwrap()[0].used_ms, None);
    book.remove_index(&ik).await.unwrap();
    let pin = Pin::new(&reg, &name, None);
    assert!(book.set_pin(&pin, true).await.unwrap());
    assert!(!book.set_pin(&pin, true).await.unwrap());
    let exact = Pin::new(&reg, &name, Some(Version::new("2.0.0").unwrap()));
    assert!(book.set_pin(&exact, true).await.unwrap());
    assert_eq!(book.pins().await.unwrap().len(), 2);
    assert!(pin.covers(&BlobKey::Index(ik.clone())) && pin.covers(&BlobKey::Crate(ck.clone())));
    // A version pin keeps its own crate file and the crate's index file, not other versions.
    assert!(
        !exact.covers(&BlobKey::Crate(ck.clone())) && exact.covers(&BlobKey::Index(ik.clone()))
    );
    let ik2 = ik;
    assert!(book.set_pin(&pin, false).await.unwrap());
    assert_eq!(book.pins().await.unwrap(), vec![exact.clone()]);
    // A pattern keeps every crate it matches, as cargo compares names.
    let pattern = Pin::pattern(&reg, &crate::names::CrateGlob::new("SER*").unwrap());
    assert!(book.set_pin(&pattern, true).await.unwrap());
    assert!(pattern.covers(&BlobKey::Crate(ck.clone())) && pattern.covers(&BlobKey::Index(ik2)));
    let other = CrateKey::new(
        &reg,
        &CrateName::new("tokio").unwrap(),
        &Version::new("1.0.0").unwrap(),
    );
    assert!(!pattern.covers(&BlobKey::Crate(other)));
    assert_eq!(pattern.spec(), "ser*");
    let mut all = book.pins().await.unwrap();
    all.sort();
    assert_eq!(all, {
        let mut v = vec![exact, pattern];
        v.sort();
        v
    });
}

/// Opens the database again once the dropped one has let go of its lock (sled's flusher
/// thread may hold it for a moment after the drop).
async fn reopen(path: &std::path::Path) -> SledBook {
    for _ in 0..500 {
        match SledBook::open(path) {
            Ok(book) => return book,
            Err(e) if e.to_string().contains("could not acquire lock") => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the database's lock was not released within 5 s")
}

#[tokio::test]
async fn sled_and_memory_keep_the_same_books() {
    exercise(&MemoryBook::default()).await;
    let dir = tempfile::tempdir().unwrap();
    {
        let sled = SledBook::open(&dir.path().join("meta")).unwrap();
        exercise(&sled).await;
        sled.flush().await.unwrap();
    }
    let reopened = reopen(&dir.path().join("meta")).await;
    assert_eq!(reopened.totals().crate_bytes, 12, "totals are stored");
}

#[tokio::test]
async fn records_of_an_older_cratedock_are_read_and_broken_ones_are_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let book = SledBook::open(&dir.path().join("meta")).unwrap();
    let reg = RegistryName::new("r").unwrap();
    let key = IndexKey::krate(&reg, &CrateName::new("a").unwrap());
    // What cratedock 0.1 stored: a serialized third-party cache policy beside the fields.
    book.put_raw_index(
        &key,
        br#"{"policy":{"req":{}},"etag":"\"x\"","upstream_etag":null,"upstream_last_modified":null,"fresh_until_ms":1,"checked_at_ms":1,"size":3}"#,
    );
    let rec = book.index(&key).await.unwrap().unwrap();
    assert_eq!(
        (rec.etag.as_str(), rec.size, rec.lifetime_ms),
        ("\"x\"", 3, 0)
    );
    book.put_raw_index(&key, b"{\"size\":3,\"etag\":");
    assert!(matches!(
        book.index(&key).await,
        Err(StoreError::Unreadable { .. })
    ));
    // Removing it still keeps the totals right.
    book.remove_index(&key).await.unwrap();
    assert_eq!(book.totals().index_files, 0);
}
