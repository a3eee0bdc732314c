//! Supply-chain policy with real cargo: RustSec advisories (deny, warn, versions hidden from
//! resolution), licence policy at the mirror and at publish, the advisory database's refresh
//! and sync, curated mode, and the report of what is affected.

use std::collections::BTreeSet;
use std::process::Output;

use reqwest::Method;
use serde_json::Value;

use crate::support::advisories::{Advisory, AdvisoryDb, TOP};
use crate::support::publish::{
    self as raw, Entry, SYMLINK, body, crate_with, frame, index_file, manifest_with, metadata,
    parse_index, user_with,
};
use crate::support::*;

/// The advisory most tests use: `foo` before 1.0.1.
const FOO_ADVISORY: &str = "RUSTSEC-2024-0001";
const FOO_TITLE: &str = "foo lets anyone in";
const FOO_URL: &str = "https://rustsec.org/advisories/RUSTSEC-2024-0001.html";
/// Where the fake upstream serves the advisory database's archive.
const DB_PATH: &str = "/advisory-db.tar.gz";
/// How a locked crates.io package names its source.
const CRATES_IO_SOURCE: &str = "registry+https://github.com/rust-lang/crates.io-index";

/// RUSTSEC-2024-0001: `foo` is affected before 1.0.1.
fn foo_advisory() -> Advisory {
    Advisory::new(FOO_ADVISORY, "foo")
        .title(FOO_TITLE)
        .patched(">= 1.0.1")
}

/// A fake upstream holding `foo` 1.0.0 (affected by [`foo_advisory`]) and 1.0.1 (patched).
async fn upstream_with_foo() -> FakeUpstream {
    let up = FakeUpstream::start().await;
    for v in ["1.0.0", "1.0.1"] {
        up.publish(build(CrateSpec::new("foo", v)));
    }
    up
}

/// A configuration with the global section `advisories` (TOML; empty: none) and the
/// `crates-io` mirror of `upstream`, standing for crates.io, with the lines `registry`.
fn mirror_with(advisories: &str, upstream: &str, registry: &str) -> String {
    format!(
        "{advisories}\n{}",
        mirror_config(upstream, &format!("crates_io = true\n{registry}"))
    )
}

/// [`mirror_with`] plus the private registry [`PRIVATE`] with the lines `private` (the mirror
/// reserves no names).
fn mirror_and_private(advisories: &str, upstream: &str, mirror: &str, private: &str) -> String {
    format!(
        "{}\n[registries.{PRIVATE}]\nkind = \"private\"\n{private}\n",
        mirror_with(
            advisories,
            upstream,
            &format!("reserved_names = []\n{mirror}")
        )
    )
}

/// `GET /-/admin/advisories`.
async fn advisories_status(cd: &Cratedock) -> Value {
    let r = cd.admin_api(Method::GET, "/-/admin/advisories", None).await;
    assert_eq!(r.status(), 200, "advisory status");
    serde_json::from_slice(&r.bytes().await.unwrap()).expect("the status is JSON")
}

/// Starts cratedock with `config` and waits until its advisory database is loaded.
async fn start_loaded(config: &str) -> Cratedock {
    let cd = Cratedock::start(config).await;
    wait_until("the advisory database is loaded", || async {
        advisories_status(&cd).await["loaded"].as_bool() == Some(true)
    })
    .await;
    cd
}

/// `GET /{registry}/api/v1/crates/{name}/{vers}/download` without a token.
async fn download(cd: &Cratedock, registry: &str, name: &str, vers: &str) -> reqwest::Response {
    cd.get(&format!("/{registry}/api/v1/crates/{name}/{vers}/download"))
        .await
}

/// The status of a download of `name@vers` from the mirror.
async fn download_status(cd: &Cratedock, name: &str, vers: &str) -> u16 {
    download(cd, "crates-io", name, vers)
        .await
        .status()
        .as_u16()
}

