//! The sparse index format: paths and prefixes, index lines, `config.json` and the `dl`
//! template. Used by the mirror now and by the private registry next.
//!
//! The rule this module keeps: it is pure (no I/O, no HTTP types); what comes from the
//! outside is checked here before anything is stored or served.

mod config_json;
mod lines;
mod path;

pub(crate) use config_json::{UpstreamConfig, download_url, served_config};
pub(crate) use lines::{
    IndexLine, LineEdit, edit_lines, etag_of, find_version, hex, validate_body, versions,
};
pub use path::IndexFile;
pub(crate) use path::{IndexRequest, prefix_of};
