//! A crash in the middle of publishes: cratedock killed with SIGKILL while many are in flight
//! leaves no index line without its `.crate` file, no partial index file, and nothing that a
//! retry cannot finish.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::publish::*;
use crate::support::{Cratedock, FakeUpstream, http_client};

/// How a publish of the storm ended.
#[derive(Debug, Clone)]
enum Outcome {
    Ok,
    Refused(Answer),
    /// No answer: the connection broke, or the publish was never sent after one did.
    Interrupted,
}

const CRATES: usize = 8;
const VERSIONS: usize = 5;

fn storm() -> Vec<(String, String)> {
    (0..CRATES)
        .flat_map(|c| (0..VERSIONS).map(move |v| (format!("storm-{c}"), format!("1.0.{v}"))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_publish_storm_loses_no_answered_publish_and_every_publish_can_be_retried()
{
    let up = FakeUpstream::start().await;
    let cd = Cratedock::start(&two_private_registries(&up.index_url())).await;
    let alice = user_with(&cd, "alice", "internal", &["publish"]);
    // A clean stop writes the accounts out, so that the kill cannot take alice's token.
    let cd = cd.restart().await;

    let all = storm();
    let bodies: Arc<BTreeMap<(String, String), Vec<u8>>> = Arc::new(
        all.iter()
            .map(|(n, v)| ((n.clone(), v.clone()), body(n, v)))
            .collect(),
    );
    let succeeded = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    let client = http_client();
    let mut tasks = Vec::new();
    // One task per crate, publishing its versions in order; all crates at once.
    for c in 0..CRATES {
        let versions: Vec<(String, String)> = all
            .iter()
            .filter(|(n, _)| *n == format!("storm-{c}"))
            .cloned()
            .collect();
        let (bodies, succeeded, enough, client) = (
            bodies.clone(),
            succeeded.clone(),
            enough.clone(),
            client.clone(),
        );
        let (url, token) = (cd.url("/internal/api/v1/crates/new"), alice.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut broken = false;
            for key in versions {
                if broken {
                    outcomes.push((key, Outcome::Interrupted));
                    continue;
                }
                let sent = client
                    .put(&url)
                    .header("authorization", &token)
                    .body(bodies[&key].clone())
                    .send()
                    .await;
                let answer = match sent {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        r.text().await.map(|body| Answer { status, body })
                    }
                    Err(e) => Err(e),
                };
                let outcome = match answer {
                    Ok(a) if a.status == 200 => {
                        if succeeded.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                            enough.notify_one();
                        }
                        Outcome::Ok
                    }
                    Ok(a) => Outcome::Refused(a),
                    Err(_) => {
                        broken = true;
                        Outcome::Interrupted
                    }
                };
                outcomes.push((key, outcome));
            }
            outcomes
        }));
    }

    // Kill once three publishes have been answered 200.
    tokio::time::timeout(Duration::from_secs(60), enough.notified())
        .await
        .expect("three publishes succeed");
    cd.signal("KILL");
    let mut outcomes = BTreeMap::new();
    for t in tasks {
        outcomes.extend(t.await.unwrap());
    }
    assert_eq!(outcomes.len(), all.len());
    let answered: BTreeSet<(String, String)> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Ok))
        .map(|(k, _)| k.clone())
        .collect();
    let refused: Vec<String> = outcomes
        .iter()
        .filter_map(|(k, o)| match o {
            Outcome::Refused(a) => Some(format!("{k:?}: {} {}", a.status, a.body)),
            _ => None,
        })
        .collect();
    assert!(
        refused.is_empty(),
        "no publish of the storm is refused: {refused:?}"
    );
    let interrupted = outcomes.len() - answered.len();
    assert!(answered.len() >= 3, "{answered:?}");
    assert!(
        interrupted >= 1,
        "the kill came while publishes were in flight"
    );

    let cd = cd.restart_after_kill().await;
    let tmp = std::fs::read_dir(cd.data_dir.join("tmp")).unwrap().count();
    assert_eq!(tmp, 0, "partial files are cleared at start");
    // Every index file parses completely; every line has its .crate with the line's checksum.
    let indexed: BTreeSet<(String, String)> = check_registry_files(&cd.data_dir, "internal")
        .into_iter()
        .collect();
    assert!(
        answered.is_subset(&indexed),
        "every publish answered 200 survived the kill: answered {answered:?}, indexed {indexed:?}"
    );
    for key in &indexed {
        assert!(
            bodies.contains_key(key),
            "only the storm's versions: {key:?}"
        );
    }

    // The records of answered publishes survived too: their crates have their owner.
    for name in answered.iter().map(|(n, _)| n).collect::<BTreeSet<_>>() {
        let r = http_client()
            .get(cd.url(&format!("/internal/api/v1/crates/{name}/owners")))
            .header("authorization", &alice)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "{name}: {text}");
        assert!(text.contains("\"login\":\"alice\""), "{name}: {text}");
    }

    // ... and so did their audit entries.
    let audited = published_in_audit(&cd).await;
    for (n, v) in &answered {
        assert!(
            audited.contains(&format!("{n}@{v}")),
            "{n}@{v} audited: {audited:?}"
        );
    }

    // Retry everything: what the index has is a duplicate (or, when the kill came between
    // its index line and its record, the retry of the same bytes completes it); the rest lands.
    for key in &all {
        let a = publish(&cd, "internal", Some(&alice), bodies[key].clone()).await;
        if indexed.contains(key) && a.status != 200 {
            assert_eq!(a.status, 409, "{key:?}: {}", a.body);
            let says = format!("crate version `{}@{}` is already uploaded", key.0, key.1);
            assert!(a.detail().contains(&says), "{key:?}: {}", a.body);
        } else {
            assert_eq!(a.status, 200, "{key:?}: {}", a.body);
        }
    }
    let after: Vec<(String, String)> = check_registry_files(&cd.data_dir, "internal");
    let unique: BTreeSet<(String, String)> = after.iter().cloned().collect();
    assert_eq!(after.len(), unique.len(), "each version once: {after:?}");
    assert_eq!(unique, all.iter().cloned().collect::<BTreeSet<_>>());
    // Each publish is audited exactly once: one whose record the kill took was completed by
    // its retry.
    let audited = published_in_audit(&cd).await;
    let distinct: BTreeSet<&String> = audited.iter().collect();
    assert_eq!(distinct.len(), audited.len(), "{audited:?}");
    assert_eq!(audited.len(), all.len(), "{audited:?}");
    // The files are the ones uploaded.
    for key in &all {
        let stored = std::fs::read(crate_path(&cd.data_dir, "internal", &key.0, &key.1)).unwrap();
        let sent = &bodies[key];
        assert!(
            sent.ends_with(&stored),
            "{key:?}: the .crate is the bytes uploaded"
        );
    }
    // And cargo's view agrees: each crate's index file is served with all its versions.
    for c in 0..CRATES {
        let r = http_client()
            .get(cd.url(&format!("/internal/index/st/or/storm-{c}")))
            .header("authorization", &alice)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let lines = parse_index(&r.bytes().await.unwrap(), &format!("storm-{c}"));
        assert_eq!(lines.len(), VERSIONS, "storm-{c}");
    }
}

