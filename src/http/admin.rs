//! The admin API under `/-/admin/`: users, teams, membership, grants, tokens and the audit
//! log, as JSON. Every handler takes [`Admin`], so none runs without an admin's token.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::access::Admin;
use crate::app::App;
use crate::auth::admin::{
    AdminError, MAX_AUDIT_PAGE, NewGrant, NewTeam, NewToken, NewUser, TokenView, parse_duration,
};
use crate::names::shown;
use crate::store::{AuditQuery, Subject, UserChange, now_ms};

/// Admin request bodies are small; anything larger is refused before it is read whole.
const MAX_BODY: usize = 64 * 1024;

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(d) => Self::bad_request(d),
            AdminError::NotFound(d) => Self::not_found(d),
            AdminError::Conflict(d) => Self::conflict(d),
            AdminError::Store(e) => Self::internal(e.to_string()),
        }
    }
}

/// A JSON body, read up to [`MAX_BODY`] and parsed with the path of the field at fault.
pub(super) struct JsonBody<T>(pub(super) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| {
                ApiError::too_large(format!("the body is larger than {MAX_BODY} bytes"))
            })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de)
            .map(JsonBody)
            .map_err(|e| {
                ApiError::bad_request(format!("invalid JSON body: {}", shown(&e.to_string())))
            })
    }
}

pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => {
            let mut resp = (status, body).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

pub(super) async fn users(_: Admin, State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let mut users = app.auth.store().users().await.map_err(AdminError::from)?;
    users.sort_by(|a, b| a.login.cmp(&b.login));
    Ok(json(StatusCode::OK, &users))
}

pub(super) async fn create_user(
    admin: Admin,
    State(app): State<Arc<App>>,
    JsonBody(new): JsonBody<NewUser>,
) -> Result<Response, ApiError> {
    let user = app.auth.create_user(&admin.ctx, new).await?;
    Ok(json(StatusCode::CREATED, &user))
}

pub(super) async fn user(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(login): Path<String>,
) -> Result<Response, ApiError> {
    match app
        .auth
        .store()
        .user(&login)
        .await
        .map_err(AdminError::from)?
    {
        Some(u) => Ok(json(StatusCode::OK, &u)),
        None => Err(ApiError::not_found(format!(
            "no user `{}`",
            crate::names::shown(&login)
        ))),
    }
}

pub(super) async fn change_user(
    admin: Admin,
    State(app): State<Arc<App>>,
    Path(login): Path<String>,
    JsonBody(change): JsonBody<UserChange>,
) -> Result<Response, ApiError> {
    let user = app.auth.change_user(&admin.ctx, &login, change).await?;
    Ok(json(StatusCode::OK, &user))
}

pub(super) async fn teams(_: Admin, State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let teams = app.auth.store().teams().await.map_err(AdminError::from)?;
    Ok(json(StatusCode::OK, &teams))
}

pub(super) async fn create_team(
    admin: Admin,
    State(app): State<Arc<App>>,
    JsonBody(new): JsonBody<NewTeam>,
) -> Result<Response, ApiError> {
    let team = app.auth.create_team(&admin.ctx, new).await?;
    Ok(json(StatusCode::CREATED, &team))
}

pub(super) async fn add_member(
    admin: Admin,
    State(app): State<Arc<App>>,
    Path((team, login)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team = app.auth.set_member(&admin.ctx, &team, &login, true).await?;
    Ok(json(StatusCode::OK, &team))
}

pub(super) async fn remove_member(
    admin: Admin,
    State(app): State<Arc<App>>,
    Path((team, login)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let team = app
        .auth
        .set_member(&admin.ctx, &team, &login, false)
        .await?;
    Ok(json(StatusCode::OK, &team))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantFilter {
    user: Option<String>,
    team: Option<String>,
}

pub(super) async fn grants(
    _: Admin,
    State(app): State<Arc<App>>,
    filter: Result<Query<GrantFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
    let filter = query(filter)?;
    let mut grants = app.auth.store().grants().await.map_err(AdminError::from)?;
    grants.retain(|g| match &g.subject {
        Subject::User(u) => filter.team.is_none() && filter.user.as_ref().is_none_or(|f| f == u),
        Subject::Team(t) => filter.user.is_none() && filter.team.as_ref().is_none_or(|f| f == t),
    });
    grants.sort_by_key(|g| g.created_ms);
    Ok(json(StatusCode::OK, &grants))
}

pub(super) async fn add_grant(
    admin: Admin,
    State(app): State<Arc<App>>,
    JsonBody(new): JsonBody<NewGrant>,
) -> Result<Response, ApiError> {
    let grant = app.auth.add_grant(&admin.ctx, new).await?;
    Ok(json(StatusCode::CREATED, &grant))
}

pub(super) async fn remove_grant(
    admin: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let grant = app.auth.remove_grant(&admin.ctx, &id).await?;
    Ok(json(StatusCode::OK, &grant))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenFilter {
    user: Option<String>,
}

pub(super) async fn tokens(
    _: Admin,
    State(app): State<Arc<App>>,
    filter: Result<Query<TokenFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
    let filter = query(filter)?;
    let tokens = app.auth.tokens(filter.user.as_deref()).await?;
    Ok(json(StatusCode::OK, &tokens))
}

/// A new token: the only answer that holds it in clear.
#[derive(Serialize)]
struct CreatedToken {
    token: String,
    #[serde(flatten)]
    view: TokenView,
}

pub(super) async fn create_token(
    admin: Admin,
    State(app): State<Arc<App>>,
    JsonBody(new): JsonBody<NewToken>,
) -> Result<Response, ApiError> {
    let (record, token) = app.auth.create_token(&admin.ctx, new).await?;
    let created = CreatedToken {
        token: token.expose().to_owned(),
        view: record.into(),
    };
    let mut resp = json(StatusCode::CREATED, &created);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

pub(super) async fn revoke_token(
    admin: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let token = app.auth.revoke_token(&admin.ctx, &id).await?;
    Ok(json(StatusCode::OK, &TokenView::from(token)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    since: Option<String>,
    until: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    registry: Option<String>,
    #[serde(rename = "crate")]
    krate: Option<String>,
    before: Option<u64>,
    limit: Option<usize>,
    /// `json` (a page with a cursor) or `jsonl` (one record per line, for export).
    format: Option<String>,
}

/// A point in time: RFC 3339 (`2026-12-01T00:00:00Z`), or a duration ago (`24h`).
pub(crate) fn parse_time(s: &str) -> Result<u64, String> {
    if let Ok(ago) = parse_duration(s) {
        return Ok(now_ms().saturating_sub(ago));
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
        .map_err(|_| {
            let s: String = s.chars().take(40).collect();
            format!("`{s}` is neither an RFC 3339 time nor a duration like 24h")
        })
}

#[derive(Serialize)]
struct AuditPage {
    records: Vec<crate::store::AuditEntry>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<u64>,
}

pub(super) async fn audit(
    _: Admin,
    State(app): State<Arc<App>>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query(params)?;
    let time = |s: Option<String>| s.map(|s| parse_time(&s)).transpose();
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_AUDIT_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_AUDIT_PAGE}"
        )));
    }
    let q = AuditQuery {
        since_ms: time(p.since).map_err(ApiError::bad_request)?,
        until_ms: time(p.until).map_err(ApiError::bad_request)?,
        actor: p.actor,
        action: p.action,
        registry: p.registry,
        krate: p.krate,
        before_seq: p.before,
        limit,
    };
    let records = app.auth.audit_log(q).await?;
    let next_before = (records.len() == limit)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    match p.format.as_deref() {
        None | Some("json") => Ok(json(
            StatusCode::OK,
            &AuditPage {
                records,
                next_before,
            },
        )),
        Some("jsonl") => {
            let mut body = String::new();
            for r in &records {
                body.push_str(
                    &serde_json::to_string(r).map_err(|e| ApiError::internal(e.to_string()))?,
                );
                body.push('\n');
            }
            let mut resp = body.into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
            // The cursor of the next page, where the body has no room for it.
            if let Some(seq) = next_before {
                h.insert("x-next-before", HeaderValue::from(seq));
            }
            Ok(resp)
        }
        Some(other) => Err(ApiError::bad_request(format!(
            "format `{}` is not json or jsonl",
            other.chars().take(20).collect::<String>()
        ))),
    }
}
