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
    #[error("`{0}` is not a crate-name glob: {1} (examples: `*`, `acme-*`, `serde`)")]
    Glob(String, &'static str),
    #[error(
        "`{0}` is not a valid {1}: use 1 to 64 ASCII letters, digits, `.`, `-` or `_`, starting with a letter or digit"
    )]
    Handle(String, &'static str),
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

impl serde::Serialize for RegistryName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RegistryName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
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

    /// The name as cargo compares names (lowercase, `_` as `-`): two crates whose names fold
    /// to the same string cannot both exist.
    pub fn canonical(&self) -> String {
        fold(&self.0)
    }

    /// Calls `f` with [`CrateName::canonical`] folded on the stack (no allocation: a lookup
    /// on a request's path).
    pub fn with_canonical<T>(&self, f: impl FnOnce(&str) -> T) -> T {
        let mut buf = [0u8; MAX_CRATE_NAME_LEN];
        let n = self.0.len();
        for (d, &b) in buf.iter_mut().zip(self.0.as_bytes()) {
            *d = fold_byte(b);
        }
        f(std::str::from_utf8(&buf[..n]).expect("a folded ASCII name"))
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// A crate-name pattern of a grant or a token: `*` (every crate), a name, or a name prefix
/// followed by one trailing `*` (`acme-*`). Matching follows cargo's name equivalence: ASCII
/// case and `-`/`_` do not matter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CrateGlob {
    original: String,
    /// The folded name or prefix (lowercase, `_` as `-`).
    folded: String,
    wildcard: bool,
}

/// The form two crate names share when cargo treats them as the same crate (lowercase, `_` as
/// `-`); for names that are not checked [`CrateName`]s, such as an advisory's package.
pub fn fold(name: &str) -> String {
    name.bytes().map(|b| fold_byte(b) as char).collect()
}

fn fold_byte(b: u8) -> u8 {
    match b {
        b'_' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

impl CrateGlob {
    pub fn new(s: &str) -> Result<Self, NameError> {
        let err = |why| Err(NameError::Glob(shown(s), why));
        if s.is_empty() {
            return err("it is empty");
        }
        if s.len() > MAX_CRATE_NAME_LEN + 1 {
            return err("it is longer than a crate name and a `*`");
        }
        let (stem, wildcard) = match s.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (s, false),
        };
        if stem.contains('*') {
            return err("only one `*`, at the end, is allowed");
        }
        if !stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return err("only ASCII letters, digits, `-`, `_` and a final `*` are allowed");
        }
        if !stem.is_empty() && !stem.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return err("a crate name starts with an ASCII letter or `_`");
        }
        Ok(Self {
            original: s.to_owned(),
            folded: fold(stem),
            wildcard,
        })
    }

    /// The glob that matches every crate.
    pub fn any() -> Self {
        Self::new("*").expect("`*` is a glob")
    }

    pub fn is_any(&self) -> bool {
        self.wildcard && self.folded.is_empty()
    }

    pub fn matches(&self, name: &CrateName) -> bool {
        let (n, f) = (name.as_str().as_bytes(), self.folded.as_bytes());
        let fits = if self.wildcard {
            n.len() >= f.len()
        } else {
            n.len() == f.len()
        };
        // Checked on every request of a registry with auth: no allocation.
        fits && n.iter().zip(f).all(|(&a, &b)| fold_byte(a) == b)
    }

    /// Whether some crate name matches both globs.
    pub fn overlaps(&self, other: &CrateGlob) -> bool {
        let (a, b) = (self.folded.as_str(), other.folded.as_str());
        match (self.wildcard, other.wildcard) {
            (false, false) => a == b,
            (true, false) => b.starts_with(a),
            (false, true) => a.starts_with(b),
            (true, true) => a.starts_with(b) || b.starts_with(a),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.original
    }
}

impl fmt::Display for CrateGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl serde::Serialize for CrateGlob {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.original)
    }
}

impl<'de> serde::Deserialize<'de> for CrateGlob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A user's login or a team's name: 1 to 64 ASCII letters, digits, `.`, `-` and `_`, starting
/// with a letter or a digit. It names a principal in logs and in the audit log, so it is short
/// and printable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(String);

impl Handle {
    /// `what` names the kind of handle in the error (`login`, `team name`).
    pub fn new(s: &str, what: &'static str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(NameError::Handle(shown(s), what))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names_the_way_cargo_compares_them() {
        let name = |s| CrateName::new(s).unwrap();
        let any = CrateGlob::new("*").unwrap();
        assert!(any.is_any() && any.matches(&name("serde")));
        let acme = CrateGlob::new("acme-*").unwrap();
        assert!(acme.matches(&name("acme-core")));
        assert!(acme.matches(&name("ACME_core")), "case and `_`/`-` fold");
        assert!(acme.matches(&name("acme-")));
        assert!(!acme.matches(&name("acme")));
        assert!(!acme.matches(&name("xacme-core")));
        let exact = CrateGlob::new("serde_json").unwrap();
        assert!(exact.matches(&name("serde-json")));
        assert!(!exact.matches(&name("serde_json5")));
        assert!(!exact.is_any());
        for bad in [
            "",
            "**",
            "a*b",
            "*a",
            "a/b*",
            "1abc*",
            "[ab]",
            "a?",
            &"x".repeat(70),
        ] {
            assert!(CrateGlob::new(bad).is_err(), "{bad:?} was accepted");
        }
        let glob = |s| CrateGlob::new(s).unwrap();
        assert!(acme.overlaps(&glob("ACME_x*")) && acme.overlaps(&glob("acme-core")));
        assert!(acme.overlaps(&any) && any.overlaps(&exact));
        assert!(!acme.overlaps(&exact) && !exact.overlaps(&glob("serde")));
        let json: CrateGlob = serde_json::from_str("\"acme-*\"").unwrap();
        assert_eq!(json, acme);
        assert!(serde_json::from_str::<CrateGlob>("\"a*b\"").is_err());
    }

    #[test]
    fn handles_are_short_and_printable() {
        assert!(Handle::new("alice", "login").is_ok());
        assert!(Handle::new("build.farm-2_x", "login").is_ok());
        for bad in ["", "-a", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(Handle::new(bad, "login").is_err(), "{bad:?} was accepted");
        }
    }

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
