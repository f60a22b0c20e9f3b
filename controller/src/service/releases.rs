//! Releases and their artifacts.
//!
//! An upload has two steps. The signed manifest comes first and is verified against the trust
//! root (signatures, threshold, type, expiry, consistency) and *staged*; a staged manifest is
//! not a release. Then each artifact's image is streamed, never held in memory: into a
//! temporary file under `artifacts/tmp/`, hashed as it is written, capped at the manifest's
//! size, checked against the manifest's size and SHA-256, fsynced, and renamed to
//! `artifacts/<sha256>` (then the directory is fsynced). Only when every artifact of the
//! manifest is on disk is the release committed to the store, in the same batch as its audit
//! entry and the removal of the staged manifest. A partial, failed or interrupted upload
//! therefore never appears as a release; at worst it leaves a temporary file, which the next
//! start removes.
//!
//! Artifacts are content-addressed, so a manifest whose images are already on disk (a
//! re-issued release with a later expiry, say) becomes a release as soon as it is staged.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde_json::json;
use sha2::{Digest as _, Sha256};
use swell_proto::envelope::{self, Header};
use swell_proto::limits::MAX_DOCUMENT_BYTES;
use swell_proto::{
    ReleaseDocument, ReleaseName, SemVer, Sha256Digest, TargetName, Timestamp, TrustRoot,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tracing::info;

use super::audit::{self, AuditLog};
use super::db::{Db, DbError, keys};
use super::records::{self, ReleaseRecord};
use crate::hashing::{BUFFER_BYTES, Measured};
use crate::store::{Batch, Table};

/// An accepted release.
#[derive(Debug, Clone)]
pub struct Release {
    /// The manifest's header (revision and expiry).
    pub header: Header,
    /// The manifest.
    pub doc: ReleaseDocument,
    /// SHA-256 of the manifest's canonical signed bytes.
    pub manifest_digest: Sha256Digest,
    /// The signed manifest as uploaded.
    pub manifest: Vec<u8>,
    /// When it was accepted.
    pub accepted_at: Timestamp,
    /// Who uploaded it.
    pub accepted_by: String,
}

/// Why an upload was refused. Each variant maps to one HTTP status in `api`.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The manifest does not verify against the trust root (or is malformed, expired, of the
    /// wrong type...).
    #[error("manifest refused: {0}")]
    Manifest(swell_proto::Error),
    /// The manifest is for another release than the URL names.
    #[error("the manifest is for {found}, not {expected}")]
    WrongRelease {
        /// What the URL names.
        expected: String,
        /// What the manifest says.
        found: String,
    },
    /// The release exists with this revision or a later one.
    #[error(
        "release {name} {version} already exists at manifest revision {existing}; a replacement needs a higher revision (offered {offered})"
    )]
    Exists {
        /// The name.
        name: ReleaseName,
        /// The version.
        version: SemVer,
        /// The stored revision.
        existing: u64,
        /// The offered revision.
        offered: u64,
    },
    /// No manifest is staged for the release.
    #[error("no manifest is staged for {0}; upload the manifest first")]
    NotStaged(String),
    /// The manifest has no artifact for the target.
    #[error("the manifest has no artifact for target {0}")]
    NoSuchTarget(TargetName),
    /// The request's declared length is not the artifact's size.
    #[error("Content-Length is {declared}, but artifact {target} is {size} bytes")]
    Length {
        /// The artifact.
        target: TargetName,
        /// Content-Length.
        declared: u64,
        /// The manifest's size.
        size: u64,
    },
    /// More bytes arrived than the manifest's size.
    #[error("the image is larger than the {size} bytes the manifest gives for {target}")]
    TooLarge {
        /// The artifact.
        target: TargetName,
        /// The manifest's size.
        size: u64,
    },
    /// The image's size or digest differs from the manifest.
    #[error("image refused: {0}")]
    Image(swell_proto::Error),
    /// The body stopped before the end.
    #[error("the upload was interrupted: {0}")]
    Interrupted(io::Error),
    /// Writing the artifact failed.
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error (in the message, not a source: API errors show one line).
        error: io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Audit details could not be built.
    #[error(transparent)]
    Details(#[from] audit::DetailsError),
}

