//! What a restore's init container does on one stopped member's volume
//! (`quorate restore-member`): the seeds' "copy one snapshot to every member", made safe.
//!
//! 1. If the marker `quorate-restore-<restore>` is on the volume, this restore already placed
//!    its data here: do nothing (a restarted Pod must never roll back writes made after the
//!    restore).
//! 2. Download the artifact's data next to the data directory and check its size and SHA-256
//!    against the verified manifest's; on any mismatch stop with nothing changed.
//! 3. Move the member's `version-2` aside to `version-2.before-<restore>` (kept, never deleted
//!    here), and make a new `version-2` holding only `snapshot.<zxid>` (a snapshot artifact) or
//!    nothing (a tree artifact, replayed through the client protocol once the ensemble serves).
//! 4. Carry the epoch files over: `currentEpoch` and `acceptedEpoch` become the highest of the
//!    old ones and the snapshot's own epoch, so the restored ensemble elects a leader in a new
//!    epoch and every zxid it issues is above any zxid the live ensemble issued before.
//! 5. Write the marker last.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::artifact::{Format, zxid_hex};
use super::store::{ArtifactPaths, Store};

/// Errors of placing data on a volume.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] super::store::Error),
    /// The downloaded data is not the verified artifact.
    #[error(
        "refused: the data of {id} does not match its manifest (expected {expected_bytes} bytes with sha256 {expected_sha256}, got {found_bytes} bytes with sha256 {found_sha256}); nothing on this volume was changed"
    )]
    Mismatch {
        /// The artifact.
        id: String,
        /// Expected size.
        expected_bytes: u64,
        /// Expected hash.
        expected_sha256: String,
        /// Downloaded size.
        found_bytes: u64,
        /// Downloaded hash.
        found_sha256: String,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What to place.
#[derive(Clone, Debug)]
pub struct Placement {
    /// ZooKeeper's dataDir on the member's volume (holds `myid` and `version-2`).
    pub data_dir: PathBuf,
    /// The restore's id (the ZkRestore's uid): names the marker and the kept old data.
    pub restore_id: String,
    /// The artifact id.
    pub artifact_id: String,
    /// The artifact's format.
    pub format: Format,
    /// The snapshot's zxid (names `snapshot.<zxid>`).
    pub zxid: i64,
    /// Expected size of the data.
    pub bytes: u64,
    /// Expected SHA-256 of the data.
    pub sha256: String,
}

/// What placing did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The marker was there: nothing done.
    AlreadyPlaced,
    /// Data placed; the old data kept at `kept` (if there was any).
    Placed {
        /// Where the member's previous `version-2` now is.
        kept: Option<PathBuf>,
        /// The epoch written to `currentEpoch` and `acceptedEpoch`.
        epoch: u64,
    },
}

/// The marker file of a restore.
pub fn marker(data_dir: &Path, restore_id: &str) -> PathBuf {
    data_dir.join(format!("quorate-restore-{restore_id}"))
}

fn read_epoch(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut f = std::fs::File::create(path).map_err(io("create", path))?;
    f.write_all(bytes).map_err(io("write", path))?;
    f.sync_all().map_err(io("sync", path))
}

