//! End-to-end tests: real `cargo` → the `cratedock` binary → a fake upstream on loopback.
//!
//! Test bodies run on the test thread (which may block on a cargo process) while the fake
//! upstream runs on the runtime's worker threads.

// Support modules are shared between test binaries: their `pub` items are for the others.
#![allow(unreachable_pub)]

mod support;

mod auth;
mod cache;
mod crash;
mod deploy;
mod disk_full;
mod faults;
mod http2_limits;
mod layers;
mod mirror;
mod mirroring;
mod operations;
mod policy;
mod private;
mod private_admin;
mod private_features;
mod private_owners;
mod publish_checks;
mod publish_crash;
mod recovery;
mod resources;
mod server;
mod tls;
