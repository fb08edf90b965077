//! Running backups, verifications and loads: the sources (AdminServer snapshot, tree walk)
//! streamed into the store, and artifacts streamed out of it, checked, and replayed.
//!
//! Every byte passes through bounded channels: an upload holds at most a few parts, a parse one
//! znode, so memory does not grow with the data.

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::artifact::{self, Format, Invalid, Manifest};
use super::snapshot::{self, ChannelReader};
use super::store;
use super::store::{ArtifactPaths, Store};
use super::tree::{self, TreeReader, TreeSummary};
use super::znode::Znode;
use crate::zk::{Credentials, Login, MemberAddr};

/// Errors of a backup, verification or load.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The AdminServer refused or failed the snapshot.
    #[error("snapshot from {member}: {message}")]
    Snapshot {
        /// The member.
        member: String,
        /// What went wrong.
        message: String,
    },
    /// The tree walk or replay failed.
    #[error(transparent)]
    Tree(#[from] tree::Error),
    /// The snapshot does not parse.
    #[error("snapshot: {0}")]
    Parse(String),
    /// The artifact is not complete and intact.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A worker thread failed.
    #[error("internal: {0}")]
    Internal(String),
}

/// Chunks in flight between a producer and the upload or the parser.
const CHANNEL: usize = 8;
/// Chunk size of a tree dump.
const TREE_CHUNK: usize = 1024 * 1024;

/// Counts and zxids of an artifact's data, from either format.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content {
    /// Every znode in the data.
    pub znodes: u64,
    /// Znodes a restore brings back.
    pub user_znodes: u64,
    /// Newest change to user data.
    pub data_zxid: i64,
    /// The snapshot's own last zxid (snapshots only).
    pub last_zxid: Option<i64>,
}

impl From<TreeSummary> for Content {
    fn from(s: TreeSummary) -> Content {
        Content {
            znodes: s.znodes,
            user_znodes: s.user_znodes,
            data_zxid: s.data_zxid,
            last_zxid: None,
        }
    }
}

/// Parses a whole artifact's data (blocking) and summarises it. Both formats are counted the
/// same way ([`TreeSummary::add`]: ephemerals and `/zookeeper` are not user znodes), so a
/// manifest, a verification and a restored ensemble agree on what a count means.
pub fn summarize(format: Format, input: impl Read) -> Result<Content, Error> {
    match format {
        Format::Tree => Ok(tree::summarize(input)?.into()),
        Format::Snapshot => {
            let mut reader =
                snapshot::SnapshotReader::new(input).map_err(|e| Error::Parse(e.to_string()))?;
            let mut summary = TreeSummary::default();
            while let Some(node) = reader
                .next_node()
                .map_err(|e| Error::Parse(e.to_string()))?
            {
                summary.add(&node);
            }
            let end = reader.finish().map_err(|e| Error::Parse(e.to_string()))?;
            Ok(Content {
                last_zxid: end.last_zxid,
                ..summary.into()
            })
        }
    }
}

/// Reads znodes of an artifact's data one by one (blocking) into `out`.
pub fn read_nodes(
    format: Format,
    input: impl Read,
    out: &mpsc::Sender<Znode>,
) -> Result<(), Error> {
    match format {
        Format::Tree => {
            let mut r = TreeReader::new(input)?;
            while let Some(n) = r.next_node()? {
                if out.blocking_send(n).is_err() {
                    return Err(Error::Internal("the replay stopped".into()));
                }
            }
            Ok(())
        }
        Format::Snapshot => {
            let mut r =
                snapshot::SnapshotReader::new(input).map_err(|e| Error::Parse(e.to_string()))?;
            while let Some(n) = r.next_node().map_err(|e| Error::Parse(e.to_string()))? {
                if out.blocking_send(n).is_err() {
                    return Err(Error::Internal("the replay stopped".into()));
                }
            }
            r.finish().map_err(|e| Error::Parse(e.to_string()))?;
            Ok(())
        }
    }
}

fn receiver_stream(
    rx: mpsc::Receiver<Bytes>,
) -> impl futures::Stream<Item = Result<Bytes, String>> + Unpin {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok(b), rx))
    }))
}