/// Places the artifact at `paths` on the volume, as the module doc says. Progress reports bytes
/// downloaded.
pub async fn place(
    store: &Store,
    paths: &ArtifactPaths,
    p: &Placement,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Outcome, Error> {
    let mark = marker(&p.data_dir, &p.restore_id);
    if mark.exists() {
        return Ok(Outcome::AlreadyPlaced);
    }
    std::fs::create_dir_all(&p.data_dir).map_err(io("create", &p.data_dir))?;
    let staged = p
        .data_dir
        .join(format!(".quorate-restore-{}.part", p.restore_id));
    if p.format == Format::Snapshot {
        let mut file = std::fs::File::create(&staged).map_err(io("create", &staged))?;
        let mut data = store.get_stream(&paths.data).await?;
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let mut reported = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            bytes += chunk.len() as u64;
            file.write_all(&chunk).map_err(io("write", &staged))?;
            if bytes - reported >= 16 * 1024 * 1024 {
                reported = bytes;
                progress(bytes);
            }
        }
        file.sync_all().map_err(io("sync", &staged))?;
        progress(bytes);
        let sha = hex::encode(hasher.finalize());
        if bytes != p.bytes || sha != p.sha256 {
            let _ = std::fs::remove_file(&staged);
            return Err(Error::Mismatch {
                id: p.artifact_id.clone(),
                expected_bytes: p.bytes,
                expected_sha256: p.sha256.clone(),
                found_bytes: bytes,
                found_sha256: sha,
            });
        }
    }
    let current = p.data_dir.join("version-2");
    let kept = p
        .data_dir
        .join(format!("version-2.before-{}", p.restore_id));
    // A previous attempt of this same restore may have moved the old data already.
    if current.exists() && !kept.exists() {
        std::fs::rename(&current, &kept).map_err(io("move aside", &current))?;
    } else if current.exists() {
        std::fs::remove_dir_all(&current).map_err(io("remove partial", &current))?;
    }
    std::fs::create_dir_all(&current).map_err(io("create", &current))?;
    let old_epoch = ["currentEpoch", "acceptedEpoch"]
        .iter()
        .filter_map(|f| read_epoch(&kept.join(f)))
        .max()
        .unwrap_or(0);
    let epoch = old_epoch.max((p.zxid as u64) >> 32);
    if p.format == Format::Snapshot {
        let target = current.join(format!("snapshot.{}", &zxid_hex(p.zxid)[2..]));
        std::fs::rename(&staged, &target).map_err(io("place", &target))?;
    }
    for f in ["currentEpoch", "acceptedEpoch"] {
        write_synced(&current.join(f), epoch.to_string().as_bytes())?;
    }
    write_synced(&mark, format!("{}\n", p.artifact_id).as_bytes())?;
    Ok(Outcome::Placed {
        kept: kept.exists().then_some(kept),
        epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Destination, FilesystemDestination};

    async fn setup(payload: &[u8]) -> (tempfile::TempDir, Store, ArtifactPaths) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::from_destination(
            &Destination {
                s3: None,
                filesystem: Some(FilesystemDestination {
                    path: dir.path().join("store").display().to_string(),
                }),
            },
            None,
        )
        .unwrap();
        let paths = store.artifact("ns", "b", "b-1");
        store
            .put_bytes(&paths.data, payload.to_vec())
            .await
            .unwrap();
        (dir, store, paths)
    }

    fn placement(dir: &Path, payload: &[u8]) -> Placement {
        Placement {
            data_dir: dir.join("data"),
            restore_id: "r1".into(),
            artifact_id: "b-1".into(),
            format: Format::Snapshot,
            zxid: 0x2_0000_0010,
            bytes: payload.len() as u64,
            sha256: super::super::artifact::sha256_hex(payload),
        }
    }

    #[tokio::test]
    async fn places_the_snapshot_keeps_the_old_data_and_carries_the_higher_epoch() {
        let payload = b"snapshot bytes";
        let (dir, store, paths) = setup(payload).await;
        let p = placement(dir.path(), payload);
        let old = p.data_dir.join("version-2");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("log.100000001"), b"newer txns").unwrap();
        std::fs::write(old.join("currentEpoch"), b"5").unwrap();
        std::fs::write(old.join("acceptedEpoch"), b"5").unwrap();

        let out = place(&store, &paths, &p, &|_| {}).await.unwrap();
        assert_eq!(
            out,
            Outcome::Placed {
                kept: Some(p.data_dir.join("version-2.before-r1")),
                epoch: 5
            }
        );
        let placed = std::fs::read(old.join("snapshot.200000010")).unwrap();
        assert_eq!(placed, payload);
        assert!(!old.join("log.100000001").exists());
        assert!(
            p.data_dir
                .join("version-2.before-r1/log.100000001")
                .exists()
        );
        assert_eq!(
            std::fs::read_to_string(old.join("currentEpoch")).unwrap(),
            "5"
        );
    }

    #[tokio::test]
    async fn a_second_run_of_the_same_restore_changes_nothing() {
        let payload = b"snapshot bytes";
        let (dir, store, paths) = setup(payload).await;
        let p = placement(dir.path(), payload);
        place(&store, &paths, &p, &|_| {}).await.unwrap();
        // Writes after the restore land in version-2; a restarted Pod must keep them.
        std::fs::write(p.data_dir.join("version-2/log.300000001"), b"after").unwrap();
        assert_eq!(
            place(&store, &paths, &p, &|_| {}).await.unwrap(),
            Outcome::AlreadyPlaced
        );
        assert!(p.data_dir.join("version-2/log.300000001").exists());
    }

    #[tokio::test]
    async fn data_that_does_not_match_the_manifest_is_refused_and_nothing_changes() {
        let payload = b"snapshot bytes";
        let (dir, store, paths) = setup(b"snapshot bytez").await;
        let p = placement(dir.path(), payload);
        let old = p.data_dir.join("version-2");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("snapshot.100000000"), b"live").unwrap();
        let err = place(&store, &paths, &p, &|_| {}).await.unwrap_err();
        assert!(matches!(err, Error::Mismatch { .. }), "{err}");
        assert_eq!(
            std::fs::read(old.join("snapshot.100000000")).unwrap(),
            b"live"
        );
        assert!(!marker(&p.data_dir, "r1").exists());
        assert!(!p.data_dir.join("version-2.before-r1").exists());
    }

    #[tokio::test]
    async fn a_tree_restore_starts_the_member_empty_with_the_old_epoch() {
        let (dir, store, paths) = setup(b"").await;
        let mut p = placement(dir.path(), b"");
        p.format = Format::Tree;
        p.zxid = 0x1_0000_0001;
        let old = p.data_dir.join("version-2");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("acceptedEpoch"), b"3").unwrap();
        place(&store, &paths, &p, &|_| {}).await.unwrap();
        let left: Vec<_> = std::fs::read_dir(&old).unwrap().collect();
        assert_eq!(left.len(), 2, "only the epoch files");
        assert_eq!(
            std::fs::read_to_string(old.join("acceptedEpoch")).unwrap(),
            "3"
        );
    }
}
