//! Validated names that arrive from the outside: registry names, crate names and versions
//! (sparse-index paths are in [`crate::index`]).
//!
//! The rule this module keeps: a value of these types is valid by construction, so code below
//! the HTTP edge never re-checks it and can build file paths from it without escaping.

use std::fmt;
use std::sync::Arc;

/// Longest crate name accepted (crates.io's `MAX_NAME_LENGTH`).
pub const MAX_CRATE_NAME_LEN: usize = 64;
/// Longest version string accepted (crates.io's `MAX_VERSION_LENGTH`).
pub const MAX_VERSION_LEN: usize = 150;
/// Longest registry name accepted in the configuration.
pub const MAX_REGISTRY_NAME_LEN: usize = 64;

/// Path segments that the operational routes own; a registry cannot take them as its name.
const RESERVED_REGISTRY_NAMES: &[&str] = &["metrics", "health", "-", "api", "index"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("crate name `{0}` is invalid: {1}")]
    Crate(String, &'static str),
    #[error("version `{0}` is invalid: {1}")]
    Version(String, String),
    #[error("registry name `{0}` is invalid: {1}")]
    Registry(String, &'static str),
    #[error("`{0}` is not a sparse index path (expected e.g. `se/rd/serde`, `3/s/syn`, `1/a`)")]
    IndexPath(String),
}

/// Shortens untrusted input before it is echoed back in an error message.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = s.chars().take(MAX).flat_map(char::escape_default).collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

/// The name of a configured registry; it is the first path segment of all its routes. Shared,
/// so that the keys built for every request copy a pointer, not the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryName(Arc<str>);

impl RegistryName {
    pub fn new(s: &str) -> Result<Self, NameError> {
        let err = |why| Err(NameError::Registry(shown(s), why));
        if s.is_empty() || s.len() > MAX_REGISTRY_NAME_LEN {
            return err("it must be 1 to 64 characters long");
        }
        if !s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return err("it must start with a lowercase ASCII letter or a digit");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return err("only lowercase ASCII letters, digits, `-` and `_` are allowed");
        }
        if RESERVED_REGISTRY_NAMES.contains(&s) {
            return err("it collides with an operational path");
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegistryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A crate name as it appears in requests: ASCII letters, digits, `-` and `_`, starting with a
/// letter or `_`, at most 64 characters. Case is kept; [`CrateName::lower`] gives the form that
/// index paths and files on disk use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CrateName(String);

impl CrateName {
    pub fn new(s: &str) -> Result<Self, NameError> {
        let err = |why| Err(NameError::Crate(shown(s), why));
        if s.is_empty() {
            return err("it is empty");
        }
        if s.len() > MAX_CRATE_NAME_LEN {
            return err("it is longer than 64 characters");
        }
        if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return err("it must start with an ASCII letter or `_`");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return err("only ASCII letters, digits, `-` and `_` are allowed");
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The lower-cased name: the key of the index file and of the files on disk.
    pub fn lower(&self) -> CrateName {
        CrateName(self.0.to_ascii_lowercase())
    }
}

impl fmt::Display for CrateName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A crate version: strict SemVer, at most 150 characters. The original string is kept because
/// it is what the index line, the download URL and the file name use (build metadata included).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    original: String,
}

impl Version {
    pub fn new(s: &str) -> Result<Self, NameError> {
        if s.len() > MAX_VERSION_LEN {
            return Err(NameError::Version(
                shown(s),
                "it is longer than 150 characters".into(),
            ));
        }
        semver::Version::parse(s).map_err(|e| NameError::Version(shown(s), e.to_string()))?;
        Ok(Self {
            original: s.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.original
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_are_restricted() {
        assert!(CrateName::new("serde_json").is_ok());
        assert!(CrateName::new("_private").is_ok());
        assert!(CrateName::new("Inflector").is_ok());
        for bad in ["", "1abc", "-x", "a/b", "..", "a b", "é", &"x".repeat(65)] {
            assert!(CrateName::new(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn versions_must_be_strict_semver() {
        assert_eq!(Version::new("1.0.0+meta").unwrap().as_str(), "1.0.0+meta");
        assert!(Version::new("1.0.0-alpha.1").is_ok());
        for bad in [
            "1.0",
            "latest",
            "1.0.0/../x",
            "",
            &format!("1.0.0-{}", "a".repeat(150)),
        ] {
            assert!(Version::new(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn registry_names_cannot_shadow_operational_paths() {
        assert!(RegistryName::new("crates-io").is_ok());
        for bad in ["metrics", "health", "-", "Crates", "a/b", ""] {
            assert!(RegistryName::new(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn error_messages_do_not_echo_huge_input() {
        let long = "x".repeat(10_000);
        let msg = CrateName::new(&long).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
    }
}