/// The sum of the series of `cratedock_{name}` that carry every one of `labels` (`k="v"`),
/// whatever order the labels are printed in.
async fn series(cd: &Cratedock, name: &str, labels: &[String]) -> f64 {
    let text = cd.metrics_text().await;
    let prefix = format!("cratedock_{name}");
    text.lines()
        .filter(|l| {
            l.strip_prefix(&prefix)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter(|l| labels.iter().all(|label| l.contains(label.as_str())))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `cratedock_policy_decisions_total{registry,policy,action}`.
async fn decisions(cd: &Cratedock, registry: &str, policy: &str, action: &str) -> f64 {
    let labels = [
        format!("registry=\"{registry}\""),
        format!("policy=\"{policy}\""),
        format!("action=\"{action}\""),
    ];
    series(cd, "policy_decisions_total", &labels).await
}

/// `cratedock_advisory_refreshes_total{outcome}`.
async fn refreshes(cd: &Cratedock, outcome: &str) -> f64 {
    cd.metric(
        "advisory_refreshes_total",
        &format!("outcome=\"{outcome}\""),
    )
    .await
}

/// `cratedock advisories ARGS` against the running server with the first admin's token file.
fn advisories_cli(cd: &Cratedock, args: &[&str]) -> Output {
    let mut all = vec!["advisories"];
    all.extend_from_slice(args);
    cd.cli(&all)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails the test with the command's output unless it succeeded.
#[track_caller]
fn succeeded(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        stdout(out),
        stderr(out)
    );
}

/// Fails the test unless the command failed with every one of `says` on its stderr.
#[track_caller]
fn refused_saying(out: &Output, what: &str, says: &[&str]) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "{what} succeeded although it should have been refused:\n{err}"
    );
    for s in says {
        assert!(
            err.contains(s),
            "{what}: `{s}` is missing from cargo's output:\n{err}"
        );
    }
}

/// Fails the test unless `detail` contains every one of `says`.
#[track_caller]
fn detail_says(detail: &str, what: &str, says: &[&str]) {
    for s in says {
        assert!(
            detail.contains(s),
            "{what}: the detail {detail:?} does not say {s:?}"
        );
    }
}

/// The versions of `name` locked in `lockfile`.
fn locked_versions(lockfile: &str, name: &str) -> Vec<String> {
    let lock: toml::Value = toml::from_str(lockfile)
        .unwrap_or_else(|e| panic!("Cargo.lock is not TOML: {e}\n{lockfile}"));
    lock.get("package")
        .and_then(|p| p.as_array())
        .map(|packages| {
            packages
                .iter()
                .filter(|p| p.get("name").and_then(|n| n.as_str()) == Some(name))
                .filter_map(|p| p.get("version")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The bytes of `name`'s index file as the upstream itself serves it.
async fn upstream_index(up: &FakeUpstream, name: &str) -> Vec<u8> {
    let r = http_client()
        .get(format!("{}{}", up.index_url(), index_path(name)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the upstream's index file of {name}");
    r.bytes().await.unwrap().to_vec()
}

/// `(vers, yanked)` of each line of an index file.
fn versions_and_yanked(bytes: &[u8], what: &str) -> Vec<(String, bool)> {
    parse_index(bytes, what)
        .iter()
        .map(|l| {
            (
                l["vers"].as_str().expect("vers").to_owned(),
                l["yanked"].as_bool().expect("yanked"),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Advisories at the mirror
// ---------------------------------------------------------------------------------------------

/// Under `advisories = "deny"` cargo cannot fetch a version an advisory affects, and what it
/// prints names the advisory and the patched versions; the patched version fetches as usual
/// and the index file is served unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_refuses_an_affected_version_naming_the_advisory_and_serves_the_patched_one() {
    let up = upstream_with_foo().await;
    let db = AdvisoryDb::new(&[foo_advisory()]);
    let cd = start_loaded(&mirror_with(
        &db.config(),
        &up.index_url(),
        "advisories = \"deny\"",
    ))
    .await;

    let pinned = CargoProject::new(&cd.index_url(), &[("foo", "=1.0.0")]);
    let out = pinned.cargo(&["fetch"]);
    refused_saying(&out, "cargo fetch of foo 1.0.0", &[FOO_ADVISORY, ">=1.0.1"]);

    // The whole answer, as the mirror gives it.
    let r = download(&cd, "crates-io", "foo", "1.0.0").await;
    assert_eq!(r.status(), 403);
    let d = detail(r).await;
    detail_says(
        &d,
        "download of foo 1.0.0",
        &[
            "`foo@1.0.0`",
            FOO_ADVISORY,
            FOO_TITLE,
            "patched: >=1.0.1",
            FOO_URL,
        ],
    );
    assert!(decisions(&cd, "crates-io", "advisory", "deny").await >= 2.0);

    // The patched version is served, and the index file is the upstream's.
    let patched = CargoProject::new(&cd.index_url(), &[("foo", "=1.0.1")]);
    succeeded(&patched.cargo(&["fetch"]), "cargo fetch of foo 1.0.1");
    assert_eq!(locked_versions(&patched.lockfile(), "foo"), ["1.0.1"]);
    let served = cd.get("/crates-io/index/3/f/foo").await;
    assert_eq!(served.status(), 200);
    assert_eq!(
        served.bytes().await.unwrap().to_vec(),
        upstream_index(&up, "foo").await,
        "the index file is served unchanged"
    );
    assert_eq!(decisions(&cd, "crates-io", "advisory", "warn").await, 0.0);
}

/// A withdrawn advisory blocks nothing, nor does an advisory the registry ignores; an
/// advisory that counts still blocks in the same registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_and_ignored_advisories_block_nothing() {
    let up = upstream_with_foo().await;
    for name in ["bar", "baz"] {
        up.publish(build(CrateSpec::new(name, "1.0.0")));
    }
    let db = AdvisoryDb::new(&[
        foo_advisory(),
        Advisory::new("RUSTSEC-2024-0002", "bar")
            .url("https://example.com/bar/issues/2")
            .withdrawn("2024-03-01"),
        Advisory::new("RUSTSEC-2024-0003", "baz"),
    ]);
    let cd = start_loaded(&mirror_with(
        &db.config(),
        &up.index_url(),
        "advisories = \"deny\"\nignore = [\"RUSTSEC-2024-0003\"]",
    ))
    .await;

    let project = CargoProject::new(&cd.index_url(), &[("bar", "=1.0.0"), ("baz", "=1.0.0")]);
    succeeded(
        &project.cargo(&["fetch"]),
        "cargo fetch of a withdrawn and an ignored advisory's crates",
    );
    assert_eq!(decisions(&cd, "crates-io", "advisory", "deny").await, 0.0);

    // The database is in use: the advisory that counts still blocks.
    let pinned = CargoProject::new(&cd.index_url(), &[("foo", "=1.0.0")]);
    refused_saying(
        &pinned.cargo(&["fetch"]),
        "cargo fetch of foo 1.0.0",
        &[FOO_ADVISORY],
    );
}

/// An `unmaintained` advisory counts only in a registry whose `informational` list has that
/// kind (and then blocks with "patched: none"); an `unsound` one it does not list still passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_informational_advisory_blocks_only_where_its_kind_is_listed() {
    let up = FakeUpstream::start().await;
    for name in ["qux", "quux"] {
        up.publish(build(CrateSpec::new(name, "1.0.0")));
    }
    let db = AdvisoryDb::new(&[
        Advisory::new("RUSTSEC-2024-0004", "qux")
            .informational("unmaintained")
            .title("qux is unmaintained"),
        Advisory::new("RUSTSEC-2024-0005", "quux").informational("unsound"),
    ]);
    let deps = [("qux", "=1.0.0"), ("quux", "=1.0.0")];

    let unlisted = start_loaded(&mirror_with(
        &db.config(),
        &up.index_url(),
        "advisories = \"deny\"",
    ))
    .await;
    let project = CargoProject::new(&unlisted.index_url(), &deps);
    succeeded(
        &project.cargo(&["fetch"]),
        "cargo fetch where no informational kind counts",
    );

    let listed = start_loaded(&mirror_with(
        &db.config(),
        &up.index_url(),
        "advisories = \"deny\"\ninformational = [\"unmaintained\"]",
    ))
    .await;
    let project = CargoProject::new(&listed.index_url(), &[("qux", "=1.0.0")]);
    refused_saying(
        &project.cargo(&["fetch"]),
        "cargo fetch of an unmaintained crate",
        &["RUSTSEC-2024-0004"],
    );
    let r = download(&listed, "crates-io", "qux", "1.0.0").await;
    assert_eq!(r.status(), 403);
    let d = detail(r).await;
    detail_says(
        &d,
        "download of qux 1.0.0",
        &[
            "`qux@1.0.0`",
            "RUSTSEC-2024-0004",
            "qux is unmaintained",
            "patched: none",
        ],
    );
    let project = CargoProject::new(&listed.index_url(), &[("quux", "=1.0.0")]);
    succeeded(
        &project.cargo(&["fetch"]),
        "cargo fetch of an unsound crate where only unmaintained counts",
    );
}

/// Under `advisories = "warn"` an affected version is served; every download of it is
/// counted, and the advisory is logged once for that version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_serves_an_affected_version_counting_each_download_and_logging_the_advisory() {
    let up = upstream_with_foo().await;
    let db = AdvisoryDb::new(&[foo_advisory()]);
    let cd = start_loaded(&mirror_with(
        &db.config(),
        &up.index_url(),
        "advisories = \"warn\"",
    ))
    .await;

    let first = CargoProject::new(&cd.index_url(), &[("foo", "=1.0.0")]);
    succeeded(
        &first.cargo(&["fetch"]),
        "cargo fetch of foo 1.0.0 under warn",
    );
    assert!(decisions(&cd, "crates-io", "advisory", "warn").await >= 1.0);
    // A second project downloads it again (from the cache): counted again, not logged again.
    let second = CargoProject::new(&cd.index_url(), &[("foo", "=1.0.0")]);
    succeeded(
        &second.cargo(&["fetch"]),
        "a second cargo fetch of foo 1.0.0",
    );
    assert!(decisions(&cd, "crates-io", "advisory", "warn").await >= 2.0);
    assert_eq!(decisions(&cd, "crates-io", "advisory", "deny").await, 0.0);

    let log = cd.log();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(FOO_ADVISORY) && l.contains("WARN"))
        .collect();
    assert_eq!(
        warned.len(),
        1,
        "one warning for foo 1.0.0 and the advisory:\n{log}"
    );

    // The patched version is not counted.
    let before = decisions(&cd, "crates-io", "advisory", "warn").await;
    assert_eq!(download_status(&cd, "foo", "1.0.1").await, 200);
    assert_eq!(
        decisions(&cd, "crates-io", "advisory", "warn").await,
        before
    );
}

/// With `deny_hides_versions`, affected versions are served as yanked, so a new resolution
/// passes over them (here the newest version is the affected one); the index files of crates
/// without advisories are served byte for byte, with the ETag they have without the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_hides_versions_serves_affected_versions_as_yanked_and_leaves_other_files_alone() {
    let up = FakeUpstream::start().await;
    // 0.9.0 is yanked upstream (and stays so); 1.1.0, the newest, is affected.
    up.publish(build(CrateSpec::new("foo", "0.9.0").yanked()));
    for v in ["1.0.0", "1.1.0"] {
        up.publish(build(CrateSpec::new("foo", v)));
    }
    up.publish(build(CrateSpec::new("bar", "1.0.0")));
    let db = AdvisoryDb::new(&[Advisory::new("RUSTSEC-2024-0010", "foo")
        .unaffected("< 1.1.0")
        .patched(">= 1.2.0")]);
    let cd = start_loaded(&mirror_with(
        &db.config(),
        &up.index_url(),
        "advisories = \"deny\"\ndeny_hides_versions = true",
    ))
    .await;
    let plain = Cratedock::start(&mirror_with("", &up.index_url(), "")).await;

    let r = cd.get("/crates-io/index/3/f/foo").await;
    assert_eq!(r.status(), 200);
    let foo = r.bytes().await.unwrap();
    let shown = versions_and_yanked(&foo, "foo");
    assert_eq!(
        shown,
        [
            ("0.9.0".to_owned(), true),
            ("1.0.0".to_owned(), false),
            ("1.1.0".to_owned(), true)
        ]
    );
    // Everything else in the lines is the upstream's.
    let upstream_lines = parse_index(&upstream_index(&up, "foo").await, "upstream foo");
    for (served, original) in parse_index(&foo, "foo").iter().zip(&upstream_lines) {
        assert_eq!(served["cksum"], original["cksum"]);
        assert_eq!(served["deps"], original["deps"]);
    }

    for path in ["/crates-io/index/3/b/bar", "/crates-io/index/3/f/foo"] {
        let with_policy = cd.get(path).await;
        let without = plain.get(path).await;
        assert_eq!(
            (with_policy.status().as_u16(), without.status().as_u16()),
            (200, 200),
            "{path}"
        );
        let etags = (
            with_policy.headers()["etag"].to_str().unwrap().to_owned(),
            without.headers()["etag"].to_str().unwrap().to_owned(),
        );
        let bodies = (
            with_policy.bytes().await.unwrap(),
            without.bytes().await.unwrap(),
        );
        if path.ends_with("/bar") {
            assert_eq!(
                etags.0, etags.1,
                "{path}: the same ETag as without the policy"
            );
            assert_eq!(bodies.0, bodies.1, "{path}: the same bytes");
            assert_eq!(bodies.0.to_vec(), upstream_index(&up, "bar").await);
        } else {
            assert_ne!(etags.0, etags.1, "{path}: changed bytes, another ETag");
            assert_ne!(bodies.0, bodies.1, "{path}");
        }
    }

    // A new resolution picks the newest version that is not affected.
    let project = CargoProject::new(&cd.index_url(), &[("foo", "1")]);
    succeeded(
        &project.cargo(&["generate-lockfile"]),
        "cargo generate-lockfile",
    );
    assert_eq!(locked_versions(&project.lockfile(), "foo"), ["1.0.0"]);
    succeeded(&project.cargo(&["fetch"]), "cargo fetch of foo 1.0.0");
    // Without the policy it would have been 1.1.0.
    let elsewhere = CargoProject::new(&plain.index_url(), &[("foo", "1")]);
    succeeded(
        &elsewhere.cargo(&["generate-lockfile"]),
        "cargo generate-lockfile",
    );
    assert_eq!(locked_versions(&elsewhere.lockfile(), "foo"), ["1.1.0"]);

    // The affected version still cannot be downloaded.
    let r = download(&cd, "crates-io", "foo", "1.1.0").await;
    assert_eq!(r.status(), 403);
    let d = detail(r).await;
    detail_says(
        &d,
        "download of foo 1.1.0",
        &["RUSTSEC-2024-0010", "patched: >=1.2.0"],
    );
}

/// With `advisories = "deny"` but no `[advisories]` section there is no database: downloads
/// work as before and no advisory is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_database_deny_blocks_nothing() {
    let up = upstream_with_foo().await;
    let cd = Cratedock::start(&mirror_with("", &up.index_url(), "advisories = \"deny\"")).await;
    let project = CargoProject::new(&cd.index_url(), &[("foo", "=1.0.0")]);
    succeeded(&project.cargo(&["fetch"]), "cargo fetch without a database");
    assert_eq!(cd.metric("advisories_loaded", "").await, 0.0);
    assert_eq!(decisions(&cd, "crates-io", "advisory", "deny").await, 0.0);
}

// ---------------------------------------------------------------------------------------------
// Licences at the mirror
// ---------------------------------------------------------------------------------------------

/// A licence outside `licenses.allow` is refused to cargo naming the expression; an exception
/// for the crate (for some licences, or for some versions) lets it through, and an `OR` with
/// an allowed licence passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_licence_outside_the_allow_list_is_refused_unless_excepted() {
    let up = FakeUpstream::start().await;
    for (name, vers, licence) in [
        ("gpl-no", "1.0.0", "GPL-3.0-only"),
        ("gpl-ok", "1.0.0", "GPL-3.0-only"),
        ("gpl-v1", "1.0.0", "GPL-3.0-only"),
        ("gpl-v1", "2.0.0", "GPL-3.0-only"),
        ("dual", "1.0.0", "MIT OR GPL-3.0-only"),
        ("plain-mit", "1.0.0", "MIT"),
    ] {
        up.publish(build(CrateSpec::new(name, vers).license(licence)));
    }
    let cd = Cratedock::start(&mirror_with(
        "",
        &up.index_url(),
        "licenses.allow = [\"MIT\", \"Apache-2.0\"]\nlicenses.exceptions = [ { name = \"gpl-ok\", allow = [\"GPL-3.0-only\"] }, { name = \"gpl-v1\", version = \"^1\" } ]",
    ))
    .await;

    let refused = CargoProject::new(&cd.index_url(), &[("gpl-no", "=1.0.0")]);
    refused_saying(
        &refused.cargo(&["fetch"]),
        "cargo fetch of a GPL crate",
        &["GPL-3.0-only"],
    );
    let r = download(&cd, "crates-io", "gpl-no", "1.0.0").await;
    assert_eq!(r.status(), 403);
    let d = detail(r).await;
    detail_says(&d, "download of gpl-no", &["GPL-3.0-only", "not allowed"]);

    let allowed = CargoProject::new(
        &cd.index_url(),
        &[
            ("gpl-ok", "=1.0.0"),
            ("gpl-v1", "=1.0.0"),
            ("dual", "=1.0.0"),
            ("plain-mit", "=1.0.0"),
        ],
    );
    succeeded(
        &allowed.cargo(&["fetch"]),
        "cargo fetch of allowed and excepted crates",
    );
    // The exception for gpl-v1 covers ^1 only.
    let r = download(&cd, "crates-io", "gpl-v1", "2.0.0").await;
    assert_eq!(r.status(), 403);
    let d = detail(r).await;
    detail_says(
        &d,
        "download of gpl-v1 2.0.0",
        &["GPL-3.0-only", "not allowed"],
    );

    assert!(decisions(&cd, "crates-io", "license", "deny").await >= 3.0);
    assert_eq!(decisions(&cd, "crates-io", "license", "warn").await, 0.0);
}

/// A crate with only a `license-file` is refused, unless an exception names the SHA-256 of
/// that very file; a file other than the one reviewed is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_licence_file_only_crate_is_refused_unless_its_file_is_excepted_by_hash() {
    let reviewed = "Copyright Example Corp. Use permitted under the reviewed terms.\n";
    let up = FakeUpstream::start().await;
    for (name, text) in [
        ("file-no", "Proprietary. All rights reserved.\n"),
        ("file-ok", reviewed),
        (
            "file-changed",
            "Copyright Example Corp. New terms nobody reviewed.\n",
        ),
    ] {
        up.publish(build(
            CrateSpec::new(name, "1.0.0")
                .license_file("LICENSE.txt", text)
                .file("README.md", "# A crate\n\nSee LICENSE.txt.\n"),
        ));
    }
    let sha = sha256_hex(reviewed.as_bytes());
    let cd = Cratedock::start(&mirror_with(
        "",
        &up.index_url(),
        &format!(
            "licenses.allow = [\"MIT\", \"Apache-2.0\"]\nlicenses.exceptions = [ {{ name = \"file-ok\", license_file_sha256 = \"{sha}\" }}, {{ name = \"file-changed\", license_file_sha256 = \"{sha}\" }} ]"
        ),
    ))
    .await;

    let refused = CargoProject::new(&cd.index_url(), &[("file-no", "=1.0.0")]);
    refused_saying(
        &refused.cargo(&["fetch"]),
        "cargo fetch of a licence-file-only crate",
        &["license-file"],
    );
    let excepted = CargoProject::new(&cd.index_url(), &[("file-ok", "=1.0.0")]);
    succeeded(
        &excepted.cargo(&["fetch"]),
        "cargo fetch of a crate whose licence file is excepted",
    );
    let r = download(&cd, "crates-io", "file-changed", "1.0.0").await;
    assert_eq!(r.status(), 403, "another file than the one reviewed");
    let d = detail(r).await;
    detail_says(&d, "download of file-changed", &["license-file"]);
}

/// With `licenses.action = "warn"` a disallowed licence is served and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licence_warn_serves_and_counts() {
    let up = FakeUpstream::start().await;
    up.publish(build(
        CrateSpec::new("gpl-crate", "1.0.0").license("GPL-3.0-only"),
    ));
    let cd = Cratedock::start(&mirror_with(
        "",
        &up.index_url(),
        "licenses.allow = [\"MIT\"]\nlicenses.action = \"warn\"",
    ))
    .await;
    let project = CargoProject::new(&cd.index_url(), &[("gpl-crate", "=1.0.0")]);
    succeeded(&project.cargo(&["fetch"]), "cargo fetch under licence warn");
    assert!(decisions(&cd, "crates-io", "license", "warn").await >= 1.0);
    assert_eq!(decisions(&cd, "crates-io", "license", "deny").await, 0.0);
}

// ---------------------------------------------------------------------------------------------
// Publishing to the private registry
// ---------------------------------------------------------------------------------------------

/// The `Cargo.toml` of a publishable library for [`PRIVATE`].
fn library_manifest(name: &str, licence: &str, deps: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\nlicense = \"{licence}\"\ndescription = \"{name}, a test crate\"\npublish = [\"{PRIVATE}\"]\n\n[dependencies]\n{deps}"
    )
}

