//! Fills a data folder with N index files (bodies on disk, fresh for a day) and N crate
//! records in the bookkeeping (sled), shaped like real ones, for `benches/bookkeeping.sh`:
//! start-up time and RSS against the number of cached entries.
//!
//! ```text
//! cargo run --release --example fill_bookkeeping -- DATA_DIR N
//! ```

use std::time::SystemTime;

use cratedock::names::{CrateName, RegistryName, Version};
use cratedock::store::{
    BlobKey, CacheBook, CrateKey, CrateRecord, IndexKey, IndexRecord, SledBook, to_ms,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).expect("DATA_DIR"));
    let n: usize = args.get(2).and_then(|a| a.parse().ok()).expect("N");
    std::fs::create_dir_all(&dir)?;
    let book = SledBook::open(&dir.join("meta"))?;
    let registry = RegistryName::new("crates-io")?;
    let now = SystemTime::now();

    let fresh_until = to_ms(now + std::time::Duration::from_secs(24 * 3600));
    for i in 0..n {
        let name = CrateName::new(&format!("filler-crate-{i:06}"))?;
        let key = IndexKey::krate(&registry, &name);
        let body = format!(
            "{{\"name\":\"{name}\",\"vers\":\"1.2.3\",\"deps\":[],\"cksum\":\"{:064x}\",\"features\":{{}},\"yanked\":false}}\n",
            i
        );
        // Written directly (not through the blob store, which syncs every file) to fill fast.
        let path = dir.join(BlobKey::Index(key.clone()).rel_path());
        std::fs::create_dir_all(path.parent().expect("index files live in folders"))?;
        std::fs::write(&path, &body)?;
        let version = Version::new("1.2.3")?;
        book.put_crate(
            &CrateKey::new(&registry, &name, &version),
            &CrateRecord {
                cksum: format!("{:064x}", i),
                size: 20_000 + (i as u64 % 50_000),
                stored_at_ms: to_ms(now),
                license: None,
            },
        )
        .await?;
        book.put_index(
            &key,
            &IndexRecord {
                etag: format!("\"{:032x}\"", i),
                upstream_etag: Some("\"0123456789abcdef0123456789abcdef\"".into()),
                upstream_last_modified: Some("Mon, 23 Nov 2026 10:00:00 GMT".into()),
                fresh_until_ms: fresh_until,
                lifetime_ms: 600_000,
                checked_at_ms: to_ms(now),
                size: body.len() as u64,
                missing_since_ms: None,
                missing_seen_ms: None,
                private: false,
            },
        )
        .await?;
    }
    book.flush().await?;
    let t = book.totals();
    println!(
        "{} crate entries, {} index entries in {}",
        t.crate_files,
        t.index_files,
        dir.display()
    );
    Ok(())
}
