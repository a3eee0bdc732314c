//! Mirroring for builds without the upstream, with real cargo: prefetch from lockfiles and
//! lists, offline mode and `serve_only_cached`, pins by lockfile, and air-gap bundles exported
//! on one instance and imported on another.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::registry::Published;
use crate::support::*;

/// How cargo records a crates.io package's source in a lockfile (also when a mirror replaces
/// crates.io).
const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";

// ---------------------------------------------------------------------------------------------
// Helpers of this file.

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A command's exit status and both of its outputs, for assertion messages.
fn shown(out: &Output) -> String {
    format!(
        "{}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Both outputs of a command, one after the other (where a message lands is not fixed).
fn said(out: &Output) -> String {
    format!("{}\n{}", text(&out.stdout), text(&out.stderr))
}

/// Fails the test with the command's outputs unless it succeeded.
#[track_caller]
fn succeeded(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed: {}", shown(out));
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// The counts of a prefetch's summary line.
#[derive(Debug, PartialEq)]
struct Summary {
    fetched: u64,
    cached: u64,
    failed: u64,
}

/// The summary line of `cratedock prefetch` (the last line naming "fetched", "cached already"
/// and "failed"; on stdout, else on stderr).
#[track_caller]
fn summary(out: &Output) -> Summary {
    let is_summary =
        |l: &&str| l.contains("fetched") && l.contains("cached already") && l.contains("failed");
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let line = stdout
        .lines()
        .rev()
        .find(is_summary)
        .or_else(|| stderr.lines().rev().find(is_summary))
        .unwrap_or_else(|| panic!("no summary line: {}", shown(out)));
    let n = |label: &str| {
        number_after(line, label)
            .unwrap_or_else(|| panic!("no `{label} N` in the summary line {line:?}"))
    };
    Summary {
        fetched: n("fetched"),
        cached: n("cached already"),
        failed: n("failed"),
    }
}

/// The number after the last occurrence of the word `label` in `line` (`fetched 3`,
/// `failed: 0`); `prefetched 3` is not `fetched 3`.
fn number_after(line: &str, label: &str) -> Option<u64> {
    line.match_indices(label)
        .filter(|(i, _)| {
            line[..*i]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric())
        })
        .filter_map(|(i, _)| {
            let rest = line[i + label.len()..].trim_start_matches([':', '=', ' ']);
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .last()
}

/// The label of the test's mirror in metric series.
const REG: &str = "registry=\"crates-io\"";

/// The sum of the series of metric `cratedock_{name}` that carry every one of `labels`
/// (`registry="crates-io"`), in whatever order the labels are written; 0 when none.
async fn series(cd: &Cratedock, name: &str, labels: &[&str]) -> f64 {
    let prefix = format!("cratedock_{name}{{");
    cd.metrics_text()
        .await
        .lines()
        .filter(|l| l.starts_with(&prefix) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `cratedock_mirror_offline{registry="crates-io"}`.
async fn offline_gauge(cd: &Cratedock) -> f64 {
    series(cd, "mirror_offline", &[REG]).await
}

/// `cratedock_prefetch_files_total{registry="crates-io",outcome=OUTCOME}`.
async fn prefetch_files(cd: &Cratedock, outcome: &str) -> f64 {
    let outcome = format!("outcome=\"{outcome}\"");
    series(cd, "prefetch_files_total", &[REG, outcome.as_str()]).await
}

/// `cratedock_prefetch_jobs_total{registry="crates-io"}`, of one outcome or (None) all.
async fn prefetch_jobs(cd: &Cratedock, outcome: Option<&str>) -> f64 {
    match outcome {
        Some(o) => {
            let o = format!("outcome=\"{o}\"");
            series(cd, "prefetch_jobs_total", &[REG, o.as_str()]).await
        }
        None => series(cd, "prefetch_jobs_total", &[REG]).await,
    }
}

/// `cratedock_imported_files_total{registry="crates-io",kind=KIND,outcome=OUTCOME}`.
async fn imported(cd: &Cratedock, kind: &str, outcome: &str) -> f64 {
    let kind = format!("kind=\"{kind}\"");
    let outcome = format!("outcome=\"{outcome}\"");
    series(
        cd,
        "imported_files_total",
        &[REG, kind.as_str(), outcome.as_str()],
    )
    .await
}

/// A JSON answer of the admin API (GET); fails the test unless it is a success.
async fn admin_json(cd: &Cratedock, path: &str) -> Value {
    let r = cd.admin_api(Method::GET, path, None).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(status.is_success(), "GET {path}: {status}\n{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// A job id as it goes in a path (a number or a string in the JSON).
fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn download_path(p: &Published) -> String {
    format!(
        "/crates-io/api/v1/crates/{}/{}/download",
        p.spec.name, p.spec.version
    )
}

/// Downloads each of `versions` through cratedock with a plain GET (byte-exact), then waits
/// until they are stored.
async fn cache_versions(cd: &Cratedock, versions: &[Published]) {
    for p in versions {
        let r = cd.get(&download_path(p)).await;
        let status = r.status();
        if status != 200 {
            let body = r.text().await.unwrap_or_default();
            panic!("{} {}: {status} {body}", p.spec.name, p.spec.version);
        }
        assert_eq!(r.bytes().await.unwrap(), p.tarball, "byte-exact");
    }
    cd.wait_idle().await;
}

/// cratedock's index file of `name`: its status, ETag and lines.
async fn served_index(cd: &Cratedock, name: &str) -> (u16, String, Vec<String>) {
    let r = cd
        .get(&format!("/crates-io/index/{}", index_path(name)))
        .await;
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = r.text().await.unwrap();
    let lines = body.lines().map(str::to_owned).collect();
    (status, etag, lines)
}

/// The index lines of `versions`, as the upstream serves them.
fn lines_of(versions: &[Published]) -> Vec<String> {
    versions.iter().map(|p| p.line.clone()).collect()
}

/// A status code of a GET of cratedock's `path`, with an If-None-Match of `etag`.
async fn conditional_status(cd: &Cratedock, path: &str, etag: &str) -> u16 {
    http_client()
        .get(cd.url(path))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Fails the test unless cargo failed to resolve `version` (a version cargo cannot see in the
/// index), as opposed to failing to reach the registry or to download something.
#[track_caller]
fn refused_as_not_found(out: &Output, version: &str) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "cargo succeeded:\n{err}");
    assert!(err.contains(version), "{version} is named:\n{err}");
    assert!(
        [
            "failed to select a version",
            "candidate versions found which didn't match",
            "no matching package",
            "not found",
        ]
        .iter()
        .any(|m| err.contains(m)),
        "a resolution error:\n{err}"
    );
    assert!(
        !err.contains("failed to download") && !err.contains("failed to query"),
        "not a download or registry error:\n{err}"
    );
}

/// `a 1.0.0` depends on `b ^1`; `b` has 1.0.0 and 1.1.0 (a project needing `a = "1"` locks
/// `a 1.0.0` and `b 1.1.0`).
fn two_levels(up: &FakeUpstream) -> Vec<Published> {
    // With licences, so that a bundle of them can also be published to a private registry.
    let crates = vec![
        build(CrateSpec::new("a", "1.0.0").dep("b", "^1").license("MIT")),
        build(CrateSpec::new("b", "1.0.0").license("MIT")),
        build(CrateSpec::new("b", "1.1.0").license("MIT")),
    ];
    for p in &crates {
        up.publish(p.clone());
    }
    crates
}

/// `foo` 1.0.0, 1.1.0 and 1.2.0 (returned in that order), and `bar 1.0.0`.
fn foo_versions(up: &FakeUpstream) -> Vec<Published> {
    let versions: Vec<_> = ["1.0.0", "1.1.0", "1.2.0"]
        .iter()
        .map(|v| build(CrateSpec::new("foo", v)))
        .collect();
    for p in &versions {
        up.publish(p.clone());
    }
    up.publish(build(CrateSpec::new("bar", "1.0.0")));
    versions
}

/// One `[[package]]` of a hand-written Cargo.lock.
struct Locked {
    name: String,
    version: String,
    /// None: a path package.
    source: Option<String>,
    checksum: Option<String>,
}

impl Locked {
    fn crates_io(p: &Published) -> Self {
        Self {
            name: p.spec.name.clone(),
            version: p.spec.version.clone(),
            source: Some(CRATES_IO.to_owned()),
            checksum: Some(p.cksum.clone()),
        }
    }

    fn other(name: &str, version: &str, source: Option<&str>) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            source: source.map(str::to_owned),
            checksum: None,
        }
    }
}

/// Writes `dir/Cargo.lock` (format 4) of a package `app` that depends on `packages`.
fn write_lockfile(dir: &Path, packages: &[Locked]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut lock = String::from(concat!(
        "# This file is automatically @generated by Cargo.\n",
        "# It is not intended for manual editing.\n",
        "version = 4\n",
        "\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\ndependencies = [\n",
    ));
    for p in packages {
        lock.push_str(&format!(" \"{}\",\n", p.name));
    }
    lock.push_str("]\n");
    for p in packages {
        lock.push_str(&format!(
            "\n[[package]]\nname = \"{}\"\nversion = \"{}\"\n",
            p.name, p.version
        ));
        if let Some(s) = &p.source {
            lock.push_str(&format!("source = \"{s}\"\n"));
        }
        if let Some(c) = &p.checksum {
            lock.push_str(&format!("checksum = \"{c}\"\n"));
        }
    }
    let path = dir.join("Cargo.lock");
    std::fs::write(&path, lock).unwrap();
    path
}

/// The file names of the `.crate` files in cratedock's data folder.
fn stored_names(cd: &Cratedock) -> BTreeSet<String> {
    cd.stored_crates()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Prefetch.

/// `cratedock prefetch DIR` fetches every crates.io package of the project's lockfile (made by
/// `cargo generate-lockfile` through cratedock, which reads index files only) and exits 0 with
/// "fetched 2"; with the upstream then stopped, cargo with a fresh `CARGO_HOME` fetches and
/// builds the project through cratedock. A second prefetch downloads nothing and reports
/// "cached already 2"; `prefetch --status` shows the job done; the prefetch metrics count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_of_a_lockfile_lets_a_fresh_cargo_home_build_with_the_upstream_gone() {
    let mut up = FakeUpstream::start().await;
    let crates = two_levels(&up);
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    let project = CargoProject::new(&cd.index_url(), &[("a", "1")]);
    project.ok(&["generate-lockfile"]);
    let lock = project.lockfile();
    assert!(lock.contains("name = \"b\"\nversion = \"1.1.0\""), "{lock}");
    assert_eq!(
        up.hits("/dl/"),
        0,
        "generate-lockfile reads index files only"
    );

    let root = project.root();
    let out = cd.cli(&["prefetch", path_str(&root)]);
    succeeded(&out, "prefetch");
    assert_eq!(
        summary(&out),
        Summary {
            fetched: 2,
            cached: 0,
            failed: 0
        },
        "{}",
        shown(&out)
    );
    assert_eq!(up.hits("/dl/a/a-1.0.0.crate"), 1);
    assert_eq!(up.hits("/dl/b/b-1.1.0.crate"), 1);
    assert_eq!(up.hits("/dl/"), 2, "only what the lockfile names");
    cd.wait_idle().await;
    assert_eq!(
        stored_names(&cd),
        BTreeSet::from(["a-1.0.0.crate".to_owned(), "b-1.1.0.crate".to_owned()])
    );

    assert!(
        prefetch_files(&cd, "fetched").await > 0.0,
        "{}",
        cd.metrics_text().await
    );
    let crate_bytes = (crates[0].tarball.len() + crates[2].tarball.len()) as f64;
    let bytes = series(&cd, "prefetch_bytes_total", &[REG]).await;
    assert!(
        bytes >= crate_bytes,
        "{bytes} bytes counted, {crate_bytes} fetched"
    );
    assert_eq!(prefetch_jobs(&cd, Some("ok")).await, 1.0);
    let status = cd.cli(&["prefetch", "--status"]);
    succeeded(&status, "prefetch --status");
    assert!(said(&status).contains("done"), "{}", shown(&status));

    // Again: everything is cached already, nothing is downloaded.
    let again = cd.cli(&["prefetch", path_str(&root)]);
    succeeded(&again, "the second prefetch");
    assert_eq!(
        summary(&again),
        Summary {
            fetched: 0,
            cached: 2,
            failed: 0
        },
        "{}",
        shown(&again)
    );
    assert_eq!(up.hits("/dl/"), 2, "cached files are skipped");
    assert!(prefetch_files(&cd, "cached").await >= 2.0);
    assert_eq!(prefetch_jobs(&cd, Some("ok")).await, 2.0);

    up.stop().await;
    let fresh = project.fresh_home(&cd.index_url());
    fresh.ok(&["fetch"]);
    fresh.ok(&["build", "--offline"]);
}

/// Prefetch inputs: a folder is searched for lockfiles (not in `target/` nor in hidden folders)
/// and only their crates.io packages are taken (not path, git or other registries' ones);
/// `--list FILE` takes `name@version` lines and bare names (the newest 2 with `--newest 2`),
/// skipping comments and blank lines. What cannot be fetched is listed as `name@version`, the
/// exit code is non-zero, and the job (`GET /-/admin/jobs?kind=prefetch`) and the metrics
/// say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_reads_folders_and_lists_and_names_what_it_could_not_fetch() {
    let up = FakeUpstream::start().await;
    let qux = build(CrateSpec::new("qux", "1.0.0"));
    let baz = build(CrateSpec::new("baz", "0.1.0"));
    for p in [&qux, &baz] {
        up.publish(p.clone());
    }
    up.publish(build(CrateSpec::new("foo", "1.0.0")));
    for v in ["1.0.0", "2.0.0", "3.0.0"] {
        up.publish(build(CrateSpec::new("bar", v)));
    }
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    let work = tempfile::tempdir().unwrap();

    // A workspace: its own lockfile, a nested one, and ones that are not to be read.
    let ws = work.path().join("ws");
    write_lockfile(
        &ws,
        &[
            Locked::crates_io(&qux),
            Locked::other("member-lib", "0.1.0", None),
            Locked::other(
                "gitdep",
                "0.3.0",
                Some(
                    "git+https://example.invalid/gitdep.git#0123456789abcdef0123456789abcdef01234567",
                ),
            ),
            Locked::other(
                "elsewhere",
                "1.0.0",
                Some("sparse+https://example.invalid/index/"),
            ),
        ],
    );
    write_lockfile(&ws.join("tools/xtask"), &[Locked::crates_io(&baz)]);
    let ghost = [Locked::other("ghost", "1.0.0", Some(CRATES_IO))];
    write_lockfile(&ws.join("target/package/app-0.1.0"), &ghost);
    write_lockfile(&ws.join(".cache"), &ghost);

    let out = cd.cli(&["prefetch", path_str(&ws)]);
    succeeded(&out, "prefetch of a folder");
    assert_eq!(
        summary(&out),
        Summary {
            fetched: 2,
            cached: 0,
            failed: 0
        },
        "{}",
        shown(&out)
    );
    assert_eq!(up.hits("/dl/qux/qux-1.0.0.crate"), 1);
    assert_eq!(up.hits("/dl/baz/baz-0.1.0.crate"), 1);
    for skipped in [
        "/index/gh/os/ghost",
        "/index/gi/td/gitdep",
        "/index/el/se/elsewhere",
    ] {
        assert_eq!(up.hits(skipped), 0, "{skipped} was not to be asked for");
    }

    // A list: versions, and a bare name for its newest two versions.
    let list = work.path().join("needed.txt");
    std::fs::write(
        &list,
        "# what the release build needs\nfoo@1.0.0\n\nbar\n# bar@1.0.0 is too old\n",
    )
    .unwrap();
    let out = cd.cli(&["prefetch", "--list", path_str(&list), "--newest", "2"]);
    succeeded(&out, "prefetch --list");
    assert_eq!(
        summary(&out),
        Summary {
            fetched: 3,
            cached: 0,
            failed: 0
        },
        "{}",
        shown(&out)
    );
    assert_eq!(up.hits("/dl/foo/foo-1.0.0.crate"), 1);
    assert_eq!(up.hits("/dl/bar/bar-3.0.0.crate"), 1);
    assert_eq!(up.hits("/dl/bar/bar-2.0.0.crate"), 1);
    assert_eq!(
        up.hits("/dl/bar/bar-1.0.0.crate"),
        0,
        "not among the newest 2"
    );

    // What cannot be fetched: a crate the upstream does not have, and a version it does not.
    let bad = work.path().join("bad.txt");
    std::fs::write(&bad, "foo@1.0.0\nghost@0.1.0\nfoo@9.9.9\n").unwrap();
    let out = cd.cli(&["prefetch", "--list", path_str(&bad)]);
    assert!(
        !out.status.success(),
        "failures make prefetch fail: {}",
        shown(&out)
    );
    assert_eq!(
        summary(&out),
        Summary {
            fetched: 0,
            cached: 1,
            failed: 2
        },
        "{}",
        shown(&out)
    );
    for named in ["ghost@0.1.0", "foo@9.9.9"] {
        assert!(said(&out).contains(named), "{named}: {}", shown(&out));
    }

    let jobs = admin_json(&cd, "/-/admin/jobs?kind=prefetch").await;
    let jobs = jobs["jobs"].as_array().expect("a list of jobs");
    assert!(jobs.len() >= 3, "{jobs:#?}");
    let newest = &jobs[0];
    assert_eq!(newest["kind"], "prefetch", "{newest:#}");
    assert_ne!(newest["state"], "running", "{newest:#}");
    assert_eq!(newest["prefetch"]["cached"], 1, "{newest:#}");
    assert_eq!(newest["prefetch"]["fetched"], 0, "{newest:#}");
    let failed: BTreeSet<&str> = newest["prefetch"]["failed"]
        .as_array()
        .expect("failures listed")
        .iter()
        .map(|f| f["crate"].as_str().expect("each failure names its crate"))
        .collect();
    assert_eq!(failed, BTreeSet::from(["foo@9.9.9", "ghost@0.1.0"]));
    assert_eq!(jobs[1]["prefetch"]["fetched"], 3, "{:#}", jobs[1]);

    assert!(
        prefetch_files(&cd, "fetched").await >= 5.0,
        "{}",
        cd.metrics_text().await
    );
    assert!(prefetch_files(&cd, "cached").await >= 1.0);
    assert!(prefetch_files(&cd, "failed").await >= 2.0);
    let ok = prefetch_jobs(&cd, Some("ok")).await;
    let all = prefetch_jobs(&cd, None).await;
    assert!(ok >= 2.0, "{}", cd.metrics_text().await);
    assert_eq!(all, 3.0, "{}", cd.metrics_text().await);
}

/// An interrupted prefetch resumes: a slow job (every crate download delayed, two upstream
/// connections) is started with `--no-wait`, the server is killed (SIGKILL) once the job
/// reports files done and some crate files are stored, and after a restart the same prefetch,
/// the upstream healthy again, completes with no failures, finds some files cached already
/// and downloads only what it reports fetched; every file is served byte-exact, and
/// `cratedock admin cache verify` and, with the server stopped, `cratedock verify` find no
/// problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_prefetch_resumes_where_it_stopped() {
    const N: usize = 20;
    let up = FakeUpstream::start().await;
    let crates: Vec<Published> = (0..N)
        .map(|i| build(CrateSpec::new(&format!("slow{i}"), "1.0.0").padding(2_000)))
        .collect();
    for p in &crates {
        up.publish(p.clone());
    }
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "max_connections = 2")).await;
    up.set_fault(Fault::Delay(Duration::from_millis(500)), Target::Crates);
    let work = tempfile::tempdir().unwrap();
    let locked: Vec<Locked> = crates.iter().map(Locked::crates_io).collect();
    let lock = write_lockfile(work.path(), &locked);

    let out = cd.cli(&["prefetch", "--no-wait", path_str(&lock)]);
    succeeded(&out, "prefetch --no-wait");
    let jobs = admin_json(&cd, "/-/admin/jobs?kind=prefetch").await;
    let job = &jobs["jobs"][0];
    assert_eq!(job["kind"], "prefetch", "{jobs:#}");
    let id = id_text(&job["id"]);
    assert!(
        text(&out.stdout).contains(&id),
        "--no-wait prints the job id {id}: {}",
        shown(&out)
    );
    let status = format!("/-/admin/jobs/{id}");

    wait_until("the prefetch job has stored some crate files", || async {
        let job = admin_json(&cd, &status).await;
        assert_eq!(job["state"], "running", "finished too soon: {job:#}");
        job["files_done"].as_u64().unwrap_or(0) >= 4 && cd.stored_crates().len() >= 4
    })
    .await;
    let job = admin_json(&cd, &status).await;
    assert!(
        job["files_done"].as_u64().unwrap() < job["files_total"].as_u64().unwrap(),
        "interrupted half-way: {job:#}"
    );
    let stored = cd.stored_crates().len();
    assert!(stored < N, "{stored} of {N} stored already");

    cd.signal("KILL");
    let mut cd = cd.restart_after_kill().await;
    up.set_fault(Fault::None, Target::All);
    let before = up.hits("/dl/");

    let out = cd.cli(&["prefetch", path_str(&lock)]);
    succeeded(&out, "the prefetch after the restart");
    let s = summary(&out);
    assert_eq!(s.failed, 0, "{}", shown(&out));
    assert_eq!(s.fetched + s.cached, N as u64, "{}", shown(&out));
    assert!(
        s.cached >= 1,
        "files stored before the kill ({stored} seen) count as cached: {}",
        shown(&out)
    );
    assert_eq!(
        (up.hits("/dl/") - before) as u64,
        s.fetched,
        "only the missing files were downloaded"
    );
    cd.wait_idle().await;
    assert_eq!(cd.stored_crates().len(), N);
    for p in &crates {
        let r = cd.get(&download_path(p)).await;
        assert_eq!(r.status(), 200, "{}", p.spec.name);
        assert_eq!(r.bytes().await.unwrap(), p.tarball, "{}", p.spec.name);
    }

    cd.admin(&["cache", "verify"]);
    cd.stop().await;
    let out = cd.offline(&["verify"]);
    succeeded(&out, "cratedock verify");
}

// ---------------------------------------------------------------------------------------------
// Pins by lockfile.

/// Pins by lockfile survive eviction: with a small disk limit, `prefetch --pin` of one
/// lockfile and `cratedock admin cache pin --lockfile` of another (naming a crate cached by a
/// plain download) keep those crate files while other crates fill the cache past the limit and
/// `cache gc` runs, down to nothing: only the pinned files stay, served with the upstream gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_by_lockfile_survive_eviction() {
    let mut up = FakeUpstream::start().await;
    let pinned: Vec<Published> = ["p0", "p1", "p2"]
        .iter()
        .map(|n| build(CrateSpec::new(n, "1.0.0").padding(20_000)))
        .collect();
    let fillers: Vec<Published> = (0..6)
        .map(|i| build(CrateSpec::new(&format!("fill{i}"), "1.0.0").padding(20_000)))
        .collect();
    for p in pinned.iter().chain(&fillers) {
        up.publish(p.clone());
    }
    let size = pinned
        .iter()
        .chain(&fillers)
        .map(|p| p.tarball.len() as u64)
        .max()
        .unwrap();
    // Room for five crates (and their index files); the three pinned ones take three.
    let max = size * 11 / 2;
    let cd = Cratedock::start(&config_with(
        &up.index_url(),
        &format!("memory_max_item_bytes = 1000\ndisk_max_bytes = {max}"),
        "",
    ))
    .await;
    let disk_bytes = || async { cd.metric("cache_bytes", "tier=\"disk\"").await };
    let work = tempfile::tempdir().unwrap();
    let first = write_lockfile(
        &work.path().join("first"),
        &[Locked::crates_io(&pinned[0]), Locked::crates_io(&pinned[1])],
    );
    let second = write_lockfile(
        &work.path().join("second"),
        &[Locked::crates_io(&pinned[2])],
    );

    let out = cd.cli(&["prefetch", "--pin", path_str(&first)]);
    succeeded(&out, "prefetch --pin");
    assert_eq!(
        summary(&out),
        Summary {
            fetched: 2,
            cached: 0,
            failed: 0
        },
        "{}",
        shown(&out)
    );
    cache_versions(&cd, &pinned[2..]).await;
    cd.admin(&["cache", "pin", "--lockfile", path_str(&second)]);
    let pins = text(&cd.admin(&["cache", "pins"]).stdout);
    for p in &pinned {
        assert!(
            pins.contains(&p.spec.name),
            "{} pinned:\n{pins}",
            p.spec.name
        );
    }

    for (i, f) in fillers.iter().enumerate() {
        cache_versions(&cd, std::slice::from_ref(f)).await;
        assert!(
            disk_bytes().await <= max as f64,
            "over the limit after fill{i}"
        );
        wait_until(
            "eviction brings the disk below the high watermark",
            || async { disk_bytes().await <= max as f64 * 0.95 },
        )
        .await;
    }
    assert!(
        cd.metric("cache_evictions_total", "kind=\"crate\"").await >= 1.0,
        "the fillers went past the limit: {}",
        cd.metrics_text().await
    );
    let names = stored_names(&cd);
    for p in &pinned {
        let file = format!("{}-1.0.0.crate", p.spec.name);
        assert!(names.contains(&file), "{file} kept: {names:?}");
    }

    cd.admin(&["cache", "gc"]);
    let out = cd.admin(&["cache", "gc", "--to", "0"]);
    assert!(text(&out.stdout).contains("evicted"), "{}", shown(&out));
    let expected: BTreeSet<String> = pinned
        .iter()
        .map(|p| format!("{}-1.0.0.crate", p.spec.name))
        .collect();
    assert_eq!(stored_names(&cd), expected, "only the pinned files stay");

    up.stop().await;
    for p in &pinned {
        let r = cd.get(&download_path(p)).await;
        assert_eq!(r.status(), 200, "{}", p.spec.name);
        assert_eq!(r.bytes().await.unwrap(), p.tarball, "{}", p.spec.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Offline mode and serve_only_cached.

/// Offline mode switched at run time (`cratedock admin offline on`): index files list only the
/// cached versions (the upstream's lines, byte for byte, under an ETag of their own), cargo
/// resolves `foo = "1"` to the newest cached version, reports `=1.2.0` (not cached) and a crate
/// with no cached version as not found rather than as a failed download, a download of an
/// uncached version is a 404 saying "offline", the gauge is 1, and nothing reaches the upstream.
/// Switched off through the HTTP API, the whole index file is back; both switches are audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_mode_switched_at_run_time_serves_only_cached_versions() {
    let up = FakeUpstream::start().await;
    let published = foo_versions(&up);
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    cache_versions(&cd, &published[..2]).await;
    let (status, online_etag, lines) = served_index(&cd, "foo").await;
    assert_eq!(status, 200);
    assert_eq!(lines, lines_of(&published), "online: every version");
    assert_eq!(offline_gauge(&cd).await, 0.0);

    cd.admin(&["offline", "on", "--registry", "crates-io"]);
    let hits = up.hits("/");
    let state = admin_json(&cd, "/-/admin/registries/crates-io/offline").await;
    assert_eq!(state["offline"], true, "{state:#}");
    assert_eq!(offline_gauge(&cd).await, 1.0, "{}", cd.metrics_text().await);
    let status = cd.admin(&["offline", "status"]);
    assert!(said(&status).contains("crates-io"), "{}", shown(&status));

    let (status, offline_etag, lines) = served_index(&cd, "foo").await;
    assert_eq!(status, 200);
    assert_eq!(
        lines,
        lines_of(&published[..2]),
        "offline: the cached versions only"
    );
    assert!(!offline_etag.is_empty(), "an ETag");
    assert_ne!(offline_etag, online_etag, "the ETag is the pruned body's");
    let foo_index = format!("/crates-io/index/{}", index_path("foo"));
    assert_eq!(
        conditional_status(&cd, &foo_index, &offline_etag).await,
        304
    );

    let project = CargoProject::new(&cd.index_url(), &[("foo", "1")]);
    project.ok(&["generate-lockfile"]);
    let lock = project.lockfile();
    assert!(
        lock.contains("name = \"foo\"\nversion = \"1.1.0\""),
        "{lock}"
    );
    project.ok(&["fetch"]);
    project.ok(&["build", "--offline"]);

    let pinned = CargoProject::new(&cd.index_url(), &[("foo", "=1.2.0")]);
    refused_as_not_found(&pinned.cargo(&["generate-lockfile"]), "1.2.0");

    let (status, _, _) = served_index(&cd, "bar").await;
    assert_eq!(status, 404, "no cached version of bar");
    let other = CargoProject::new(&cd.index_url(), &[("bar", "1")]);
    let out = other.cargo(&["generate-lockfile"]);
    refused_as_not_found(&out, "bar");
    assert!(
        text(&out.stderr).contains("no matching package named `bar`"),
        "{}",
        text(&out.stderr)
    );

    let r = cd.get(&download_path(&published[2])).await;
    assert_eq!(r.status(), 404);
    let why = detail(r).await;
    assert!(why.contains("offline"), "{why}");
    assert_eq!(
        up.hits("/"),
        hits,
        "nothing reached the upstream while offline"
    );
    assert_eq!(offline_gauge(&cd).await, 1.0);

    // Online again, through the HTTP API.
    let r = cd
        .admin_api(
            Method::PUT,
            "/-/admin/registries/crates-io/offline",
            Some(r#"{"offline": false}"#),
        )
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(answer, json!({"registry": "crates-io", "offline": false}));
    let state = admin_json(&cd, "/-/admin/registries/crates-io/offline").await;
    assert_eq!(state["offline"], false, "{state:#}");
    assert_eq!(offline_gauge(&cd).await, 0.0);
    let (status, _, lines) = served_index(&cd, "foo").await;
    assert_eq!(status, 200);
    assert_eq!(lines, lines_of(&published), "online: every version again");

    let audit = text(&cd.admin(&["--json", "audit"]).stdout);
    assert!(
        audit.contains("mirror.offline") && audit.contains("mirror.online"),
        "{audit}"
    );
}

/// `offline = true` in the configuration holds from the start: after a restart with it the
/// gauge is 1, cargo resolves from the cached versions only, fetches and builds, and the
/// running upstream gets no request at all; switched online with the CLI, the uncached version
/// is resolved and downloaded from the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_in_the_configuration_holds_from_the_start() {
    let up = FakeUpstream::start().await;
    let published = foo_versions(&up);
    let mut cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    cache_versions(&cd, &published[..2]).await;
    cd.stop().await;
    std::fs::write(
        cd.config_path(),
        mirror_config(&up.index_url(), "offline = true"),
    )
    .unwrap();
    let hits = up.hits("/");
    let cd = cd.start_again().await;

    assert_eq!(offline_gauge(&cd).await, 1.0, "{}", cd.metrics_text().await);
    let state = admin_json(&cd, "/-/admin/registries/crates-io/offline").await;
    assert_eq!(state["offline"], true, "{state:#}");
    let (status, _, lines) = served_index(&cd, "foo").await;
    assert_eq!(status, 200);
    assert_eq!(lines, lines_of(&published[..2]));

    let project = CargoProject::new(&cd.index_url(), &[("foo", "1")]);
    project.ok(&["generate-lockfile"]);
    let lock = project.lockfile();
    assert!(
        lock.contains("name = \"foo\"\nversion = \"1.1.0\""),
        "{lock}"
    );
    project.ok(&["fetch"]);
    project.ok(&["build", "--offline"]);
    let pinned = CargoProject::new(&cd.index_url(), &[("foo", "=1.2.0")]);
    refused_as_not_found(&pinned.cargo(&["generate-lockfile"]), "1.2.0");
    assert_eq!(up.hits("/"), hits, "nothing reached the upstream");

    cd.admin(&["offline", "off", "--registry", "crates-io"]);
    pinned.ok(&["generate-lockfile"]);
    assert!(pinned.lockfile().contains("version = \"1.2.0\""));
    pinned.ok(&["fetch"]);
    assert_eq!(up.hits("/dl/foo/foo-1.2.0.crate"), 1);
}

/// `serve_only_cached = true`: index files list only the versions whose crate file is cached
/// (404 while none is), their ETag changing as more get cached, and cargo resolves from those;
/// the upstream is still used: a download of an uncached version fetches it, after which it is
/// listed and cargo can lock it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_only_cached_prunes_index_files_while_the_upstream_is_still_used() {
    let up = FakeUpstream::start().await;
    let published = foo_versions(&up);
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "serve_only_cached = true")).await;
    let (status, _, _) = served_index(&cd, "foo").await;
    assert_eq!(status, 404, "no version of foo is cached yet");

    cache_versions(&cd, &published[..1]).await;
    let (status, first_etag, lines) = served_index(&cd, "foo").await;
    assert_eq!(status, 200);
    assert_eq!(lines, lines_of(&published[..1]));
    cache_versions(&cd, &published[1..2]).await;
    let (status, second_etag, lines) = served_index(&cd, "foo").await;
    assert_eq!(status, 200);
    assert_eq!(lines, lines_of(&published[..2]));
    assert_ne!(first_etag, second_etag, "the ETag follows the pruned body");
    let foo_index = format!("/crates-io/index/{}", index_path("foo"));
    assert_eq!(conditional_status(&cd, &foo_index, &first_etag).await, 200);
    assert_eq!(conditional_status(&cd, &foo_index, &second_etag).await, 304);
    assert_eq!(offline_gauge(&cd).await, 0.0, "not offline");

    let project = CargoProject::new(&cd.index_url(), &[("foo", "1")]);
    project.ok(&["generate-lockfile"]);
    let lock = project.lockfile();
    assert!(
        lock.contains("name = \"foo\"\nversion = \"1.1.0\""),
        "{lock}"
    );
    let pinned = CargoProject::new(&cd.index_url(), &[("foo", "=1.2.0")]);
    refused_as_not_found(&pinned.cargo(&["generate-lockfile"]), "1.2.0");

    // The upstream is still there for what is asked for directly.
    cache_versions(&cd, &published[2..]).await;
    assert_eq!(up.hits("/dl/foo/foo-1.2.0.crate"), 1);
    let (_, _, lines) = served_index(&cd, "foo").await;
    assert_eq!(lines, lines_of(&published));
    pinned.ok(&["generate-lockfile"]);
    assert!(pinned.lockfile().contains("version = \"1.2.0\""));
}

