//! An admin's tools for private registries: `cratedock admin import` of existing `.crate` files
//! through the publish checks, and `cratedock admin crate delete` of one version.

use crate::support::publish::*;
use crate::support::{Cratedock, FakeUpstream};

/// A fake upstream and cratedock with the private registries `internal` and `sealed`.
async fn private_registries() -> (FakeUpstream, Cratedock) {
    crate::support::init();
    let upstream = FakeUpstream::start().await;
    let cd = Cratedock::start(&two_private_registries(&upstream.index_url())).await;
    (upstream, cd)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// Multi-threaded: the import runs as a blocking child process while the fake upstream (on this
// runtime) answers the dependency-confusion checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_publishes_crate_files_and_folders_through_the_checks_and_skips_what_is_there() {
    let (_upstream, cd) = private_registries().await;
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("old-registry/ab");
    std::fs::create_dir_all(&nested).unwrap();
    for (name, vers) in [("mig-a", "1.0.0"), ("mig-a", "1.1.0"), ("mig-b", "0.3.0")] {
        let file = nested.join(format!("{name}-{vers}.crate"));
        std::fs::write(file, good_crate(name, vers)).unwrap();
    }
    let single = dir.path().join("mig-c-2.0.0.crate");
    std::fs::write(&single, good_crate("mig-c", "2.0.0")).unwrap();
    let folder = dir.path().join("old-registry");
    let (folder, single) = (folder.to_str().unwrap(), single.to_str().unwrap());

    let out = cd.admin(&["import", folder, single, "--registry", "internal"]);
    let said = text(&out);
    assert!(
        said.contains("4 imported, 0 already present, 0 failed"),
        "{said}"
    );
    assert_eq!(
        check_registry_files(&cd.data_dir, "internal").len(),
        4,
        "every version is in the index with its file"
    );

    // Again, with one refused file and one other file under a taken version among them: the
    // rest are skipped, the refusals are named and the command fails.
    let bad = dir.path().join("bad-1.0.0.crate");
    std::fs::write(&bad, b"not a tarball").unwrap();
    let other = dir.path().join("other").join("mig-c-2.0.0.crate");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    let mut different = good_crate("mig-c", "2.0.0");
    different.extend_from_slice(&[0; 8]);
    std::fs::write(&other, different).unwrap();
    let (bad, other) = (bad.to_str().unwrap(), other.to_str().unwrap());
    let out = cd.admin_command(
        &cd.admin_token_file(),
        &["import", folder, bad, other, "--registry", "internal"],
    );
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("0 imported, 3 already present, 2 failed"),
        "{said}"
    );
    assert!(
        said.contains("bad-1.0.0.crate") && said.contains("gzip"),
        "{said}"
    );
    assert!(
        said.contains("other/mig-c-2.0.0.crate") && said.contains("already uploaded"),
        "{said}"
    );

    // The importing admin owns what it imported.
    let owners = cd.get("/internal/api/v1/crates/mig-a/owners").await;
    let status = owners.status();
    let body = owners.text().await.unwrap();
    // `internal` needs a token to read; the owner list is behind it too.
    assert_eq!(status, 401, "{body}");
    let r = cd
        .admin_api(
            reqwest::Method::GET,
            "/internal/api/v1/crates/mig-a/owners",
            None,
        )
        .await;
    let body = r.text().await.unwrap();
    assert!(body.contains("\"login\":\"admin\""), "{body}");
}

