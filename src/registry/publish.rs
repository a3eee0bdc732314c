//! `cargo publish`: the checks in order (metadata, name, permission, tarball, manifest,
//! licence, dependencies, ownership or the dependency-confusion guard for a new name, version
//! uniqueness), then the writes in order (a new crate's record, the `.crate` file, the index
//! line, the version's record with its audit entry).

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::checks::{self, Source, Sources};
use super::line::{IndexDep, IndexLine, lines};
use super::manifest::{self, Manifest};
use super::{Caller, Private, RegistryError, Upload};
use crate::auth::admin::entry;
use crate::auth::{Denial, rfc3339};
use crate::mirror::Lookup;
use crate::names::{CrateName, Version};
use crate::store::{Owner, PackageChange, PackageRecord, Permission, VersionRecord, now_ms};
use crate::tarball;

/// A version's line as it is recorded.
struct Recorded<'a> {
    cksum: &'a str,
    size: u64,
    published_ms: u64,
    /// The line was written by an earlier publish that a crash cut off before its record.
    completes_interrupted: bool,
}

/// What cargo is told after a publish: warnings it prints.
#[derive(Debug, Default)]
pub(crate) struct Published {
    pub(crate) warnings: Vec<String>,
}

/// What cratedock reads of the metadata JSON; everything else comes from the manifest.
#[derive(Deserialize)]
struct Metadata {
    name: String,
    vers: String,
}

