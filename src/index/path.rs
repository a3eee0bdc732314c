//! Sparse-index paths: `1/a`, `2/ab`, `3/s/syn`, `se/rd/serde`.

use crate::names::{CrateName, NameError, shown};

/// The directory prefix of the sparse layout for `name`, in the name's own case (`{prefix}`).
pub(crate) fn prefix_of(name: &str) -> String {
    // Crate names are ASCII (checked by `CrateName::new`), so byte slicing is on char
    // boundaries; other callers pass the same names.
    match name.len() {
        0 => String::new(),
        1 => "1".to_owned(),
        2 => "2".to_owned(),
        3 => format!("3/{}", &name[..1]),
        _ => format!("{}/{}", &name[..2], &name[2..4]),
    }
}

/// The sparse-index path of a crate, from its lower-cased name (`se/rd/serde`).
fn index_path(name: &CrateName) -> String {
    let n = name.as_str().to_ascii_lowercase();
    let mut out = prefix_of(&n);
    out.push('/');
    out.push_str(&n);
    out
}

/// Which file of an index: `config.json` or one crate's file (named in lower case).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexFile {
    Config,
    Crate(CrateName),
}

impl IndexFile {
    /// Its path below the index root (`config.json`, `se/rd/serde`).
    pub fn path(&self) -> String {
        match self {
            IndexFile::Config => "config.json".to_owned(),
            IndexFile::Crate(name) => index_path(name),
        }
    }
}

/// What a request below `/{registry}/index/` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IndexRequest {
    /// `config.json`
    Config,
    /// The index file of one crate; the name is lower-case.
    File(CrateName),
}

impl IndexRequest {
    /// Parses the path below the index root. Cargo always requests lower-case paths; anything
    /// else, a prefix that does not match the name, or extra segments, is refused.
    pub(crate) fn parse(path: &str) -> Result<Self, NameError> {
        if path == "config.json" {
            return Ok(Self::Config);
        }
        let bad = || NameError::IndexPath(shown(path));
        let (prefix, name) = path.rsplit_once('/').ok_or_else(bad)?;
        let name = CrateName::new(name)?;
        if name.as_str().bytes().any(|b| b.is_ascii_uppercase())
            || prefix_of(name.as_str()) != prefix
        {
            return Err(bad());
        }
        Ok(Self::File(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_paths_follow_the_sparse_layout() {
        for (name, path) in [
            ("a", "1/a"),
            ("ab", "2/ab"),
            ("syn", "3/s/syn"),
            ("serde", "se/rd/serde"),
            ("MyCrate", "my/cr/mycrate"),
        ] {
            assert_eq!(index_path(&CrateName::new(name).unwrap()), path);
        }
        assert_eq!(prefix_of("aBcDe"), "aB/cD");
    }

    #[test]
    fn index_requests_are_parsed_and_checked() {
        assert_eq!(
            IndexRequest::parse("config.json").unwrap(),
            IndexRequest::Config
        );
        assert_eq!(
            IndexRequest::parse("se/rd/serde").unwrap(),
            IndexRequest::File(CrateName::new("serde").unwrap())
        );
        assert_eq!(
            IndexRequest::parse("3/s/syn").unwrap(),
            IndexRequest::File(CrateName::new("syn").unwrap())
        );
        for bad in [
            "serde",
            "se/rd/Serde",
            "xx/rd/serde",
            "se/rd/../serde",
            "../../etc/passwd",
            "3/s/s/syn",
            "1/ab",
            "se/rd/ser\0de",
            "",
            "/",
        ] {
            assert!(IndexRequest::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
