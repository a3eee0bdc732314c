//! Generated crates: real `.crate` tarballs (gzip'd tar with `name-version/Cargo.toml` and a
//! library) and the index lines that describe them.

use std::io::Write;

use sha2::{Digest, Sha256};

#[derive(Clone, Debug)]
pub struct CrateSpec {
    pub name: String,
    pub version: String,
    /// Dependencies as (name, version requirement).
    pub deps: Vec<(String, String)>,
    /// Extra bytes of filler in the library, to make large crates.
    pub padding: usize,
    /// `license = "..."` in `[package]` (None: no such line).
    pub license: Option<String>,
    /// `license-file = "PATH"` in `[package]` and the file at PATH with the given contents.
    pub license_file: Option<(String, String)>,
    /// More files in the tarball, as (path under the package folder, contents).
    pub extra_files: Vec<(String, String)>,
    /// The index line says `"yanked":true`.
    pub yanked: bool,
}

impl CrateSpec {
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            deps: Vec::new(),
            padding: 0,
            license: None,
            license_file: None,
            extra_files: Vec::new(),
            yanked: false,
        }
    }

    pub fn dep(mut self, name: &str, req: &str) -> Self {
        self.deps.push((name.into(), req.into()));
        self
    }

    pub fn padding(mut self, bytes: usize) -> Self {
        self.padding = bytes;
        self
    }

    /// Declares the SPDX licence expression `expr` in the manifest.
    pub fn license(mut self, expr: &str) -> Self {
        self.license = Some(expr.into());
        self
    }

    /// Declares `license-file = "path"` and puts the file with `contents` in the tarball.
    pub fn license_file(mut self, path: &str, contents: &str) -> Self {
        self.license_file = Some((path.into(), contents.into()));
        self
    }

    /// Puts one more file in the tarball at `path` (relative to the package folder).
    pub fn file(mut self, path: &str, contents: &str) -> Self {
        self.extra_files.push((path.into(), contents.into()));
        self
    }

    /// Marks the version yanked in its index line.
    pub fn yanked(mut self) -> Self {
        self.yanked = true;
        self
    }
}

/// A generated crate: its tarball and the index line naming its checksum.
#[derive(Clone, Debug)]
pub struct Published {
    pub spec: CrateSpec,
    pub tarball: Vec<u8>,
    pub cksum: String,
    pub line: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn manifest(spec: &CrateSpec) -> String {
    let mut m = format!(
        "[package]\nname = \"{}\"\nversion = \"{}\"\nedition = \"2021\"\n",
        spec.name, spec.version
    );
    if let Some(expr) = &spec.license {
        m.push_str(&format!("license = {}\n", toml_string(expr)));
    }
    if let Some((path, _)) = &spec.license_file {
        m.push_str(&format!("license-file = {}\n", toml_string(path)));
    }
    m.push_str("\n[dependencies]\n");
    for (name, req) in &spec.deps {
        m.push_str(&format!("{name} = \"{req}\"\n"));
    }
    m
}

fn library(spec: &CrateSpec) -> String {
    let mut lib = format!(
        "pub fn id() -> &'static str {{ \"{} {}\" }}\n",
        spec.name, spec.version
    );
    if spec.padding > 0 {
        // Pseudo-random filler so gzip cannot shrink it away.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        lib.push_str("// ");
        for i in 0..spec.padding {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            lib.push((b'a' + (x % 26) as u8) as char);
            if i % 100 == 99 {
                lib.push_str("\n// ");
            }
        }
        lib.push('\n');
    }
    lib
}

pub fn build(spec: CrateSpec) -> Published {
    let root = format!("{}-{}", spec.name, spec.version);
    let mut tar = tar::Builder::new(Vec::new());
    let mut files = vec![
        (format!("{root}/Cargo.toml"), manifest(&spec)),
        (format!("{root}/src/lib.rs"), library(&spec)),
    ];
    files.extend(
        spec.license_file
            .iter()
            .chain(&spec.extra_files)
            .map(|(path, contents)| (format!("{root}/{path}"), contents.clone())),
    );
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, &path, contents.as_bytes())
            .expect("append to tar");
    }
    let tar = tar.into_inner().expect("finish tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip");
    let tarball = gz.finish().expect("gzip");
    let cksum = sha256_hex(&tarball);
    let deps: Vec<serde_json::Value> = spec
        .deps
        .iter()
        .map(|(name, req)| {
            serde_json::json!({
                "name": name, "req": req, "features": [], "optional": false,
                "default_features": true, "target": null, "kind": "normal"
            })
        })
        .collect();
    let line = serde_json::json!({
        "name": spec.name, "vers": spec.version, "deps": deps, "cksum": cksum,
        "features": {}, "yanked": spec.yanked
    })
    .to_string();
    Published {
        spec,
        tarball,
        cksum,
        line,
    }
}

/// The sparse-index path of a crate name.
pub fn index_path(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    match n.len() {
        1 => format!("1/{n}"),
        2 => format!("2/{n}"),
        3 => format!("3/{}/{n}", &n[..1]),
        _ => format!("{}/{}/{n}", &n[..2], &n[2..4]),
    }
}