// ---------------------------------------------------------------------------------------------
// Air-gap bundles.

/// The regular files of a tar archive, in archive order: (path as written, bytes).
fn read_bundle(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut out = Vec::new();
    for entry in archive.entries().expect("a tar archive") {
        let mut entry = entry.expect("a tar entry");
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        out.push((name, bytes));
    }
    out
}

/// Writes `files` as a plain tar archive at `path`.
fn write_bundle(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap();
}

/// A path in a bundle without a leading `./`.
fn rel(name: &str) -> &str {
    name.trim_start_matches("./")
}

/// The bytes of the file at `path` in a bundle's `files`.
#[track_caller]
fn file_in<'a>(files: &'a [(String, Vec<u8>)], path: &str) -> &'a [u8] {
    files
        .iter()
        .find(|(n, _)| rel(n) == path)
        .map(|(_, b)| b.as_slice())
        .unwrap_or_else(|| {
            let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
            panic!("no {path} in the bundle: {names:?}")
        })
}

/// The manifest's files: path → (sha256, size).
fn manifest_files(manifest: &Value) -> BTreeMap<String, (String, u64)> {
    manifest["files"]
        .as_array()
        .expect("manifest.json lists files")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().expect("a path").to_owned(),
                (
                    f["sha256"].as_str().expect("a sha256").to_owned(),
                    f["size"].as_u64().expect("a size"),
                ),
            )
        })
        .collect()
}

