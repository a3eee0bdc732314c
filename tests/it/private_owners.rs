//! Who may change a private crate, with real cargo: owners added, listed and removed with
//! `cargo owner`, grants narrowed to other names, read-only and expired tokens, and the reasons
//! cargo shows for each refusal.

use serde_json::Value;

use crate::private::{
    add_user, assert_ok, assert_refused, consumer, crate_audit, index_lines, private_registry,
    publish, stderr, stdout, token, write_library,
};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_added_listed_and_removed_with_cargo_owner_decide_who_may_publish() {
    let (_up, cd) = private_registry().await;
    for login in ["alice", "bob", "carol"] {
        add_user(&cd, login, &[("publish", "*")]);
    }
    cd.admin(&["team", "add", "core", "--member", "carol"]);
    let (alice, bob, carol) = (
        token(&cd, "alice", &[]),
        token(&cd, "bob", &[]),
        token(&cd, "carol", &[]),
    );
    let p = CargoProject::with_private(&cd);
    write_library(&p, "acme-owned", "0.1.0");
    assert_ok(&publish(&p, &alice), "alice's first publish");

    let owner = |token: &str, args: &[&str]| {
        let mut all = vec!["owner"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["acme-owned", "--registry", PRIVATE]);
        p.cargo_as(Some(token), &all)
    };
    let out = owner(&alice, &["--add", "bob"]);
    assert_ok(&out, "cargo owner --add bob");
    assert!(
        stderr(&out).contains("bob now owns `acme-owned`"),
        "{}",
        stderr(&out)
    );
    let out = owner(&alice, &["--add", "team:core"]);
    assert_ok(&out, "cargo owner --add team:core");
    assert!(
        stderr(&out).contains("team:core now owns `acme-owned`"),
        "{}",
        stderr(&out)
    );
    let out = owner(&alice, &["--list"]);
    assert_ok(&out, "cargo owner --list");
    let listed: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .collect();
    assert_eq!(listed, ["alice", "bob", "team:core"], "{}", stdout(&out));

    // An owner publishes a new version.
    write_library(&p, "acme-owned", "0.1.1");
    assert_ok(&publish(&p, &bob), "bob's publish as an owner");

    let out = owner(&alice, &["--remove", "bob"]);
    assert_ok(&out, "cargo owner --remove bob");
    let out = owner(&bob, &["--list"]);
    assert_ok(&out, "cargo owner --list");
    assert!(!stdout(&out).contains("bob"), "{}", stdout(&out));

    // Bob may no longer publish; carol may, as a member of the owner team.
    write_library(&p, "acme-owned", "0.1.2");
    assert_refused(
        &publish(&p, &bob),
        "you are not an owner of `acme-owned` (owners: alice, team:core)",
    );
    assert_ok(&publish(&p, &carol), "carol's publish as a member of core");
    let versions: Vec<String> = index_lines(&cd, &alice, "acme-owned")
        .await
        .iter()
        .map(|l| l["vers"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(versions, ["0.1.0", "0.1.1", "0.1.2"]);
    // Bob cannot put himself back either.
    assert_refused(
        &owner(&bob, &["--add", "bob"]),
        "you are not an owner of `acme-owned`",
    );

    let audit = crate_audit(&cd);
    let owner_changes: Vec<(&str, &str)> = audit
        .iter()
        .filter(|r| r.action.starts_with("owner.") && r.krate == "acme-owned")
        .map(|r| (r.action.as_str(), r.user.as_str()))
        .collect();
    assert_eq!(owner_changes.len(), 3, "{audit:?}");
    assert_eq!(
        owner_changes
            .iter()
            .filter(|c| **c == ("owner.add", "alice"))
            .count(),
        2,
        "{audit:?}"
    );
    assert!(
        owner_changes.contains(&("owner.remove", "alice")),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cargo_shows_why_a_publish_or_yank_without_the_grant_or_ownership_is_refused() {
    let (_up, cd) = private_registry().await;
    add_user(&cd, "alice", &[("publish", "*"), ("yank", "*")]);
    add_user(&cd, "bob", &[("publish", "*"), ("yank", "*")]);
    add_user(&cd, "dave", &[("read", "*"), ("publish", "other-*")]);
    let (alice, bob, dave) = (
        token(&cd, "alice", &[]),
        token(&cd, "bob", &[]),
        token(&cd, "dave", &[]),
    );
    let p = CargoProject::with_private(&cd);

    // A grant narrowed to other names.
    write_library(&p, "acme-x", "0.1.0");
    assert_refused(
        &publish(&p, &dave),
        "the token lacks `publish` on `internal/acme-x`",
    );
    assert_ok(&publish(&p, &alice), "alice's publish");
    // The narrowed grant does reach its own names.
    write_library(&p, "other-y", "0.1.0");
    assert_ok(&publish(&p, &dave), "dave's publish of other-y");

    // A non-owner's new version and yank.
    write_library(&p, "acme-x", "0.1.1");
    assert_refused(
        &publish(&p, &bob),
        "you are not an owner of `acme-x` (owners: alice)",
    );
    let out = p.cargo_as(Some(&bob), &["yank", "acme-x@0.1.0", "--registry", PRIVATE]);
    assert_refused(&out, "you are not an owner of `acme-x` (owners: alice)");
    // Even the owner needs the `yank` grant to yank.
    let out = p.cargo_as(
        Some(&dave),
        &["yank", "other-y@0.1.0", "--registry", PRIVATE],
    );
    assert_refused(&out, "the token lacks `yank` on `internal/other-y`");

    // Nothing of the refusals reached the index or the audit log's crate records.
    let lines = index_lines(&cd, &alice, "acme-x").await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["yanked"], false);
    let audit = crate_audit(&cd);
    assert!(
        audit.iter().all(
            |r| (r.action == "crate.create" || r.action == "crate.publish")
                && (r.user == "alice" || r.user == "dave")
        ),
        "{audit:?}"
    );
    assert_eq!(audit.len(), 4, "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_builds_but_cannot_publish_and_an_expired_token_is_refused() {
    let (_up, cd) = private_registry().await;
    add_user(&cd, "alice", &[("publish", "*")]);
    let alice = token(&cd, "alice", &[]);
    let reader = token(&cd, "alice", &["--read-only"]);
    let p = CargoProject::with_private(&cd);
    write_library(&p, "acme-lib", "0.1.0");
    assert_ok(&publish(&p, &alice), "alice's publish");

    // Read-only: a build using the private crate works, a publish is refused.
    let dep = format!("acme-lib = {{ version = \"0.1\", registry = \"{PRIVATE}\" }}\n");
    let main = "fn main() { println!(\"{}\", acme_lib::id()); }\n";
    let user = consumer(&cd, &dep, main);
    let out = user.cargo_as(Some(&reader), &["run", "--quiet"]);
    assert_ok(&out, "cargo run with a read-only token");
    assert_eq!(stdout(&out).trim(), "acme-lib 0.1.0");
    write_library(&p, "acme-lib", "0.2.0");
    assert_refused(
        &publish(&p, &reader),
        "the token lacks `publish` on `internal` (it may publish nothing here)",
    );
    // No token at all: cargo says how to give one.
    let anonymous = consumer(&cd, &dep, main);
    assert_refused(
        &anonymous.cargo_as(None, &["build"]),
        "no token found for `internal`",
    );

    // An expired token: refused once its time has passed.
    let short = token(&cd, "alice", &["--expires-in", "1s"]);
    wait_until("the short token expires", || async {
        let r = http_client()
            .get(cd.url(&format!("/{PRIVATE}/index/config.json")))
            .header("authorization", &short)
            .send()
            .await
            .unwrap();
        r.status() == 401 && detail(r).await.contains("expired")
    })
    .await;
    let late = consumer(&cd, &dep, main);
    assert_refused(
        &late.cargo_as(Some(&short), &["build"]),
        "the token expired on",
    );
    assert_refused(&publish(&p, &short), "the token expired on");
    let versions: Vec<Value> = index_lines(&cd, &alice, "acme-lib")
        .await
        .iter()
        .map(|l| l["vers"].clone())
        .collect();
    assert_eq!(versions, ["0.1.0"]);
}
