//! Publishing to the private registry with raw bodies: every malformed or forbidden publish is
//! refused with a 4xx that names the problem and changes nothing; concurrent publishes of one
//! version let exactly one through; and the dependency-confusion guard works both ways.

use crate::support::publish::*;
use crate::support::{CrateSpec, Cratedock, FakeUpstream, build, http_client};

const MIB: u64 = 1024 * 1024;

/// What a case sends.
enum Send {
    Body(Vec<u8>),
    /// Only `prefix` of a body announced as `claimed` bytes long.
    PrefixOnly {
        claimed: u64,
        prefix: Vec<u8>,
    },
}

#[derive(Clone, Copy)]
enum Who {
    Alice,
    Bob,
    Nobody,
}

struct Case {
    what: &'static str,
    registry: &'static str,
    who: Who,
    send: Send,
    status: u16,
    says: String,
}

fn case(what: &'static str, send: Vec<u8>, status: u16, says: impl Into<String>) -> Case {
    Case {
        what,
        registry: "internal",
        who: Who::Alice,
        send: Send::Body(send),
        status,
        says: says.into(),
    }
}

/// The refused publishes of a crate named `fresh` (new) and of the existing `good-crate`.
fn cases() -> Vec<Case> {
    let (n, v) = ("fresh", "1.0.0");
    let top = "fresh-1.0.0";
    let json = metadata(n, v);
    let jl = json.len();
    let good = body(n, v);
    let tl = good.len() - 8 - jl;
    let with_tarball = |tarball: Vec<u8>| frame(&json, &tarball);
    let with_extra = |extra: Entry| with_tarball(crate_with(n, v, &manifest(n, v), &[extra]));
    let with_manifest = |m: String| with_tarball(crate_with(n, v, &m, &[]));
    let lib = Entry::file(format!("{top}/src/lib.rs"), "pub fn f() {}\n");

    let huge_file = bomb_with_a_huge_file(n, v, 64 * MIB);
    let zeros_after = bomb_after_the_archive(n, v, 64 * MIB);
    for bomb in [&huge_file, &zeros_after] {
        assert!(bomb.len() < 256 * 1024, "a bomb is small: {}", bomb.len());
    }

    let over_json = MIB as u32 + 1;
    let mut tarball_prefix = good[..4 + jl].to_vec();
    tarball_prefix.extend_from_slice(&(MIB as u32 + 1).to_le_bytes());

    let far = "sparse+http://127.0.0.1:9/far/index/";
    let far_dep = format!("[dependencies.far]\nversion = \"1\"\nregistry-index = \"{far}\"\n");
    let git_dep = "[dependencies.g]\ngit = \"http://127.0.0.1:9/g.git\"\n";
    let half_gzip = {
        let t = good_crate(n, v);
        t[..t.len() / 2].to_vec()
    };

    let cases = vec![
        // The frame.
        case("an empty body", vec![], 400, "the metadata length is 4 bytes but only 0 arrived"),
        case(
            "a body cut inside the JSON length",
            good[..2].to_vec(),
            400,
            "the metadata length is 4 bytes but only 2 arrived",
        ),
        case(
            "a body cut inside the JSON",
            good[..4 + 10].to_vec(),
            400,
            format!("the metadata is {jl} bytes but only 10 arrived"),
        ),
        case(
            "a body cut inside the tarball length",
            good[..4 + jl + 3].to_vec(),
            400,
            "the tarball length is 4 bytes but only 3 arrived",
        ),
        case(
            "a body cut inside the tarball",
            good[..good.len() - 10].to_vec(),
            400,
            format!("the tarball is {tl} bytes but only {} arrived", tl - 10),
        ),
        Case {
            what: "a JSON length over 1 MiB, from the prefix alone",
            registry: "internal",
            who: Who::Alice,
            send: Send::PrefixOnly {
                claimed: 4 + u64::from(over_json) + 4 + 100,
                prefix: over_json.to_le_bytes().to_vec(),
            },
            status: 413,
            says: "the metadata JSON is 1048577 bytes; at most 1048576".into(),
        },
        Case {
            what: "a tarball length over max_upload_bytes, from the prefix alone",
            registry: "internal",
            who: Who::Alice,
            send: Send::PrefixOnly {
                claimed: tarball_prefix.len() as u64 + MIB + 1,
                prefix: tarball_prefix,
            },
            status: 413,
            says: "the .crate file is 1048577 bytes; this registry accepts at most 1048576".into(),
        },
        case(
            "bytes after the tarball",
            [good.clone(), b"x".to_vec()].concat(),
            400,
            "bytes after the tarball",
        ),
        // The metadata.
        case(
            "metadata that is not JSON",
            frame(b"{\"name\": \"fresh\",", &good_crate(n, v)),
            400,
            "not the JSON cargo sends",
        ),
        case(
            "metadata without `vers`",
            frame(br#"{"name":"fresh"}"#, &good_crate(n, v)),
            400,
            "missing field `vers`",
        ),
        case(
            "a metadata version other than the manifest's",
            frame(
                &metadata(n, "1.0.1"),
                &crate_with(n, "1.0.1", &manifest(n, v), &[]),
            ),
            400,
            "the metadata names `fresh@1.0.1` but the Cargo.toml inside the .crate names `fresh@1.0.0`",
        ),
        case(
            "a metadata name other than the manifest's",
            with_manifest(manifest("other", v)),
            400,
            "Cargo.toml inside the .crate names `other@1.0.0`",
        ),
        // The tarball.
        case(
            "a top folder other than name-version",
            with_tarball(crate_with("other", v, &manifest(n, v), &[])),
            400,
            "lie under `other-1.0.0/`, not `fresh-1.0.0/`",
        ),
        case(
            "a path with `..`",
            with_extra(Entry::file(format!("{top}/../evil.rs"), "x")),
            400,
            "a path with `..` in it: `fresh-1.0.0/../evil.rs`",
        ),
        case(
            "an absolute path",
            with_extra(Entry::file("/etc/evil", "x")),
            400,
            "an absolute path `/etc/evil`",
        ),
        case(
            "a symlink",
            with_extra(Entry::special(format!("{top}/link"), SYMLINK)),
            400,
            "`fresh-1.0.0/link` is a symlink",
        ),
        case(
            "a hard link",
            with_extra(Entry::special(format!("{top}/link"), HARD_LINK)),
            400,
            "`fresh-1.0.0/link` is a hard link",
        ),
        case(
            "a character device",
            with_extra(Entry::special(format!("{top}/tty"), CHAR_DEVICE)),
            400,
            "`fresh-1.0.0/tty` is a character device",
        ),
        case(
            "a fifo",
            with_extra(Entry::special(format!("{top}/pipe"), FIFO)),
            400,
            "`fresh-1.0.0/pipe` is a fifo",
        ),
        case(
            "a path that is not UTF-8",
            with_extra(Entry::file(b"fresh-1.0.0/\xff\xfe.rs", "x")),
            400,
            "a path that is not UTF-8",
        ),
        case(
            "two Cargo.toml",
            with_extra(Entry::file(format!("{top}/Cargo.toml"), manifest(n, v))),
            400,
            "two Cargo.toml entries at `fresh-1.0.0/Cargo.toml`",
        ),
        case(
            "no Cargo.toml",
            with_tarball(tarball_of(std::slice::from_ref(&lib))),
            400,
            "no `Cargo.toml` in its package folder",
        ),
        case(
            "a wrongly cased cargo.toml",
            with_tarball(tarball_of(&[
                Entry::file(format!("{top}/cargo.toml"), manifest(n, v)),
                lib.clone(),
            ])),
            400,
            "incorrectly cased manifest `fresh-1.0.0/cargo.toml`",
        ),
        case(
            "a gzip bomb: one file of 64 MiB of zeros",
            with_tarball(huge_file),
            400,
            "add up to more than 4194304 bytes",
        ),
        case(
            "a gzip bomb: 64 MiB of zeros after the archive",
            with_tarball(zeros_after),
            400,
            "decompresses to more than",
        ),
        case(
            "a tarball that is not gzip",
            with_tarball(b"this is not a gzip stream".to_vec()),
            400,
            "not gzip-compressed (it does not start with the gzip magic bytes",
        ),
        case(
            "an uncompressed tar",
            with_tarball(tar_of(&entries(top, &manifest(n, v)))),
            400,
            "it looks like an uncompressed tar archive",
        ),
        case(
            "a gzip stream cut in half",
            with_tarball(half_gzip),
            400,
            "gzip stream is corrupt or truncated",
        ),
        // The manifest.
        case(
            "a Cargo.toml that is not TOML",
            with_manifest("[package\nname = \"fresh\"\n".into()),
            400,
            "Cargo.toml in the tarball is not valid: line 1",
        ),
        case(
            "a licence that is not SPDX",
            with_manifest(manifest_with(n, v, Some("MIT AND AND GPL"), "")),
            400,
            "`license = \"MIT AND AND GPL\"` in Cargo.toml is not a valid SPDX expression",
        ),
        case(
            "no licence",
            with_manifest(manifest_with(n, v, None, "")),
            400,
            "Cargo.toml has neither `license` nor `license-file`",
        ),
        case(
            "a feature value cargo cannot read",
            with_manifest(manifest_with(n, v, Some("MIT"), "[features]\nf = [\"a/b/c\"]\n")),
            400,
            "feature `f` enables `a/b/c`, which is not",
        ),
        case(
            "a rust-version that is not a Rust version",
            with_manifest(manifest_with(
                n,
                v,
                Some("MIT"),
                "[package.metadata.x]\n",
            ).replace("edition = \"2021\"", "edition = \"2021\"\nrust-version = \">=1.70\"")),
            400,
            "is not a Rust version",
        ),
        case(
            "a git dependency without a version",
            with_manifest(manifest_with(n, v, Some("MIT"), git_dep)),
            400,
            "dependency `g` is a git dependency without a `version`",
        ),
        case(
            "a dependency on an unknown registry",
            with_manifest(manifest_with(n, v, Some("MIT"), &far_dep)),
            400,
            format!("dependency `far` comes from `{far}`, which crates in `internal` may not depend on"),
        ),
        Case {
            what: "a crates.io dependency where dependency_registries = []",
            registry: "sealed",
            who: Who::Alice,
            send: Send::Body(with_manifest(manifest_with(
                n,
                v,
                Some("MIT"),
                "[dependencies.serde]\nversion = \"1\"\n",
            ))),
            status: 400,
            says: "dependency `serde` comes from crates.io, which crates in `sealed` may not depend on"
                .into(),
        },
        // Names and versions.
        case(
            "a reserved name: std",
            body("std", v),
            400,
            "cannot publish a crate with a reserved name: `std`",
        ),
        case(
            "a reserved name: nul",
            body("nul", v),
            400,
            "cannot publish a crate with a reserved name: `nul`",
        ),
        case(
            "a name starting with a digit",
            body("1fresh", v),
            400,
            "crate name `1fresh` is invalid: it must start with an ASCII letter",
        ),
        case(
            "a version that is not semver",
            frame(&metadata(n, "1.0"), &crate_with(n, "1.0", &manifest(n, "1.0"), &[])),
            400,
            "version `1.0` is invalid",
        ),
        case(
            "a version already uploaded",
            body("good-crate", "1.0.0"),
            409,
            "crate version `good-crate@1.0.0` is already uploaded",
        ),
        case(
            "a version differing only by build metadata",
            body("good-crate", "1.0.0+b"),
            409,
            "crate version `good-crate@1.0.0` is already uploaded",
        ),
        case(
            "a yanked version",
            body("good-crate", "1.1.0"),
            409,
            "and yanked; a yanked version cannot be published again",
        ),
        case(
            "a name differing only by case",
            body("Good-Crate", "2.0.0"),
            409,
            "crate `Good-Crate` was previously published as `good-crate`",
        ),
        case(
            "a name differing only by `-`/`_`",
            body("good_crate", "2.0.0"),
            409,
            "crate `good_crate` was previously published as `good-crate`",
        ),
        case(
            "a name the upstream has, not allowed",
            body("serde", "9.0.0"),
            403,
            "`serde` exists on the upstream of mirror `crates-io`",
        ),
        // Who publishes.
        Case {
            what: "a token without publish permission",
            registry: "internal",
            who: Who::Bob,
            send: Send::Body(body(n, v)),
            status: 403,
            says: "the token lacks `publish` on `internal` (it may publish nothing here)".into(),
        },
        Case {
            what: "no token",
            registry: "internal",
            who: Who::Nobody,
            send: Send::Body(body(n, v)),
            status: 401,
            says: "this registry requires a token".into(),
        },
    ];
    // Each case names a distinct problem.
    let mut seen = std::collections::BTreeSet::new();
    for c in &cases {
        assert!(seen.insert(c.what), "two cases named {}", c.what);
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_forbidden_publishes_are_refused_naming_the_problem_and_change_nothing() {
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("serde", "1.0.0")));
    let cd = Cratedock::start(&two_private_registries(&up.index_url())).await;
    let alice = user_with(&cd, "alice", "*", &["publish", "yank"]);
    let bob = user_with(&cd, "bob", "internal", &["read"]);

    // An existing crate with a yanked version, for the duplicate and collision cases.
    for vers in ["1.0.0", "1.1.0"] {
        let a = publish(&cd, "internal", Some(&alice), body("good-crate", vers)).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert_eq!(
        yank(&cd, "internal", &alice, "good-crate", "1.1.0").await,
        200
    );

    let dirs = [
        "index/internal",
        "crates/internal",
        "index/sealed",
        "crates/sealed",
    ];
    let files = snapshot(&cd.data_dir, &dirs);
    assert_eq!(files.len(), 3, "one index file and two crate files");
    let audit = audit_len(&cd).await;
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());

    for c in cases {
        let token = match c.who {
            Who::Alice => Some(alice.as_str()),
            Who::Bob => Some(bob.as_str()),
            Who::Nobody => None,
        };
        let refused = format!("registry=\"{}\",result=\"refused\"", c.registry);
        let counted_before = cd.metric("publishes_total", &refused).await;
        let answer = match c.send {
            Send::Body(b) => publish(&cd, c.registry, token, b).await,
            Send::PrefixOnly { claimed, prefix } => {
                publish_prefix_only(&cd, c.registry, token.unwrap(), claimed, &prefix).await
            }
        };
        let what = c.what;
        assert_eq!(answer.status, c.status, "{what}: {}", answer.body);
        let detail = answer.detail();
        assert!(
            detail.contains(&c.says),
            "{what}: the detail {detail:?} does not say {:?}",
            c.says
        );
        assert_eq!(
            snapshot(&cd.data_dir, &dirs),
            files,
            "{what}: the index and crate files are unchanged"
        );
        assert_eq!(audit_len(&cd).await, audit, "{what}: nothing audited");
        // Every refusal past the token check is counted.
        let counted = cd.metric("publishes_total", &refused).await - counted_before;
        let expected = if matches!(c.who, Who::Nobody) {
            0.0
        } else {
            1.0
        };
        assert_eq!(counted, expected, "{what}: refusals counted");
    }
    assert!(
        http_client()
            .get(cd.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success(),
        "still serving"
    );
    // The good crate is as it was: two versions, one yanked.
    let lines = parse_index(
        &index_file(&cd.data_dir, "internal", "good-crate").unwrap(),
        "good-crate",
    );
    let shown: Vec<(&str, bool)> = lines
        .iter()
        .map(|l| (l["vers"].as_str().unwrap(), l["yanked"].as_bool().unwrap()))
        .collect();
    assert_eq!(shown, [("1.0.0", false), ("1.1.0", true)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_of_one_version_let_exactly_one_through() {
    let up = FakeUpstream::start().await;
    let cd = Cratedock::start(&two_private_registries(&up.index_url())).await;
    let alice = user_with(&cd, "alice", "internal", &["publish"]);
    let client = http_client();
    let name = "conc-crate";

    let same =
        (0..20).map(|_| put_publish(&client, &cd, "internal", Some(&alice), body(name, "1.0.0")));
    let answers: Vec<Answer> = futures_util::future::join_all(same)
        .await
        .into_iter()
        .map(|r| r.expect("an answer"))
        .collect();
    let ok = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(ok, 1, "exactly one publish lands: {answers:?}");
    for a in answers.iter().filter(|a| a.status != 200) {
        assert_eq!(a.status, 409, "{}", a.body);
        assert!(
            a.detail()
                .contains("crate version `conc-crate@1.0.0` is already uploaded"),
            "{}",
            a.body
        );
    }
    let duplicates = "reason=\"duplicate\",registry=\"internal\",result=\"refused\"";
    assert_eq!(cd.metric("publishes_total", duplicates).await, 19.0);

    // Ten versions at once: all land, each once.
    let versions: Vec<String> = (0..10).map(|i| format!("2.0.{i}")).collect();
    let each = versions
        .iter()
        .map(|v| put_publish(&client, &cd, "internal", Some(&alice), body(name, v)));
    for (v, a) in versions
        .iter()
        .zip(futures_util::future::join_all(each).await)
    {
        let a = a.expect("an answer");
        assert_eq!(a.status, 200, "{v}: {}", a.body);
    }

    let served = client
        .get(cd.url("/internal/index/co/nc/conc-crate"))
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let served = served.bytes().await.unwrap();
    let on_disk = index_file(&cd.data_dir, "internal", name).unwrap();
    assert_eq!(served, on_disk, "the index served is the one on disk");
    let mut listed: Vec<String> = parse_index(&on_disk, name)
        .iter()
        .map(|l| l["vers"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected = versions.clone();
    expected.push("1.0.0".into());
    expected.sort();
    assert_eq!(listed, expected, "every version exactly once");
    assert_eq!(check_registry_files(&cd.data_dir, "internal").len(), 11);
    assert_eq!(
        cd.metric(
            "publishes_total",
            "reason=\"ok\",registry=\"internal\",result=\"ok\""
        )
        .await,
        11.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_name_the_upstream_has_is_refused_unless_allowed_and_checked_from_the_cache_when_the_upstream_is_down()
 {
    let mut up = FakeUpstream::start().await;
    for name in ["serde", "shared-utils", "tokio"] {
        up.publish(build(CrateSpec::new(name, "1.0.0")));
    }
    let cd = Cratedock::start(&two_private_registries(&up.index_url())).await;
    let alice = user_with(&cd, "alice", "internal", &["publish"]);
    let dirs = ["index/internal", "crates/internal"];

    // The upstream has `serde`: refused, saying why and what to do.
    let a = publish(&cd, "internal", Some(&alice), body("serde", "1.0.0")).await;
    assert_eq!(a.status, 403, "{}", a.body);
    let d = a.detail();
    for says in [
        "`serde` exists on the upstream of mirror `crates-io`",
        "dependency confusion",
        "Pick another name",
        "registries.internal.allow_upstream_names",
        "registries.crates-io.reserved_names",
    ] {
        assert!(d.contains(says), "{d:?} does not say {says:?}");
    }
    assert!(snapshot(&cd.data_dir, &dirs).is_empty());

    // `shared-*` is allowed although the upstream has it.
    let a = publish(&cd, "internal", Some(&alice), body("shared-utils", "1.0.0")).await;
    assert_eq!(a.status, 200, "{}", a.body);

    // Through the mirror once: `tokio` is cached, `gone-crate` is known to be missing.
    assert_eq!(cd.get("/crates-io/index/to/ki/tokio").await.status(), 200);
    assert_eq!(
        cd.get("/crates-io/index/go/ne/gone-crate").await.status(),
        404
    );
    cd.wait_idle().await;
    up.stop().await;
    let (tokio_hits, gone_hits) = (
        up.hits("/index/to/ki/tokio"),
        up.hits("/index/go/ne/gone-crate"),
    );
    assert_eq!((tokio_hits, gone_hits), (1, 1));

    // The upstream is down and nothing is cached: the check cannot be made.
    let before = snapshot(&cd.data_dir, &dirs);
    let a = publish(&cd, "internal", Some(&alice), body("brand-new", "1.0.0")).await;
    assert_eq!(a.status, 503, "{}", a.body);
    let d = a.detail();
    assert!(
        d.contains("cannot check whether `brand-new` exists on the upstream of mirror `crates-io`")
            && d.contains("try again later"),
        "{d}"
    );
    assert_eq!(snapshot(&cd.data_dir, &dirs), before, "nothing written");
    assert_eq!(
        cd.metric("publishes_total", "reason=\"unavailable\"").await,
        1.0
    );

    // What is cached answers with the upstream down: `tokio` is taken, `gone-crate` is free.
    let a = publish(&cd, "internal", Some(&alice), body("tokio", "1.0.0")).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.detail().contains("dependency confusion"), "{}", a.body);
    let a = publish(&cd, "internal", Some(&alice), body("gone-crate", "1.0.0")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        (
            up.hits("/index/to/ki/tokio"),
            up.hits("/index/go/ne/gone-crate")
        ),
        (tokio_hits, gone_hits),
        "answered from the cache"
    );
    let mut published: Vec<(String, String)> = check_registry_files(&cd.data_dir, "internal");
    published.sort();
    let expected = [("gone-crate", "1.0.0"), ("shared-utils", "1.0.0")]
        .map(|(n, v)| (n.to_owned(), v.to_owned()));
    assert_eq!(published, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserved_name_is_never_fetched_from_the_upstream_and_can_be_published_privately() {
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("acme-tool", "1.0.0")));
    let cd = Cratedock::start(&two_private_registries(&up.index_url())).await;
    let alice = user_with(&cd, "alice", "internal", &["publish"]);

    for path in [
        "/crates-io/index/ac/me/acme-tool",
        "/crates-io/index/ac/me/acme_tool",
    ] {
        let r = cd.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
        let d = crate::support::detail(r).await;
        assert!(
            d.contains("is reserved for the company's private registries (pattern `acme-*`"),
            "{path}: {d}"
        );
    }
    let r = cd
        .get("/crates-io/api/v1/crates/acme-tool/1.0.0/download")
        .await;
    assert_eq!(r.status(), 404, "nor its crate file");

    // The private registry takes the name: the upstream's crate of that name is not asked for.
    let a = publish(&cd, "internal", Some(&alice), body("acme-tool", "2.0.0")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        check_registry_files(&cd.data_dir, "internal"),
        [("acme-tool".to_owned(), "2.0.0".to_owned())]
    );
    assert_eq!(up.hits("/index/ac/me/acme"), 0, "no index request upstream");
    assert_eq!(up.hits("/dl/acme"), 0, "no download upstream");
}