/// Writes the library `name` with `licence` and the dependency lines `deps` and publishes it
/// with cargo (without the verify build).
fn cargo_publish(cd: &Cratedock, token: &str, name: &str, licence: &str, deps: &str) -> Output {
    let p = CargoProject::with_private(cd);
    p.write("Cargo.toml", &library_manifest(name, licence, deps));
    p.write("src/lib.rs", "pub fn f() {}\n");
    p.cargo_as(
        Some(token),
        &["publish", "--registry", PRIVATE, "--no-verify"],
    )
}

/// Under `advisories = "deny"` a crate whose dependency can only resolve to affected versions
/// is refused, naming the advisory; one whose requirement also allows patched versions is
/// published with a warning that cargo prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_a_dependency_on_only_affected_versions_and_warns_on_a_partly_affected_one()
{
    let up = upstream_with_foo().await;
    let db = AdvisoryDb::new(&[foo_advisory()]);
    let cd = start_loaded(&mirror_and_private(
        &db.config(),
        &up.index_url(),
        "",
        "advisories = \"deny\"",
    ))
    .await;
    let token = user_with(&cd, "alice", PRIVATE, &["read", "publish"]);

    let out = cargo_publish(&cd, &token, "acme-pinned", "MIT", "foo = \"=1.0.0\"\n");
    refused_saying(
        &out,
        "cargo publish depending on foo =1.0.0",
        &[FOO_ADVISORY, "foo"],
    );
    assert!(
        index_file(&cd.data_dir, PRIVATE, "acme-pinned").is_none(),
        "nothing was published"
    );

    let out = cargo_publish(&cd, &token, "acme-ranged", "MIT", "foo = \"1\"\n");
    succeeded(&out, "cargo publish depending on foo 1");
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.trim_start().starts_with("warning:") && l.contains(FOO_ADVISORY)),
        "no warning naming {FOO_ADVISORY}:\n{err}"
    );
    assert!(err.contains("patched: >=1.0.1"), "{err}");
    assert!(index_file(&cd.data_dir, PRIVATE, "acme-ranged").is_some());
}

