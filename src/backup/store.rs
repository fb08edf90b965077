//! Where artifacts live: an S3-compatible bucket or a directory, through the `object_store`
//! crate. Data is streamed in and out (multipart uploads of bounded parts; reads chunk by chunk)
//! with its SHA-256 computed on the way, so memory stays bounded whatever the backup's size.
//! Credentials come from a Secret and are never logged, put in status or in a location.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

use super::artifact::{self, COMPLETE, Completion, DATA, MANIFEST, Manifest};
use crate::crd::Destination;

/// Size of one multipart part (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploading at once; with [`PART_SIZE`] this bounds the upload buffers.
pub const PARTS_IN_FLIGHT: usize = 2;

/// Errors of the store, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The destination cannot be used as given.
    #[error("{0}")]
    Config(String),
    /// The store refused or failed a request.
    #[error("{what}: {source}")]
    Store {
        /// What was being done.
        what: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// An object does not exist.
    #[error("{0} does not exist")]
    Missing(String),
    /// A stored document does not parse.
    #[error("{what} is not valid: {message}")]
    Parse {
        /// Which object.
        what: String,
        /// The parser's message.
        message: String,
    },
    /// The producer of an upload failed.
    #[error("{0}")]
    Source(String),
}

/// Access keys of an S3-compatible store. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("S3Credentials { <redacted> }")
    }
}

/// The objects of one artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactPaths {
    /// The artifact's directory.
    pub dir: ObjPath,
    /// `data`.
    pub data: ObjPath,
    /// `manifest.json`.
    pub manifest: ObjPath,
    /// `COMPLETE`.
    pub complete: ObjPath,
    /// Where it is, as a URL without credentials (`s3://bucket/...` or `file:///...`).
    pub location: String,
}

/// An artifact store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    url_base: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url_base)
            .finish()
    }
}

fn store_err(what: impl Into<String>) -> impl FnOnce(object_store::Error) -> Error {
    let what = what.into();
    move |source| match source {
        object_store::Error::NotFound { .. } => Error::Missing(what),
        source => Error::Store { what, source },
    }
}