/// A bundle exported from a cratedock that prefetched a project's lockfile.
struct Exported {
    _up: FakeUpstream,
    cd: Cratedock,
    /// The project: `a = "1"`, locked to `a 1.0.0` and `b 1.1.0`.
    project: CargoProject,
    /// `a 1.0.0`, `b 1.0.0`, `b 1.1.0`.
    crates: Vec<Published>,
    bundle: PathBuf,
    dir: tempfile::TempDir,
}

/// [`two_levels`] upstream, a project locked through cratedock, prefetched, and exported with
/// `cratedock export --registry crates-io PROJECT --output DIR/bundle.tar`.
async fn exported() -> Exported {
    let up = FakeUpstream::start().await;
    let crates = two_levels(&up);
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "")).await;
    let project = CargoProject::new(&cd.index_url(), &[("a", "1")]);
    project.ok(&["generate-lockfile"]);
    let root = project.root();
    succeeded(&cd.cli(&["prefetch", path_str(&root)]), "prefetch");
    cd.wait_idle().await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.tar");
    let out = cd.cli(&[
        "export",
        "--registry",
        "crates-io",
        path_str(&root),
        "--output",
        path_str(&bundle),
    ]);
    succeeded(&out, "export");
    assert!(bundle.exists(), "no bundle written: {}", shown(&out));
    Exported {
        _up: up,
        cd,
        project,
        crates,
        bundle,
        dir,
    }
}

