//! The artifact format: what one backup stores, and in which order.
//!
//! An artifact is a directory of three objects under
//! `<prefix>/<namespace>/<zkbackup>/<artifact-id>/`:
//!
//! - `data`: the payload, either ZooKeeper's own snapshot file as the AdminServer streamed it
//!   ([`Format::Snapshot`]) or quorate's tree dump ([`Format::Tree`], see `tree.rs`);
//! - `manifest.json`: the [`Manifest`]: what the data is, its size, SHA-256, znode counts and
//!   zxids, where it came from and what it could not preserve;
//! - `COMPLETE`: the [`Completion`] marker, written **last**, holding the SHA-256 of the data and
//!   of the manifest.
//!
//! An artifact whose `COMPLETE` is missing, or whose data or manifest do not match it, is not a
//! backup: a crash at any point of a backup leaves nothing that looks complete (I9), and deletion
//! removes `COMPLETE` first for the same reason.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crd::BackupMethod;

/// The manifest's format version.
pub const MANIFEST_VERSION: u32 = 1;
/// Object name of the payload.
pub const DATA: &str = "data";
/// Object name of the manifest.
pub const MANIFEST: &str = "manifest.json";
/// Object name of the completion marker (written last).
pub const COMPLETE: &str = "COMPLETE";

/// What the `data` object holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// ZooKeeper's snapshot file (`snapshot.<zxid>`), uncompressed.
    #[serde(rename = "zookeeper-snapshot")]
    Snapshot,
    /// quorate's tree dump, version 1.
    #[serde(rename = "quorate-tree-v1")]
    Tree,
}

impl Format {
    /// The method that produces this format.
    pub fn method(self) -> BackupMethod {
        match self {
            Format::Snapshot => BackupMethod::Snapshot,
            Format::Tree => BackupMethod::Tree,
        }
    }
}

/// What one artifact is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub manifest_version: u32,
    /// `<label>-<uuid>`.
    pub id: String,
    /// Namespace of the ensemble.
    pub namespace: String,
    /// The MasterEnsemble backed up.
    pub ensemble: String,
    /// That MasterEnsemble's uid: which history the artifact's zxids belong to (absent in
    /// artifacts taken before quorate recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble_uid: Option<String>,
    /// That MasterEnsemble's spec when the backup started (replicas, version, configuration):
    /// what a new ensemble needs to match when the artifact is restored elsewhere, such as
    /// into a new cluster from the bucket alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble_spec: Option<serde_json::Value>,
    /// The ZkBackup that took it.
    pub backup: String,
    /// What `data` holds.
    pub format: Format,
    /// ZooKeeper version of the source member, as it reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zookeeper_version: Option<String>,
    /// Server id of the member the data was read from.
    pub source_member: u32,
    /// The source's last processed zxid when the backup was taken.
    pub zxid: i64,
    /// The newest change to user data the artifact holds (highest czxid, mzxid or pzxid of
    /// a user znode or the root's pzxid): what I7 compares with the live data.
    pub data_zxid: i64,
    /// Every znode in `data` (for a snapshot including `/` and `/zookeeper`).
    pub znodes: u64,
    /// The znodes a restore brings back (no root, no `/zookeeper`, no ephemerals).
    pub user_znodes: u64,
    /// Size of `data` in bytes.
    pub bytes: u64,
    /// SHA-256 of `data` (hex).
    pub sha256: String,
    /// When the backup started.
    pub started_at: Timestamp,
    /// When the data was complete.
    pub finished_at: Timestamp,
    /// What the artifact cannot preserve (for example stat versions of a tree walk).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_preserved: Vec<String>,
}

impl Manifest {
    /// The manifest as stored (pretty JSON, newline-terminated).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// The completion marker, written after the data and the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Completion {
    /// The artifact id.
    pub id: String,
    /// SHA-256 of `data` (hex).
    pub sha256: String,
    /// Size of `data`.
    pub bytes: u64,
    /// SHA-256 of the stored manifest bytes (hex).
    pub manifest_sha256: String,
}

/// Why an artifact is not a complete, intact backup.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    /// `COMPLETE` is missing: the backup never finished.
    #[error("artifact {id} has no completion marker: the backup never finished")]
    Incomplete {
        /// The artifact.
        id: String,
    },
    /// The manifest's bytes do not hash to what `COMPLETE` recorded.
    #[error("artifact {id}: the manifest does not match its completion marker")]
    ManifestMismatch {
        /// The artifact.
        id: String,
    },
    /// The manifest does not parse, or describes another artifact.
    #[error("artifact {id}: bad manifest: {message}")]
    BadManifest {
        /// The artifact.
        id: String,
        /// What is wrong.
        message: String,
    },
    /// The data's size or SHA-256 differs from the manifest's.
    #[error(
        "artifact {id}: data checksum mismatch (expected {expected_bytes} bytes with sha256 {expected_sha256}, found {found_bytes} bytes with sha256 {found_sha256})"
    )]
    DataMismatch {
        /// The artifact.
        id: String,
        /// From the manifest.
        expected_sha256: String,
        /// From the manifest.
        expected_bytes: u64,
        /// Computed.
        found_sha256: String,
        /// Computed.
        found_bytes: u64,
    },
    /// The data's content disagrees with the manifest (znode counts or zxid).
    #[error("artifact {id}: {message}")]
    ContentMismatch {
        /// The artifact.
        id: String,
        /// What differs.
        message: String,
    },
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks a manifest against its completion marker and returns it parsed.
pub fn check_manifest(
    id: &str,
    manifest_bytes: &[u8],
    completion: &Completion,
) -> Result<Manifest, Invalid> {
    if sha256_hex(manifest_bytes) != completion.manifest_sha256 {
        return Err(Invalid::ManifestMismatch { id: id.into() });
    }
    let manifest: Manifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| Invalid::BadManifest {
            id: id.into(),
            message: e.to_string(),
        })?;
    let bad = |message: String| Invalid::BadManifest {
        id: id.into(),
        message,
    };
    if manifest.manifest_version != MANIFEST_VERSION {
        return Err(bad(format!(
            "manifest version {} is not {MANIFEST_VERSION}",
            manifest.manifest_version
        )));
    }
    if manifest.id != id || completion.id != id {
        return Err(bad(format!(
            "it describes {} (marker: {})",
            manifest.id, completion.id
        )));
    }
    if manifest.sha256 != completion.sha256 || manifest.bytes != completion.bytes {
        return Err(bad("data checksum differs from the marker's".into()));
    }
    Ok(manifest)
}