/// A `.crate` holding a `Cargo.lock` that locks an affected crates.io version is refused,
/// naming the lockfile, the package, its version and the advisory; the same crate locking the
/// patched version publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_a_cargo_lock_locking_an_affected_version() {
    let up = upstream_with_foo().await;
    let db = AdvisoryDb::new(&[foo_advisory()]);
    let cd = start_loaded(&mirror_and_private(
        &db.config(),
        &up.index_url(),
        "",
        "advisories = \"deny\"",
    ))
    .await;
    let token = user_with(&cd, "alice", PRIVATE, &["publish"]);

    let (name, vers) = ("acme-locked", "0.1.0");
    let manifest = manifest_with(
        name,
        vers,
        Some("MIT"),
        "[dependencies.foo]\nversion = \"^1\"\n",
    );
    let upload = |foo_vers: &str| {
        let foo = build(CrateSpec::new("foo", foo_vers));
        let lock = format!(
            "# This file is automatically @generated by Cargo.\n# It is not intended for manual editing.\nversion = 4\n\n[[package]]\nname = \"{name}\"\nversion = \"{vers}\"\ndependencies = [\n \"foo\",\n]\n\n[[package]]\nname = \"foo\"\nversion = \"{foo_vers}\"\nsource = \"{CRATES_IO_SOURCE}\"\nchecksum = \"{}\"\n",
            foo.cksum
        );
        let lockfile = Entry::file(format!("{name}-{vers}/Cargo.lock"), lock);
        frame(
            &metadata(name, vers),
            &crate_with(name, vers, &manifest, &[lockfile]),
        )
    };

    let a = raw::publish(&cd, PRIVATE, Some(&token), upload("1.0.0")).await;
    assert_eq!(a.status, 403, "{}", a.body);
    detail_says(
        &a.detail(),
        "a Cargo.lock locking foo 1.0.0",
        &["Cargo.lock", "foo", "1.0.0", FOO_ADVISORY],
    );
    assert!(index_file(&cd.data_dir, PRIVATE, name).is_none());

    let a = raw::publish(&cd, PRIVATE, Some(&token), upload("1.0.1")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(index_file(&cd.data_dir, PRIVATE, name).is_some());
}

