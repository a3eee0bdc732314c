//! What a published crate carries through the index to cargo: features that use the new
//! syntax (`dep:`, `?/`), which the index keeps in `features2` with `v: 2`, and a `.crate` of
//! several megabytes uploaded by real cargo.

use crate::private::{add_user, assert_ok, consumer, index_lines, private_registry, stdout, token};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_in_the_new_syntax_reach_consumers_through_features2() {
    let (_up, cd) = private_registry().await;
    add_user(&cd, "alice", &[("publish", "*")]);
    let alice = token(&cd, "alice", &[]);

    // A private crate with a feature, for `?/`.
    let base = CargoProject::with_private(&cd);
    base.write(
        "Cargo.toml",
        &format!(
            "[package]\nname = \"acme-base\"\nversion = \"0.1.0\"\nedition = \"2021\"\nlicense = \"MIT\"\npublish = [\"{PRIVATE}\"]\n\n[features]\nextra = []\n"
        ),
    );
    base.write("src/lib.rs", "pub fn base() {}\n");
    let out = base.cargo_as(
        Some(&alice),
        &["publish", "--registry", PRIVATE, "--no-verify"],
    );
    assert_ok(&out, "cargo publish of acme-base");

    // `json` enables an optional crates.io dependency with `dep:`; `extra` uses `?/`; `full`
    // enables `json`, so it goes to `features2` too; `plain` stays in `features`.
    let lib = CargoProject::with_private(&cd);
    lib.write(
        "Cargo.toml",
        &format!(
            "[package]\nname = \"acme-feat\"\nversion = \"0.1.0\"\nedition = \"2021\"\nlicense = \"MIT\"\npublish = [\"{PRIVATE}\"]\n\n\
             [dependencies]\nserde = {{ version = \"1\", optional = true }}\n\
             acme-base = {{ version = \"0.1\", registry = \"{PRIVATE}\", optional = true }}\n\n\
             [features]\njson = [\"dep:serde\"]\nextra = [\"acme-base?/extra\"]\nfull = [\"json\"]\nplain = []\n"
        ),
    );
    lib.write(
        "src/lib.rs",
        "#[cfg(feature = \"json\")]\npub fn json() -> &'static str { serde::id() }\n\
         #[cfg(not(feature = \"json\"))]\npub fn json() -> &'static str { \"no json\" }\n",
    );
    let out = lib.cargo_as(
        Some(&alice),
        &["publish", "--registry", PRIVATE, "--no-verify"],
    );
    assert_ok(&out, "cargo publish of acme-feat");

    let line = &index_lines(&cd, &alice, "acme-feat").await[0];
    assert_eq!(line["v"], 2, "{line}");
    let two = line["features2"].as_object().expect("features2");
    let mut moved: Vec<&str> = two.keys().map(String::as_str).collect();
    moved.sort();
    assert_eq!(moved, ["extra", "full", "json"], "{line}");
    assert_eq!(
        line["features"],
        serde_json::json!({ "plain": [] }),
        "{line}"
    );
    let deps = line["deps"].as_array().expect("deps");
    assert!(deps.iter().all(|d| d["optional"] == true), "{line}");

    // A consumer that enables `full` gets the optional dependency; one that does not, doesn't.
    let main = "fn main() { println!(\"{}\", acme_feat::json()); }\n";
    let with = consumer(
        &cd,
        &format!(
            "acme-feat = {{ version = \"0.1\", registry = \"{PRIVATE}\", features = [\"full\"] }}\n"
        ),
        main,
    );
    let out = with.cargo_as(Some(&alice), &["run", "--quiet"]);
    assert_ok(&out, "cargo run with `full`");
    assert_eq!(stdout(&out).trim(), "serde 1.0.0");
    assert!(with.lockfile().contains("name = \"serde\""));
    let without = consumer(
        &cd,
        &format!("acme-feat = {{ version = \"0.1\", registry = \"{PRIVATE}\" }}\n"),
        main,
    );
    let out = without.cargo_as(Some(&alice), &["run", "--quiet"]);
    assert_ok(&out, "cargo run without features");
    assert_eq!(stdout(&out).trim(), "no json");
    assert!(!without.lockfile().contains("name = \"serde\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crate_of_several_megabytes_uploads_and_downloads_byte_for_byte() {
    let (_up, cd) = private_registry().await;
    add_user(&cd, "alice", &[("publish", "*")]);
    let alice = token(&cd, "alice", &[]);
    let lib = CargoProject::with_private(&cd);
    lib.write(
        "Cargo.toml",
        &format!(
            "[package]\nname = \"acme-big\"\nversion = \"1.0.0\"\nedition = \"2021\"\nlicense = \"MIT\"\npublish = [\"{PRIVATE}\"]\n"
        ),
    );
    lib.write(
        "src/lib.rs",
        "pub fn big() -> usize { include_bytes!(\"../data.bin\").len() }\n",
    );
    // 6 MB that gzip cannot shrink: the upload is as large as the data.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let data: Vec<u8> = (0..6_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(lib.root().join("data.bin"), &data).unwrap();
    let out = lib.cargo_as(
        Some(&alice),
        &["publish", "--registry", PRIVATE, "--no-verify"],
    );
    assert_ok(&out, "cargo publish of a 6 MB crate");

    let line = &index_lines(&cd, &alice, "acme-big").await[0];
    let stored = std::fs::read(
        cd.data_dir
            .join("crates")
            .join(PRIVATE)
            .join("acme-big")
            .join("acme-big-1.0.0.crate"),
    )
    .unwrap();
    assert!(stored.len() > 6_000_000, "{}", stored.len());
    assert_eq!(line["cksum"], sha256_hex(&stored));

    let main = "fn main() { println!(\"{}\", acme_big::big()); }\n";
    let user = consumer(
        &cd,
        &format!("acme-big = {{ version = \"1\", registry = \"{PRIVATE}\" }}\n"),
        main,
    );
    let out = user.cargo_as(Some(&alice), &["run", "--quiet"]);
    assert_ok(&out, "cargo run of the big crate's consumer");
    assert_eq!(stdout(&out).trim(), "6000000");
}