/// Runs `parse` on a worker thread over the chunks sent to the returned sender.
fn spawn_parser<T: Send + 'static>(
    parse: impl FnOnce(ChannelReader) -> Result<T, Error> + Send + 'static,
) -> (
    mpsc::Sender<std::io::Result<Bytes>>,
    tokio::task::JoinHandle<Result<T, Error>>,
) {
    let (tx, reader) = snapshot::channel(CHANNEL);
    let handle = tokio::task::spawn_blocking(move || parse(reader));
    (tx, handle)
}

async fn joined<T>(h: tokio::task::JoinHandle<Result<T, Error>>) -> Result<T, Error> {
    h.await.map_err(|e| Error::Internal(e.to_string()))?
}

/// Where and how one backup reads its data.
#[derive(Clone, Debug)]
pub struct BackupJob {
    /// Artifact id.
    pub id: String,
    /// Namespace of the ensemble.
    pub namespace: String,
    /// The ensemble.
    pub ensemble: String,
    /// The ensemble's uid, recorded in the manifest.
    pub ensemble_uid: Option<String>,
    /// The ensemble's spec when the backup started, recorded in the manifest.
    pub ensemble_spec: Option<serde_json::Value>,
    /// The ZkBackup.
    pub backup: String,
    /// The member read from.
    pub member: MemberAddr,
    /// The format (and so the method).
    pub format: Format,
    /// The super user's name and password (digest).
    pub user: String,
    /// Its password.
    pub password: String,
    /// The SASL login of members with client authentication on (a tree walk's session).
    pub sasl: Option<Credentials>,
    /// The member's ZooKeeper version, as it reports it.
    pub zookeeper_version: Option<String>,
    /// The member's last processed zxid before the backup (used by tree walks).
    pub zxid_before: Option<i64>,
    /// When the backup started.
    pub started_at: Timestamp,
}

/// Takes one backup into `store` and completes it (data, manifest, then marker). Progress
/// reports the bytes stored so far.
pub async fn run_backup(
    store: &Store,
    job: &BackupJob,
    now: impl Fn() -> Timestamp,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Manifest, Error> {
    let paths = store.artifact(&job.namespace, &job.backup, &job.id);
    let (upload_tx, upload_rx) = mpsc::channel::<Bytes>(CHANNEL);
    let format = job.format;
    let (parse_tx, parsed) = spawn_parser(move |r| summarize(format, r));
    let produce = async {
        let result = match job.format {
            Format::Snapshot => stream_snapshot(job, &upload_tx, &parse_tx).await,
            Format::Tree => walk_tree(job, &upload_tx, &parse_tx).await,
        };
        drop(upload_tx);
        drop(parse_tx);
        result
    };
    let upload = store.put_stream(&paths.data, receiver_stream(upload_rx), progress);
    let (produced, uploaded) = tokio::join!(produce, upload);
    let (zxid, mut not_preserved) = produced?;
    let (bytes, sha256) = uploaded?;
    let content = joined(parsed).await?;
    let zxid = content.last_zxid.or(zxid).unwrap_or(content.data_zxid);
    if job.format == Format::Tree {
        not_preserved
            .push("stat (zxids, versions, times): a restore creates the znodes anew".to_string());
        not_preserved.push(
            "point in time: each znode was read at its own zxid while writes went on".to_string(),
        );
        not_preserved.push("null data is read as empty data".to_string());
    }
    let manifest = Manifest {
        manifest_version: artifact::MANIFEST_VERSION,
        id: job.id.clone(),
        namespace: job.namespace.clone(),
        ensemble: job.ensemble.clone(),
        ensemble_uid: job.ensemble_uid.clone(),
        ensemble_spec: job.ensemble_spec.clone(),
        backup: job.backup.clone(),
        format: job.format,
        zookeeper_version: job.zookeeper_version.clone(),
        source_member: job.member.id.0,
        zxid,
        data_zxid: content.data_zxid,
        znodes: content.znodes,
        user_znodes: content.user_znodes,
        bytes,
        sha256,
        started_at: job.started_at,
        finished_at: now(),
        not_preserved,
    };
    store.complete(&paths, &manifest).await?;
    Ok(manifest)
}

async fn send_both(
    chunk: Bytes,
    upload: &mpsc::Sender<Bytes>,
    parse: &mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<(), String> {
    let (a, b) = tokio::join!(upload.send(chunk.clone()), parse.send(Ok(chunk)));
    a.map_err(|_| "the upload stopped".to_string())?;
    b.map_err(|_| "the parser stopped (the data does not parse)".to_string())
}

/// How long a backup asks again while the AdminServer answers `snapshot` with 429 (rate
/// limited) before it fails.
const SNAPSHOT_RATE_LIMITED_FOR: Duration = Duration::from_secs(15);

/// The HTTP client of every snapshot this process streams (built once: its TLS roots and
/// connection pool are shared).
fn snapshot_client() -> Result<reqwest::Client, reqwest::Error> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    let built = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(60))
        .build()?;
    Ok(CLIENT.get_or_init(|| built).clone())
}