/// A cratedock whose `crates-io` mirror is offline (`offline = true`) and whose upstream
/// refuses connections (a fake upstream that was stopped).
async fn air_gapped() -> Cratedock {
    let mut gone = FakeUpstream::start().await;
    let url = gone.index_url();
    gone.stop().await;
    Cratedock::start(&mirror_config(&url, "offline = true")).await
}

/// An air-gap bundle: `cratedock export` of a project's lockfile writes a tar whose
/// manifest.json (format 1, RFC 3339 time, source) lists each file with its SHA-256 and size,
/// with the index files and exactly the locked crate files (`--all` exports the same here);
/// `cratedock import` on an instance whose upstream is unreachable (and offline) adds them,
/// and cargo with a fresh `CARGO_HOME` fetches and builds the project from it, and resolves it
/// anew. Importing the same bundle again adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_exported_on_one_instance_builds_on_another_without_an_upstream() {
    let ex = exported().await;
    let files = read_bundle(&ex.bundle);
    let manifest: Value =
        serde_json::from_slice(file_in(&files, "manifest.json")).expect("manifest.json is JSON");
    assert_eq!(manifest["format"], 1, "{manifest:#}");
    assert_eq!(manifest["source"]["registry"], "crates-io", "{manifest:#}");
    let created = manifest["created"].as_str().expect("created");
    assert!(
        time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
            .is_ok(),
        "created is RFC 3339: {created}"
    );
    let listed = manifest_files(&manifest);
    for (path, (sha256, size)) in &listed {
        let bytes = file_in(&files, path);
        assert_eq!(sha256_hex(bytes), *sha256, "{path}");
        assert_eq!(bytes.len() as u64, *size, "{path}");
    }
    for (name, _) in &files {
        let name = rel(name);
        assert!(
            name == "manifest.json" || listed.contains_key(name),
            "{name} is in the manifest"
        );
    }
    let crate_files: BTreeSet<&str> = listed
        .keys()
        .map(String::as_str)
        .filter(|p| p.starts_with("crates/"))
        .collect();
    assert_eq!(
        crate_files,
        BTreeSet::from(["crates/a/a-1.0.0.crate", "crates/b/b-1.1.0.crate"])
    );
    assert_eq!(
        file_in(&files, "crates/a/a-1.0.0.crate"),
        ex.crates[0].tarball.as_slice()
    );
    assert_eq!(
        file_in(&files, "crates/b/b-1.1.0.crate"),
        ex.crates[2].tarball.as_slice()
    );
    for index in ["index/1/a", "index/1/b"] {
        assert!(listed.contains_key(index), "{index} in {listed:?}");
    }

    let everything = ex.dir.path().join("all.tar");
    let out = ex.cd.cli(&[
        "export",
        "--registry",
        "crates-io",
        "--all",
        "--output",
        path_str(&everything),
    ]);
    succeeded(&out, "export --all");
    let all = read_bundle(&everything);
    let all_manifest: Value = serde_json::from_slice(file_in(&all, "manifest.json")).unwrap();
    let all_crates: BTreeSet<String> = manifest_files(&all_manifest)
        .into_keys()
        .filter(|p| p.starts_with("crates/"))
        .collect();
    let expected: BTreeSet<String> = crate_files.iter().map(|p| (*p).to_owned()).collect();
    assert_eq!(all_crates, expected, "everything cached");

    // The air-gapped side.
    let cd = air_gapped().await;
    let out = cd.cli(&["import", path_str(&ex.bundle), "--registry", "crates-io"]);
    succeeded(&out, "import");
    let report = said(&out);
    assert!(report.contains("added 2 crate files"), "{}", shown(&out));
    assert!(report.contains("2 index files changed"), "{}", shown(&out));
    assert_eq!(
        imported(&cd, "crate", "added").await,
        2.0,
        "{}",
        cd.metrics_text().await
    );
    assert_eq!(
        imported(&cd, "index", "added").await,
        2.0,
        "{}",
        cd.metrics_text().await
    );
    // The bundle's index file of b names 1.0.0 too; offline, only the cached version is listed.
    let (status, _, lines) = served_index(&cd, "b").await;
    assert_eq!(status, 200);
    assert_eq!(lines, lines_of(&ex.crates[2..]));

    let fresh = ex.project.fresh_home(&cd.index_url());
    fresh.ok(&["fetch"]);
    fresh.ok(&["build", "--offline"]);
    let anew = CargoProject::new(&cd.index_url(), &[("a", "1")]);
    anew.ok(&["generate-lockfile"]);
    let lock = anew.lockfile();
    assert!(lock.contains("name = \"b\"\nversion = \"1.1.0\""), "{lock}");

    let again = cd.cli(&["import", path_str(&ex.bundle)]);
    succeeded(&again, "the second import");
    assert!(
        said(&again).contains("added 0 crate files"),
        "{}",
        shown(&again)
    );
    assert_eq!(
        imported(&cd, "crate", "added").await,
        2.0,
        "nothing added the second time"
    );
    assert_eq!(
        stored_names(&cd),
        BTreeSet::from(["a-1.0.0.crate".to_owned(), "b-1.1.0.crate".to_owned()])
    );

    // The same selection as a zstd-compressed bundle imports the same crate files.
    let zst = ex.dir.path().join("all.tar.zst");
    let out = ex.cd.cli(&[
        "export",
        "--registry",
        "crates-io",
        "--all",
        "--output",
        path_str(&zst),
    ]);
    succeeded(&out, "export --all to .tar.zst");
    let head = std::fs::read(&zst).unwrap();
    assert_eq!(&head[..4], [0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    let other = air_gapped().await;
    let out = other.cli(&["import", path_str(&zst)]);
    succeeded(&out, "import of the .tar.zst bundle");
    assert!(
        said(&out).contains(&format!("added {} crate files", expected.len())),
        "{}",
        shown(&out)
    );
}

/// A bundle with one byte flipped inside one crate file is refused whole, with a message naming
/// that file: on a fresh air-gapped instance nothing of it is served, stored or counted. The
/// same holds when manifest.json is rewritten to match the flipped file (the crate file then
/// fails the `cksum` of its index line in the bundle). The archive rewritten the same way
/// without a change imports, so the refusals are the flipped byte's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_with_one_flipped_byte_is_refused_whole() {
    let ex = exported().await;
    let files = read_bundle(&ex.bundle);
    // The last crate file in the archive: the others come before it.
    let victim = files
        .iter()
        .rposition(|(n, _)| rel(n).starts_with("crates/"))
        .expect("crate files in the bundle");
    let victim_path = rel(&files[victim].0).to_owned();
    let victim_file = victim_path.rsplit('/').next().unwrap().to_owned();

    let mut flipped = files.clone();
    let middle = flipped[victim].1.len() / 2;
    flipped[victim].1[middle] ^= 0x01;
    let flipped_tar = ex.dir.path().join("flipped.tar");
    write_bundle(&flipped_tar, &flipped);

    let mut disguised = flipped.clone();
    let m = disguised
        .iter()
        .position(|(n, _)| rel(n) == "manifest.json")
        .expect("manifest.json");
    let mut manifest: Value = serde_json::from_slice(&disguised[m].1).unwrap();
    let new_sha = sha256_hex(&disguised[victim].1);
    let mut rewritten = false;
    for f in manifest["files"].as_array_mut().expect("files") {
        if f["path"] == victim_path.as_str() {
            f["sha256"] = json!(new_sha);
            rewritten = true;
        }
    }
    assert!(rewritten, "{victim_path} in the manifest");
    disguised[m].1 = serde_json::to_vec_pretty(&manifest).unwrap();
    let disguised_tar = ex.dir.path().join("disguised.tar");
    write_bundle(&disguised_tar, &disguised);

    let cd = air_gapped().await;
    for (bundle, what) in [
        (&flipped_tar, "a flipped byte"),
        (&disguised_tar, "a flipped byte with a matching manifest"),
    ] {
        let out = cd.cli(&["import", path_str(bundle)]);
        assert!(
            !out.status.success(),
            "a bundle with {what} was accepted: {}",
            shown(&out)
        );
        assert!(
            said(&out).contains(&victim_file),
            "the refusal ({what}) names {victim_file}: {}",
            shown(&out)
        );
    }

    for name in ["a", "b"] {
        let (status, _, lines) = served_index(&cd, name).await;
        assert_eq!(status, 404, "{name}: {lines:?}");
    }
    for p in [&ex.crates[0], &ex.crates[2]] {
        assert_eq!(cd.get(&download_path(p)).await.status(), 404);
    }
    assert_eq!(
        series(&cd, "imported_files_total", &[REG]).await,
        0.0,
        "{}",
        cd.metrics_text().await
    );
    assert!(cd.stored_crates().is_empty(), "{:?}", cd.stored_crates());

    // The same rewrite without the flip is a good bundle.
    let copy = ex.dir.path().join("copy.tar");
    write_bundle(&copy, &files);
    let out = cd.cli(&["import", path_str(&copy)]);
    succeeded(&out, "import of the rewritten good bundle");
    assert!(
        said(&out).contains("added 2 crate files"),
        "{}",
        shown(&out)
    );
}