fn clean_prefix(p: Option<&str>) -> String {
    p.unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

impl Store {
    /// A store for a ZkBackup destination. S3 needs `credentials`.
    pub fn from_destination(
        dest: &Destination,
        credentials: Option<&S3Credentials>,
    ) -> Result<Store, Error> {
        if let Some(s3) = &dest.s3 {
            let creds = credentials.ok_or_else(|| {
                Error::Config(format!(
                    "spec.destination.s3: credentials Secret {} was not read",
                    s3.credentials_secret
                ))
            })?;
            let options = object_store::ClientOptions::new()
                .with_timeout(Duration::from_secs(120))
                .with_connect_timeout(Duration::from_secs(10))
                .with_allow_http(s3.endpoint.starts_with("http://"));
            let store = object_store::aws::AmazonS3Builder::new()
                .with_endpoint(s3.endpoint.trim_end_matches('/'))
                .with_bucket_name(&s3.bucket)
                .with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".into()))
                .with_access_key_id(&creds.access_key_id)
                .with_secret_access_key(&creds.secret_access_key)
                .with_allow_http(s3.endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false)
                .with_client_options(options)
                .build()
                .map_err(|e| Error::Config(format!("spec.destination.s3: {e}")))?;
            let prefix = clean_prefix(s3.prefix.as_deref());
            let url_base = if prefix.is_empty() {
                format!("s3://{}", s3.bucket)
            } else {
                format!("s3://{}/{prefix}", s3.bucket)
            };
            return Ok(Store {
                inner: Arc::new(store),
                prefix,
                url_base,
            });
        }
        if let Some(fs) = &dest.filesystem {
            if !fs.path.starts_with('/') {
                return Err(Error::Config(format!(
                    "spec.destination.filesystem.path {:?} must be absolute",
                    fs.path
                )));
            }
            std::fs::create_dir_all(&fs.path).map_err(|e| {
                Error::Config(format!("spec.destination.filesystem.path {}: {e}", fs.path))
            })?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(&fs.path)
                .map_err(|e| Error::Config(format!("spec.destination.filesystem: {e}")))?;
            return Ok(Store {
                inner: Arc::new(store),
                prefix: String::new(),
                url_base: format!("file://{}", fs.path.trim_end_matches('/')),
            });
        }
        Err(Error::Config(
            "spec.destination must set exactly one of s3 or filesystem".into(),
        ))
    }

    /// Where the store is (no credentials).
    pub fn url(&self) -> &str {
        &self.url_base
    }

    fn key(&self, rel: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// The directory holding every artifact of one ZkBackup.
    pub fn backup_dir(&self, namespace: &str, backup: &str) -> ObjPath {
        self.key(&format!("{namespace}/{backup}"))
    }

    /// The objects of one artifact.
    pub fn artifact(&self, namespace: &str, backup: &str, id: &str) -> ArtifactPaths {
        let rel = format!("{namespace}/{backup}/{id}");
        let dir = self.key(&rel);
        ArtifactPaths {
            data: self.key(&format!("{rel}/{DATA}")),
            manifest: self.key(&format!("{rel}/{MANIFEST}")),
            complete: self.key(&format!("{rel}/{COMPLETE}")),
            location: format!("{}/{rel}/", self.url_base),
            dir,
        }
    }

    /// The artifact at `location` (a URL this store gave out), if it is inside this store.
    pub fn artifact_at(&self, location: &str) -> Option<(String, String, String)> {
        let rest = location.strip_prefix(&self.url_base)?.trim_matches('/');
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [ns, backup, id] => Some((ns.to_string(), backup.to_string(), id.to_string())),
            _ => None,
        }
    }

    /// Streams `chunks` into `path` as a multipart upload, hashing on the way; returns the
    /// size and hex SHA-256. A failed producer or store aborts the upload.
    pub async fn put_stream<S>(
        &self,
        path: &ObjPath,
        mut chunks: S,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(u64, String), Error>
    where
        S: futures::Stream<Item = Result<Bytes, String>> + Unpin,
    {
        let upload = self
            .inner
            .put_multipart(path)
            .await
            .map_err(store_err(format!("start upload of {path}")))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut reported = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(Error::Source(e));
                }
            };
            hasher.update(&chunk);
            total += chunk.len() as u64;
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                return Err(store_err(format!("upload {path}"))(e));
            }
            writer.put(chunk);
            if total - reported >= 16 * 1024 * 1024 {
                reported = total;
                progress(total);
            }
        }
        writer
            .finish()
            .await
            .map_err(store_err(format!("finish upload of {path}")))?;
        progress(total);
        Ok((total, hex::encode(hasher.finalize())))
    }

    /// Writes a small object whole.
    pub async fn put_bytes(&self, path: &ObjPath, bytes: Vec<u8>) -> Result<(), Error> {
        self.inner
            .put(path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(store_err(format!("write {path}")))
    }

    /// Reads a small object whole.
    pub async fn get_bytes(&self, path: &ObjPath) -> Result<Bytes, Error> {
        let got = self
            .inner
            .get(path)
            .await
            .map_err(store_err(path.to_string()))?;
        got.bytes().await.map_err(store_err(path.to_string()))
    }

    /// Streams an object chunk by chunk.
    pub async fn get_stream(
        &self,
        path: &ObjPath,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes, Error>>, Error> {
        let got = self
            .inner
            .get(path)
            .await
            .map_err(store_err(path.to_string()))?;
        let what = path.to_string();
        Ok(got
            .into_stream()
            .map_err(move |e| Error::Store {
                what: format!("read {what}"),
                source: e,
            })
            .boxed())
    }

    /// Writes the manifest and then the completion marker (the last write of a backup).
    pub async fn complete(&self, paths: &ArtifactPaths, manifest: &Manifest) -> Result<(), Error> {
        let bytes = manifest.to_bytes();
        let completion = Completion {
            id: manifest.id.clone(),
            sha256: manifest.sha256.clone(),
            bytes: manifest.bytes,
            manifest_sha256: artifact::sha256_hex(&bytes),
        };
        self.put_bytes(&paths.manifest, bytes).await?;
        let marker = serde_json::to_vec_pretty(&completion).unwrap_or_default();
        self.put_bytes(&paths.complete, marker).await
    }

    /// Reads the marker and the manifest and checks one against the other.
    pub async fn read_manifest(
        &self,
        id: &str,
        paths: &ArtifactPaths,
    ) -> Result<Result<Manifest, artifact::Invalid>, Error> {
        let marker = match self.get_bytes(&paths.complete).await {
            Ok(b) => b,
            Err(Error::Missing(_)) => {
                return Ok(Err(artifact::Invalid::Incomplete { id: id.into() }));
            }
            Err(e) => return Err(e),
        };
        let completion: Completion = match serde_json::from_slice(&marker) {
            Ok(c) => c,
            Err(e) => {
                return Ok(Err(artifact::Invalid::BadManifest {
                    id: id.into(),
                    message: format!("completion marker: {e}"),
                }));
            }
        };
        let manifest = match self.get_bytes(&paths.manifest).await {
            Ok(b) => b,
            Err(Error::Missing(_)) => {
                return Ok(Err(artifact::Invalid::ManifestMismatch { id: id.into() }));
            }
            Err(e) => return Err(e),
        };
        Ok(artifact::check_manifest(id, &manifest, &completion))
    }

    /// Deletes an artifact, its marker first, so a half-deleted artifact never looks complete.
    pub async fn delete_artifact(&self, paths: &ArtifactPaths) -> Result<(), Error> {
        for p in [&paths.complete, &paths.manifest, &paths.data] {
            match self.inner.delete(p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(format!("delete {p}"))(e)),
            }
        }
        // Anything else left under the directory (an aborted upload's parts on a filesystem).
        let rest: Vec<ObjPath> = self
            .inner
            .list(Some(&paths.dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(store_err(format!("list {}", paths.dir)))?;
        for p in rest {
            match self.inner.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(format!("delete {p}"))(e)),
            }
        }
        Ok(())
    }

    /// Ids of the artifacts stored for one ZkBackup (complete or not): every directory that
    /// still holds an object (a filesystem keeps emptied directories; they do not count).
    pub async fn list_artifacts(
        &self,
        namespace: &str,
        backup: &str,
    ) -> Result<Vec<String>, Error> {
        let dir = self.backup_dir(namespace, backup);
        let objects: Vec<ObjPath> = self
            .inner
            .list(Some(&dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(store_err(format!("list {dir}")))?;
        let mut ids: Vec<String> = objects
            .iter()
            .filter_map(|p| p.prefix_match(&dir)?.next().map(|s| s.as_ref().to_string()))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Every artifact in the store as `(namespace, backup, id)`, whatever ZkBackup took it
    /// (complete or not), sorted: what a bucket holds when no ZkBackup in this cluster knows it.
    pub async fn list_all_artifacts(&self) -> Result<Vec<(String, String, String)>, Error> {
        let root = (!self.prefix.is_empty()).then(|| ObjPath::from(self.prefix.as_str()));
        let objects: Vec<ObjPath> = self
            .inner
            .list(root.as_ref())
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(store_err(format!("list {}", self.url_base)))?;
        let mut found: Vec<(String, String, String)> = objects
            .iter()
            .filter_map(|p| {
                let parts: Vec<String> = match &root {
                    Some(r) => p.prefix_match(r)?.map(|s| s.as_ref().to_string()).collect(),
                    None => p.parts().map(|s| s.as_ref().to_string()).collect(),
                };
                match parts.as_slice() {
                    [ns, backup, id, _file] => Some((ns.clone(), backup.clone(), id.clone())),
                    _ => None,
                }
            })
            .collect();
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// Whether an object exists.
    pub async fn exists(&self, path: &ObjPath) -> Result<bool, Error> {
        match self.inner.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_err(format!("head {path}"))(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::FilesystemDestination;

    fn fs_store(dir: &std::path::Path) -> Store {
        Store::from_destination(
            &Destination {
                s3: None,
                filesystem: Some(FilesystemDestination {
                    path: dir.display().to_string(),
                }),
            },
            None,
        )
        .unwrap()
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let c = S3Credentials {
            access_key_id: "AKIDSECRET".into(),
            secret_access_key: "very-secret".into(),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("AKIDSECRET") && !shown.contains("very-secret"));
    }

    #[test]
    fn locations_map_back_to_their_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let store = fs_store(dir.path());
        let paths = store.artifact("ns", "nightly", "nightly-1");
        assert_eq!(
            store.artifact_at(&paths.location),
            Some(("ns".into(), "nightly".into(), "nightly-1".into()))
        );
        assert_eq!(store.artifact_at("s3://elsewhere/ns/nightly/x/"), None);
    }

    #[tokio::test]
    async fn a_streamed_upload_reports_the_size_and_hash_of_what_was_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = fs_store(dir.path());
        let paths = store.artifact("ns", "b", "b-1");
        let chunks: Vec<Result<Bytes, String>> = (0..5u8)
            .map(|i| Ok(Bytes::from(vec![i; 3 * 1024 * 1024])))
            .collect();
        let (bytes, sha) = store
            .put_stream(&paths.data, futures::stream::iter(chunks), &|_| {})
            .await
            .unwrap();
        assert_eq!(bytes, 15 * 1024 * 1024);
        let stored = store.get_bytes(&paths.data).await.unwrap();
        assert_eq!(sha, artifact::sha256_hex(&stored));
    }

    #[tokio::test]
    async fn an_artifact_without_its_marker_is_incomplete_and_deletion_removes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = fs_store(dir.path());
        let paths = store.artifact("ns", "b", "b-1");
        store.put_bytes(&paths.data, b"abc".to_vec()).await.unwrap();
        assert!(matches!(
            store.read_manifest("b-1", &paths).await.unwrap(),
            Err(artifact::Invalid::Incomplete { .. })
        ));
        assert_eq!(store.list_artifacts("ns", "b").await.unwrap(), vec!["b-1"]);
        store.delete_artifact(&paths).await.unwrap();
        assert!(store.list_artifacts("ns", "b").await.unwrap().is_empty());
    }
}