/// Streams the AdminServer snapshot of `job.member` (ZooKeeper 3.9.4+), authenticated as the
/// super user. Returns the snapshot's `last_zxid` header.
async fn stream_snapshot(
    job: &BackupJob,
    upload: &mpsc::Sender<Bytes>,
    parse: &mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<(Option<i64>, Vec<String>), Error> {
    let err = |message: String| Error::Snapshot {
        member: job.member.to_string(),
        message,
    };
    let http = snapshot_client().map_err(|e| err(e.to_string()))?;
    let url = format!("{}?streaming=true", job.member.admin_url("snapshot"));
    // The AdminServer lets one snapshot through per rate-limit interval (about 300 ms in
    // 3.9.5) and answers 429 to the next: someone else's snapshot a moment before is waited
    // out, for a while.
    let started = tokio::time::Instant::now();
    let response = loop {
        let response = http
            .get(&url)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("digest {}:{}", job.user, job.password),
            )
            .send()
            .await
            .map_err(|e| err(format!("request failed: {e}")))?;
        if response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS
            || started.elapsed() >= SNAPSHOT_RATE_LIMITED_FOR
        {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !status.is_success() || !content_type.starts_with("application/octet-stream") {
        let body = response.text().await.unwrap_or_default();
        return Err(err(format!(
            "HTTP {status} ({content_type}): {}",
            body.chars().take(300).collect::<String>()
        )));
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let last_zxid = header("last_zxid").and_then(|z| artifact::parse_zxid(&z));
    let size: Option<u64> = header("snapshot_size").and_then(|s| s.parse().ok());
    let mut body = response.bytes_stream();
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| err(format!("stream broke after {received} bytes: {e}")))?;
        received += chunk.len() as u64;
        send_both(chunk, upload, parse).await.map_err(err)?;
    }
    if let Some(size) = size
        && size != received
    {
        return Err(err(format!(
            "received {received} bytes but the server announced {size}"
        )));
    }
    Ok((last_zxid, vec![]))
}

/// Walks the data tree of `job.member` through the client protocol.
async fn walk_tree(
    job: &BackupJob,
    upload: &mpsc::Sender<Bytes>,
    parse: &mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<(Option<i64>, Vec<String>), Error> {
    let login =
        Login::digest(Credentials::digest(&job.user, &job.password)).with_sasl(job.sasl.clone());
    let client = tree::connect(&job.member.client_address(), &login).await?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL);
    let forward = async {
        while let Some(chunk) = rx.recv().await {
            send_both(chunk, upload, parse)
                .await
                .map_err(Error::Internal)?;
        }
        Ok::<(), Error>(())
    };
    let walk = async {
        let r = tree::walk(&client, &tx, TREE_CHUNK).await;
        drop(tx);
        r
    };
    let (walked, forwarded) = tokio::join!(walk, forward);
    forwarded?;
    let report = walked?;
    let mut notes = vec![];
    if report.skipped_ephemerals > 0 {
        notes.push(format!(
            "{} ephemeral znodes skipped (they belong to sessions)",
            report.skipped_ephemerals
        ));
    }
    if report.summary.ttls > 0 {
        notes.push(format!(
            "{} TTL znodes are restored as persistent znodes",
            report.summary.ttls
        ));
    }
    if report.vanished > 0 {
        notes.push(format!(
            "{} znodes were deleted while the walk ran",
            report.vanished
        ));
    }
    Ok((job.zxid_before, notes))
}

/// An artifact checked end to end: marker, manifest, every byte's SHA-256, and the content's
/// counts and zxids against the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The manifest, now trusted.
    pub manifest: Manifest,
    /// What the data holds.
    pub content: Content,
}

