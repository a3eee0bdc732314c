//! The private registry with real cargo: publish (one crate, a workspace), what consumers
//! resolve and what their lockfiles record, yank and unyank, search and info. Who may change a
//! crate (owners, grants, kinds of token) is in `private_owners`.

use std::process::Output;

use serde_json::Value;

use crate::support::*;

pub(super) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(super) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails the test with cargo's output unless `out` is a success.
#[track_caller]
pub(super) fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        stdout(out),
        stderr(out)
    );
}

/// Fails the test unless `out` is a failure whose stderr contains `reason`.
#[track_caller]
pub(super) fn assert_refused(out: &Output, reason: &str) {
    assert!(
        !out.status.success(),
        "succeeded although refused with `{reason}` was expected:\n{}",
        stderr(out)
    );
    assert!(
        stderr(out).contains(reason),
        "`{reason}` missing from cargo's output:\n{}",
        stderr(out)
    );
}

/// A fake upstream holding `serde 1.0.0` (crates.io, through the mirror) and cratedock with the
/// private registry [`PRIVATE`] (auth required).
pub(super) async fn private_registry() -> (FakeUpstream, Cratedock) {
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("serde", "1.0.0")));
    let cd = Cratedock::start(&private_config(&up.index_url(), "auth_required = true")).await;
    (up, cd)
}

/// Adds user `login` with `(permission, crates glob)` grants on [`PRIVATE`].
pub(super) fn add_user(cd: &Cratedock, login: &str, grants: &[(&str, &str)]) {
    cd.admin(&["user", "add", login]);
    for (permission, crates) in grants {
        cd.admin(&[
            "grant",
            "--user",
            login,
            "--permission",
            permission,
            "--registry",
            PRIVATE,
            "--crates",
            crates,
        ]);
    }
}

/// A new token of `login`, with the extra `token create` arguments `extra`.
pub(super) fn token(cd: &Cratedock, login: &str, extra: &[&str]) -> String {
    let mut args = vec!["token", "create", "--user", login];
    args.extend_from_slice(extra);
    stdout(&cd.admin(&args)).trim().to_owned()
}

/// The `Cargo.toml` of a publishable library: a licence, a description, only [`PRIVATE`].
fn manifest(name: &str, version: &str, deps: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"{version}\"\nedition = \"2021\"\nlicense = \"MIT OR Apache-2.0\"\ndescription = \"{name}, a test crate\"\npublish = [\"{PRIVATE}\"]\n\n[dependencies]\n{deps}"
    )
}

/// The `src/lib.rs` of a generated library: `id()` names the crate and version.
fn library(name: &str, version: &str) -> String {
    format!("pub fn id() -> String {{ \"{name} {version}\".to_owned() }}\n")
}

/// Writes library `name` at `version` (depending on nothing) as the project's package.
pub(super) fn write_library(p: &CargoProject, name: &str, version: &str) {
    p.write("Cargo.toml", &manifest(name, version, ""));
    p.write("src/lib.rs", &library(name, version));
}

/// Publishes the project's package to [`PRIVATE`] with `token` (without the verify build).
pub(super) fn publish(p: &CargoProject, token: &str) -> Output {
    p.cargo_as(
        Some(token),
        &["publish", "--registry", PRIVATE, "--no-verify"],
    )
}

/// A binary project depending on the private crates `deps` (TOML dependency lines).
pub(super) fn consumer(cd: &Cratedock, deps: &str, main: &str) -> CargoProject {
    let p = CargoProject::with_private(cd);
    p.write(
        "Cargo.toml",
        &format!(
            "[package]\nname = \"consumer\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\n{deps}"
        ),
    );
    p.write("src/main.rs", main);
    p
}

