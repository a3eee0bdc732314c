//! `cargo search`: the exact name first, then names starting with the query, then names
//! containing it, then crates whose description or keywords mention it.
//!
//! The rule this module keeps: `total` counts every match, `max_version` is the highest
//! version not yanked (the highest of all when every version is yanked), and a crate whose
//! versions were all deleted is not found.

use serde::Serialize;

use super::line::{IndexLine, lines};
use super::{Private, RegistryError};
use crate::auth::Identity;
use crate::names::CrateName;
use crate::store::Permission;

/// One crate found.
#[derive(Debug, Serialize)]
pub(crate) struct Hit {
    pub(crate) name: String,
    pub(crate) max_version: String,
    pub(crate) description: Option<String>,
}

#[derive(Debug)]
pub(crate) struct SearchResult {
    pub(crate) hits: Vec<Hit>,
    pub(crate) total: usize,
}

/// The form names and queries are compared in.
fn fold(s: &str) -> String {
    s.to_lowercase().replace('_', "-")
}

/// How well a crate matches (lower is better); `None`: not at all.
fn rank(query: &str, name: &str, description: Option<&str>, keywords: &[String]) -> Option<u8> {
    if query.is_empty() {
        return Some(0);
    }
    let name = fold(name);
    if name == query {
        Some(0)
    } else if name.starts_with(query) {
        Some(1)
    } else if name.contains(query) {
        Some(2)
    } else if keywords.iter().any(|k| fold(k) == query) {
        Some(3)
    } else if description.is_some_and(|d| fold(d).contains(query))
        || keywords.iter().any(|k| fold(k).contains(query))
    {
        Some(4)
    } else {
        None
    }
}

impl Private {
    /// Crates matching `query`, at most `limit` of them; with `reader`, only crates it may
    /// read (a reader limited to some crates learns nothing of the others).
    pub(crate) async fn search(
        &self,
        query: &str,
        limit: usize,
        reader: Option<&Identity>,
    ) -> Result<SearchResult, RegistryError> {
        let now = crate::store::now_ms();
        let registry = self.name.as_str();
        let everything =
            reader.is_none_or(|id| id.allows_every_crate(Permission::Read, registry, now));
        let readable = |name: &str| {
            everything
                || CrateName::new(name).is_ok_and(|n| {
                    reader.is_some_and(|id| id.allows(Permission::Read, registry, Some(&n), now))
                })
        };
        let query = fold(query.trim());
        let mut found: Vec<(u8, String, Option<String>)> = self
            .meta
            .packages(self.name.as_str())
            .await?
            .into_iter()
            .filter(|r| r.versions.values().any(|v| v.deleted_ms.is_none()))
            .filter(|r| readable(&r.name))
            .filter_map(|r| {
                rank(&query, &r.name, r.description.as_deref(), &r.keywords)
                    .map(|rank| (rank, r.name, r.description))
            })
            .collect();
        found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let total = found.len();
        let mut hits = Vec::new();
        for (_, name, description) in found.into_iter().take(limit) {
            let Ok(krate) = CrateName::new(&name) else {
                continue;
            };
            let Some(doc) = self.index_file(&krate).await? else {
                continue;
            };
            let versions: Vec<(semver::Version, bool)> = lines(&doc.body)
                .filter_map(|l| serde_json::from_slice::<IndexLine>(l).ok())
                .filter_map(|l| Some((semver::Version::parse(&l.vers).ok()?, l.yanked)))
                .collect();
            let best = versions
                .iter()
                .filter(|(_, yanked)| !yanked)
                .map(|(v, _)| v)
                .max()
                .or_else(|| versions.iter().map(|(v, _)| v).max());
            if let Some(v) = best {
                hits.push(Hit {
                    name,
                    max_version: v.to_string(),
                    description,
                });
            }
        }
        Ok(SearchResult { hits, total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_rank_before_prefixes_and_descriptions() {
        let kw = vec!["parser".to_owned()];
        assert_eq!(rank("acme-log", "acme_log", None, &[]), Some(0));
        assert_eq!(rank("acme", "acme-log", None, &[]), Some(1));
        assert_eq!(rank("log", "acme-log", None, &[]), Some(2));
        assert_eq!(rank("parser", "x", None, &kw), Some(3));
        assert_eq!(
            rank("logging", "x", Some("Structured LOGGING"), &[]),
            Some(4)
        );
        assert_eq!(rank("nope", "x", Some("y"), &kw), None);
        assert_eq!(rank("", "x", None, &[]), Some(0));
    }
}
