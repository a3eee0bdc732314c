//! Index lines: checking a body from the upstream, finding a version's checksum.

use serde::Deserialize;

use super::{IndexFile, UpstreamConfig};

/// What the body check reads of each line.
#[derive(Deserialize)]
struct LineHead<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    vers: std::borrow::Cow<'a, str>,
}

/// What a download needs from a line: the original-case name, the version and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct IndexLine {
    pub name: String,
    pub vers: String,
    pub cksum: String,
}

/// cratedock's strong ETag of a mirrored index body: the first 128 bits of its SHA-256, quoted.
pub(crate) fn etag_of(body: &[u8]) -> String {
    use sha2::Digest;
    format!("\"{}\"", &hex(&sha2::Sha256::digest(body))[..32])
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Checks that an index body is what was asked for, not an error page that came with a 200.
pub(crate) fn validate_body(file: &IndexFile, body: &[u8]) -> Result<(), String> {
    match file {
        IndexFile::Config => serde_json::from_slice::<UpstreamConfig>(body)
            .map(|_| ())
            .map_err(|e| format!("config.json is not JSON with a `dl` key: {e}")),
        IndexFile::Crate(name) => {
            // A registry answers "no such crate" with a 404, never with an empty file: an empty
            // 200 is a broken answer, and must not replace a good copy.
            if body.iter().all(u8::is_ascii_whitespace) {
                return Err("the index file is empty".to_owned());
            }
            for (i, line) in body.split(|&b| b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let head: LineHead<'_> = serde_json::from_slice(line)
                    .map_err(|e| format!("line {} is not an index entry: {e}", i + 1))?;
                if !head.name.eq_ignore_ascii_case(name.as_str()) {
                    return Err(format!(
                        "line {} names crate `{}`, not `{name}`",
                        i + 1,
                        head.name
                    ));
                }
                if head.vers.is_empty() {
                    return Err(format!("line {} has an empty version", i + 1));
                }
            }
            Ok(())
        }
    }
}

/// The line of `version` in an index body.
pub(crate) fn find_version(body: &[u8], version: &str) -> Option<IndexLine> {
    body.split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<IndexLine>(line).ok())
        .find(|l| l.vers == version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::CrateName;

    #[test]
    fn index_bodies_are_checked() {
        let file = IndexFile::Crate(CrateName::new("foo").unwrap());
        assert!(validate_body(&file, b"{\"name\":\"foo\",\"vers\":\"1.0.0\"}\n").is_ok());
        assert!(validate_body(&file, b"{\"name\":\"Foo\",\"vers\":\"1.0.0\"}").is_ok());
        assert!(validate_body(&file, b"<html><body>Error</body></html>").is_err());
        assert!(validate_body(&file, b"").is_err() && validate_body(&file, b" \n").is_err());
        assert!(validate_body(&file, b"{\"name\":\"bar\",\"vers\":\"1.0.0\"}").is_err());
        assert!(validate_body(&IndexFile::Config, b"{\"dl\":\"https://x\"}").is_ok());
        assert!(validate_body(&IndexFile::Config, b"<html>").is_err());
    }

    #[test]
    fn versions_are_found_by_their_exact_string() {
        let body = b"{\"name\":\"Foo\",\"vers\":\"1.0.0\",\"cksum\":\"aa\"}\n{\"name\":\"Foo\",\"vers\":\"1.0.0+m\",\"cksum\":\"bb\"}\n";
        assert_eq!(find_version(body, "1.0.0+m").unwrap().cksum, "bb");
        assert_eq!(find_version(body, "1.0.0").unwrap().name, "Foo");
        assert!(find_version(body, "2.0.0").is_none());
    }
}
