//! HTTP: the route table, handlers, cargo-shaped errors and the observing middleware.
//!
//! The rule this module keeps: handlers are thin (parse into validated types, call the domain,
//! map the result), every error leaves as `{"errors":[{"detail":...}]}`, and nothing below this
//! module knows the web framework.

mod error;
mod mirror;
mod observe;
mod ops;

pub use error::ApiError;

use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get};

use crate::app::App;

/// Every route of cratedock, grouped by who calls it.
pub fn router(app: Arc<App>) -> Router {
    // Routes cargo uses.
    let cargo = Router::new()
        .route("/{registry}/index/config.json", get(mirror::config_json))
        .route("/{registry}/index/{*path}", get(mirror::index_file))
        .route(
            "/{registry}/api/v1/crates/{name}/{version}/download",
            get(mirror::download),
        )
        .route("/{registry}/api/v1/{*rest}", any(mirror::api_unsupported));
    // Operations.
    let ops = Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/health/live", get(ops::live))
        .route("/health/ready", get(ops::ready));
    cargo
        .merge(ops)
        .fallback(error::unknown_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            observe::observe,
        ))
        .with_state(app)
}