/// A pattern pin (`t*`) keeps every crate it matches, whatever its version, through a
/// `cache gc --to 0` that evicts everything else; unpinning it lets them go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_pin_keeps_every_crate_it_matches() {
    let up = FakeUpstream::start().await;
    let crates: Vec<Published> = [("t0", "1.0.0"), ("T_1", "2.0.0"), ("other", "1.0.0")]
        .iter()
        .map(|(n, v)| build(CrateSpec::new(n, v)))
        .collect();
    for p in &crates {
        up.publish(p.clone());
    }
    let cd = Cratedock::start(&config_with(&up.index_url(), "", "")).await;
    for p in &crates {
        let path = format!(
            "/crates-io/api/v1/crates/{}/{}/download",
            p.spec.name, p.spec.version
        );
        let r = cd.get(&path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.bytes().await.unwrap(), p.tarball);
    }
    cd.wait_idle().await;
    cd.admin(&["cache", "pin", "t*"]);
    let pins = text(&cd.admin(&["cache", "pins"]).stdout);
    assert!(pins.contains("t*"), "{pins}");
    cd.admin(&["cache", "gc", "--to", "0"]);
    assert_eq!(
        stored_names(&cd),
        BTreeSet::from(["t0-1.0.0.crate".to_owned(), "t_1-2.0.0.crate".to_owned()]),
        "the pattern keeps t0 and T_1, not other"
    );
    cd.admin(&["cache", "unpin", "t*"]);
    cd.admin(&["cache", "gc", "--to", "0"]);
    assert!(stored_names(&cd).is_empty(), "{:?}", stored_names(&cd));
}