#[tokio::test]
async fn an_admin_deletes_a_version_whose_number_is_never_accepted_again() {
    let (_upstream, cd) = private_registries().await;
    let alice = user_with(&cd, "alice", "internal", &["publish"]);
    for vers in ["1.0.0", "1.0.1"] {
        let a = publish(&cd, "internal", Some(&alice), body("takedown", vers)).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let file = crate_path(&cd.data_dir, "internal", "takedown", "1.0.1");
    assert!(file.exists());

    // Not an admin: refused, nothing changes.
    let r = crate::support::http_client()
        .delete(cd.url("/-/admin/registries/internal/crates/takedown/1.0.1"))
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(file.exists());

    let out = cd.admin(&[
        "crate",
        "delete",
        "takedown",
        "1.0.1",
        "--registry",
        "internal",
    ]);
    assert!(
        text(&out).contains("deleted takedown@1.0.1"),
        "{}",
        text(&out)
    );
    assert!(!file.exists(), "the file is gone");
    let lines = parse_index(
        &index_file(&cd.data_dir, "internal", "takedown").unwrap(),
        "takedown",
    );
    let versions: Vec<&str> = lines.iter().map(|l| l["vers"].as_str().unwrap()).collect();
    assert_eq!(versions, ["1.0.0"]);
    let r = cd
        .admin_api(
            reqwest::Method::GET,
            "/internal/api/v1/crates/takedown/1.0.1/download",
            None,
        )
        .await;
    assert_eq!(r.status(), 404);

    // The number stays taken, with or without build metadata.
    for vers in ["1.0.1", "1.0.1+again"] {
        let a = publish(&cd, "internal", Some(&alice), body("takedown", vers)).await;
        assert_eq!(a.status, 409, "{}", a.body);
        assert!(a.detail().contains("deleted"), "{}", a.body);
    }
    // Deleting it again is a 404; the delete is in the audit log once.
    let again = cd.admin_command(
        &cd.admin_token_file(),
        &[
            "crate",
            "delete",
            "takedown",
            "1.0.1",
            "--registry",
            "internal",
        ],
    );
    assert!(!again.status.success());
    let out = cd.admin(&["audit", "--action", "crate.delete", "--json"]);
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = entries.as_array().expect("a list");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["target"], "takedown@1.0.1");
}

#[tokio::test]
async fn search_shows_a_reader_only_the_crates_it_may_read() {
    let (_upstream, cd) = private_registries().await;
    let alice = user_with(&cd, "alice", "internal", &["publish"]);
    for name in ["team-a-core", "team-b-core"] {
        let a = publish(&cd, "internal", Some(&alice), body(name, "1.0.0")).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    cd.admin(&["user", "add", "narrow"]);
    cd.admin(&[
        "grant",
        "--user",
        "narrow",
        "--permission",
        "read",
        "--registry",
        "internal",
        "--crates",
        "team-a-*",
    ]);
    let narrow = text(&cd.admin(&["token", "create", "--user", "narrow"]));
    let search = |token: String| {
        let url = cd.url("/internal/api/v1/crates?q=core&per_page=10");
        async move {
            let r = crate::support::http_client()
                .get(url)
                .header("authorization", token.trim())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap()).unwrap()
        }
    };
    let all = search(alice.clone()).await;
    assert_eq!(all["meta"]["total"], 2, "{all}");
    let some = search(narrow).await;
    assert_eq!(some["meta"]["total"], 1, "{some}");
    assert_eq!(some["crates"][0]["name"], "team-a-core", "{some}");
}

#[tokio::test]
async fn yank_and_delete_find_a_crate_by_either_spelling_of_its_name() {
    let (_upstream, cd) = private_registries().await;
    let alice = user_with(&cd, "alice", "internal", &["publish", "yank"]);
    for vers in ["1.0.0", "1.0.1"] {
        let a = publish(&cd, "internal", Some(&alice), body("under_score", vers)).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    // cargo may name it `under-score`: the same crate.
    assert_eq!(
        yank(&cd, "internal", &alice, "Under-Score", "1.0.0").await,
        200
    );
    let lines = parse_index(
        &index_file(&cd.data_dir, "internal", "under_score").unwrap(),
        "under_score",
    );
    assert_eq!(lines[0]["yanked"], true, "{lines:?}");
    let out = cd.admin(&[
        "crate",
        "delete",
        "under-score",
        "1.0.1",
        "--registry",
        "internal",
    ]);
    assert!(text(&out).contains("deleted"), "{}", text(&out));
    let lines = parse_index(
        &index_file(&cd.data_dir, "internal", "under_score").unwrap(),
        "under_score",
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(!crate_path(&cd.data_dir, "internal", "under_score", "1.0.1").exists());
}
