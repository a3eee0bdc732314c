//! A generated registry served as a sparse upstream on loopback, for `benches/vs_nginx.sh`.
//!
//! ~2,000 crates with long-tailed shapes: index files from ~200 B to ~2 MB (most crates have a
//! few versions, a few have thousands), crate files from ~2 KB to ~10 MB (most are small).
//! Every version named in an index has a real `.crate` whose SHA-256 is the index's `cksum`,
//! but only the newest versions carry large filler, so generation stays quick.
//!
//! ```text
//! cargo run --release --example bench_registry -- PORT LATENCY_MS OUT_DIR
//! ```
//! writes `OUT_DIR/project/Cargo.toml` (a project depending on 300 of the crates),
//! `OUT_DIR/hot.env` (paths of a ~180 KB index file, a ~99 KB crate and a ~1.5 MB crate) and
//! `OUT_DIR/paths.txt` (every crate's index file and newest download, as cratedock paths), then
//! serves until killed.

// Support modules are shared between test binaries: their `pub` items are for the others.
#![allow(unreachable_pub)]

#[allow(dead_code)]
#[path = "../tests/it/support/registry.rs"]
mod registry;
#[allow(dead_code)]
#[path = "../tests/it/support/upstream.rs"]
mod upstream;

use std::time::Duration;

use registry::{CrateSpec, build};
use upstream::{FakeUpstream, Fault, Target};

/// A small deterministic generator, so every run serves the same registry.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A long-tailed (Pareto-like) value between `min` and `max`.
    fn tail(&mut self, min: f64, max: f64, alpha: f64) -> usize {
        let u = self.unit().max(1e-9);
        (min / u.powf(1.0 / alpha)).min(max) as usize
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|a| a.parse().ok()).expect("PORT");
    let latency_ms: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    let out = std::path::PathBuf::from(args.get(3).expect("OUT_DIR"));

    let up = FakeUpstream::start_on(port).await;
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let crates = 2_000;
    let (mut index_sizes, mut crate_sizes) = (Vec::new(), Vec::new());
    // Every crate's index file and newest download, for the soak's load (benches/soak.sh).
    let mut paths = Vec::new();
    for i in 0..crates {
        let name = format!("bench-crate-{i:04}");
        // Versions: most crates a handful, a few thousands (index files up to ~2 MB).
        let versions = rng.tail(1.0, 8_000.0, 0.8).max(1);
        paths.push(format!("/crates-io/index/{}", registry::index_path(&name)));
        paths.push(format!(
            "/crates-io/api/v1/crates/{name}/1.{}.0/download",
            versions - 1
        ));
        // Size of the newest version's tarball: most a few KB, a few up to ~10 MB.
        let padding = rng.tail(2_500.0, 16_000_000.0, 0.8);
        let mut index_size = 0;
        for v in 0..versions {
            let newest = v + 1 == versions;
            let spec = CrateSpec::new(&name, &format!("1.{v}.0"))
                .dep("serde", "^1")
                .padding(if newest { padding } else { 0 });
            let published = build(spec);
            index_size += published.line.len() + 1;
            if newest {
                crate_sizes.push(published.tarball.len());
            }
            up.publish(published);
        }
        index_sizes.push(index_size);
    }
    let pct = |v: &mut Vec<usize>, p: f64| {
        v.sort_unstable();
        v[((v.len() - 1) as f64 * p) as usize]
    };
    println!(
        "{crates} crates; index files p50 {} B, p99 {} B, max {} B; newest crate files p50 {} B, p99 {} B, max {} B, total {} MB",
        pct(&mut index_sizes, 0.5),
        pct(&mut index_sizes, 0.99),
        pct(&mut index_sizes, 1.0),
        pct(&mut crate_sizes, 0.5),
        pct(&mut crate_sizes, 0.99),
        pct(&mut crate_sizes, 1.0),
        crate_sizes.iter().sum::<usize>() / 1_000_000
    );
    // Hot files with fixed shapes for the hot-path runs (the index file is ~180 KB).
    for v in 0..480 {
        up.publish(build(
            CrateSpec::new("hot-index", &format!("1.{v}.0"))
                .dep("serde", "^1")
                .dep("tokio", "^1"),
        ));
    }
    up.publish(build(CrateSpec::new("hot-small", "1.0.0").padding(150_000)));
    up.publish(build(
        CrateSpec::new("hot-large", "1.0.0").padding(2_270_000),
    ));
    // `serde` is a dependency of every generated crate.
    up.publish(build(CrateSpec::new("serde", "1.0.0")));
    if latency_ms > 0 {
        up.set_fault(Fault::Delay(Duration::from_millis(latency_ms)), Target::All);
    }

    std::fs::create_dir_all(out.join("project/src")).unwrap();
    let mut manifest = String::from(
        "[package]\nname = \"bench-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n",
    );
    for i in (0..crates).step_by(crates / 300).take(299) {
        manifest.push_str(&format!("bench-crate-{i:04} = \"1\"\n"));
    }
    std::fs::write(out.join("project/Cargo.toml"), manifest).unwrap();
    std::fs::write(out.join("project/src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(
        out.join("hot.env"),
        "HOT_INDEX=ho/t-/hot-index\nHOT_SMALL=hot-small/1.0.0\nHOT_LARGE=hot-large/1.0.0\n",
    )
    .unwrap();
    std::fs::write(out.join("paths.txt"), paths.join("\n") + "\n").unwrap();
    println!("ready on {}", up.base);
    std::future::pending::<()>().await;
}