/// `cratedock import --into internal` publishes each crate of a bundle through the private
/// registry's publish checks (the mirror's upstream here has none of the names, so the
/// dependency-confusion guard lets them in); the private registry then serves them, and a
/// second import finds them present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_imported_into_a_private_registry_goes_through_publish() {
    let ex = exported().await;
    let empty = FakeUpstream::start().await;
    let cd = Cratedock::start(&private_config(&empty.index_url(), "")).await;
    let out = cd.cli(&["import", path_str(&ex.bundle), "--into", "internal"]);
    succeeded(&out, "import --into internal");
    assert!(said(&out).contains("2 imported"), "{}", shown(&out));
    for (path, vers) in [
        ("/internal/index/1/a", "1.0.0"),
        ("/internal/index/1/b", "1.1.0"),
    ] {
        let r = cd.admin_api(Method::GET, path, None).await;
        assert_eq!(r.status(), 200, "{path}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains(&format!("\"vers\":\"{vers}\"")),
            "{path}: {body}"
        );
    }
    let again = cd.cli(&["import", path_str(&ex.bundle), "--into", "internal"]);
    succeeded(&again, "the second import --into internal");
    assert!(
        said(&again).contains("0 imported, 2 already present"),
        "{}",
        shown(&again)
    );
}
