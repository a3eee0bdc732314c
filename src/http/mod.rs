//! HTTP: the one route table, thin handlers, cargo-shaped errors and the observing middleware.
//!
//! The rule this module keeps: handlers are thin (parse into validated types, call the domain,
//! map the result), every error leaves as `{"errors":[{"detail":...}]}` through [`ApiError`],
//! and this is the only part of cratedock that knows the web framework.

mod access;
mod admin;
mod cache;
mod cargo;
mod error;
mod mirroring;
mod observe;
mod ops;
mod policy;
mod registry;

pub use error::ApiError;

use std::sync::Arc;

use axum::Router;
use axum::routing::{any, delete, get, patch, post, put};

use crate::app::App;

/// Every route of cratedock, grouped by who calls it.
pub fn router(app: Arc<App>) -> Router {
    // Routes cargo uses: the sparse index and downloads.
    let cargo = Router::new()
        .route("/{registry}/index/config.json", get(cargo::config_json))
        .route("/{registry}/index/{*path}", get(cargo::index_file))
        .route(
            "/{registry}/api/v1/crates/{name}/{version}/download",
            get(cargo::download),
        );
    // The Web API of private registries (publish, yank, owners, search); a mirror answers
    // that it has none.
    let registry_api = Router::new()
        .route("/{registry}/api/v1/crates/new", put(registry::publish))
        .route(
            "/{registry}/api/v1/crates/{name}/{version}/yank",
            delete(registry::yank),
        )
        .route(
            "/{registry}/api/v1/crates/{name}/{version}/unyank",
            put(registry::unyank),
        )
        .route(
            "/{registry}/api/v1/crates/{name}/owners",
            get(registry::owners)
                .put(registry::add_owners)
                .delete(registry::remove_owners),
        )
        .route("/{registry}/api/v1/crates", get(registry::search))
        .route("/{registry}/api/v1/{*rest}", any(cargo::api_unsupported));
    // Operations, and the page cargo's login hint points at.
    let ops = Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/health/live", get(ops::live))
        .route("/health/ready", get(ops::ready))
        .route("/-/login", get(ops::login))
        // `cargo login` tells users to find their token at `{api}/me`.
        .route("/{registry}/me", get(ops::login));
    // The admin API: every handler takes `access::Admin`.
    let admin = Router::new()
        .route("/-/admin/users", get(admin::users).post(admin::create_user))
        .route(
            "/-/admin/users/{login}",
            get(admin::user).merge(patch(admin::change_user)),
        )
        .route("/-/admin/teams", get(admin::teams).post(admin::create_team))
        .route(
            "/-/admin/teams/{team}/members/{login}",
            put(admin::add_member).merge(delete(admin::remove_member)),
        )
        .route("/-/admin/grants", get(admin::grants).post(admin::add_grant))
        .route("/-/admin/grants/{id}", delete(admin::remove_grant))
        .route(
            "/-/admin/tokens",
            get(admin::tokens).post(admin::create_token),
        )
        .route("/-/admin/tokens/{id}", delete(admin::revoke_token))
        .route("/-/admin/audit", get(admin::audit))
        .route(
            "/-/admin/registries/{registry}/crates/{name}/{version}",
            delete(registry::delete_version),
        )
        .route("/-/admin/cache", get(cache::stats))
        .route("/-/admin/cache/gc", post(cache::gc))
        .route("/-/admin/cache/verify", post(cache::verify))
        .route("/-/admin/jobs/{id}", get(cache::job))
        .route(
            "/-/admin/registries/{registry}/cache/{name}",
            delete(cache::purge),
        )
        .route(
            "/-/admin/registries/{registry}/cache/{name}/{version}",
            delete(cache::purge),
        )
        .route("/-/admin/registries/{registry}/pins", get(cache::pins))
        .route(
            "/-/admin/registries/{registry}/pins/{name}",
            put(cache::pin).merge(delete(cache::unpin)),
        )
        .route(
            "/-/admin/registries/{registry}/pins/{name}/{version}",
            put(cache::pin).merge(delete(cache::unpin)),
        )
        .route("/-/admin/jobs", get(mirroring::jobs))
        .route(
            "/-/admin/registries/{registry}/offline",
            get(mirroring::offline).put(mirroring::set_offline),
        )
        .route(
            "/-/admin/registries/{registry}/prefetch",
            post(mirroring::prefetch),
        )
        .route(
            "/-/admin/registries/{registry}/cached",
            get(mirroring::cached),
        )
        .route(
            "/-/admin/registries/{registry}/cached/crates/{name}/{version}",
            put(mirroring::import_crate).layer(axum::extract::DefaultBodyLimit::max(
                usize::try_from(app.config.cache.max_crate_bytes).unwrap_or(usize::MAX),
            )),
        )
        .route(
            "/-/admin/registries/{registry}/cached/index/{name}",
            put(mirroring::import_index)
                .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024)),
        )
        .route("/-/admin/advisories", get(policy::status))
        .route("/-/admin/advisories/sync", post(policy::sync))
        .route("/-/admin/advisories/report", get(policy::report))
        .route(
            "/-/admin/registries/{registry}/curated",
            get(policy::curated),
        )
        .route(
            "/-/admin/registries/{registry}/curated/{name}",
            put(policy::curate).merge(delete(policy::uncurate)),
        );
    cargo
        .merge(registry_api)
        .merge(ops)
        .merge(admin)
        .fallback(error::unknown_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            observe::observe,
        ))
        .with_state(app)
}