/// A crate whose own licence the private registry does not allow is refused; cargo prints
/// the expression and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_a_disallowed_own_licence() {
    let up = FakeUpstream::start().await;
    let cd = Cratedock::start(&mirror_and_private(
        "",
        &up.index_url(),
        "",
        "licenses.allow = [\"MIT\", \"Apache-2.0\"]",
    ))
    .await;
    let token = user_with(&cd, "alice", PRIVATE, &["read", "publish"]);

    let out = cargo_publish(&cd, &token, "acme-copyleft", "GPL-3.0-only", "");
    refused_saying(
        &out,
        "cargo publish of a GPL crate",
        &["GPL-3.0-only", "not allowed"],
    );
    assert!(index_file(&cd.data_dir, PRIVATE, "acme-copyleft").is_none());

    let out = cargo_publish(&cd, &token, "acme-permissive", "MIT OR Apache-2.0", "");
    succeeded(&out, "cargo publish of an MIT OR Apache-2.0 crate");
}

// ---------------------------------------------------------------------------------------------
// The database: refresh and sync
// ---------------------------------------------------------------------------------------------

/// An advisory about a crate the tests never use, so that every archive holds something.
fn other_advisory() -> Advisory {
    Advisory::new("RUSTSEC-2024-0100", "other-crate").patched(">= 2.0.0")
}

