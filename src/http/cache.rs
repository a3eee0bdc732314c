//! The admin API of the disk cache: statistics, eviction now, checks as jobs, purges and pins.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::access::Admin;
use super::admin::json;
use crate::app::App;
use crate::auth::admin::entry;
use crate::cache::check::Options;
use crate::names::{CrateName, RegistryName, Version};
use crate::store::Pin;

pub(super) fn mirror_name(app: &App, registry: &str) -> Result<RegistryName, ApiError> {
    if app.mirror_names().any(|m| m == registry) {
        return Ok(RegistryName::new(registry)?);
    }
    Err(ApiError::not_found(format!(
        "`{}` is not a mirror registry of this cratedock",
        crate::names::shown(registry)
    )))
}

/// A JSON body that may be left out (then every field takes its default).
pub(super) fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid JSON body: {}",
            crate::names::shown(&e.to_string())
        ))
    })
}

/// `GET /-/admin/cache`: sizes and counts by registry, hit ratios since start, the limit.
pub(super) async fn stats(_: Admin, State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let keeper = app.keeper();
    let mut registries = keeper.stats().await?;
    for name in app.mirror_names() {
        if !registries.iter().any(|r| r.registry == name) {
            registries.push(crate::cache::RegistryStats {
                registry: name.to_owned(),
                ..Default::default()
            });
        }
    }
    for r in &mut registries {
        let (hits, lookups) = app.metrics.cache_hits(&r.registry);
        (r.hits, r.lookups) = (Some(hits), Some(lookups));
    }
    let limit = keeper.limit();
    Ok(json(
        StatusCode::OK,
        &json!({
            "disk_bytes": keeper.disk_bytes(),
            "disk_max_bytes": limit.map(|l| l.max_bytes),
            "evict_above_bytes": limit.map(|l| l.high_bytes),
            "evict_down_to_bytes": limit.map(|l| l.low_bytes),
            "registries": registries,
        }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct GcBody {
    /// Evict down to this many bytes (default: the low watermark of `cache.disk_max_bytes`).
    target_bytes: Option<u64>,
}

/// `POST /-/admin/cache/gc`: evicts least recently used files down to a size now.
pub(super) async fn gc(
    admin: Admin,
    State(app): State<Arc<App>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let keeper = app.keeper();
    let body: GcBody = optional_json(&body)?;
    let target = match (body.target_bytes, keeper.limit()) {
        (Some(t), _) => t,
        (_, Some(limit)) => limit.low_bytes,
        (_, None) => {
            return Err(ApiError::bad_request(
                "cache.disk_max_bytes is 0 (no limit): give {\"target_bytes\": N}".to_owned(),
            ));
        }
    };
    let done = keeper.evict_to(target).await?;
    let mut e = entry(&admin.ctx, "cache.gc", None, &format!("{target} bytes"));
    e.outcome = format!("ok: {} files, {} bytes evicted", done.files, done.bytes);
    app.auth.store().append_audit(&e).await?;
    Ok(json(StatusCode::OK, &done))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyBody {
    #[serde(default)]
    repair: bool,
}

/// `POST /-/admin/cache/verify`: starts a check of every cached file's size and SHA-256 as a
/// job (`202` with its id); `GET /-/admin/jobs/{id}` reads it.
pub(super) async fn verify(
    admin: Admin,
    State(app): State<Arc<App>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let repair = optional_json::<VerifyBody>(&body)?.repair;
    let id = app.jobs.try_start("verify").map_err(|running| {
        ApiError::conflict(format!(
            "a check is running already: GET /-/admin/jobs/{running}"
        ))
    })?;
    let action = if repair {
        "cache.repair"
    } else {
        "cache.verify"
    };
    app.auth
        .store()
        .append_audit(&entry(&admin.ctx, action, None, &format!("job {id}")))
        .await?;
    let task = app.clone();
    tokio::spawn(async move {
        let progress = |done, total| task.jobs.progress(id, done, total);
        let opts = Options {
            repair,
            contents: true,
        };
        // A panic ends the job as failed instead of leaving it running for good.
        let result = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(
            task.check_cache(opts, &progress),
        ))
        .await;
        let result = match result {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("the check stopped unexpectedly (see the log)".to_owned()),
        };
        task.jobs.finish(id, result);
    });
    Ok(json(
        StatusCode::ACCEPTED,
        &json!({ "job": id, "status": format!("/-/admin/jobs/{id}") }),
    ))
}

/// `GET /-/admin/jobs/{id}`.
pub(super) async fn job(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    match app.jobs.get(id) {
        Some(job) => Ok(json(StatusCode::OK, &job)),
        None => Err(ApiError::not_found(format!("no job {id}"))),
    }
}

/// `DELETE /-/admin/registries/{registry}/cache/{name}[/{version}]`: removes one crate's
/// cached files from a mirror (they are fetched again when next asked for); audited.
pub(super) async fn purge(
    admin: Admin,
    State(app): State<Arc<App>>,
    Path(parts): Path<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let (registry, name, version) = target(&app, &parts)?;
    let removed = app
        .keeper()
        .purge(&registry, &name, version.as_ref())
        .await?;
    let pin = Pin::new(&registry, &name, version);
    let mut e = entry(
        &admin.ctx,
        "cache.purge",
        Some(registry.as_str()),
        &pin.spec(),
    );
    e.krate = Some(name.to_string());
    e.outcome = format!("ok: {} files removed", removed.len());
    app.auth.store().append_audit(&e).await?;
    let files: Vec<String> = removed
        .iter()
        .map(|k| k.rel_path().display().to_string())
        .collect();
    Ok(json(StatusCode::OK, &json!({ "removed": files })))
}

/// The registry, crate name and optional version of a purge or pin path.
fn target(
    app: &App,
    parts: &[(String, String)],
) -> Result<(RegistryName, CrateName, Option<Version>), ApiError> {
    let get = |key: &str| {
        parts
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let registry = mirror_name(app, get("registry").unwrap_or_default())?;
    let name = CrateName::new(get("name").unwrap_or_default())?.lower();
    let version = get("version").map(Version::new).transpose()?;
    Ok((registry, name, version))
}

/// `GET /-/admin/registries/{registry}/pins`.
pub(super) async fn pins(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(registry): Path<String>,
) -> Result<Response, ApiError> {
    let registry = mirror_name(&app, &registry)?;
    let pins: Vec<String> = app
        .keeper()
        .book()
        .pins()
        .await?
        .into_iter()
        .filter(|p| p.registry == registry)
        .map(|p| p.spec())
        .collect();
    Ok(json(StatusCode::OK, &json!({ "pins": pins })))
}

/// `PUT` and `DELETE /-/admin/registries/{registry}/pins/{name}[/{version}]`: files that
/// eviction never removes; audited.
pub(super) async fn pin(
    admin: Admin,
    State(app): State<Arc<App>>,
    Path(parts): Path<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    set_pin(admin, app, parts, true).await
}

pub(super) async fn unpin(
    admin: Admin,
    State(app): State<Arc<App>>,
    Path(parts): Path<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    set_pin(admin, app, parts, false).await
}

async fn set_pin(
    admin: Admin,
    app: Arc<App>,
    parts: Vec<(String, String)>,
    on: bool,
) -> Result<Response, ApiError> {
    let name = parts
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    // `prefix*`: every crate the pattern matches.
    let (registry, pin) = if name.ends_with('*') {
        if parts.iter().any(|(k, _)| k == "version") {
            return Err(ApiError::bad_request(
                "a pattern pin keeps every version; pin `NAME@VERSION` for one version",
            ));
        }
        let registry = mirror_name(
            &app,
            parts
                .iter()
                .find(|(k, _)| k == "registry")
                .map_or("", |(_, v)| v),
        )?;
        let pin = Pin::pattern(&registry, &crate::names::CrateGlob::new(name)?);
        (registry, pin)
    } else {
        let (registry, name, version) = target(&app, &parts)?;
        let pin = Pin::new(&registry, &name, version);
        (registry, pin)
    };
    let changed = app.keeper().book().set_pin(&pin, on).await?;
    let action = if on { "cache.pin" } else { "cache.unpin" };
    let mut e = entry(&admin.ctx, action, Some(registry.as_str()), &pin.spec());
    e.krate = Some(pin.name.to_string());
    app.auth.store().append_audit(&e).await?;
    Ok(json(
        StatusCode::OK,
        &json!({ "pin": pin.spec(), "changed": changed }),
    ))
}
