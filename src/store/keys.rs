//! Typed keys: each knows where its blob lives and how its record is named, so no path or
//! storage key is ever built from an unchecked string.

use std::path::PathBuf;

use crate::index::{IndexFile, IndexRequest};
use crate::names::{CrateName, RegistryName, Version};

/// Key of a cached index file. The crate name is lower-case, as in the sparse layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexKey {
    pub registry: RegistryName,
    pub file: IndexFile,
}

impl IndexKey {
    pub fn config(registry: &RegistryName) -> Self {
        Self {
            registry: registry.clone(),
            file: IndexFile::Config,
        }
    }

    pub fn krate(registry: &RegistryName, name: &CrateName) -> Self {
        Self {
            registry: registry.clone(),
            file: IndexFile::Crate(name.lower()),
        }
    }

    /// Path relative to the registry's index root, as the sparse protocol spells it.
    pub fn index_path(&self) -> String {
        self.file.path()
    }

    /// Name of the bookkeeping record.
    pub(crate) fn record_key(&self) -> Vec<u8> {
        format!("{}/{}", self.registry, self.index_path()).into_bytes()
    }

    /// The key a record name stands for (`None`: not a name [`IndexKey::record_key`] makes).
    pub(crate) fn from_record_key(raw: &[u8]) -> Option<Self> {
        let (registry, path) = std::str::from_utf8(raw).ok()?.split_once('/')?;
        let file = match IndexRequest::parse(path).ok()? {
            IndexRequest::Config => IndexFile::Config,
            IndexRequest::File(name) => IndexFile::Crate(name),
        };
        Some(Self {
            registry: RegistryName::new(registry).ok()?,
            file,
        })
    }
}

/// Key of a cached `.crate` file. The name is lower-case; the version keeps build metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CrateKey {
    pub registry: RegistryName,
    pub name: CrateName,
    pub version: Version,
}

impl CrateKey {
    pub fn new(registry: &RegistryName, name: &CrateName, version: &Version) -> Self {
        Self {
            registry: registry.clone(),
            name: name.lower(),
            version: version.clone(),
        }
    }

    pub(crate) fn record_key(&self) -> Vec<u8> {
        format!("{}/{}/{}", self.registry, self.name, self.version).into_bytes()
    }

    /// The key a record name stands for (`None`: not a name [`CrateKey::record_key`] makes).
    pub(crate) fn from_record_key(raw: &[u8]) -> Option<Self> {
        let mut parts = std::str::from_utf8(raw).ok()?.splitn(3, '/');
        let (registry, name, version) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Self::new(
            &RegistryName::new(registry).ok()?,
            &CrateName::new(name).ok()?,
            &Version::new(version).ok()?,
        ))
    }
}

/// Key of a blob: the bytes of an index file or of a crate file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BlobKey {
    Index(IndexKey),
    Crate(CrateKey),
}

impl BlobKey {
    /// Path below the blob root: `index/{registry}/{index path}` or
    /// `crates/{registry}/{name}/{name}-{version}.crate`.
    pub fn rel_path(&self) -> PathBuf {
        match self {
            BlobKey::Index(k) => PathBuf::from("index")
                .join(k.registry.as_str())
                .join(k.index_path()),
            BlobKey::Crate(k) => PathBuf::from("crates")
                .join(k.registry.as_str())
                .join(k.name.as_str())
                .join(format!("{}-{}.crate", k.name, k.version)),
        }
    }
}

impl From<IndexKey> for BlobKey {
    fn from(k: IndexKey) -> Self {
        BlobKey::Index(k)
    }
}

impl From<CrateKey> for BlobKey {
    fn from(k: CrateKey) -> Self {
        BlobKey::Crate(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_read_back_as_the_keys_that_made_them() {
        let r = RegistryName::new("crates-io").unwrap();
        let n = CrateName::new("Serde").unwrap();
        for k in [IndexKey::config(&r), IndexKey::krate(&r, &n)] {
            assert_eq!(IndexKey::from_record_key(&k.record_key()), Some(k));
        }
        let c = CrateKey::new(&r, &n, &Version::new("1.0.0+build.5").unwrap());
        assert_eq!(CrateKey::from_record_key(&c.record_key()), Some(c));
        for bad in [
            &b"crates-io"[..],
            b"crates-io/se/rd/Serde",
            b"x/../..",
            b"\xff/a",
        ] {
            assert_eq!(IndexKey::from_record_key(bad), None);
        }
        assert_eq!(CrateKey::from_record_key(b"r/a/not-a-version"), None);
    }
}