/// The index lines of `name` in [`PRIVATE`], read with `token`.
pub(super) async fn index_lines(cd: &Cratedock, token: &str, name: &str) -> Vec<Value> {
    let n = name.to_ascii_lowercase();
    let path = match n.len() {
        1 => format!("1/{n}"),
        2 => format!("2/{n}"),
        3 => format!("3/{}/{n}", &n[..1]),
        _ => format!("{}/{}/{n}", &n[..2], &n[2..4]),
    };
    let r = http_client()
        .get(cd.url(&format!("/{PRIVATE}/index/{path}")))
        .header("authorization", token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "index file of {name}");
    r.text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an index line is JSON"))
        .collect()
}

/// `(name, version, source, checksum)` of each package in a `Cargo.lock`.
fn locked(lockfile: &str) -> Vec<(String, String, String, String)> {
    let lock: toml::Value = toml::from_str(lockfile).expect("Cargo.lock is TOML");
    lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let field = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
            (
                field("name"),
                field("version"),
                field("source"),
                field("checksum"),
            )
        })
        .collect()
}

/// The locked package `name`: `(version, source, checksum)`.
#[track_caller]
fn locked_package(lockfile: &str, name: &str) -> (String, String, String) {
    let found: Vec<_> = locked(lockfile)
        .into_iter()
        .filter(|p| p.0 == name)
        .collect();
    assert_eq!(found.len(), 1, "{name} once in the lockfile:\n{lockfile}");
    let (_, v, s, c) = found.into_iter().next().unwrap();
    (v, s, c)
}

/// An audit record of a change to one of [`PRIVATE`]'s crates.
#[derive(Debug)]
pub(super) struct Audited {
    pub(super) action: String,
    pub(super) user: String,
    pub(super) krate: String,
    pub(super) target: String,
}

/// The audit records of changes to crates (`crate.*`, `owner.*`), newest first.
pub(super) fn crate_audit(cd: &Cratedock) -> Vec<Audited> {
    let audit: Value =
        serde_json::from_str(&stdout(&cd.admin(&["audit", "--json", "--limit", "200"]))).unwrap();
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            let a = r["action"].as_str().unwrap_or("");
            a.starts_with("crate.") || a.starts_with("owner.")
        })
        .map(|r| Audited {
            action: text(&r["action"]),
            user: text(&r["actor"]["user"]),
            krate: text(&r["crate"]),
            target: text(&r["target"]),
        })
        .collect()
}

/// A dependency's `req` as cargo reads it (`1` and `^1` are one requirement).
#[track_caller]
fn req(v: &Value) -> semver::VersionReq {
    semver::VersionReq::parse(v.as_str().expect("req is a string")).expect("req parses")
}

