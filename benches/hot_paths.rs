//! Micro-benchmarks of the hot paths, through the whole router and middleware, in process:
//! an index file from the memory tier (200 and 304), a crate file from memory, a crate file
//! from disk; and the memory-tier requests again with a read token to a mirror with
//! `auth_required = true` (`*_auth`), to show what auth costs; and the same requests of a
//! private registry's crate (`private_*`). A fake upstream on loopback fills the caches once
//! before measuring.
//!
//! Run: `cargo bench --bench hot_paths`

// Support modules are shared between test binaries: their `pub` items are for the others.
#![allow(unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

// The test fixtures: generated crates and the fake upstream (the bench uses part of them).
#[allow(dead_code)]
#[path = "../tests/it/support/registry.rs"]
mod registry;
#[allow(dead_code)]
#[path = "../tests/it/support/upstream.rs"]
mod upstream;

#[path = "support/hot.rs"]
mod hot;

use hot::{
    INDEX, LARGE, PRIVATE_CRATE, PRIVATE_INDEX, SMALL, app, app_with_auth, app_with_private, get,
    get_as,
};
use upstream::FakeUpstream;

fn hot_paths(c: &mut Criterion) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (private, private_etag) = rt.block_on(async {
        let up = FakeUpstream::start().await;
        let private = app_with_private(&up.index_url(), &dir.path().join("p")).await;
        let first = get(&private, PRIVATE_INDEX, None).await;
        assert_eq!(first.status, 200);
        assert_eq!(get(&private, PRIVATE_CRATE, None).await.status, 200);
        (private, first.etag.expect("an ETag"))
    });
    let (upstream, in_memory, on_disk, (authed, token), index_len, etag) = rt.block_on(async {
        let up = FakeUpstream::start().await;
        hot::fill(&up);
        let in_memory = app(&up.index_url(), &dir.path().join("a"), 2 * 1024 * 1024);
        let on_disk = app(&up.index_url(), &dir.path().join("b"), 0);
        let authed = app_with_auth(&up.index_url(), &dir.path().join("c"), 2 * 1024 * 1024).await;
        assert_eq!(
            get_as(&authed.0, INDEX, None, Some(&authed.1)).await.status,
            200
        );
        assert_eq!(
            get_as(&authed.0, SMALL, None, Some(&authed.1)).await.status,
            200
        );
        let first = get(&in_memory, INDEX, None).await;
        assert_eq!(first.status, 200);
        for r in [&in_memory, &on_disk] {
            assert_eq!(get(r, SMALL, None).await.status, 200);
            assert_eq!(get(r, LARGE, None).await.status, 200);
        }
        let etag = first.etag.expect("an ETag");
        (up, in_memory, on_disk, authed, first.len, etag)
    });

    let mut g = c.benchmark_group("hot");
    g.measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(40);
    g.throughput(Throughput::Bytes(index_len as u64));
    g.bench_function("index_hit_memory_200", |b| {
        b.to_async(&rt).iter(|| get(&in_memory, INDEX, None))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("index_hit_memory_304", |b| {
        b.to_async(&rt).iter(|| get(&in_memory, INDEX, Some(&etag)))
    });
    g.bench_function("crate_99k_hit_memory", |b| {
        b.to_async(&rt).iter(|| get(&in_memory, SMALL, None))
    });
    let token = Some(token.as_str());
    g.bench_function("index_hit_memory_304_auth", |b| {
        b.to_async(&rt)
            .iter(|| get_as(&authed, INDEX, Some(&etag), token))
    });
    g.bench_function("crate_99k_hit_memory_auth", |b| {
        b.to_async(&rt).iter(|| get_as(&authed, SMALL, None, token))
    });
    g.bench_function("private_index_304", |b| {
        b.to_async(&rt)
            .iter(|| get(&private, PRIVATE_INDEX, Some(&private_etag)))
    });
    g.bench_function("private_index_200", |b| {
        b.to_async(&rt).iter(|| get(&private, PRIVATE_INDEX, None))
    });
    g.bench_function("private_crate_99k", |b| {
        b.to_async(&rt).iter(|| get(&private, PRIVATE_CRATE, None))
    });
    g.bench_function("crate_99k_hit_disk", |b| {
        b.to_async(&rt).iter(|| get(&on_disk, SMALL, None))
    });
    g.bench_function("crate_1_5m_hit_memory", |b| {
        b.to_async(&rt).iter(|| get(&in_memory, LARGE, None))
    });
    g.bench_function("crate_1_5m_hit_disk", |b| {
        b.to_async(&rt).iter(|| get(&on_disk, LARGE, None))
    });
    g.finish();
    drop(upstream);
}

/// The memory tier alone: a hit and a miss among 10,000 entries (key built per lookup, as a
/// request does), and inserts of 100 KB values into a full 64 MiB tier (each one evicts).
fn memory_tier(c: &mut Criterion) {
    use cratedock::names::{CrateName, RegistryName, Version};
    use cratedock::store::{BlobKey, CrateKey, FsBlobStore, MemoryTier};

    let dir = tempfile::tempdir().unwrap();
    let below = Arc::new(FsBlobStore::open(dir.path()).unwrap());
    let tier: MemoryTier = MemoryTier::new(below, 64 * 1024 * 1024, 2 * 1024 * 1024);
    let key = |r: &RegistryName, n: &CrateName, v: &Version| BlobKey::Crate(CrateKey::new(r, n, v));
    let registry = RegistryName::new("crates-io").unwrap();
    let version = Version::new("1.0.0").unwrap();
    let names: Vec<CrateName> = (0..10_000)
        .map(|i| CrateName::new(&format!("crate-{i}")).unwrap())
        .collect();
    let small = bytes::Bytes::from(vec![7u8; 4096]);
    for n in &names {
        tier.remember(key(&registry, n, &version), small.clone(), None);
    }
    let mut g = c.benchmark_group("memory_tier");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut i = 0usize;
    g.bench_function("get_hit_10k_entries", |b| {
        b.iter(|| {
            i = (i + 7919) % names.len();
            tier.cached(&key(&registry, &names[i], &version))
        })
    });
    let absent = CrateName::new("not-cached").unwrap();
    g.bench_function("get_miss", |b| {
        b.iter(|| tier.cached(&key(&registry, &absent, &version)))
    });
    let big = bytes::Bytes::from(vec![1u8; 100 * 1024]);
    let mut n = 0u64;
    g.bench_function("insert_100k_evicting", |b| {
        b.iter(|| {
            n += 1;
            let name = CrateName::new(&format!("churn-{n}")).unwrap();
            tier.remember(key(&registry, &name, &version), big.clone(), None)
        })
    });
    g.finish();
    let (entries, bytes) = tier.usage();
    assert!(
        bytes <= 64 * 1024 * 1024,
        "{entries} entries, {bytes} bytes: bounded"
    );
}

criterion_group!(benches, hot_paths, memory_tier);
criterion_main!(benches);