/// The targets (`name@version`) of the `crate.publish` entries of the audit log.
async fn published_in_audit(cd: &Cratedock) -> Vec<String> {
    let r = cd
        .admin_api(
            reqwest::Method::GET,
            "/-/admin/audit?action=crate.publish&limit=1000",
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let page: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["target"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_answered_200_keeps_its_record_and_audit_entry_through_an_immediate_kill() {
    let up = FakeUpstream::start().await;
    let cd = Cratedock::start(&two_private_registries(&up.index_url())).await;
    let alice = user_with(&cd, "alice", "internal", &["publish"]);
    let cd = cd.restart().await;

    let a = publish(&cd, "internal", Some(&alice), body("kept-crate", "1.2.3")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    cd.signal("KILL");
    let cd = cd.restart_after_kill().await;

    assert_eq!(
        published_in_audit(&cd).await,
        ["kept-crate@1.2.3"],
        "the publish is in the audit log"
    );
    let get = |path: &str| {
        http_client()
            .get(cd.url(path))
            .header("authorization", &alice)
            .send()
    };
    let found = get("/internal/api/v1/crates?q=kept").await.unwrap();
    let found: serde_json::Value = serde_json::from_slice(&found.bytes().await.unwrap()).unwrap();
    assert_eq!(found["crates"][0]["name"], "kept-crate", "{found}");
    assert_eq!(found["crates"][0]["max_version"], "1.2.3", "{found}");
    let owners = get("/internal/api/v1/crates/kept-crate/owners")
        .await
        .unwrap();
    let owners = owners.text().await.unwrap();
    assert!(owners.contains("\"login\":\"alice\""), "{owners}");
}