/// Verifies the artifact at `paths` without touching any member.
pub async fn verify_artifact(
    store: &Store,
    id: &str,
    paths: &ArtifactPaths,
) -> Result<Verified, Error> {
    let manifest = store.read_manifest(id, paths).await??;
    let format = manifest.format;
    let (tx, parsed) = spawn_parser(move |r| summarize(format, r));
    let mut data = store.get_stream(&paths.data).await?;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut parser_gone = false;
    while let Some(chunk) = data.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        if !parser_gone && tx.send(Ok(chunk)).await.is_err() {
            parser_gone = true;
        }
    }
    drop(tx);
    let sha = hex::encode(hasher.finalize());
    artifact::check_data(&manifest, bytes, &sha)?;
    let content = joined(parsed).await.map_err(|e| Invalid::ContentMismatch {
        id: id.into(),
        message: format!("the data does not parse: {e}"),
    })?;
    let mismatch = |what: &str, expected: String, found: String| {
        Error::Invalid(Invalid::ContentMismatch {
            id: id.into(),
            message: format!("{what}: the manifest says {expected}, the data holds {found}"),
        })
    };
    if content.znodes != manifest.znodes {
        return Err(mismatch(
            "znodes",
            manifest.znodes.to_string(),
            content.znodes.to_string(),
        ));
    }
    if content.user_znodes != manifest.user_znodes {
        return Err(mismatch(
            "user znodes",
            manifest.user_znodes.to_string(),
            content.user_znodes.to_string(),
        ));
    }
    if content.data_zxid != manifest.data_zxid {
        return Err(mismatch(
            "data zxid",
            artifact::zxid_hex(manifest.data_zxid),
            artifact::zxid_hex(content.data_zxid),
        ));
    }
    Ok(Verified { manifest, content })
}

/// Replays a verified artifact into the ensemble behind `hosts` (as the super user): creates
/// and updates znodes; with `prune`, then deletes live user znodes the artifact does not hold,
/// but only once the data streamed has matched the manifest's size and SHA-256 again.
pub async fn load_artifact(
    store: &Store,
    verified: &Verified,
    paths: &ArtifactPaths,
    hosts: &str,
    auth: impl Into<Login>,
    prune: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<tree::ReplayReport, Error> {
    let client = tree::connect(hosts, &auth.into()).await?;
    let format = verified.manifest.format;
    let (node_tx, node_rx) = mpsc::channel::<Znode>(1024);
    let (tx, reader) = spawn_parser(move |r| read_nodes(format, r, &node_tx));
    let feed = async {
        let mut data = store.get_stream(&paths.data).await?;
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            bytes += chunk.len() as u64;
            if tx.send(Ok(chunk)).await.is_err() {
                break;
            }
        }
        drop(tx);
        // The data was verified before; a change since then stops the load here.
        artifact::check_data(&verified.manifest, bytes, &hex::encode(hasher.finalize()))?;
        Ok::<(), Error>(())
    };
    let replay = tree::replay(&client, node_rx, prune, progress);
    let (fed, replayed) = tokio::join!(feed, replay);
    let (mut report, kept) = replayed?;
    fed?;
    joined(reader).await?;
    // Only data shown whole (size, SHA-256, parsed to its end) may delete anything.
    if prune {
        tree::prune(&client, &kept, &mut report).await?;
    }
    Ok(report)
}

/// The newest change to user data of the live ensemble behind `hosts`: the highest czxid,
/// mzxid or pzxid over every znode outside `/zookeeper`, and the root's pzxid (I7 compares a
/// backup's `dataZxid` with it).
pub async fn live_data_zxid(hosts: &str, auth: impl Into<Login>) -> Result<(i64, u64), Error> {
    let client = tree::connect(hosts, &auth.into()).await?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL);
    let drain = async { while rx.recv().await.is_some() {} };
    let walk = async {
        let r = tree::walk(&client, &tx, TREE_CHUNK).await;
        drop(tx);
        r
    };
    let (walked, ()) = tokio::join!(walk, drain);
    let report = walked?;
    Ok((report.summary.data_zxid, report.summary.user_znodes))
}