const CRATES_IO: &str = "https://github.com/rust-lang/crates.io-index";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crate_with_private_renamed_and_crates_io_dependencies_publishes_and_builds_elsewhere() {
    let (up, cd) = private_registry().await;
    add_user(&cd, "alice", &[("publish", "*")]);
    let alice = token(&cd, "alice", &[]);
    let private_source = format!("sparse+{}", cd.registry_index_url(PRIVATE));

    // The private dependencies, published from a project that logged in with `cargo login`.
    let deps = CargoProject::with_private(&cd);
    for name in ["acme-log", "acme-util"] {
        deps.write(&format!("{name}/Cargo.toml"), &manifest(name, "0.1.0", ""));
        deps.write(&format!("{name}/src/lib.rs"), &library(name, "0.1.0"));
    }
    let login = deps.cargo_with(
        &["login", "--registry", PRIVATE],
        &[],
        &format!("{alice}\n"),
    );
    assert_ok(&login, "cargo login");
    for name in ["acme-log", "acme-util"] {
        let manifest_path = format!("{name}/Cargo.toml");
        let out = deps.cargo_with(
            &[
                "publish",
                "--registry",
                PRIVATE,
                "--manifest-path",
                &manifest_path,
            ],
            &[],
            "",
        );
        assert_ok(&out, &format!("cargo publish of {name}"));
        assert!(
            stderr(&out).contains(&format!("Published {name} v0.1.0")),
            "{}",
            stderr(&out)
        );
    }

    // The crate that uses all three kinds, published with a token from the environment (and
    // built by cargo's verify step against the registries).
    let app = CargoProject::with_private(&cd);
    app.write(
        "Cargo.toml",
        &manifest(
            "acme-app",
            "0.1.0",
            &format!(
                "acme-log = {{ version = \"0.1\", registry = \"{PRIVATE}\" }}\nacme-text = {{ package = \"acme-util\", version = \"0.1\", registry = \"{PRIVATE}\" }}\nserde = \"1\"\n"
            ),
        ),
    );
    app.write(
        "src/lib.rs",
        "pub fn id() -> String {\n    format!(\"acme-app 0.1.0 [{}, {}, {}]\", acme_log::id(), acme_text::id(), serde::id())\n}\n",
    );
    let out = app.cargo_as(Some(&alice), &["publish", "--registry", PRIVATE]);
    assert_ok(&out, "cargo publish of acme-app");
    assert!(
        stderr(&out).contains("Published acme-app v0.1.0"),
        "{}",
        stderr(&out)
    );

    // The served index line records where each dependency comes from.
    let lines = index_lines(&cd, &alice, "acme-app").await;
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["vers"], "0.1.0");
    let deps_of: Vec<&Value> = line["deps"].as_array().unwrap().iter().collect();
    let dep = |name: &str| -> &Value {
        deps_of
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no dependency {name} in {line}"))
    };
    assert_eq!(deps_of.len(), 3, "{line}");
    assert_eq!(dep("serde")["registry"], CRATES_IO, "{line}");
    assert_eq!(req(&dep("serde")["req"]), req(&"^1".into()), "{line}");
    assert!(
        dep("acme-log").get("registry").is_none_or(Value::is_null),
        "{line}"
    );
    assert!(
        dep("acme-log").get("package").is_none_or(Value::is_null),
        "{line}"
    );
    let renamed = dep("acme-text");
    assert_eq!(renamed["package"], "acme-util", "{line}");
    assert!(renamed.get("registry").is_none_or(Value::is_null), "{line}");
    assert!(deps_of.iter().all(|d| d["kind"] == "normal"), "{line}");

    // A consumer with a fresh CARGO_HOME builds and runs it.
    let user = consumer(
        &cd,
        &format!("acme-app = {{ version = \"0.1\", registry = \"{PRIVATE}\" }}\n"),
        "fn main() {\n    println!(\"{}\", acme_app::id());\n}\n",
    );
    let out = user.cargo_as(Some(&alice), &["run", "--quiet"]);
    assert_ok(&out, "cargo run of the consumer");
    assert_eq!(
        stdout(&out).trim(),
        "acme-app 0.1.0 [acme-log 0.1.0, acme-util 0.1.0, serde 1.0.0]"
    );
    let lock = user.lockfile();
    let (v, source, _) = locked_package(&lock, "serde");
    assert_eq!(v, "1.0.0");
    assert_eq!(source, format!("registry+{CRATES_IO}"), "{lock}");
    for name in ["acme-app", "acme-log", "acme-util"] {
        let (v, source, checksum) = locked_package(&lock, name);
        assert_eq!(v, "0.1.0");
        assert_eq!(source, private_source, "{lock}");
        let served = index_lines(&cd, &alice, name).await;
        assert_eq!(checksum, served[0]["cksum"].as_str().unwrap(), "{name}");
    }
    assert!(
        !locked(&lock).iter().any(|p| p.0 == "acme-text"),
        "the lockfile names the package, not the alias:\n{lock}"
    );
    // serde came from the fake upstream through the mirror, never from the private registry.
    assert!(up.hits("/dl/serde/") >= 1);
    let audit = crate_audit(&cd);
    for name in ["acme-log", "acme-util", "acme-app"] {
        assert!(
            audit
                .iter()
                .any(|r| r.action == "crate.create" && r.user == "alice" && r.krate == name),
            "{name}: {audit:?}"
        );
        assert!(
            audit.iter().any(|r| r.action == "crate.publish"
                && r.user == "alice"
                && r.krate == name
                && r.target == format!("{name}@0.1.0")),
            "{name}: {audit:?}"
        );
    }
    assert!(!cd.log().contains(&alice), "a token was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_of_dependent_crates_publishes_in_one_command_without_a_timeout() {
    let (_up, cd) = private_registry().await;
    add_user(&cd, "alice", &[("publish", "acme-*")]);
    let alice = token(&cd, "alice", &[]);

    let ws = CargoProject::with_private(&cd);
    ws.write(
        "Cargo.toml",
        "[workspace]\nmembers = [\"a\", \"b\", \"c\"]\nresolver = \"2\"\n",
    );
    let path_dep = |name: &str, dir: &str| {
        format!(
            "{name} = {{ path = \"../{dir}\", version = \"0.1.0\", registry = \"{PRIVATE}\" }}\n"
        )
    };
    ws.write("a/Cargo.toml", &manifest("acme-ws-a", "0.1.0", ""));
    ws.write("a/src/lib.rs", &library("acme-ws-a", "0.1.0"));
    ws.write(
        "b/Cargo.toml",
        &manifest("acme-ws-b", "0.1.0", &path_dep("acme-ws-a", "a")),
    );
    ws.write(
        "b/src/lib.rs",
        "pub fn id() -> String { format!(\"acme-ws-b on {}\", acme_ws_a::id()) }\n",
    );
    ws.write(
        "c/Cargo.toml",
        &manifest("acme-ws-c", "0.1.0", &path_dep("acme-ws-b", "b")),
    );
    ws.write(
        "c/src/lib.rs",
        "pub fn id() -> String { format!(\"acme-ws-c on {}\", acme_ws_b::id()) }\n",
    );

    let out = ws.cargo_as(
        Some(&alice),
        &["publish", "--workspace", "--registry", PRIVATE],
    );
    assert_ok(&out, "cargo publish --workspace");
    let err = stderr(&out);
    assert!(
        !err.to_ascii_lowercase().contains("timed out")
            && !err.to_ascii_lowercase().contains("timeout"),
        "cargo waited for the index until a timeout:\n{err}"
    );
    for name in ["acme-ws-a", "acme-ws-b", "acme-ws-c"] {
        assert!(err.contains(&format!("Published {name} v0.1.0")), "{err}");
        let lines = index_lines(&cd, &alice, name).await;
        assert_eq!(lines.len(), 1, "{name}");
        assert_eq!(lines[0]["vers"], "0.1.0");
    }
    // Published in dependency order, and the path dependencies became registry ones.
    let order: Vec<usize> = ["acme-ws-a", "acme-ws-b", "acme-ws-c"]
        .iter()
        .map(|n| err.find(&format!("Published {n} ")).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{err}");
    let b = &index_lines(&cd, &alice, "acme-ws-b").await[0];
    assert_eq!(b["deps"][0]["name"], "acme-ws-a", "{b}");
    assert_eq!(req(&b["deps"][0]["req"]), req(&"^0.1.0".into()), "{b}");
    assert!(
        b["deps"][0].get("registry").is_none_or(Value::is_null),
        "{b}"
    );

    // A consumer of the top crate gets the whole chain from the registry.
    let user = consumer(
        &cd,
        &format!("acme-ws-c = {{ version = \"0.1\", registry = \"{PRIVATE}\" }}\n"),
        "fn main() { println!(\"{}\", acme_ws_c::id()); }\n",
    );
    let out = user.cargo_as(Some(&alice), &["run", "--quiet"]);
    assert_ok(&out, "cargo run of the consumer");
    assert_eq!(
        stdout(&out).trim(),
        "acme-ws-c on acme-ws-b on acme-ws-a 0.1.0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yanked_version_is_left_out_of_new_resolution_but_builds_from_a_lockfile_until_unyanked()
{
    let (_up, cd) = private_registry().await;
    add_user(&cd, "alice", &[("publish", "*"), ("yank", "*")]);
    let alice = token(&cd, "alice", &[]);
    let source = CargoProject::with_private(&cd);
    for version in ["0.1.0", "0.1.1"] {
        write_library(&source, "acme-yanky", version);
        assert_ok(&publish(&source, &alice), "cargo publish");
    }
    let dep = format!("acme-yanky = {{ version = \"0.1\", registry = \"{PRIVATE}\" }}\n");
    let main = "fn main() { println!(\"{}\", acme_yanky::id()); }\n";

    // A project locked to 0.1.1 before the yank.
    let old = consumer(&cd, &dep, main);
    let out = old.cargo_as(Some(&alice), &["run", "--quiet"]);
    assert_ok(&out, "cargo run before the yank");
    assert_eq!(stdout(&out).trim(), "acme-yanky 0.1.1");
    let old_lock = old.lockfile();
    assert_eq!(locked_package(&old_lock, "acme-yanky").0, "0.1.1");

    let out = source.cargo_as(
        Some(&alice),
        &["yank", "acme-yanky@0.1.1", "--registry", PRIVATE],
    );
    assert_ok(&out, "cargo yank");
    assert!(
        stderr(&out).contains("Yank acme-yanky@0.1.1"),
        "{}",
        stderr(&out)
    );
    let lines = index_lines(&cd, &alice, "acme-yanky").await;
    let yanked: Vec<(&str, bool)> = lines
        .iter()
        .map(|l| (l["vers"].as_str().unwrap(), l["yanked"].as_bool().unwrap()))
        .collect();
    assert_eq!(yanked, [("0.1.0", false), ("0.1.1", true)]);

    // New resolution picks 0.1.0 ...
    let fresh = consumer(&cd, &dep, main);
    let out = fresh.cargo_as(Some(&alice), &["run", "--quiet"]);
    assert_ok(&out, "cargo run after the yank");
    assert_eq!(stdout(&out).trim(), "acme-yanky 0.1.0");
    assert_eq!(locked_package(&fresh.lockfile(), "acme-yanky").0, "0.1.0");
    // ... and `=0.1.1` is not found at all.
    let pinned = consumer(
        &cd,
        &format!("acme-yanky = {{ version = \"=0.1.1\", registry = \"{PRIVATE}\" }}\n"),
        main,
    );
    let out = pinned.cargo_as(Some(&alice), &["generate-lockfile"]);
    assert!(!out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("yanked"), "{}", stderr(&out));

    // The old lockfile still builds: in the old project without its build, and with a fresh
    // CARGO_HOME that must download the yanked file.
    old.remove_target();
    let out = old.cargo_as(Some(&alice), &["run", "--quiet", "--locked"]);
    assert_ok(&out, "cargo run --locked in the old project");
    assert_eq!(stdout(&out).trim(), "acme-yanky 0.1.1");
    let copy = consumer(&cd, &dep, main);
    copy.write("Cargo.lock", &old_lock);
    let out = copy.cargo_as(Some(&alice), &["run", "--quiet", "--locked"]);
    assert_ok(&out, "cargo run --locked with the old lockfile");
    assert_eq!(stdout(&out).trim(), "acme-yanky 0.1.1");
    assert_eq!(copy.lockfile(), old_lock);

    // Unyanked: new resolution picks 0.1.1 again.
    let out = source.cargo_as(
        Some(&alice),
        &["yank", "--undo", "acme-yanky@0.1.1", "--registry", PRIVATE],
    );
    assert_ok(&out, "cargo yank --undo");
    assert!(
        stderr(&out).contains("Unyank acme-yanky@0.1.1"),
        "{}",
        stderr(&out)
    );
    let again = consumer(&cd, &dep, main);
    let out = again.cargo_as(Some(&alice), &["run", "--quiet"]);
    assert_ok(&out, "cargo run after the unyank");
    assert_eq!(stdout(&out).trim(), "acme-yanky 0.1.1");

    let audit = crate_audit(&cd);
    for action in ["crate.yank", "crate.unyank"] {
        let found: Vec<_> = audit.iter().filter(|r| r.action == action).collect();
        assert_eq!(found.len(), 1, "{action}: {audit:?}");
        assert_eq!(found[0].user, "alice");
        assert_eq!(found[0].krate, "acme-yanky");
        assert_eq!(found[0].target, "acme-yanky@0.1.1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cargo_search_and_info_show_private_crates_with_their_highest_unyanked_version() {
    let (_up, cd) = private_registry().await;
    add_user(&cd, "alice", &[("publish", "*"), ("yank", "*")]);
    let alice = token(&cd, "alice", &[]);
    let p = CargoProject::with_private(&cd);
    for (name, version) in [
        ("acme-app", "0.3.0"),
        ("acme-log", "0.1.0"),
        ("acme-log", "0.2.0"),
        ("acme-util", "1.0.0"),
        ("other-thing", "0.1.0"),
    ] {
        write_library(&p, name, version);
        assert_ok(
            &publish(&p, &alice),
            &format!("publish of {name} {version}"),
        );
    }
    let out = p.cargo_as(
        Some(&alice),
        &["yank", "acme-log@0.2.0", "--registry", PRIVATE],
    );
    assert_ok(&out, "cargo yank");

    let out = p.cargo_as(Some(&alice), &["search", "acme", "--registry", PRIVATE]);
    assert_ok(&out, "cargo search");
    let found: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    let found: Vec<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(found.len(), 3, "{found:#?}");
    for (i, (name, version)) in [
        ("acme-app", "0.3.0"),
        ("acme-log", "0.1.0"),
        ("acme-util", "1.0.0"),
    ]
    .iter()
    .enumerate()
    {
        assert!(
            found[i].starts_with(&format!("{name} = \"{version}\"")),
            "{found:#?}"
        );
        assert!(
            found[i].ends_with(&format!("# {name}, a test crate")),
            "{found:#?}"
        );
    }
    assert!(!stdout(&out).contains("other-thing"));

    let out = p.cargo_as(
        Some(&alice),
        &["search", "acme", "--limit", "1", "--registry", PRIVATE],
    );
    assert_ok(&out, "cargo search --limit 1");
    let shown = stdout(&out);
    assert!(shown.starts_with("acme-app = \"0.3.0\""), "{shown}");
    assert!(shown.contains("... and 2 crates more"), "{shown}");

    let out = p.cargo_as(
        Some(&alice),
        &["search", "nothing-like-it", "--registry", PRIVATE],
    );
    assert_ok(&out, "cargo search without a match");
    assert_eq!(stdout(&out).trim(), "", "{}", stderr(&out));

    // `cargo info` reads the index (and prints the description from the published manifest).
    let out = p.cargo_as(Some(&alice), &["info", "acme-log", "--registry", PRIVATE]);
    assert_ok(&out, "cargo info");
    let info = stdout(&out);
    assert!(info.contains("acme-log"), "{info}");
    assert!(info.contains("acme-log, a test crate"), "{info}");
    assert!(info.contains("version: 0.1.0"), "{info}{}", stderr(&out));
    assert!(info.contains("license: MIT OR Apache-2.0"), "{info}");
    let out = p.cargo_as(Some(&alice), &["info", "acme-app", "--registry", PRIVATE]);
    assert_ok(&out, "cargo info");
    let info = stdout(&out);
    assert!(
        info.contains("acme-app, a test crate") && info.contains("version: 0.3.0"),
        "{info}"
    );
}