/// What an upload step achieved.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The release is accepted.
    Accepted(Box<Release>),
    /// The manifest is staged; these targets' images are still needed.
    Waiting {
        /// The release.
        name: ReleaseName,
        /// Its version.
        version: SemVer,
        /// Targets whose images are not on disk yet.
        missing: Vec<TargetName>,
    },
}

/// The release catalogue and artifact directory.
#[derive(Debug, Clone)]
pub struct Releases {
    db: Db,
    audit: AuditLog,
    root: Arc<TrustRoot>,
    dir: PathBuf,
    cache: Arc<RwLock<BTreeMap<(ReleaseName, SemVer), Release>>>,
    tmp_counter: Arc<AtomicU64>,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> UploadError {
    let path = path.to_path_buf();
    move |error| UploadError::Io {
        action,
        path,
        error,
    }
}

/// Parses a stored manifest (verified when it was uploaded; not re-verified, since it may have
/// expired since and must still be listed).
fn parse_stored(record: &ReleaseRecord) -> Result<Release, DbError> {
    let bytes = record.manifest.as_bytes();
    let opened = envelope::open::<ReleaseDocument>(bytes, MAX_DOCUMENT_BYTES)
        .map_err(|e| DbError::Corrupt(format!("stored manifest: {e}")))?;
    Ok(Release {
        header: opened.header,
        manifest_digest: Sha256Digest::of(&opened.canonical),
        doc: opened.body,
        manifest: bytes.to_vec(),
        accepted_at: record.at,
        accepted_by: record.by.clone(),
    })
}

impl Releases {
    /// Opens the catalogue: loads accepted releases and clears temporary files a crash left.
    pub async fn open(
        db: Db,
        audit: AuditLog,
        root: Arc<TrustRoot>,
        dir: PathBuf,
    ) -> Result<Releases, UploadError> {
        let tmp = dir.join("tmp");
        if tokio::fs::try_exists(&tmp).await.unwrap_or(false) {
            tokio::fs::remove_dir_all(&tmp)
                .await
                .map_err(io_err("clear", &tmp))?;
        }
        tokio::fs::create_dir_all(&tmp)
            .await
            .map_err(io_err("create", &tmp))?;
        let mut cache = BTreeMap::new();
        for (_, v) in db.scan(Table::Releases, keys::RELEASE.into()).await? {
            let record: ReleaseRecord = serde_json::from_slice(&v)
                .map_err(|e| DbError::Corrupt(format!("release record: {e}")))?;
            let release = parse_stored(&record)?;
            cache.insert(
                (
                    release.doc.name.clone(),
                    release.doc.release_version.clone(),
                ),
                release,
            );
        }
        Ok(Releases {
            db,
            audit,
            root,
            dir,
            cache: Arc::new(RwLock::new(cache)),
            tmp_counter: Arc::default(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<(ReleaseName, SemVer), Release>> {
        // Updates are single inserts after a commit; a poisoned lock is still consistent.
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every accepted release, by name, then version precedence.
    pub fn list(&self) -> Vec<Release> {
        self.read().values().cloned().collect()
    }

    /// One release.
    pub fn get(&self, name: &ReleaseName, version: &SemVer) -> Option<Release> {
        self.read().get(&(name.clone(), version.clone())).cloned()
    }

    /// How many releases are accepted.
    pub fn count(&self) -> usize {
        self.read().len()
    }

    /// Whether an accepted release lists the artifact `digest`.
    pub fn is_released(&self, digest: &Sha256Digest) -> bool {
        self.read()
            .values()
            .any(|r| r.doc.artifacts.iter().any(|a| a.sha256 == *digest))
    }

    /// The path of artifact `digest`.
    pub fn artifact_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.dir.join(digest.to_hex())
    }

    /// Verifies a stored manifest again at `now` (before it goes into a command).
    pub fn reverify(
        &self,
        manifest: &[u8],
        now: Timestamp,
    ) -> Result<swell_proto::VerifiedRelease, swell_proto::Error> {
        self.root.verify_release(manifest, now)
    }

    fn verify(
        &self,
        name: &ReleaseName,
        version: &SemVer,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<(Header, ReleaseDocument), UploadError> {
        let verified = self
            .root
            .verify_release(bytes, now)
            .map_err(UploadError::Manifest)?;
        let doc = verified.document();
        if &doc.name != name || &doc.release_version != version {
            return Err(UploadError::WrongRelease {
                expected: format!("{name} {version}"),
                found: format!("{} {}", doc.name, doc.release_version),
            });
        }
        Ok((verified.header(), doc.clone()))
    }

    fn check_revision(
        &self,
        name: &ReleaseName,
        version: &SemVer,
        offered: u64,
    ) -> Result<Option<Vec<u8>>, UploadError> {
        match self.get(name, version) {
            Some(existing) if existing.header.version >= offered => Err(UploadError::Exists {
                name: name.clone(),
                version: version.clone(),
                existing: existing.header.version,
                offered,
            }),
            Some(existing) => Ok(Some(existing.manifest)),
            None => Ok(None),
        }
    }

    async fn missing(&self, doc: &ReleaseDocument) -> Vec<TargetName> {
        let mut missing = Vec::new();
        for a in &doc.artifacts {
            let present = tokio::fs::metadata(self.artifact_path(&a.sha256))
                .await
                .is_ok_and(|m| m.is_file() && m.len() == a.size);
            if !present {
                missing.push(a.target.clone());
            }
        }
        missing
    }

    /// Step one: verifies and stages the signed manifest of `name` `version`.
    pub async fn put_manifest(
        &self,
        name: &ReleaseName,
        version: &SemVer,
        bytes: &[u8],
        actor: &str,
        now: Timestamp,
    ) -> Result<Progress, UploadError> {
        let (header, doc) = self.verify(name, version, bytes, now)?;
        let mut w = self.audit.writer().await;
        self.check_revision(name, version, header.version)?;
        let missing = self.missing(&doc).await;
        if missing.is_empty() {
            drop(w);
            return self.accept(name, version, bytes.to_vec(), actor, now).await;
        }
        let text = String::from_utf8_lossy(bytes).into_owned();
        let record = ReleaseRecord {
            manifest: text,
            at: now,
            by: actor.to_owned(),
        };
        let mut batch = Batch::new();
        batch.put(
            Table::Releases,
            keys::staged(name, version),
            records::to_bytes(&record),
        );
        let details = audit::details(&json!({
            "release": name.as_str(),
            "version": version.to_string(),
            "manifest_version": header.version,
            "missing": missing.iter().map(TargetName::as_str).collect::<Vec<_>>(),
        }))?;
        w.append(&mut batch, now, actor, "release.stage", details);
        w.commit(batch).await?;
        info!(release = %name, version = %version, "manifest staged");
        Ok(Progress::Waiting {
            name: name.clone(),
            version: version.clone(),
            missing,
        })
    }

    /// Step two: streams the image of `target` from `body`, checks it against the staged
    /// manifest, stores it, and accepts the release once every artifact is present.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_image(
        &self,
        name: &ReleaseName,
        version: &SemVer,
        target: &TargetName,
        declared_length: Option<u64>,
        body: impl AsyncRead + Unpin,
        actor: &str,
        now: Timestamp,
    ) -> Result<Progress, UploadError> {
        let staged = self
            .db
            .get(Table::Releases, keys::staged(name, version))
            .await?
            .ok_or_else(|| UploadError::NotStaged(format!("{name} {version}")))?;
        let record: ReleaseRecord = serde_json::from_slice(&staged)
            .map_err(|e| DbError::Corrupt(format!("staged manifest: {e}")))?;
        // Verified again: the manifest may have expired since it was staged.
        let (header, doc) = self.verify(name, version, record.manifest.as_bytes(), now)?;
        self.check_revision(name, version, header.version)?;
        let artifact = doc
            .artifact(target)
            .map_err(|_| UploadError::NoSuchTarget(target.clone()))?
            .clone();
        if let Some(declared) = declared_length
            && declared != artifact.size
        {
            return Err(UploadError::Length {
                target: target.clone(),
                declared,
                size: artifact.size,
            });
        }
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("upload-{}-{n}.part", std::process::id()));
        let result = self.receive(&tmp, &artifact, body).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result?;
        info!(release = %name, version = %version, target = %target, sha256 = %artifact.sha256, "artifact stored");
        let missing = self.missing(&doc).await;
        if missing.is_empty() {
            self.accept(name, version, record.manifest.into_bytes(), actor, now)
                .await
        } else {
            Ok(Progress::Waiting {
                name: name.clone(),
                version: version.clone(),
                missing,
            })
        }
    }

    /// Streams `body` into `tmp`, checks it, and moves it to its content address.
    async fn receive(
        &self,
        tmp: &Path,
        artifact: &swell_proto::Artifact,
        mut body: impl AsyncRead + Unpin,
    ) -> Result<(), UploadError> {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .await
            .map_err(io_err("create", tmp))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; BUFFER_BYTES];
        loop {
            let n = body
                .read(&mut buf)
                .await
                .map_err(UploadError::Interrupted)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > artifact.size {
                return Err(UploadError::TooLarge {
                    target: artifact.target.clone(),
                    size: artifact.size,
                });
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .await
                .map_err(io_err("write", tmp))?;
        }
        let measured = Measured {
            size,
            sha256: Sha256Digest::from_bytes(hasher.finalize().into()),
        };
        artifact
            .check(measured.size, &measured.sha256)
            .map_err(UploadError::Image)?;
        file.sync_all().await.map_err(io_err("fsync", tmp))?;
        drop(file);
        let dest = self.artifact_path(&artifact.sha256);
        tokio::fs::rename(tmp, &dest)
            .await
            .map_err(io_err("rename into place", &dest))?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
            .await
            .map_err(|e| UploadError::Interrupted(io::Error::other(e.to_string())))?
            .map_err(io_err("fsync", &self.dir))?;
        Ok(())
    }

    /// Commits the release whose artifacts are all on disk.
    async fn accept(
        &self,
        name: &ReleaseName,
        version: &SemVer,
        manifest: Vec<u8>,
        actor: &str,
        now: Timestamp,
    ) -> Result<Progress, UploadError> {
        let mut w = self.audit.writer().await;
        // Under the audit lock: a concurrent upload may have accepted it meanwhile.
        let (header, _) = self.verify(name, version, &manifest, now)?;
        let previous = self.check_revision(name, version, header.version)?;
        let record = ReleaseRecord {
            manifest: String::from_utf8_lossy(&manifest).into_owned(),
            at: now,
            by: actor.to_owned(),
        };
        let release = parse_stored(&record)?;
        let key = keys::release(name, version);
        let previous_record = match previous {
            Some(_) => self.db.get(Table::Releases, key.clone()).await?,
            None => None,
        };
        let mut batch = Batch::new();
        batch
            .require(Table::Releases, key.clone(), previous_record)
            .put(Table::Releases, key, records::to_bytes(&record))
            .delete(Table::Releases, keys::staged(name, version));
        let details = audit::details(&json!({
            "release": name.as_str(),
            "version": version.to_string(),
            "manifest_version": release.header.version,
            "manifest_digest": release.manifest_digest.to_hex(),
            "security_version": release.doc.security_version,
            "artifacts": release.doc.artifacts.iter().map(|a| json!({
                "target": a.target.as_str(), "size": a.size, "sha256": a.sha256.to_hex(),
            })).collect::<Vec<_>>(),
        }))?;
        w.append(&mut batch, now, actor, "release.accept", details);
        w.commit(batch).await?;
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((name.clone(), version.clone()), release.clone());
        info!(release = %name, version = %version, "release accepted");
        Ok(Progress::Accepted(Box::new(release)))
    }
}
