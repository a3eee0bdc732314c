//! The sled store's own tests: records with their audit records, tokens, the first admin,
//! audit paging. (`memory_accounts` checks that both stores agree.)

use super::*;
use crate::names::CrateGlob;
use crate::store::accounts::fixtures::{actions, entry, token, user};
use crate::store::accounts::{Actor, Permission, Subject};

#[tokio::test]
async fn changes_are_stored_with_their_audit_record_and_no_ops_with_none() {
    let s = SledAccounts::temporary().unwrap();
    assert!(
        s.create_user(&user("alice", false), &entry("a"))
            .await
            .unwrap()
    );
    assert!(
        !s.create_user(&user("alice", true), &entry("b"))
            .await
            .unwrap()
    );
    assert!(!s.user("alice").await.unwrap().unwrap().admin);
    let change = UserChange {
        disabled: Some(true),
        ..UserChange::default()
    };
    let changed = s.change_user("alice", &change, &entry("c")).await.unwrap();
    assert!(changed.unwrap().disabled);
    assert!(
        s.change_user("bob", &change, &entry("d"))
            .await
            .unwrap()
            .is_none()
    );

    let team = Team {
        name: "dev".into(),
        members: Default::default(),
        created_ms: 1,
    };
    assert!(s.create_team(&team, &entry("e")).await.unwrap());
    let t = s
        .set_member("dev", "alice", true, &entry("f"))
        .await
        .unwrap();
    assert!(t.unwrap().members.contains("alice"));
    s.set_member("dev", "carol", false, &entry("g"))
        .await
        .unwrap();
    assert!(
        s.set_member("nope", "alice", true, &entry("h"))
            .await
            .unwrap()
            .is_none()
    );

    let grant = Grant {
        id: "g1".into(),
        subject: Subject::Team("dev".into()),
        permission: Permission::Read,
        registry: None,
        crates: CrateGlob::any(),
        expires_ms: None,
        created_ms: 1,
    };
    s.add_grant(&grant, &entry("i")).await.unwrap();
    assert!(s.add_grant(&grant, &entry("j")).await.is_err());
    assert_eq!(s.grants().await.unwrap(), vec![grant.clone()]);
    assert_eq!(
        s.remove_grant("g1", &entry("k")).await.unwrap(),
        Some(grant)
    );
    assert_eq!(s.remove_grant("g1", &entry("l")).await.unwrap(), None);
    assert!(s.grants().await.unwrap().is_empty());
    assert_eq!(actions(&s).await, ["a", "c", "e", "f", "i", "k"]);
}

#[tokio::test]
async fn tokens_are_found_by_hash_revoked_by_id_once_and_touched_forward() {
    let s = SledAccounts::temporary().unwrap();
    s.create_token(&token("t1", "alice"), &entry("a"))
        .await
        .unwrap();
    assert!(
        s.create_token(&token("t1", "alice"), &entry("b"))
            .await
            .is_err()
    );
    let Revocation::Revoked(r) = s.revoke_token("t1", 50, &entry("c")).await.unwrap() else {
        panic!("not revoked")
    };
    assert_eq!(r.revoked_ms, Some(50));
    let again = s.revoke_token("t1", 99, &entry("d")).await.unwrap();
    assert!(matches!(again, Revocation::AlreadyRevoked(t) if t.revoked_ms == Some(50)));
    let unknown = s.revoke_token("t9", 99, &entry("e")).await.unwrap();
    assert_eq!(unknown, Revocation::Unknown);
    s.touch_tokens(&[("t1".into(), 10)]).await.unwrap();
    s.touch_tokens(&[("t1".into(), 5), ("gone".into(), 7)])
        .await
        .unwrap();
    let t = s.token_by_hash("hash-t1").await.unwrap().unwrap();
    assert_eq!(t.last_used_ms, Some(10));
    assert_eq!(actions(&s).await, ["a", "c"]);
    assert!(!format!("{t:?}").contains("hash-t1"), "Debug shows no hash");
}

#[tokio::test]
async fn a_first_admin_is_made_only_while_no_admin_can_sign_in() {
    let s = SledAccounts::temporary().unwrap();
    let first = [entry("user.create"), entry("token.create")];
    let mut t = token("a", "admin");
    t.expires_ms = Some(1_000);
    assert!(
        s.create_first_admin(&user("admin", true), &t, 0, &first)
            .await
            .unwrap()
    );
    let second = |n| {
        let (u, t) = (user("admin-2", true), token("b", "admin-2"));
        let s = &s;
        async move {
            s.create_first_admin(&u, &t, n, &[entry("again")])
                .await
                .unwrap()
        }
    };
    assert!(!second(999).await, "the first admin's token still works");
    assert!(
        second(1_000).await,
        "it expired: nobody can sign in as an admin"
    );
    assert!(!second(1_000).await, "the login is taken now");
    assert_eq!(actions(&s).await, ["user.create", "token.create", "again"]);
}

#[tokio::test]
async fn the_audit_log_pages_newest_first_with_filters() {
    let s = SledAccounts::temporary().unwrap();
    for i in 0..5u64 {
        let e = AuditEntry {
            seq: 0,
            time_ms: 1_000 + i,
            actor: Actor {
                user: Some(if i % 2 == 0 { "alice" } else { "bob" }.into()),
                ..Actor::default()
            },
            source: None,
            action: format!("user.{}", if i == 4 { "disable" } else { "create" }),
            registry: None,
            krate: None,
            target: format!("u{i}"),
            outcome: "ok".into(),
        };
        s.append_audit(&e).await.unwrap();
    }
    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        };
        f(&mut q);
        q
    };
    let all = s.audit(&q(|_| {})).await.unwrap();
    let targets: Vec<_> = all.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["u4", "u3", "u2", "u1", "u0"]);
    let page = s.audit(&q(|q| q.limit = 2)).await.unwrap();
    let next = s
        .audit(&q(|q| {
            q.limit = 2;
            q.before_seq = Some(3);
        }))
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    assert!(next.iter().all(|e| e.seq < 3));
    let alice = s
        .audit(&q(|q| q.actor = Some("alice".into())))
        .await
        .unwrap();
    assert_eq!(alice.len(), 3);
    let created = s
        .audit(&q(|q| q.action = Some("user.create".into())))
        .await
        .unwrap();
    assert_eq!(created.len(), 4);
    let users = s
        .audit(&q(|q| q.action = Some("user.".into())))
        .await
        .unwrap();
    assert_eq!(users.len(), 5);
    let since = s.audit(&q(|q| q.since_ms = Some(1_003))).await.unwrap();
    assert_eq!(since.len(), 2);
}