/// The archive at `url` is refreshed in the background: a newer archive holding an advisory
/// for `foo` takes effect without a restart, an unchanged one is answered 304, and an archive
/// that cannot be read is counted as a failed refresh while the old database stays in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_is_refreshed_in_the_background_and_a_broken_one_keeps_the_old_database() {
    let up = upstream_with_foo().await;
    let old = AdvisoryDb::new(&[other_advisory()]);
    up.serve_file(DB_PATH, old.archive());
    let cd = Cratedock::start(&mirror_with(
        &format!(
            "[advisories]\nurl = \"{}{DB_PATH}\"\nrefresh_interval_ms = 300\n",
            up.base
        ),
        &up.index_url(),
        "advisories = \"deny\"",
    ))
    .await;
    wait_until("the first archive is loaded", || async {
        cd.metric("advisories_loaded", "").await == 1.0
    })
    .await;
    assert_eq!(download_status(&cd, "foo", "1.0.0").await, 200);

    let new = AdvisoryDb::new(&[other_advisory(), foo_advisory()]);
    up.serve_file(DB_PATH, new.archive());
    wait_until("the refreshed database refuses foo 1.0.0", || async {
        download_status(&cd, "foo", "1.0.0").await == 403
    })
    .await;
    assert_eq!(cd.metric("advisories_loaded", "").await, 2.0);
    assert!(refreshes(&cd, "updated").await >= 1.0);
    wait_until("an unchanged archive is answered 304", || async {
        refreshes(&cd, "not_modified").await >= 1.0
    })
    .await;
    let synced = cd.data_dir.join("advisories");
    assert!(
        std::fs::read_dir(&synced).is_ok_and(|mut d| d.next().is_some()),
        "a synced copy under {synced:?}"
    );

    let failed = refreshes(&cd, "failed").await;
    let hits = up.hits(DB_PATH);
    up.serve_file(
        DB_PATH,
        b"<html>an error page, not an archive</html>".to_vec(),
    );
    wait_until(
        "the broken archive is counted as a failed refresh",
        || async { refreshes(&cd, "failed").await > failed },
    )
    .await;
    assert!(up.hits(DB_PATH) > hits);
    let r = download(&cd, "crates-io", "foo", "1.0.0").await;
    assert_eq!(r.status(), 403, "the old database stays in use");
    let d = detail(r).await;
    detail_says(&d, "download of foo 1.0.0", &[FOO_ADVISORY]);
    assert_eq!(cd.metric("advisories_loaded", "").await, 2.0);
}

