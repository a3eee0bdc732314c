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

/// What a version's line needs for a policy: its version and whether it is yanked.
#[derive(Deserialize)]
struct VersionHead<'a> {
    #[serde(borrow)]
    vers: std::borrow::Cow<'a, str>,
    #[serde(default)]
    yanked: bool,
}

/// What a policy does with one version's line of an index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineEdit {
    Keep,
    /// Served with `"yanked":true`.
    Yank,
    Drop,
}

/// The versions of an index body, each with whether it is yanked (lines that do not parse are
/// skipped).
pub(crate) fn versions(body: &[u8]) -> Vec<(String, bool)> {
    body.split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<VersionHead<'_>>(line).ok())
        .map(|h| (h.vers.into_owned(), h.yanked))
        .collect()
}

/// An index body with each version's line edited by `edit(version, yanked)`; lines kept as
/// they are stay byte for byte. `None` when nothing changes.
pub(crate) fn edit_lines(body: &[u8], edit: impl Fn(&str, bool) -> LineEdit) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len());
    let mut changed = false;
    for line in body.split_inclusive(|&b| b == b'\n') {
        let what = serde_json::from_slice::<VersionHead<'_>>(line)
            .map(|h| edit(&h.vers, h.yanked))
            .unwrap_or(LineEdit::Keep);
        match what {
            LineEdit::Keep => out.extend_from_slice(line),
            LineEdit::Drop => changed = true,
            LineEdit::Yank => {
                let Ok(serde_json::Value::Object(mut map)) = serde_json::from_slice(line) else {
                    out.extend_from_slice(line);
                    continue;
                };
                if map.get("yanked") == Some(&serde_json::Value::Bool(true)) {
                    out.extend_from_slice(line);
                    continue;
                }
                map.insert("yanked".into(), serde_json::Value::Bool(true));
                let json = serde_json::to_vec(&map).expect("a JSON map serializes");
                out.extend_from_slice(&json);
                out.push(b'\n');
                changed = true;
            }
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::CrateName;

    #[test]
    fn lines_are_edited_and_the_others_kept_byte_for_byte() {
        let body = b"{\"name\":\"a\", \"vers\":\"1.0.0\",\"yanked\":false}\n{\"name\":\"a\",\"vers\":\"1.1.0\",\"yanked\":false}\n{\"name\":\"a\",\"vers\":\"2.0.0\",\"yanked\":false}\n";
        let edited = edit_lines(body, |v, _| match v {
            "1.1.0" => LineEdit::Yank,
            "2.0.0" => LineEdit::Drop,
            _ => LineEdit::Keep,
        })
        .unwrap();
        let text = String::from_utf8(edited).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            "{\"name\":\"a\", \"vers\":\"1.0.0\",\"yanked\":false}"
        );
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["yanked"], true);
        assert_eq!(second["vers"], "1.1.0");
        assert!(edit_lines(body, |_, _| LineEdit::Keep).is_none());
        assert_eq!(
            versions(body),
            [
                ("1.0.0".into(), false),
                ("1.1.0".into(), false),
                ("2.0.0".into(), false)
            ]
        );
    }

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
