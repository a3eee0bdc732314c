//! Token auth with real cargo: a mirror with `auth_required`, tokens from the environment and
//! from `cargo login`, refusals that name their reason, changes that take effect on the next
//! request; the admin CLI end to end, the audit log, and bad admin input.

use std::process::Output;

use reqwest::Method;
use serde_json::Value;

use crate::support::*;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fake upstream with `serde 1.0.0` behind a mirror that requires auth.
async fn auth_mirror() -> (FakeUpstream, Cratedock) {
    one_crate_mirror("auth_required = true").await
}

/// `cargo fetch` in a fresh `CARGO_HOME` with `token` (if any) in the environment.
fn fetch_with(cd: &Cratedock, token: Option<&str>) -> Output {
    let p = CargoProject::authenticated(&cd.index_url(), &[("serde", "1")]);
    let env: Vec<(&str, &str)> = token
        .map(|t| ("CARGO_REGISTRIES_MIRROR_TOKEN", t))
        .into_iter()
        .collect();
    p.cargo_with(&["fetch"], &env, "")
}

/// Sets up user `alice` in team `devs` with `read` on the mirror, and returns a read-only
/// token of hers and its id.
fn alice_with_read(cd: &Cratedock) -> (String, String) {
    cd.admin(&["user", "add", "alice", "--name", "Alice Example"]);
    cd.admin(&["team", "add", "devs", "--member", "alice"]);
    cd.admin(&[
        "grant",
        "--team",
        "devs",
        "--permission",
        "read",
        "--registry",
        "crates-io",
    ]);
    let token = stdout(&cd.admin(&["token", "create", "--user", "alice", "--read-only"]))
        .trim()
        .to_owned();
    let list: Value = serde_json::from_str(&stdout(
        &cd.admin(&["token", "list", "--user", "alice", "--json"]),
    ))
    .unwrap();
    let id = list[0]["id"].as_str().unwrap().to_owned();
    (token, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_with_auth_required_serves_cargo_only_with_a_read_token() {
    let (_up, cd) = auth_mirror().await;
    let (token, _) = alice_with_read(&cd);
    assert!(token.starts_with("cratedock_"), "{token}");

    // No token: refused, and cargo says how to provide one.
    let out = fetch_with(&cd, None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no token found for `mirror`"),
        "{}",
        stderr(&out)
    );
    let page = cd.get("/-/login").await.text().await.unwrap();
    assert!(page.contains("cargo login --registry"), "{page}");

    // A token in the environment.
    let out = fetch_with(&cd, Some(&token));
    assert!(out.status.success(), "{}", stderr(&out));

    // A token stored by `cargo login --registry`.
    let p = CargoProject::authenticated(&cd.index_url(), &[("serde", "1")]);
    let login = p.cargo_with(&["login", "--registry", MIRROR], &[], &format!("{token}\n"));
    assert!(login.status.success(), "{}", stderr(&login));
    // On a terminal, `cargo login` names the page from the 401's challenge (cargo 1.95 shows
    // it there only, not in the errors of other commands).
    let p = CargoProject::authenticated(&cd.index_url(), &[]);
    match p.cargo_on_terminal(&["login", "--registry", MIRROR], &format!("{token}\n")) {
        Some(out) => {
            let shown = stdout(&out);
            let prompt = format!("please paste the token found on {}", cd.url("/-/login"));
            assert!(shown.contains(&prompt), "{shown}{}", stderr(&out));
        }
        None => eprintln!("no `script` command: cargo login's prompt is not checked"),
    }
    // The page cargo's login prompt names (on a terminal) comes from the 401's challenge.
    let r = cd.get("/crates-io/index/config.json").await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert_eq!(
        challenge,
        format!("Cargo login_url=\"{}\"", cd.url("/-/login"))
    );
    assert!(detail(r).await.contains("/-/login"));
    let out = p.cargo_with(&["fetch"], &[], "");
    assert!(out.status.success(), "{}", stderr(&out));

    // config.json says auth is required, so cargo keeps sending the token.
    let config = http_client()
        .get(cd.url("/crates-io/index/config.json"))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    let config: Value = serde_json::from_slice(&config.bytes().await.unwrap()).unwrap();
    assert_eq!(config["auth-required"], true);

    // The grant goes: the next request is refused, without a restart.
    let grants: Value = serde_json::from_str(&stdout(
        &cd.admin(&["grant", "list", "--team", "devs", "--json"]),
    ))
    .unwrap();
    let id = grants[0]["id"].as_str().unwrap();
    cd.admin(&["grant", "remove", id]);
    let out = fetch_with(&cd, Some(&token));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("lacks `read` on `crates-io`"),
        "{}",
        stderr(&out)
    );

    assert!(cd.metric("auth_decisions_total", "reason=\"ok\"").await >= 2.0);
    assert!(
        cd.metric("auth_decisions_total", "reason=\"no_token\"")
            .await
            >= 1.0
    );
    assert!(
        cd.metric("auth_decisions_total", "reason=\"insufficient\"")
            .await
            >= 1.0
    );
    assert!(!cd.log().contains(&token), "a token was logged");
    assert!(
        !cd.log().contains(&cd.admin_token()),
        "the admin token was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_expired_and_disabled_users_tokens_fail_with_the_reason_in_cargos_output() {
    let (_up, cd) = auth_mirror().await;
    let (token, id) = alice_with_read(&cd);
    assert!(fetch_with(&cd, Some(&token)).status.success());

    cd.admin(&["token", "revoke", &id]);
    let out = fetch_with(&cd, Some(&token));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("revoked on"), "{}", stderr(&out));

    let short = stdout(&cd.admin(&["token", "create", "--user", "alice", "--expires-in", "1s"]))
        .trim()
        .to_owned();
    wait_until("the short token expires", || async {
        let r = http_client()
            .get(cd.url("/crates-io/index/config.json"))
            .header("authorization", &short)
            .send()
            .await
            .unwrap();
        r.status() == 401 && detail(r).await.contains("expired")
    })
    .await;
    let out = fetch_with(&cd, Some(&short));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the token expired on"),
        "{}",
        stderr(&out)
    );

    let fresh = stdout(&cd.admin(&["token", "create", "--user", "alice"]))
        .trim()
        .to_owned();
    assert!(fetch_with(&cd, Some(&fresh)).status.success());
    cd.admin(&["user", "disable", "alice"]);
    let out = fetch_with(&cd, Some(&fresh));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("user `alice` is disabled"),
        "{}",
        stderr(&out)
    );

    // A well-formed token nobody issued: refused, and never echoed.
    let stranger = format!("cratedock_{}", "A".repeat(44));
    let r = http_client()
        .get(cd.url("/crates-io/index/se/rd/serde"))
        .header("authorization", format!("Bearer {stranger}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Cargo login_url=")
    );
    let body = r.text().await.unwrap();
    assert!(
        body.contains("unknown") && !body.contains(&stranger),
        "{body}"
    );
    let log = cd.log();
    for secret in [&token, &short, &fresh, &stranger] {
        assert!(!log.contains(secret.as_str()), "a token was logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_bootstraps_manages_accounts_and_the_audit_log_records_it_all() {
    let (_up, cd) = auth_mirror().await;
    // The first admin's token file: owner-only, and its path (not the token) in the log.
    let file = cd.admin_token_file();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let first = cd.admin_token();
    assert!(cd.log().contains("admin-token"));

    let (token, id) = alice_with_read(&cd);
    let table = stdout(&cd.admin(&["token", "list"]));
    assert!(table.starts_with("ID") && table.contains(&id), "{table}");
    assert!(!table.contains(&token));
    let users = stdout(&cd.admin(&["user", "list"]));
    assert!(
        users.contains("alice") && users.contains("Alice Example"),
        "{users}"
    );
    assert!(stdout(&cd.admin(&["team", "list"])).contains("alice"));
    cd.admin(&["token", "revoke", &id]);

    // A non-admin's token gets 403 from the admin API, and the CLI says why.
    let bob_file = cd.data_dir.join("bob-token");
    cd.admin(&["user", "add", "bob"]);
    let bob = stdout(&cd.admin(&["token", "create", "--user", "bob"]));
    std::fs::write(&bob_file, &bob).unwrap();
    let r = http_client()
        .post(cd.url("/-/admin/users"))
        .header("authorization", bob.trim())
        .body(r#"{"login":"mallory","admin":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(detail(r).await.contains("lacks `admin`"));
    let refused = cd.admin_command(&bob_file, &["user", "list"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("403"), "{}", stderr(&refused));

    // The audit log shows each change, who made it and from where.
    let audit: Value =
        serde_json::from_str(&stdout(&cd.admin(&["audit", "--json", "--limit", "50"]))).unwrap();
    let records = audit.as_array().unwrap();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for want in [
        "user.create",
        "team.create",
        "grant.add",
        "token.create",
        "token.revoke",
        "admin.post",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    let revoke = records
        .iter()
        .find(|r| r["action"] == "token.revoke")
        .unwrap();
    assert_eq!(revoke["actor"]["user"], "admin");
    assert_eq!(revoke["source"], "127.0.0.1");
    assert_eq!(revoke["outcome"], "ok");
    let denied = records
        .iter()
        .find(|r| r["action"] == "admin.post")
        .unwrap();
    assert_eq!(denied["actor"]["user"], "bob");
    assert!(denied["outcome"].as_str().unwrap().starts_with("denied"));
    let system = records
        .iter()
        .rev()
        .find(|r| r["action"] == "user.create")
        .unwrap();
    assert_eq!(
        system["actor"]["principal"], "cratedock",
        "the first admin is made by cratedock"
    );
    // Filters, the table, and an export as JSON lines.
    let grants_only = stdout(&cd.admin(&["audit", "--action", "grant.", "--jsonl"]));
    assert_eq!(grants_only.lines().count(), 1, "{grants_only}");
    let table = stdout(&cd.admin(&["audit", "--actor", "admin", "--since", "1h"]));
    assert!(
        table.starts_with("TIME") && table.contains("token.revoke"),
        "{table}"
    );

    // A restart does not rewrite the token file, and the first admin's token still works.
    let cd = cd.restart().await;
    assert_eq!(cd.admin_token(), first);
    cd.admin(&["user", "list"]);
    let log = cd.log();
    assert!(!log.contains(&first) && !log.contains(&token) && !log.contains(bob.trim()));
}

/// Users, teams, grants and tokens as the admin API lists them (without the tokens'
/// last-used times, which a background write may move at any time).
async fn state(cd: &Cratedock) -> Vec<Value> {
    let mut all = Vec::new();
    for path in [
        "/-/admin/users",
        "/-/admin/teams",
        "/-/admin/grants",
        "/-/admin/tokens",
    ] {
        let r = cd.admin_api(Method::GET, path, None).await;
        let mut v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        for item in v.as_array_mut().unwrap() {
            item.as_object_mut().unwrap().remove("last_used_ms");
        }
        all.push(v);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_input_is_refused_with_a_clear_message_and_changes_nothing() {
    let (_up, cd) = auth_mirror().await;
    cd.admin(&["user", "add", "alice"]);
    let before = state(&cd).await;
    let long = "x".repeat(300);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "/-/admin/users",
            "{\"login\": ".into(),
            400,
            "invalid JSON body",
        ),
        (
            "/-/admin/users",
            r#"{"login":"carol","role":"x"}"#.into(),
            400,
            "unknown field `role`",
        ),
        (
            "/-/admin/users",
            r#"{"login":"alice"}"#.into(),
            409,
            "a user `alice` exists",
        ),
        (
            "/-/admin/users",
            r#"{"login":"a b"}"#.into(),
            400,
            "not a valid login",
        ),
        (
            "/-/admin/users",
            format!(r#"{{"login":"carol","name":"{long}"}}"#),
            400,
            "longer than 200",
        ),
        (
            "/-/admin/users",
            r#"{"login":"carol","email":"nope"}"#.into(),
            400,
            "not an e-mail",
        ),
        (
            "/-/admin/teams",
            r#"{"name":"t","members":["ghost"]}"#.into(),
            404,
            "no user `ghost`",
        ),
        (
            "/-/admin/grants",
            r#"{"user":"alice","permission":"read","registry":"crates-io","crates":"a*b"}"#.into(),
            400,
            "not a crate-name glob",
        ),
        (
            "/-/admin/grants",
            r#"{"user":"ghost","permission":"read","registry":"crates-io"}"#.into(),
            404,
            "no user `ghost`",
        ),
        (
            "/-/admin/grants",
            r#"{"user":"alice","permission":"own","registry":"crates-io"}"#.into(),
            400,
            "permission",
        ),
        (
            "/-/admin/grants",
            r#"{"user":"alice","permission":"read","registry":"nowhere"}"#.into(),
            400,
            "no registry `nowhere`",
        ),
        (
            "/-/admin/tokens",
            r#"{"user":"alice","expires_in":"soon"}"#.into(),
            400,
            "not a duration",
        ),
        (
            "/-/admin/tokens",
            r#"{"user":"ghost"}"#.into(),
            404,
            "no user `ghost`",
        ),
        (
            "/-/admin/tokens",
            format!(r#"{{"user":"alice","name":"{long}"}}"#),
            400,
            "longer than 100",
        ),
    ];
    for (path, body, status, want) in cases {
        let r = cd.admin_api(Method::POST, path, Some(&body)).await;
        assert_eq!(r.status().as_u16(), status, "{path} {body}");
        let d = detail(r).await;
        assert!(d.contains(want), "{path} {body}: {d}");
    }
    let r = cd
        .admin_api(
            Method::PATCH,
            "/-/admin/users/admin",
            Some(r#"{"disabled":true}"#),
        )
        .await;
    assert_eq!(r.status(), 409);
    assert!(detail(r).await.contains("only enabled admin"));
    let r = cd
        .admin_api(Method::PATCH, "/-/admin/users/alice", Some("{}"))
        .await;
    assert_eq!(r.status(), 400);
    assert!(detail(r).await.contains("nothing to change"));
    assert_eq!(
        state(&cd).await,
        before,
        "a refused request changed something"
    );
    cd.admin(&["team", "add", "devs"]);
    let before = state(&cd).await;
    let r = cd
        .admin_api(Method::DELETE, "/-/admin/teams/devs/members/alice", None)
        .await;
    assert_eq!(r.status(), 404);
    assert!(detail(r).await.contains("not a member"));
    let r = cd
        .admin_api(Method::DELETE, "/-/admin/tokens/nope", None)
        .await;
    assert_eq!(r.status(), 404);
    let r = cd
        .admin_api(Method::POST, "/-/admin/users", Some(&"x".repeat(100_000)))
        .await;
    assert_eq!(r.status(), 413);
    let r = cd
        .admin_api(Method::GET, "/-/admin/audit?since=yesterday", None)
        .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        state(&cd).await,
        before,
        "a refused request changed something"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crate_scoped_grants_and_tokens_reach_only_their_crates_and_the_web_api_answers_403() {
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("serde", "1.0.0")));
    up.publish(build(CrateSpec::new("acme-core", "1.0.0")));
    let cd = Cratedock::start(&mirror_config(&up.index_url(), "auth_required = true")).await;
    let get = |path: &'static str, token: String| {
        let url = cd.url(path);
        async move {
            let r = http_client()
                .get(url)
                .header("authorization", token)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = String::from_utf8_lossy(&r.bytes().await.unwrap()).into_owned();
            (status, body)
        }
    };
    // A grant on one crate.
    cd.admin(&["user", "add", "carol"]);
    cd.admin(&[
        "grant",
        "--user",
        "carol",
        "--permission",
        "read",
        "--registry",
        "crates-io",
        "--crates",
        "serde",
    ]);
    let carol = stdout(&cd.admin(&["token", "create", "--user", "carol"]))
        .trim()
        .to_owned();
    assert_eq!(
        get("/crates-io/index/config.json", carol.clone()).await.0,
        200
    );
    assert_eq!(
        get("/crates-io/index/se/rd/serde", carol.clone()).await.0,
        200
    );
    let serde_dl = "/crates-io/api/v1/crates/serde/1.0.0/download";
    let acme_dl = "/crates-io/api/v1/crates/acme-core/1.0.0/download";
    assert_eq!(get(serde_dl, carol.clone()).await.0, 200);
    // What needs a token is not for shared caches (a corporate proxy would hand it to anyone).
    for path in ["/crates-io/index/se/rd/serde", serde_dl] {
        let r = http_client()
            .get(cd.url(path))
            .header("authorization", &carol)
            .send()
            .await
            .unwrap();
        let cc = r.headers()["cache-control"].to_str().unwrap().to_owned();
        assert!(cc.starts_with("private, max-age="), "{path}: {cc}");
    }
    let (status, body) = get("/crates-io/index/ac/me/acme-core", carol.clone()).await;
    assert_eq!(status, 401);
    assert!(
        body.contains("lacks `read` on `crates-io/acme-core`"),
        "{body}"
    );
    assert_eq!(get(acme_dl, carol.clone()).await.0, 401);

    // A token narrowed to `acme-*` of a user who may read everything.
    cd.admin(&["user", "add", "dave"]);
    cd.admin(&[
        "grant",
        "--user",
        "dave",
        "--permission",
        "read",
        "--registry",
        "*",
    ]);
    let r = cd
        .admin_api(
            Method::POST,
            "/-/admin/tokens",
            Some(r#"{"user":"dave","scopes":[{"permission":"read","crates":"acme-*"}]}"#),
        )
        .await;
    assert_eq!(r.status(), 201);
    let created: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let dave = created["token"].as_str().unwrap().to_owned();
    assert_eq!(get(acme_dl, dave.clone()).await.0, 200);
    let (status, body) = get(serde_dl, dave.clone()).await;
    assert_eq!(status, 401);
    assert!(body.contains("lacks `read` on `crates-io/serde`"), "{body}");

    // A percent-encoded name is the same registry and the same crate to the check.
    assert_eq!(cd.get("/crates%2Dio/index/se/rd/serde").await.status(), 401);
    let (status, body) = get("/crates%2Dio/index/ac/me/acme%2Dcore", carol.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        get("/crates%2Dio/index/se/rd/serde", carol.clone()).await.0,
        200
    );

    // The Web API: no token 401, not a token 401, a refused token 403.
    let search = "/crates-io/api/v1/crates?q=serde";
    let r = cd.get(search).await;
    assert_eq!(r.status(), 401);
    assert_eq!(get(search, format!("Basic {dave}")).await.0, 401);
    let stranger = format!("cratedock_{}", "b".repeat(44));
    let (status, body) = get(search, stranger.clone()).await;
    assert_eq!(status, 403);
    assert!(
        body.contains("unknown") && !body.contains(&stranger),
        "{body}"
    );
    let (status, body) = get(search, carol.clone()).await;
    assert_eq!(status, 404, "a mirror has no search: {body}");
    assert!(body.contains("is a mirror"), "{body}");
}
