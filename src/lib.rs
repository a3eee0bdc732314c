//! cratedock: a caching pull-through proxy and private registry for Cargo.
//!
//! Layering, top to bottom: `http` (routes, errors, middleware) → `proxy` (the pull-through
//! path) → `store` / `upstream` (bytes, bookkeeping, the upstream client). The [`app::App`]
//! value owns every part and hands it down; nothing is global.

pub mod app;
pub mod coalesce;
pub mod config;
pub mod download;
pub mod h2c;
pub mod http;
pub mod metrics;
pub mod names;
pub mod proxy;
pub mod server;
pub mod store;
pub mod tls;
pub mod upstream;

use std::sync::Arc;

/// The one rustls crypto provider of the process (ring), for the upstream clients and, later,
/// the TLS listener alike.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