/// The live tree behind `hosts` as of the restore's own zxid `at` ([`tree::AtRestore`]): what
/// came from the artifact, told apart from what clients changed since.
pub async fn restored_data(
    hosts: &str,
    auth: impl Into<Login>,
    at: i64,
) -> Result<tree::AtRestore, Error> {
    let client = tree::connect(hosts, &auth.into()).await?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL);
    let (to_parser, parsed) = spawn_parser(move |input| {
        let mut reader = TreeReader::new(input)?;
        let mut counts = tree::AtRestore::new(at);
        while let Some(node) = reader.next_node()? {
            counts.add(&node);
        }
        Ok(counts)
    });
    let forward = async move {
        while let Some(chunk) = rx.recv().await {
            if to_parser.send(Ok(chunk)).await.is_err() {
                break;
            }
        }
    };
    let client = &client;
    let walk = async move {
        let r = tree::walk(client, &tx, TREE_CHUNK).await;
        drop(tx);
        r
    };
    let (walked, ()) = tokio::join!(walk, forward);
    walked?;
    joined(parsed).await
}

/// The counts of a member that loaded a placed snapshot and that no client uses (a
/// verify-only restore's scratch member), from the member itself: `monitor` for its ephemerals,
/// `srvr` for its last processed zxid, and two `getAllChildrenNumber` through one session. No
/// walk of the tree: the time does not grow with the data beyond ZooKeeper's own count.
/// Sessions that the snapshot held expire meanwhile and take their ephemerals with them, so
/// the ephemerals are read before and after the session's counts, until both agree.
pub async fn loaded_counts(
    probe: &crate::zk::AdminProbe,
    member: &MemberAddr,
    auth: impl Into<Login>,
) -> Result<tree::LoadedCounts, Error> {
    let err = |message: String| Error::Snapshot {
        member: member.to_string(),
        message,
    };
    let ephemerals = async || {
        let reply = probe.command(member, "monitor").await.map_err(err)?;
        crate::zk::admin::count(&reply, "ephemerals_count")
            .ok_or_else(|| err("monitor: no ephemerals_count".into()))
    };
    let client = tree::connect(&member.client_address(), &auth.into()).await?;
    let children = async |path: &str| {
        client
            .count_descendants_number(path)
            .await
            .map(|n| n as u64)
            .map_err(|e| err(format!("getAllChildrenNumber {path}: {e}")))
    };
    for _ in 0..5 {
        let before = ephemerals().await?;
        let descendants = children("/").await?;
        let system_descendants = children("/zookeeper").await?;
        let last_processed_zxid = served_counts(probe, std::slice::from_ref(member))
            .await
            .map_err(err)?
            .first()
            .map(|c| c.last_processed_zxid)
            .ok_or_else(|| err("srvr: no answer".into()))?;
        if ephemerals().await? == before {
            return Ok(tree::LoadedCounts {
                descendants,
                system_descendants,
                ephemerals: before,
                last_processed_zxid,
            });
        }
    }
    Err(err(
        "its ephemeral count changed during every one of 5 readings".into(),
    ))
}

/// Every member's own `srvr` counters (no session), or why they could not all be read.
pub async fn served_counts(
    probe: &crate::zk::AdminProbe,
    addrs: &[MemberAddr],
) -> Result<Vec<tree::ServedCounts>, String> {
    let mut out = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let srvr = probe.command(addr, "srvr").await?;
        let number = |pointer: &str| {
            srvr.pointer(pointer)
                .and_then(serde_json::Value::as_i64)
                .ok_or_else(|| format!("{addr}: srvr without {pointer}"))
        };
        out.push(tree::ServedCounts {
            node_count: number("/node_count")? as u64,
            last_processed_zxid: number("/server_stats/last_processed_zxid")?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_parser_thread_reads_every_byte_in_order() {
        let (tx, handle) = spawn_parser(|mut r| {
            let mut all = vec![];
            r.read_to_end(&mut all)
                .map_err(|e| Error::Internal(e.to_string()))?;
            Ok(all)
        });
        for i in 0..50u8 {
            tx.send(Ok(Bytes::from(vec![i; 1000]))).await.unwrap();
        }
        drop(tx);
        let all = joined(handle).await.unwrap();
        assert_eq!(all.len(), 50_000);
        assert!(
            all.chunks(1000)
                .enumerate()
                .all(|(i, c)| c.iter().all(|b| *b == i as u8))
        );
    }
}
