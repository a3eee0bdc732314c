//! cratedock: a caching pull-through proxy and private registry for Cargo.
//!
//! Layering, top to bottom: `http` (routes, errors, middleware) → `mirror` (the pull-through
//! path) → `store` / `upstream` / `index` (bytes and bookkeeping, the upstream client, the
//! sparse format). `net` (listeners, TLS, h2c, PEM) sits beside `http` and hands it a
//! `ConnInfo`; `cache` keeps the disk cache within its limit and in agreement with its
//! bookkeeping; `config`, `names` and `metrics` are shared by all. The [`app::App`] value owns
//! every part and hands it down; nothing is global.

pub mod app;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod index;
pub mod metrics;
pub mod names;
pub mod net;
pub mod store;

pub(crate) mod mirror;
pub(crate) mod policy;
pub(crate) mod registry;
pub(crate) mod tarball;
pub(crate) mod upstream;

use std::sync::Arc;

pub use upstream::system_roots;

/// The one rustls crypto provider of the process (ring), for the upstream clients and the TLS
/// listener alike.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