/// Checks the data's measured size and SHA-256 against the manifest.
pub fn check_data(manifest: &Manifest, bytes: u64, sha256: &str) -> Result<(), Invalid> {
    if bytes != manifest.bytes || sha256 != manifest.sha256 {
        return Err(Invalid::DataMismatch {
            id: manifest.id.clone(),
            expected_sha256: manifest.sha256.clone(),
            expected_bytes: manifest.bytes,
            found_sha256: sha256.into(),
            found_bytes: bytes,
        });
    }
    Ok(())
}

/// A new artifact id, `<label>-<uuid>`.
pub fn new_id(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4())
}

/// Formats a zxid as ZooKeeper prints it (`0x` and lowercase hex).
pub fn zxid_hex(zxid: i64) -> String {
    format!("0x{zxid:x}")
}

/// Parses `0x...` (or bare hex) into a zxid.
pub fn parse_zxid(text: &str) -> Option<i64> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(t, 16).ok().map(|v| v as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            id: "nightly-1".into(),
            namespace: "ns".into(),
            ensemble: "masters".into(),
            ensemble_uid: Some("0f6c1d9e-uid".into()),
            ensemble_spec: Some(serde_json::json!({"replicas": 3})),
            backup: "nightly".into(),
            format: Format::Snapshot,
            zookeeper_version: Some("3.9.5".into()),
            source_member: 2,
            zxid: 0x1_0000_0010,
            data_zxid: 0x1_0000_000f,
            znodes: 10,
            user_znodes: 7,
            bytes: 1234,
            sha256: "ab".repeat(32),
            started_at: Timestamp::UNIX_EPOCH,
            finished_at: Timestamp::UNIX_EPOCH,
            not_preserved: vec![],
        }
    }

    fn completion(m: &Manifest, bytes: &[u8]) -> Completion {
        Completion {
            id: m.id.clone(),
            sha256: m.sha256.clone(),
            bytes: m.bytes,
            manifest_sha256: sha256_hex(bytes),
        }
    }

    #[test]
    fn a_manifest_matching_its_marker_is_accepted() {
        let m = manifest();
        let bytes = m.to_bytes();
        assert_eq!(
            check_manifest(&m.id, &bytes, &completion(&m, &bytes)),
            Ok(m)
        );
    }

    #[test]
    fn a_manifest_changed_after_the_marker_is_refused() {
        let m = manifest();
        let bytes = m.to_bytes();
        let marker = completion(&m, &bytes);
        let mut changed = bytes.clone();
        let at = changed.iter().position(|b| *b == b'7').unwrap();
        changed[at] = b'8';
        assert_eq!(
            check_manifest(&m.id, &changed, &marker),
            Err(Invalid::ManifestMismatch { id: m.id.clone() })
        );
    }

    #[test]
    fn a_manifest_of_another_artifact_is_refused() {
        let m = manifest();
        let bytes = m.to_bytes();
        let marker = completion(&m, &bytes);
        assert!(matches!(
            check_manifest("nightly-2", &bytes, &marker),
            Err(Invalid::BadManifest { .. })
        ));
    }

    #[test]
    fn data_of_another_size_or_hash_is_refused() {
        let m = manifest();
        assert_eq!(check_data(&m, 1234, &"ab".repeat(32)), Ok(()));
        assert!(matches!(
            check_data(&m, 1234, &"ac".repeat(32)),
            Err(Invalid::DataMismatch { .. })
        ));
        assert!(matches!(
            check_data(&m, 1235, &"ab".repeat(32)),
            Err(Invalid::DataMismatch { .. })
        ));
    }

    #[test]
    fn zxids_round_trip_through_hex() {
        assert_eq!(zxid_hex(0x1_0000_00ff), "0x1000000ff");
        assert_eq!(parse_zxid("0x1000000ff"), Some(0x1_0000_00ff));
        assert_eq!(parse_zxid("1000000ff"), Some(0x1_0000_00ff));
        assert_eq!(parse_zxid("zz"), None);
    }

    #[test]
    fn ids_carry_the_label() {
        let id = new_id("nightly");
        assert!(id.starts_with("nightly-"));
        assert_eq!(id.len(), "nightly-".len() + 36);
        assert_ne!(new_id("nightly"), id);
    }
}