/// A `pubtime` as milliseconds since the epoch.
fn parse_pubtime(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp()).ok().map(|s| s * 1000)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Private {
    /// Publishes an upload. `base` is the URL the client reached cratedock at (to recognise
    /// dependencies on this cratedock's registries).
    pub(crate) async fn publish(
        &self,
        caller: &Caller,
        upload: Upload,
        base: Option<&str>,
    ) -> Result<Published, RegistryError> {
        let result = self.try_publish(caller, upload, base).await;
        self.count(result.as_ref().map(|_| ()));
        if let Err(e) = &result {
            tracing::info!(registry = %self.name, reason = e.reason, detail = %e.detail, "publish refused");
        }
        result
    }

    async fn try_publish(
        &self,
        caller: &Caller,
        upload: Upload,
        base: Option<&str>,
    ) -> Result<Published, RegistryError> {
        let meta: Metadata = serde_json::from_slice(&upload.json).map_err(|e| {
            RegistryError::invalid(
                "json",
                format!(
                    "the publish metadata is not the JSON cargo sends: {}",
                    crate::names::shown(&e.to_string())
                ),
            )
        })?;
        let name = checks::crate_name(&meta.name)?;
        let semver = checks::version(&meta.vers)?;
        let version = Version::new(&meta.vers)
            .map_err(|e| RegistryError::invalid("version", e.to_string()))?;
        let registry = self.name.as_str();
        let now = now_ms();
        if !caller
            .identity
            .allows(Permission::Publish, registry, Some(&name), now)
        {
            let denial = Denial::lacks(Permission::Publish, registry, Some(&name));
            return Err(RegistryError::forbidden("permission", denial.detail()));
        }
        let (manifest, lockfile) = self.unpack(&upload, &meta).await?;
        checks::licence(&manifest)?;
        checks::index_fields(&manifest)?;
        let (deps, sources) = self.dependencies(&manifest, base)?;
        let mut warnings = self.licence_policy(&manifest, &upload.tarball).await?;
        warnings.extend(self.audit(&manifest, &sources, lockfile.as_deref()).await?);
        let cksum = hex(&Sha256::digest(&upload.tarball));
        let size = upload.tarball.len() as u64;

        let canonical = name.canonical();
        // A new name is checked against the mirrors' upstreams before the crate's lock is
        // taken: that check may wait on an upstream, and others share the lock.
        if self.meta.package(registry, &canonical).await?.is_none() {
            self.guard(&name).await?;
        }
        let _held = self.lock(&name).lock().await;
        let lower = name.lower();
        let doc = self.load(&lower).await?;
        let indexed: Vec<IndexLine> = doc
            .iter()
            .flat_map(|d| lines(&d.body))
            .filter_map(|l| serde_json::from_slice::<IndexLine>(l).ok())
            .collect();
        let duplicate = |name: &str, v: &str| {
            let line = indexed.iter().find(|l| l.vers == v);
            let why = if line.is_none() {
                " and deleted; a version number is never used twice"
            } else if line.is_some_and(|l| l.yanked) {
                " and yanked; a yanked version cannot be published again"
            } else {
                ""
            };
            // Tells a re-run of an import (or a retried upload) from a different file.
            let same = if line.is_some_and(|l| l.cksum == cksum) {
                " (the same file as this one)"
            } else {
                ""
            };
            RegistryError::conflict(
                "duplicate",
                format!(
                    "crate version `{name}@{v}` is already uploaded{same}{why}: publish a new version number"
                ),
            )
        };
        match self.meta.package(registry, &canonical).await? {
            Some(record) => {
                if record.name != meta.name {
                    return Err(RegistryError::conflict(
                        "name",
                        format!(
                            "crate `{}` was previously published as `{}`: to cargo, names that differ only in case or `-`/`_` are one crate; set `name = \"{}\"` in Cargo.toml",
                            meta.name, record.name, record.name
                        ),
                    ));
                }
                self.check_owner(caller, &record, &name, now).await?;
                let known = record
                    .versions
                    .keys()
                    .map(String::as_str)
                    .chain(indexed.iter().map(|l| l.vers.as_str()));
                if let Some(v) = checks::taken(&semver, known) {
                    // A publish cut off by a crash after its index line was written: the same
                    // bytes again finish it (its record and audit entry), as a retry should.
                    let interrupted = !record.versions.contains_key(v)
                        && v == meta.vers
                        && indexed.iter().any(|l| l.vers == v && l.cksum == cksum);
                    if !interrupted {
                        return Err(duplicate(&record.name, v));
                    }
                    let published = indexed
                        .iter()
                        .find(|l| l.vers == v)
                        .and_then(|l| l.pubtime.as_deref())
                        .and_then(parse_pubtime)
                        .unwrap_or(now);
                    let line = Recorded {
                        cksum: &cksum,
                        size,
                        published_ms: published,
                        completes_interrupted: true,
                    };
                    self.record_version(caller, &manifest, &canonical, line)
                        .await?;
                    return Ok(Published::default());
                }
            }
            None => {
                let known = indexed.iter().map(|l| l.vers.as_str());
                if let Some(v) = checks::taken(&semver, known) {
                    return Err(duplicate(&meta.name, v));
                }
                self.claim(caller, &name, &canonical, now).await?;
            }
        }

        // The file first: an index line never names a file that is not there. (Deleted
        // first: a publish that failed after storing it may have left other bytes in memory.)
        let key = self.crate_key(&name, &version);
        self.blobs.delete(&key).await?;
        self.blobs.put(&key, upload.tarball.clone()).await?;
        let line = IndexLine::new(&manifest, deps, cksum.clone(), rfc3339(now));
        let mut body = doc.map(|d| d.body.to_vec()).unwrap_or_default();
        if !body.is_empty() && !body.ends_with(b"\n") {
            body.push(b'\n');
        }
        body.extend_from_slice(line.to_json().as_bytes());
        body.push(b'\n');
        self.store_index(&lower, body).await?;
        let line = Recorded {
            cksum: &cksum,
            size,
            published_ms: now,
            completes_interrupted: false,
        };
        self.record_version(caller, &manifest, &canonical, line)
            .await?;
        tracing::info!(registry, krate = %name, version = %version, size, "published");
        Ok(Published { warnings })
    }

    /// Stores a published version's record with its audit entry, durably before cargo hears
    /// of it: a crash right after the answer must lose neither.
    async fn record_version(
        &self,
        caller: &Caller,
        manifest: &Manifest,
        canonical: &str,
        line: Recorded<'_>,
    ) -> Result<(), RegistryError> {
        let registry = self.name.as_str();
        let target = format!("{}@{}", manifest.name, manifest.version);
        let mut audit = entry(&caller.ctx, "crate.publish", Some(registry), &target);
        audit.krate = Some(manifest.name.clone());
        audit.outcome = format!("ok: sha256 {}, {} bytes", line.cksum, line.size);
        let id = &caller.identity;
        let mut publisher = id
            .user
            .as_deref()
            .or(id.principal.as_deref())
            .map(str::to_owned);
        if line.completes_interrupted {
            // Whoever first sent these bytes is not known; the audit entry names who finished.
            publisher = None;
            audit
                .outcome
                .push_str(" (completes a publish that a crash cut off)");
        }
        let change = PackageChange::Published {
            version: manifest.version.clone(),
            record: VersionRecord {
                cksum: line.cksum.to_owned(),
                size: line.size,
                published_ms: line.published_ms,
                publisher,
                deleted_ms: None,
            },
            description: manifest.description.clone(),
            keywords: manifest.keywords.clone(),
        };
        self.meta
            .change_package(registry, canonical, &change, &audit)
            .await?;
        self.meta.flush().await?;
        self.stored_bytes
            .fetch_add(line.size, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The tarball checked and its manifest read (off the async threads), matching the
    /// metadata.
    async fn unpack(
        &self,
        upload: &Upload,
        meta: &Metadata,
    ) -> Result<(Manifest, Option<Vec<u8>>), RegistryError> {
        let tarball = upload.tarball.clone();
        let max = self.cfg.max_unpacked_bytes;
        let (top, manifest, lockfile) = tokio::task::spawn_blocking(move || {
            let unpacked = tarball::inspect(&tarball, max)
                .map_err(|e| RegistryError::invalid("tarball", e.to_string()))?;
            let manifest = manifest::parse(&unpacked.manifest)
                .map_err(|e| RegistryError::invalid("manifest", e.to_string()))?;
            tracing::debug!(
                unpacked_bytes = unpacked.unpacked_bytes,
                entries = unpacked.entries,
                "tarball checked"
            );
            Ok::<_, RegistryError>((unpacked.top, manifest, unpacked.lockfile))
        })
        .await
        .map_err(|e| {
            RegistryError::invalid("tarball", format!("the tarball could not be read: {e}"))
        })??;
        let expected = format!("{}-{}", meta.name, meta.vers);
        if top != expected {
            return Err(RegistryError::invalid(
                "tarball",
                format!(
                    "the .crate's files lie under `{}/`, not `{expected}/` as its name and version say",
                    crate::names::shown(&top)
                ),
            ));
        }
        if manifest.name != meta.name || manifest.version != meta.vers {
            return Err(RegistryError::invalid(
                "manifest",
                format!(
                    "the metadata names `{}@{}` but the Cargo.toml inside the .crate names `{}@{}`",
                    meta.name,
                    meta.vers,
                    crate::names::shown(&manifest.name),
                    crate::names::shown(&manifest.version)
                ),
            ));
        }
        Ok((manifest, lockfile))
    }

    /// The manifest's dependencies as index entries, each from a registry this one may
    /// depend on, and where each comes from.
    fn dependencies(
        &self,
        m: &Manifest,
        base: Option<&str>,
    ) -> Result<(Vec<IndexDep>, Vec<Source>), RegistryError> {
        let sources = Sources {
            registry: self.name.as_str(),
            public: self.public_url.as_deref(),
            request: base,
            registries: self.registries.iter().map(String::as_str).collect(),
        };
        let mut out = Vec::with_capacity(m.deps.len());
        let mut from = Vec::with_capacity(m.deps.len());
        for dep in &m.deps {
            for n in std::iter::once(&dep.name).chain(dep.package.as_ref()) {
                CrateName::new(n).map_err(|e| {
                    RegistryError::invalid("dependency", format!("dependency name: {e}"))
                })?;
            }
            let source = sources.of(dep);
            let allowed = match &source {
                Source::Same => true,
                Source::CratesIo => self.allowed.crates_io,
                Source::Local { registry, .. } => self.allowed.registries.contains(registry),
                Source::External(url) => self.allowed.urls.contains(&checks::url_key(url)),
            };
            if !allowed {
                return Err(checks::forbidden_source(dep, &source, self.name.as_str()));
            }
            out.push(IndexDep::of(dep, source.index_value()));
            from.push(source);
        }
        Ok((out, from))
    }

    /// Refuses a new name that a mirror's upstream has (dependency confusion), unless the
    /// configuration allows it.
    async fn guard(&self, name: &CrateName) -> Result<(), RegistryError> {
        if self
            .cfg
            .allow_upstream_names
            .iter()
            .any(|g| g.matches(name))
        {
            return Ok(());
        }
        for mirror in &self.mirrors {
            match mirror.index_file(name).await {
                Ok(Lookup::Found(_)) => {
                    return Err(RegistryError::forbidden(
                        "upstream_name",
                        format!(
                            "`{name}` exists on the upstream of mirror `{m}`: a private crate of that name could be swapped for the public one (dependency confusion). Pick another name, or ask an admin to allow it in registries.{r}.allow_upstream_names (and reserve it in registries.{m}.reserved_names)",
                            m = mirror.name(),
                            r = self.name
                        ),
                    ));
                }
                Ok(Lookup::NotFound) => {}
                Err(e) if e.is_not_found() => {}
                Err(crate::mirror::MirrorError::Offline(_)) => {
                    return Err(RegistryError::unavailable(
                        "unavailable",
                        format!(
                            "cannot check whether `{name}` exists on the upstream of mirror `{m}`: the mirror is offline. Publish it once the mirror is online, or ask an admin to allow the name in registries.{r}.allow_upstream_names",
                            m = mirror.name(),
                            r = self.name
                        ),
                    ));
                }
                Err(e) => {
                    return Err(RegistryError::unavailable(
                        "unavailable",
                        format!(
                            "cannot check whether `{name}` exists on the upstream of mirror `{}` ({e}); try again later",
                            mirror.name()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Records a new crate with the caller as its owner.
    async fn claim(
        &self,
        caller: &Caller,
        name: &CrateName,
        canonical: &str,
        now: u64,
    ) -> Result<(), RegistryError> {
        let id = &caller.identity;
        let owner = match (&id.user, &id.principal) {
            (Some(u), _) => Owner::User(u.to_string()),
            (None, Some(p)) => Owner::Team(p.to_string()),
            (None, None) => {
                return Err(RegistryError::forbidden(
                    "permission",
                    "publishing a new crate needs a user's token",
                ));
            }
        };
        let record = PackageRecord {
            registry: self.name.to_string(),
            name: name.to_string(),
            owners: [owner.clone()].into(),
            description: None,
            keywords: Vec::new(),
            created_ms: now,
            updated_ms: now,
            versions: Default::default(),
        };
        let mut audit = entry(
            &caller.ctx,
            "crate.create",
            Some(self.name.as_str()),
            &owner.login(),
        );
        audit.krate = Some(name.to_string());
        let created = self.meta.create_package(canonical, &record, &audit).await?;
        // Durable before the index line: a line without its crate's record (and owner) must
        // never survive a crash.
        self.meta.flush().await?;
        if !created {
            return Err(RegistryError::conflict(
                "name",
                format!("crate `{name}` was just created by another publish; try again"),
            ));
        }
        Ok(())
    }
}