/// `cratedock advisories sync` fetches the archive at once; a second sync finds nothing new;
/// archives that are not gzip, that hold a `..` path or a symlink, or that cannot be fetched
/// fail the sync (502) and leave the old database in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_fetches_at_once_and_an_unsafe_or_broken_archive_fails_it() {
    let up = upstream_with_foo().await;
    let old = AdvisoryDb::new(&[other_advisory()]);
    up.serve_file(DB_PATH, old.archive());
    let cd = Cratedock::start(&mirror_with(
        &format!("[advisories]\nurl = \"{}{DB_PATH}\"\n", up.base),
        &up.index_url(),
        "advisories = \"deny\"",
    ))
    .await;
    wait_until("the first archive is loaded", || async {
        cd.metric("advisories_loaded", "").await == 1.0
    })
    .await;
    assert_eq!(download_status(&cd, "foo", "1.0.0").await, 200);

    let new = AdvisoryDb::new(&[other_advisory(), foo_advisory()]);
    up.serve_file(DB_PATH, new.archive());
    let out = advisories_cli(&cd, &["sync"]);
    succeeded(&out, "cratedock advisories sync");
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.to_lowercase().contains("updated"), "{said}");
    assert_eq!(download_status(&cd, "foo", "1.0.0").await, 403, "at once");
    assert_eq!(cd.metric("advisories_loaded", "").await, 2.0);

    let r = cd
        .admin_api(Method::POST, "/-/admin/advisories/sync", None)
        .await;
    assert_eq!(r.status(), 200);
    let again: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(again["outcome"], "not_modified", "{again}");
    assert_eq!(again["advisories"], 2, "{again}");
    let status = advisories_status(&cd).await;
    assert_eq!(status["loaded"], true, "{status}");
    assert_eq!(status["advisories"], 2, "{status}");
    assert_eq!(status["stale"], false, "{status}");
    assert!(
        status["source"]
            .as_str()
            .is_some_and(|s| s.contains(DB_PATH)),
        "{status}"
    );

    let unsafe_or_broken = [
        (
            "bytes that are not gzip",
            b"not a gzip stream at all".to_vec(),
        ),
        (
            "an entry with a `..` path",
            new.archive_with(&[Entry::file(
                format!("{TOP}/../../escaped.md"),
                "outside the folder",
            )]),
        ),
        (
            "a symlink",
            new.archive_with(&[Entry::special(
                format!("{TOP}/crates/foo/RUSTSEC-2024-0099.md"),
                SYMLINK,
            )]),
        ),
    ];
    for (what, bytes) in unsafe_or_broken {
        up.serve_file(DB_PATH, bytes);
        let r = cd
            .admin_api(Method::POST, "/-/admin/advisories/sync", None)
            .await;
        assert_eq!(r.status(), 502, "{what}");
        let d = detail(r).await;
        assert!(!d.is_empty(), "{what}: a detail says why");
        assert_eq!(
            download_status(&cd, "foo", "1.0.0").await,
            403,
            "{what}: the old database stays in use"
        );
        assert_eq!(cd.metric("advisories_loaded", "").await, 2.0, "{what}");
    }

    // The archive cannot be fetched at all: the command fails.
    up.serve_file(DB_PATH, b"still not an archive, and not served".to_vec());
    up.fail_next(DB_PATH, 1, 500, None);
    let out = advisories_cli(&cd, &["sync"]);
    assert!(
        !out.status.success(),
        "a failed sync exits non-zero:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(download_status(&cd, "foo", "1.0.0").await, 403);
}

// ---------------------------------------------------------------------------------------------
// Curated mode
// ---------------------------------------------------------------------------------------------

/// The `action` of every audit record.
fn audited_actions(cd: &Cratedock) -> Vec<String> {
    let out = cd.admin(&["audit", "--json", "--limit", "200"]);
    let audit: Value = serde_json::from_slice(&out.stdout).expect("the audit is JSON");
    audit
        .as_array()
        .expect("an array of records")
        .iter()
        .filter_map(|r| r["action"].as_str().map(str::to_owned))
        .collect()
}

