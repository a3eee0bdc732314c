//! A tiny RustSec advisory database written in code: `crates/NAME/ID.md` files with the TOML
//! front matter of rustsec/advisory-db, in a folder of their own, and `.tar.gz` archives of
//! such a folder under one top folder, as GitHub's archive of the repository has them.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::publish::{Entry, gzip, tar_of};

/// The top folder of the archives (GitHub's archive of the `main` branch).
pub const TOP: &str = "advisory-db-main";

/// One advisory, written as `crates/{package}/{id}.md`.
#[derive(Clone, Debug)]
pub struct Advisory {
    pub id: String,
    pub package: String,
    pub title: String,
    pub date: String,
    /// Requirements as written in the file, e.g. `">= 1.0.1"`.
    pub patched: Vec<String>,
    pub unaffected: Vec<String>,
    /// `"unmaintained"`, `"unsound"` or `"notice"`; none for a vulnerability.
    pub informational: Option<String>,
    /// The date the advisory was withdrawn.
    pub withdrawn: Option<String>,
    pub url: Option<String>,
}

/// `s` as a TOML basic string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| quoted(i)).collect();
    format!("[{}]", items.join(", "))
}

impl Advisory {
    /// A vulnerability in every version of `package` (until patched versions are given).
    pub fn new(id: &str, package: &str) -> Self {
        Self {
            id: id.into(),
            package: package.into(),
            title: format!("{package} has a flaw"),
            date: "2024-01-01".into(),
            patched: Vec::new(),
            unaffected: Vec::new(),
            informational: None,
            withdrawn: None,
            url: None,
        }
    }

    pub fn title(mut self, title: &str) -> Self {
        self.title = title.into();
        self
    }

    /// Adds a patched requirement (e.g. `">= 1.0.1"`).
    pub fn patched(mut self, req: &str) -> Self {
        self.patched.push(req.into());
        self
    }

    /// Adds an unaffected requirement (e.g. `"< 1.1.0"`).
    pub fn unaffected(mut self, req: &str) -> Self {
        self.unaffected.push(req.into());
        self
    }

    /// Makes it informational of `kind` (`unmaintained`, `unsound`, `notice`).
    pub fn informational(mut self, kind: &str) -> Self {
        self.informational = Some(kind.into());
        self
    }

    /// Marks it withdrawn on `date` (`YYYY-MM-DD`).
    pub fn withdrawn(mut self, date: &str) -> Self {
        self.withdrawn = Some(date.into());
        self
    }

    pub fn url(mut self, url: &str) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Its path in the database: `crates/{package}/{id}.md`.
    pub fn file_path(&self) -> String {
        format!("crates/{}/{}.md", self.package, self.id)
    }

    /// The file's text: the TOML front matter in a fenced block, the title, a description.
    pub fn markdown(&self) -> String {
        let mut front = format!(
            "[advisory]\nid = {}\npackage = {}\ndate = {}\n",
            quoted(&self.id),
            quoted(&self.package),
            quoted(&self.date)
        );
        if let Some(url) = &self.url {
            front.push_str(&format!("url = {}\n", quoted(url)));
        }
        if let Some(kind) = &self.informational {
            front.push_str(&format!("informational = {}\n", quoted(kind)));
        }
        if let Some(date) = &self.withdrawn {
            front.push_str(&format!("withdrawn = {}\n", quoted(date)));
        }
        front.push_str(&format!(
            "\n[versions]\npatched = {}\n",
            array(&self.patched)
        ));
        if !self.unaffected.is_empty() {
            front.push_str(&format!("unaffected = {}\n", array(&self.unaffected)));
        }
        format!(
            "```toml\n{front}```\n\n# {}\n\nA generated advisory for the tests of cratedock: {} in `{}`.\n",
            self.title, self.id, self.package
        )
    }
}

/// An advisory database in a temporary folder (`crates/` always exists).
pub struct AdvisoryDb {
    dir: tempfile::TempDir,
}

impl AdvisoryDb {
    pub fn new(advisories: &[Advisory]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("crates")).unwrap();
        std::fs::write(
            dir.path().join("README.md"),
            "# A generated RustSec advisory database\n",
        )
        .unwrap();
        let db = Self { dir };
        for a in advisories {
            db.add(a);
        }
        db
    }

    /// The database's root folder (the one holding `crates/`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes (or rewrites) one advisory's file.
    pub fn add(&self, advisory: &Advisory) {
        let path = self.path().join(advisory.file_path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, advisory.markdown()).unwrap();
    }

    /// The global `[advisories]` section that loads this folder (TOML, ends with a newline).
    pub fn config(&self) -> String {
        format!(
            "[advisories]\npath = {}\n",
            quoted(&self.path().display().to_string())
        )
    }

    /// Every file of the database, relative to its root, sorted (so archives are reproducible).
    fn files(&self) -> Vec<(String, Vec<u8>)> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for path in entries {
                if path.is_dir() {
                    walk(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap();
                    let rel = rel.to_str().expect("generated paths are UTF-8").to_owned();
                    out.push((rel, std::fs::read(&path).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), self.path(), &mut out);
        out
    }

    /// A `.tar.gz` of the database under [`TOP`]`/`, with an entry for each folder as well
    /// (`TOP/`, `TOP/crates/`, ...), like GitHub's archive of the repository.
    pub fn archive(&self) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut folders = std::collections::BTreeSet::new();
        for (rel, bytes) in self.files() {
            // The folders above the file, outermost first.
            let mut above = String::from(TOP);
            let parts: Vec<&str> = rel.split('/').collect();
            let mut chain = vec![format!("{above}/")];
            for part in &parts[..parts.len() - 1] {
                above = format!("{above}/{part}");
                chain.push(format!("{above}/"));
            }
            for folder in chain {
                if folders.insert(folder.clone()) {
                    let mut header = tar::Header::new_gnu();
                    header.set_size(0);
                    header.set_mode(0o755);
                    header.set_mtime(1_700_000_000);
                    header.set_entry_type(tar::EntryType::Directory);
                    tar.append_data(&mut header, &folder, std::io::empty())
                        .expect("append a folder");
                }
            }
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(1_700_000_000);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, format!("{TOP}/{rel}"), bytes.as_slice())
                .expect("append a file");
        }
        let tar = tar.into_inner().expect("finish the tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).expect("gzip");
        gz.finish().expect("gzip")
    }

    /// A `.tar.gz` of the database's files under [`TOP`]`/` followed by the raw `extra`
    /// entries, which may be what a safe archive never holds (a `..` path, a symlink).
    pub fn archive_with(&self, extra: &[Entry]) -> Vec<u8> {
        let mut entries: Vec<Entry> = self
            .files()
            .into_iter()
            .map(|(rel, bytes)| Entry::file(format!("{TOP}/{rel}"), bytes))
            .collect();
        entries.extend_from_slice(extra);
        gzip(&tar_of(&entries))
    }
}
