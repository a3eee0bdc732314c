//! The architecture rules of `../shared/docs/design.md`, checked on the source: nothing below
//! `http` names the web framework or the HTTP client, the parts import each other without a
//! cycle, and no source file outgrows review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The part a file belongs to: its folder below `src/`, or its name for a top-level file.
fn part_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The code of a file without its `#[cfg(test)]` module and its comments.
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn all_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    files
}

#[test]
fn nothing_below_http_names_the_web_framework_or_the_http_client() {
    // `net` serves connections (hyper) beside `http`; the upstream client is the one place
    // that knows reqwest.
    let allowed: &[(&str, &[&str])] = &[
        ("http", &["axum", "hyper", "reqwest"]),
        ("net", &["axum", "hyper"]),
        ("main", &["reqwest"]),
        ("cli", &["reqwest"]),
    ];
    for file in all_files() {
        let part = part_of(&file);
        let ok = allowed
            .iter()
            .find(|(p, _)| *p == part)
            .map_or(&[][..], |(_, names)| *names);
        let is_upstream_client = file.ends_with("upstream/client.rs");
        let code = code(&file);
        for name in ["axum", "hyper", "reqwest"] {
            if ok.contains(&name) || (is_upstream_client && name == "reqwest") {
                continue;
            }
            assert!(
                !code.contains(&format!("{name}::")) && !code.contains(&format!("{name}_")),
                "{} names {name}",
                file.display()
            );
        }
    }
}

#[test]
fn the_parts_import_each_other_without_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in all_files() {
        let part = part_of(&file);
        let code = code(&file);
        let deps = graph.entry(part.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` lists, and items of lib.rs itself, are not parts.
            if !name.is_empty() && name != part && src().join(format!("{name}.rs")).exists()
                || src().join(&name).is_dir() && name != part
            {
                deps.insert(name);
            }
        }
    }
    // Depth-first search for a cycle, reporting its path.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == node) {
            panic!("import cycle: {} -> {node}", path[at..].join(" -> "));
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_owned());
        for dep in graph.get(node).into_iter().flatten() {
            visit(dep, graph, path, done);
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
    assert!(
        graph["mirror"].contains("store"),
        "the graph was read: {graph:?}"
    );
}

#[test]
fn no_source_file_is_over_500_lines() {
    for file in all_files() {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        assert!(lines <= 500, "{} has {lines} lines", file.display());
    }
}