/// With `curated = true` only listed crates are served: a crate not on the list does not
/// resolve; `curate add foo@^1` serves it at once with only its ^1 versions; `curate remove`
/// takes it away again. The list is also managed through the API, and changes are audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curated_mode_serves_only_listed_crates_and_versions() {
    let up = FakeUpstream::start().await;
    for v in ["1.0.0", "1.1.0", "2.0.0"] {
        up.publish(build(CrateSpec::new("foo", v)));
    }
    up.publish(build(CrateSpec::new("bar", "1.0.0")));
    let cd = Cratedock::start(&mirror_with("", &up.index_url(), "curated = true")).await;
    let foo_index = "/crates-io/index/3/f/foo";
    let bar_index = "/crates-io/index/3/b/bar";

    let before = CargoProject::new(&cd.index_url(), &[("foo", ">=1")]);
    refused_saying(
        &before.cargo(&["generate-lockfile"]),
        "cargo generate-lockfile of an unlisted crate",
        &["foo"],
    );
    let r = cd.get(foo_index).await;
    assert_eq!(r.status(), 404);
    let d = detail(r).await;
    detail_says(
        &d,
        "index of unlisted foo",
        &["curated", "cratedock admin curate add"],
    );
    assert_eq!(download_status(&cd, "foo", "1.0.0").await, 404);

    cd.admin(&["curate", "add", "foo@^1", "--registry", "crates-io"]);
    let after = CargoProject::new(&cd.index_url(), &[("foo", ">=1")]);
    succeeded(
        &after.cargo(&["generate-lockfile"]),
        "cargo generate-lockfile after curate add",
    );
    assert_eq!(locked_versions(&after.lockfile(), "foo"), ["1.1.0"]);
    succeeded(&after.cargo(&["fetch"]), "cargo fetch after curate add");
    let r = cd.get(foo_index).await;
    assert_eq!(r.status(), 200);
    let shown = versions_and_yanked(&r.bytes().await.unwrap(), "foo");
    assert_eq!(
        shown,
        [("1.0.0".to_owned(), false), ("1.1.0".to_owned(), false)]
    );
    assert_eq!(download_status(&cd, "foo", "2.0.0").await, 404);
    assert_eq!(download_status(&cd, "bar", "1.0.0").await, 404);

    // The API: the list, and an entry without a requirement.
    let list_path = "/-/admin/registries/crates-io/curated";
    let listed = |v: Value| -> Vec<String> {
        let mut names: Vec<String> = v["curated"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|e| e.as_str().expect("an entry").to_owned())
            .collect();
        names.sort();
        names
    };
    let r = cd.admin_api(Method::GET, list_path, None).await;
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(listed(v), ["foo@^1"]);
    let r = cd
        .admin_api(Method::PUT, &format!("{list_path}/bar"), None)
        .await;
    assert!(r.status().is_success(), "PUT bar: {}", r.status());
    assert_eq!(cd.get(bar_index).await.status(), 200);
    let r = cd.admin_api(Method::GET, list_path, None).await;
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(listed(v), ["bar", "foo@^1"]);
    let out = cd.admin(&["curate", "list", "--registry", "crates-io"]);
    let shown = stdout(&out);
    assert!(shown.contains("foo@^1") && shown.contains("bar"), "{shown}");
    let r = cd
        .admin_api(Method::DELETE, &format!("{list_path}/bar"), None)
        .await;
    assert!(r.status().is_success(), "DELETE bar: {}", r.status());
    assert_eq!(cd.get(bar_index).await.status(), 404);

    cd.admin(&["curate", "remove", "foo", "--registry", "crates-io"]);
    assert_eq!(cd.get(foo_index).await.status(), 404);
    let removed = CargoProject::new(&cd.index_url(), &[("foo", ">=1")]);
    refused_saying(
        &removed.cargo(&["generate-lockfile"]),
        "cargo generate-lockfile after curate remove",
        &["foo"],
    );

    let actions = audited_actions(&cd);
    let count = |a: &str| actions.iter().filter(|x| *x == a).count();
    assert_eq!(
        (count("curate.add"), count("curate.remove")),
        (2, 2),
        "{actions:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

/// `(registry, name, version, advisory)` of each entry of a report, whether it comes as
/// `{"affected": [...]}` or as the bare list.
fn report_entries(report: &Value) -> BTreeSet<(String, String, String, String)> {
    let list = report.get("affected").unwrap_or(report);
    list.as_array()
        .unwrap_or_else(|| panic!("a list of affected versions: {report}"))
        .iter()
        .map(|e| {
            let field = |k: &str| {
                e[k].as_str()
                    .unwrap_or_else(|| panic!("{k} in {e}"))
                    .to_owned()
            };
            (
                field("registry"),
                field("name"),
                field("version"),
                field("advisory"),
            )
        })
        .collect()
}

/// The entry of the report about crate `name` (one is expected).
fn report_entry<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["affected"]
        .as_array()
        .expect("a list of affected versions")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no entry for {name} in {report:#}"))
}

/// The report lists exactly the cached and private versions affected by an advisory that
/// counts under their registry's settings: not patched or unaffected versions, not withdrawn
/// or ignored advisories, not informational kinds the registry does not list; an advisory
/// naming a private crate affects that private crate. The CLI prints the same entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_lists_exactly_the_affected_cached_and_private_versions() {
    let up = upstream_with_foo().await;
    for name in ["bar", "baz", "qux"] {
        up.publish(build(CrateSpec::new(name, "1.0.0")));
    }
    let db = AdvisoryDb::new(&[
        foo_advisory(),
        Advisory::new("RUSTSEC-2024-0020", "bar")
            .informational("unmaintained")
            .title("bar is unmaintained"),
        Advisory::new("RUSTSEC-2024-0021", "baz").withdrawn("2024-02-01"),
        Advisory::new("RUSTSEC-2024-0022", "foo").patched(">= 9.0.0"),
        Advisory::new("RUSTSEC-2024-0023", "qux").informational("unsound"),
        Advisory::new("RUSTSEC-2024-0024", "acme-secret").patched(">= 0.2.0"),
    ]);
    let cd = start_loaded(&mirror_and_private(
        &db.config(),
        &up.index_url(),
        "advisories = \"warn\"\ninformational = [\"unmaintained\"]\nignore = [\"RUSTSEC-2024-0022\"]",
        "advisories = \"warn\"",
    ))
    .await;

    // Cache every version (warn serves the affected ones).
    for (name, vers) in [
        ("foo", "1.0.0"),
        ("foo", "1.0.1"),
        ("bar", "1.0.0"),
        ("baz", "1.0.0"),
        ("qux", "1.0.0"),
    ] {
        assert_eq!(download_status(&cd, name, vers).await, 200, "{name} {vers}");
    }
    cd.wait_idle().await;
    let token = user_with(&cd, "alice", PRIVATE, &["publish"]);
    for vers in ["0.1.0", "0.2.0"] {
        let a = raw::publish(&cd, PRIVATE, Some(&token), body("acme-secret", vers)).await;
        assert_eq!(a.status, 200, "acme-secret {vers}: {}", a.body);
    }

    let expected: BTreeSet<(String, String, String, String)> = [
        ("crates-io", "foo", "1.0.0", FOO_ADVISORY),
        ("crates-io", "bar", "1.0.0", "RUSTSEC-2024-0020"),
        (PRIVATE, "acme-secret", "0.1.0", "RUSTSEC-2024-0024"),
    ]
    .iter()
    .map(|(r, n, v, a)| (r.to_string(), n.to_string(), v.to_string(), a.to_string()))
    .collect();

    let r = cd
        .admin_api(Method::GET, "/-/admin/advisories/report", None)
        .await;
    assert_eq!(r.status(), 200);
    let report: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(report_entries(&report), expected, "{report:#}");
    let foo = report_entry(&report, "foo");
    assert_eq!(foo["kind"], "vulnerability", "{foo}");
    assert_eq!(foo["title"], FOO_TITLE, "{foo}");
    assert_eq!(foo["patched"], serde_json::json!([">=1.0.1"]), "{foo}");
    assert_eq!(foo["url"], FOO_URL, "{foo}");
    assert_eq!(foo["action"], "warn", "{foo}");
    assert_eq!(report_entry(&report, "bar")["kind"], "unmaintained");
    assert_eq!(
        report_entry(&report, "acme-secret")["kind"],
        "vulnerability"
    );

    // The CLI: one line per entry, and the same entries as JSON.
    let out = advisories_cli(&cd, &["report"]);
    succeeded(&out, "cratedock advisories report");
    let table = stdout(&out);
    for (registry, name, vers, id) in &expected {
        assert!(
            table.lines().any(|l| l.contains(registry.as_str())
                && l.contains(name.as_str())
                && l.contains(vers.as_str())
                && l.contains(id.as_str())),
            "no line for {registry} {name} {vers} {id}:\n{table}"
        );
    }
    for id in [
        "RUSTSEC-2024-0021",
        "RUSTSEC-2024-0022",
        "RUSTSEC-2024-0023",
    ] {
        assert!(!table.contains(id), "{id} does not count:\n{table}");
    }
    let out = advisories_cli(&cd, &["report", "--json"]);
    succeeded(&out, "cratedock advisories report --json");
    let json: Value = serde_json::from_slice(&out.stdout).expect("the report is JSON");
    assert_eq!(report_entries(&json), expected, "{json:#}");
}
