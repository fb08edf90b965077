//! End-to-end tier for backups and restores: the operator (as its own process), the node agent
//! running ZooKeeper members and quorate's own image (for the restore init container), real
//! ZooKeeper 3.9.5 and 3.8.6, a real S3-compatible server on loopback, on a real control plane.
//! The data is judged by kazoo (an independent Python client), never by quorate's own client.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use libtest_mimic::Failed;
use quorate::constants::{LABEL_ENSEMBLE, LABEL_SERVER_ID};
use quorate::crd::{
    ArtifactPhase, BackupArtifact, MasterEnsemble, RestorePhase, ZkBackup, ZkBackupSpec, ZkRestore,
    ZkRestoreSpec,
};
use quorate_testbed::kazoo::Znode;
use quorate_testbed::objectstore::ObjectStore;

const BUCKET: &str = "quorate-backups";

/// Where the S3 server of this binary is (one for every scenario).
struct S3Info {
    endpoint: String,
    access_key: String,
    secret_key: String,
    region: String,
    root_dir: std::path::PathBuf,
}

impl S3Info {
    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }
    fn access_key(&self) -> &str {
        &self.access_key
    }
    fn secret_key(&self) -> &str {
        &self.secret_key
    }
    fn region(&self) -> &str {
        &self.region
    }
    fn root_dir(&self) -> &std::path::Path {
        &self.root_dir
    }
}

static S3: std::sync::OnceLock<S3Info> = std::sync::OnceLock::new();

fn s3() -> &'static S3Info {
    S3.get().expect("the S3 server started in main")
}

async fn super_password(client: &Client, ns: &str, ensemble: &str) -> Result<String, Failed> {
    credential(client, ns, ensemble, "superPassword").await
}

async fn s3_secret(client: &Client, ns: &str) -> TestResult {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("s3-keys".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (
                "accessKeyId".into(),
                ByteString(s3().access_key().as_bytes().to_vec()),
            ),
            (
                "secretAccessKey".into(),
                ByteString(s3().secret_key().as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|e| fail(format!("s3 secret: {e}")))?;
    Ok(())
}

fn backup_spec(ensemble: &str, label: &str, extra: serde_json::Value) -> ZkBackupSpec {
    let mut spec = serde_json::json!({
        "ensembleRef": {"name": ensemble},
        "label": label,
        "destination": {"s3": {
            "endpoint": s3().endpoint(),
            "bucket": BUCKET,
            "prefix": "e2e",
            "region": s3().region(),
            "credentialsSecret": "s3-keys",
        }},
    });
    if let (Some(obj), Some(more)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            obj.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(spec).expect("ZkBackup spec")
}

async fn create_backup(
    client: &Client,
    ns: &str,
    name: &str,
    spec: ZkBackupSpec,
) -> Result<Api<ZkBackup>, Failed> {
    let api: Api<ZkBackup> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &ZkBackup::new(name, spec))
        .await
        .map_err(|e| fail(format!("create ZkBackup {name}: {e}")))?;
    Ok(api)
}

/// Waits until ZkBackup `name` lists an artifact that is no longer BackingUp, newer than the
/// ones in `seen`, and returns it.
async fn next_artifact(
    bed: &Bed,
    api: &Api<ZkBackup>,
    name: &str,
    seen: &[String],
    timeout: Duration,
) -> Result<BackupArtifact, Failed> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(b) = api.get(name).await
            && let Some(a) = b
                .status
                .unwrap_or_default()
                .artifacts
                .into_iter()
                .find(|a| a.phase != ArtifactPhase::BackingUp && !seen.contains(&a.id))
        {
            return Ok(a);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(fail(format!(
        "no finished backup of {name} in {timeout:?}\noperator log:\n{}",
        bed.operator_log_tail()
    )))
}

fn restore_spec(
    ensemble: &str,
    backup: &str,
    artifact: &str,
    extra: serde_json::Value,
) -> ZkRestoreSpec {
    let mut spec = serde_json::json!({
        "ensembleRef": {"name": ensemble},
        "source": {"backup": {"name": backup, "artifact": artifact}},
    });
    if let (Some(obj), Some(more)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            obj.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(spec).expect("ZkRestore spec")
}

/// Creates a ZkRestore and waits until it is Ready or Failed.
async fn run_restore(
    bed: &Bed,
    client: &Client,
    ns: &str,
    name: &str,
    spec: ZkRestoreSpec,
) -> Result<quorate::crd::ZkRestoreStatus, Failed> {
    let api: Api<ZkRestore> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &ZkRestore::new(name, spec))
        .await
        .map_err(|e| fail(format!("create ZkRestore {name}: {e}")))?;
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < Duration::from_secs(300) {
        if let Ok(r) = api.get(name).await {
            let s = r.status.unwrap_or_default();
            let line = format!("{:?} {:?}", s.phase, s.message);
            if line != last {
                eprintln!("  {name}: {line}");
                last = line;
            }
            if matches!(
                s.phase,
                Some(RestorePhase::Ready) | Some(RestorePhase::Failed)
            ) {
                return Ok(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(fail(format!(
        "restore {name} did not finish: {last}\noperator log:\n{}",
        bed.operator_log_tail()
    )))
}

/// [`run_restore`], failing unless the restore ends Ready.
async fn run_restore_ready(
    bed: &Bed,
    client: &Client,
    ns: &str,
    name: &str,
    spec: ZkRestoreSpec,
) -> Result<quorate::crd::ZkRestoreStatus, Failed> {
    let s = run_restore(bed, client, ns, name, spec).await?;
    if s.phase != Some(RestorePhase::Ready) {
        return Err(fail(format!(
            "restore {name} did not end Ready: {:?} {:?}",
            s.phase, s.message
        )));
    }
    Ok(s)
}

/// Path -> (data, sorted ACL, sorted child names) of every non-ephemeral znode outside
/// `/zookeeper`, as kazoo reads it.
type Tree = BTreeMap<String, (Vec<u8>, Vec<(u32, String, String)>, Vec<String>)>;

fn flatten(root: &Znode) -> Tree {
    root.iter()
        .into_iter()
        .filter(|n| !n.ephemeral && n.path != "/zookeeper" && !n.path.starts_with("/zookeeper/"))
        .map(|n| {
            let mut acl: Vec<(u32, String, String)> = n
                .acl
                .iter()
                .map(|a| (a.perms, a.scheme.clone(), a.id.clone()))
                .collect();
            acl.sort();
            let mut kids: Vec<String> = n
                .children
                .iter()
                .filter(|c| !c.ephemeral)
                .map(|c| c.path.clone())
                .collect();
            kids.sort();
            (n.path.clone(), (n.data_bytes(), acl, kids))
        })
        .collect()
}

async fn tree_of(bed: &Bed, hosts: &str, password: &str) -> Result<Tree, Failed> {
    let root = bed
        .judge_at(hosts)
        .await?
        .dump(hosts, Some(("super", password)), "/", &["/zookeeper"])
        .await
        .map_err(|e| fail(format!("kazoo dump: {e}")))?;
    Ok(flatten(&root))
}

/// Every znode's data, ACL and children equal; the first differences otherwise.
fn same_trees(a: &Tree, b: &Tree) -> TestResult {
    let mut diffs = vec![];
    for (path, node) in a {
        match b.get(path) {
            None => diffs.push(format!("{path}: missing after the restore")),
            Some(other) if other != node => diffs.push(format!("{path}: differs")),
            _ => {}
        }
    }
    for path in b.keys() {
        if !a.contains_key(path) {
            diffs.push(format!("{path}: not in the source"));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(fail(format!(
            "{} differences, first: {:?}",
            diffs.len(),
            &diffs[..diffs.len().min(10)]
        )))
    }
}

async fn converged(
    bed: &Bed,
    client: &Client,
    ns: &str,
    name: &str,
    replicas: i32,
    version: Option<&str>,
) -> Result<Api<MasterEnsemble>, Failed> {
    let api: Api<MasterEnsemble> = Api::namespaced(client.clone(), ns);
    let mut e = ensemble(name, replicas);
    if let Some(v) = version {
        e.spec.version = v.into();
    }
    api.create(&PostParams::default(), &e)
        .await
        .map_err(|e| fail(format!("create {name}: {e}")))?;
    wait_converged(bed, &api, name, replicas, Duration::from_secs(240)).await?;
    Ok(api)
}

/// Each member Pod's address, by server id.
async fn member_ips(
    client: &Client,
    ns: &str,
    ensemble: &str,
) -> Result<BTreeMap<u32, String>, Failed> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("{LABEL_ENSEMBLE}={ensemble}")))
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|p| {
            let id = p.labels().get(LABEL_SERVER_ID)?.parse::<u32>().ok()?;
            Some((id, p.status?.pod_ip?))
        })
        .collect())
}

/// Each member's `srvr` answer from its AdminServer, by server id.
async fn members_srvr(
    client: &Client,
    ns: &str,
    ensemble: &str,
) -> Result<BTreeMap<u32, serde_json::Value>, Failed> {
    let http = reqwest::Client::new();
    let mut out = BTreeMap::new();
    for (id, ip) in member_ips(client, ns, ensemble).await? {
        let v: serde_json::Value = http
            .get(format!("http://{ip}:8080/commands/srvr"))
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?
            .json()
            .await
            .map_err(|e| fail(e.to_string()))?;
        out.insert(id, v);
    }
    Ok(out)
}

/// The leader's last processed zxid, from its AdminServer.
async fn live_zxid(client: &Client, ns: &str, ensemble: &str) -> Result<i64, Failed> {
    members_srvr(client, ns, ensemble)
        .await?
        .values()
        .filter_map(|v| v["server_stats"]["last_processed_zxid"].as_i64())
        .max()
        .ok_or_else(|| fail("no member answered srvr"))
}

/// The newest change to the live data, as kazoo reads it: the highest czxid, mzxid or pzxid of
/// a non-ephemeral znode outside `/zookeeper`, and the root's pzxid.
async fn data_zxid(bed: &Bed, hosts: &str, password: &str) -> Result<i64, Failed> {
    let root = bed
        .judge_at(hosts)
        .await?
        .dump(hosts, Some(("super", password)), "/", &["/zookeeper"])
        .await
        .map_err(|e| fail(format!("kazoo dump: {e}")))?;
    Ok(root
        .iter()
        .into_iter()
        .filter(|n| !n.ephemeral)
        .map(|n| {
            if n.path == "/" {
                n.pzxid
            } else {
                n.czxid.max(n.mzxid).max(n.pzxid)
            }
        })
        .max()
        .unwrap_or(0))
}

async fn pod_uids(client: &Client, ns: &str, ensemble: &str) -> Result<Vec<String>, Failed> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut uids: Vec<String> = pods
        .list(&ListParams::default().labels(&format!("{LABEL_ENSEMBLE}={ensemble}")))
        .await
        .map_err(|e| fail(e.to_string()))?
        .items
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    uids.sort();
    Ok(uids)
}

/// The objects stored for one artifact (names relative to its directory).
fn stored_objects(ns: &str, backup: &str, id: &str) -> Vec<String> {
    let dir = s3()
        .root_dir()
        .join(BUCKET)
        .join("e2e")
        .join(ns)
        .join(backup)
        .join(id);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn stored_ids(ns: &str, backup: &str) -> Vec<String> {
    let dir = s3()
        .root_dir()
        .join(BUCKET)
        .join("e2e")
        .join(ns)
        .join(backup);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("COMPLETE").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

async fn backs_up_a_varied_tree_and_restores_it_offline_into_a_fresh_ensemble(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let client = bed.client().await?;
    namespace(&client, ns).await?;
    s3_secret(&client, ns).await?;
    converged(bed, &client, ns, "source", 3, None).await?;
    let hosts = member_hosts(&client, ns, "source").await?;
    let password = super_password(&client, ns, "source").await?;
    let made = bed
        .judge_at(&hosts)
        .await?
        .populate(&hosts, Some(("super", &password)), "/data", 10_000, 600)
        .await
        .map_err(|e| fail(format!("populate: {e}")))?;
    // An ephemeral node of a live session: it belongs to the session, not to the data. The
    // session logs in as the clients' user (client authentication is on by default).
    let client_password = credential(&client, ns, "source", "clientPassword").await?;
    let session = zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_secs(4))
        .with_sasl(zookeeper_client::SaslOptions::from(
            zookeeper_client::SaslOptions::digest_md5("client", client_password),
        ))
        .connect(&hosts)
        .await
        .map_err(|e| fail(format!("connect: {e}")))?;
    session
        .create(
            "/data/alive",
            b"ephemeral",
            &zookeeper_client::CreateMode::Ephemeral
                .with_acls(zookeeper_client::Acls::anyone_all()),
        )
        .await
        .map_err(|e| fail(format!("ephemeral: {e}")))?;
    let before = tree_of(bed, &hosts, &password).await?;
    eprintln!(
        "populated {} znodes ({} in the source tree)",
        made.created,
        before.len()
    );
    if before.len() < 10_000 {
        return Err(fail(format!("only {} znodes to back up", before.len())));
    }

    let api = create_backup(
        &client,
        ns,
        "nightly",
        backup_spec("source", "nightly", serde_json::json!({})),
    )
    .await?;
    let a = next_artifact(bed, &api, "nightly", &[], Duration::from_secs(120)).await?;
    if a.phase != ArtifactPhase::Ready {
        return Err(fail(format!("backup failed: {:?}", a.message)));
    }
    eprintln!(
        "artifact {} {:?} bytes {:?} znodes {:?} zxid {:?}",
        a.id, a.method, a.bytes, a.znodes, a.zxid
    );
    if !a.id.starts_with("nightly-") || a.sha256.as_ref().is_none_or(|s| s.len() != 64) {
        return Err(fail(format!("artifact id or checksum malformed: {a:?}")));
    }
    if a.method != Some(quorate::crd::BackupMethod::Snapshot)
        || a.source_member.is_none()
        || a.zxid.is_none()
    {
        return Err(fail(format!(
            "3.9.5 is backed up by its snapshot command, from a named member: {a:?}"
        )));
    }
    if a.znodes.unwrap_or(0) < before.len() as i64 {
        return Err(fail(format!(
            "artifact holds {:?} znodes, the tree {}",
            a.znodes,
            before.len()
        )));
    }
    let objects = stored_objects(ns, "nightly", &a.id);
    if objects != ["COMPLETE", "data", "manifest.json"] {
        return Err(fail(format!("stored objects: {objects:?}")));
    }
    if let Some(loc) = &a.location
        && (loc.contains(s3().secret_key()) || loc.contains(s3().access_key()))
    {
        return Err(fail("the location carries credentials"));
    }
    drop(session);

    // A fresh ensemble, restored offline: every member stopped, the snapshot placed on each.
    converged(bed, &client, ns, "target", 3, None).await?;
    let target_uids = pod_uids(&client, ns, "target").await?;
    let s = run_restore(
        bed,
        &client,
        ns,
        "into-target",
        restore_spec(
            "target",
            "nightly",
            &a.id,
            serde_json::json!({"mode": "offline"}),
        ),
    )
    .await?;
    if s.phase != Some(RestorePhase::Ready) {
        return Err(fail(format!(
            "restore failed: {:?}\n{}",
            s.message,
            bed.operator_log_tail()
        )));
    }
    if pod_uids(&client, ns, "target").await? == target_uids {
        return Err(fail("an offline restore restarts every member"));
    }
    if s.members.len() != 3 || s.members.iter().any(|m| m.state != "Serving") {
        return Err(fail(format!("per-member progress: {:?}", s.members)));
    }
    let target_api: Api<MasterEnsemble> = Api::namespaced(client.clone(), ns);
    wait_converged(bed, &target_api, "target", 3, Duration::from_secs(120)).await?;
    let target_hosts = member_hosts(&client, ns, "target").await?;
    let target_password = super_password(&client, ns, "target").await?;
    let after = tree_of(bed, &target_hosts, &target_password).await?;
    same_trees(&before, &after)?;
    // The restored parent's counter continues above its children.
    let created = bed
        .judge_at(&target_hosts)
        .await?
        .create_sequential(
            &target_hosts,
            Some(("super", &target_password)),
            "/data/queue/item-",
        )
        .await
        .map_err(|e| fail(format!("create-seq: {e}")))?;
    let highest = after
        .keys()
        .filter_map(|p| p.strip_prefix("/data/queue/item-"))
        .filter_map(|n| n.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let got: u64 = created
        .path
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if got <= highest {
        return Err(fail(format!(
            "new sequential node {} is not above {highest}",
            created.path
        )));
    }
    // The ensemble is the target's own: its configuration names its members, and it scales.
    set_replicas(&target_api, "target", 5).await?;
    wait_converged(bed, &target_api, "target", 5, Duration::from_secs(240)).await?;
    eprintln!(
        "restored {} znodes; sequential node {}",
        after.len(),
        created.path
    );
    Ok(())
}

async fn a_tree_backup_of_3_8_restores_online_into_a_fresh_ensemble(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let client = bed.client().await?;
    namespace(&client, ns).await?;
    s3_secret(&client, ns).await?;
    converged(bed, &client, ns, "old", 1, Some("3.8.6")).await?;
    let hosts = member_hosts(&client, ns, "old").await?;
    let password = super_password(&client, ns, "old").await?;
    bed.judge_at(&hosts)
        .await?
        .populate(&hosts, Some(("super", &password)), "/data", 2_000, 300)
        .await
        .map_err(|e| fail(format!("populate: {e}")))?;
    let before = tree_of(bed, &hosts, &password).await?;
    let api = create_backup(
        &client,
        ns,
        "weekly",
        backup_spec("old", "weekly", serde_json::json!({})),
    )
    .await?;
    let a = next_artifact(bed, &api, "weekly", &[], Duration::from_secs(120)).await?;
    if a.phase != ArtifactPhase::Ready || a.method != Some(quorate::crd::BackupMethod::Tree) {
        return Err(fail(format!("3.8.6 is backed up by a tree walk: {a:?}")));
    }
    if !a
        .message
        .as_deref()
        .is_some_and(|m| m.contains("not preserved"))
    {
        return Err(fail(format!(
            "a tree backup says what it cannot preserve: {:?}",
            a.message
        )));
    }
    converged(bed, &client, ns, "fresh", 1, Some("3.8.6")).await?;
    let fresh_hosts = member_hosts(&client, ns, "fresh").await?;
    let fresh_password = super_password(&client, ns, "fresh").await?;
    // "fresh" holds a little data of its own, at zxids far below the backup's: another
    // ensemble's zxids say nothing about which is newer, so without consent it is refused.
    bed.judge_at(&fresh_hosts)
        .await?
        .write(&fresh_hosts, Some(("super", &fresh_password)), "/own", 5)
        .await
        .map_err(|e| fail(format!("write: {e}")))?;
    let s = run_restore(
        bed,
        &client,
        ns,
        "unrelated",
        restore_spec(
            "fresh",
            "weekly",
            &a.id,
            serde_json::json!({"mode": "online"}),
        ),
    )
    .await?;
    if s.phase != Some(RestorePhase::Failed)
        || !s.conditions.iter().any(|c| c.reason == "UnrelatedHistory")
    {
        return Err(fail(format!(
            "a backup of another ensemble replaced data without consent: {:?} {:?}",
            s.phase, s.message
        )));
    }
    let own = bed
        .judge_at(&fresh_hosts)
        .await?
        .verify(&fresh_hosts, Some(("super", &fresh_password)), "/own", 5)
        .await
        .map_err(|e| fail(format!("kazoo verify: {e}")))?;
    if !own.ok {
        return Err(fail(format!("a refused restore touched the data: {own:?}")));
    }
    run_restore_ready(
        bed,
        &client,
        ns,
        "online",
        restore_spec(
            "fresh",
            "weekly",
            &a.id,
            serde_json::json!({"mode": "online", "allowOlder": true}),
        ),
    )
    .await?;
    let after = tree_of(bed, &fresh_hosts, &fresh_password).await?;
    same_trees(&before, &after)?;
    let created = bed
        .judge_at(&fresh_hosts)
        .await?
        .create_sequential(
            &fresh_hosts,
            Some(("super", &fresh_password)),
            "/data/queue/item-",
        )
        .await
        .map_err(|e| fail(format!("a sequential create after a tree restore: {e}")))?;
    if after.contains_key(&created.path) {
        return Err(fail(format!("{} reused a restored number", created.path)));
    }
    Ok(())
}

/// What [`live_newer_than_its_backup`] leaves.
struct LiveAndBackup {
    client: Client,
    ens_api: Api<MasterEnsemble>,
    hosts: String,
    password: String,
    /// The backup's Ready artifact.
    old: BackupArtifact,
}

/// In a new namespace `ns` with the S3 Secret: ensemble `live` of `replicas` members, `first`
/// znodes under `/first`, a Ready artifact of ZkBackup `daily`, then `second` znodes under
/// `/second`, so the live data is newer than the backup.
async fn live_newer_than_its_backup(
    bed: &Bed,
    ns: &str,
    replicas: i32,
    first: usize,
    second: usize,
) -> Result<LiveAndBackup, Failed> {
    let client = bed.client().await?;
    namespace(&client, ns).await?;
    s3_secret(&client, ns).await?;
    let ens_api = converged(bed, &client, ns, "live", replicas, None).await?;
    let hosts = member_hosts(&client, ns, "live").await?;
    let password = super_password(&client, ns, "live").await?;
    let auth = Some(("super", password.as_str()));
    bed.judge_at(&hosts)
        .await?
        .write(&hosts, auth, "/first", first)
        .await
        .map_err(|e| fail(format!("write: {e}")))?;
    let api = create_backup(
        &client,
        ns,
        "daily",
        backup_spec("live", "daily", serde_json::json!({})),
    )
    .await?;
    let old = next_artifact(bed, &api, "daily", &[], Duration::from_secs(120)).await?;
    if old.phase != ArtifactPhase::Ready {
        return Err(fail(format!("backup failed: {:?}", old.message)));
    }
    bed.judge_at(&hosts)
        .await?
        .write(&hosts, auth, "/second", second)
        .await
        .map_err(|e| fail(format!("write: {e}")))?;
    Ok(LiveAndBackup {
        client,
        ens_api,
        hosts,
        password,
        old,
    })
}

/// One kazoo session holding the ephemeral znodes `paths` (their parents persistent), ready.
async fn hold_ephemerals(
    bed: &Bed,
    hosts: &str,
    auth: Option<(&str, &str)>,
    paths: &[&str],
) -> Result<quorate_testbed::kazoo::Holder, Failed> {
    let mut holder = bed
        .judge_at(hosts)
        .await?
        .hold(hosts, auth, paths, Duration::from_secs(600))
        .map_err(|e| fail(format!("hold: {e}")))?;
    holder
        .ready(Duration::from_secs(60))
        .await
        .map_err(|e| fail(format!("hold: {e}")))?;
    Ok(holder)
}

/// An online restore brings the backup's znodes back and deletes the persistent znodes it does
/// not hold, but never a live session's ephemeral (a lock, a registration) nor a znode above
/// one: the session stays alive and owns them all afterwards.
async fn an_online_restore_keeps_the_ephemerals_of_live_sessions(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let LiveAndBackup {
        client,
        ens_api: _,
        hosts,
        password,
        old,
    } = live_newer_than_its_backup(bed, ns, 1, 40, 30).await?;
    let auth = Some(("super", password.as_str()));
    // A lock under a znode the backup holds; a registration under znodes it does not.
    let held = ["/first/lock", "/registry/live/member-1"];
    let holder = hold_ephemerals(bed, &hosts, auth, &held).await?;
    run_restore_ready(
        bed,
        &client,
        ns,
        "online",
        restore_spec(
            "live",
            "daily",
            &old.id,
            serde_json::json!({"mode": "online", "allowOlder": true}),
        ),
    )
    .await?;
    let report = holder
        .release()
        .await
        .map_err(|e| fail(format!("hold: {e}")))?;
    if !report.alive || !report.missing.is_empty() {
        return Err(fail(format!(
            "an online restore took live ephemerals or their session: {report:?}"
        )));
    }
    let first = bed
        .judge_at(&hosts)
        .await?
        .verify(&hosts, auth, "/first", 40)
        .await
        .map_err(|e| fail(format!("kazoo verify: {e}")))?;
    if !first.ok {
        return Err(fail(format!(
            "the backup's znodes are not all back: {first:?}"
        )));
    }
    let tree = tree_of(bed, &hosts, &password).await?;
    let newer: Vec<&String> = tree.keys().filter(|p| p.starts_with("/second")).collect();
    if !newer.is_empty() {
        return Err(fail(format!(
            "persistent znodes the backup does not hold were not deleted: {newer:?}"
        )));
    }
    for above in ["/registry", "/registry/live"] {
        if !tree.contains_key(above) {
            return Err(fail(format!(
                "{above} holds a live ephemeral and was deleted"
            )));
        }
    }
    Ok(())
}

/// Clients write as soon as a restored member serves. An offline restore judges the data at
/// its own zxid, so znodes written between "every member serves" and the judgement (the
/// operator stopped exactly there, at a failpoint, then SIGKILLed) neither fail the restore nor
/// leave the ensemble fenced, and none of them is lost.
async fn an_offline_restore_is_judged_at_its_own_zxid_while_clients_write(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let LiveAndBackup {
        client,
        ens_api,
        hosts: _,
        password,
        old,
    } = live_newer_than_its_backup(bed, ns, 1, 40, 30).await?;
    let auth = Some(("super", password.as_str()));
    // Only an operator stopped before the judgement may act on the restore.
    bed.kill_operator();
    let point = quorate::controller::failpoints::RESTORE_BEFORE_JUDGEMENT;
    let armed = bed.start_operator_with_env(&[(quorate::controller::failpoints::ENV, point)])?;
    let api: Api<ZkRestore> = Api::namespaced(client.clone(), ns);
    api.create(
        &PostParams::default(),
        &ZkRestore::new(
            "offline",
            restore_spec(
                "live",
                "daily",
                &old.id,
                serde_json::json!({"allowOlder": true}),
            ),
        ),
    )
    .await
    .map_err(|e| fail(format!("create ZkRestore: {e}")))?;
    let line = format!("failpoint {point} reached");
    wait_for(&line, Duration::from_secs(300), async || {
        Ok(bed.operator_log(&armed).contains(&line))
    })
    .await
    .map_err(|e| fail(format!("{e:?}\noperator log:\n{}", bed.operator_log_tail())))?;
    // The restored member serves (its Pod was recreated): a client writes before the restore
    // is judged.
    let hosts = member_hosts(&client, ns, "live").await?;
    let written = bed
        .judge_at(&hosts)
        .await?
        .write(&hosts, auth, "/after-restore", 25)
        .await
        .map_err(|e| fail(format!("write: {e}")))?;
    if written.written != 25 {
        return Err(fail(format!("the client's writes failed: {written:?}")));
    }
    bed.kill_operator_named(&armed);
    bed.start_operator()?;
    let start = Instant::now();
    let status = loop {
        let s = api
            .get("offline")
            .await
            .map_err(|e| fail(e.to_string()))?
            .status
            .unwrap_or_default();
        if matches!(
            s.phase,
            Some(RestorePhase::Ready) | Some(RestorePhase::Failed)
        ) {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err(fail(format!("the restore did not finish: {:?}", s.message)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if status.phase != Some(RestorePhase::Ready) {
        return Err(fail(format!(
            "client writes after the members served failed the restore: {:?}",
            status.message
        )));
    }
    let ens = ens_api.get("live").await.map_err(|e| fail(e.to_string()))?;
    if ens
        .annotations()
        .contains_key(quorate::constants::ANNOTATION_RESTORING)
    {
        return Err(fail("a finished restore left the ensemble fenced"));
    }
    let hosts = member_hosts(&client, ns, "live").await?;
    for (prefix, count) in [("/first", 40), ("/after-restore", 25)] {
        let read = bed
            .judge_at(&hosts)
            .await?
            .verify(&hosts, auth, prefix, count)
            .await
            .map_err(|e| fail(format!("kazoo verify: {e}")))?;
        if !read.ok || read.checked != count {
            return Err(fail(format!("{prefix} is not all there: {read:?}")));
        }
    }
    let tree = tree_of(bed, &hosts, &password).await?;
    if tree.keys().any(|p| p.starts_with("/second")) {
        return Err(fail(
            "data newer than the backup survived an offline restore",
        ));
    }
    Ok(())
}

/// Two of three members lost with their volumes (Pods and PVCs gone, the ensemble paused so
/// that nothing replaces them meanwhile): an offline restore gives the two lost voters new
/// volumes and places the backup on all three, so the restored ensemble has its quorum back.
/// Judged by kazoo through every member and by each member's own AdminServer.
async fn an_offline_restore_brings_back_members_whose_volumes_were_lost(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let LiveAndBackup {
        client,
        ens_api,
        hosts: _,
        password,
        old,
    } = live_newer_than_its_backup(bed, ns, 3, 30, 10).await?;
    let auth = Some(("super", password.as_str()));
    let pause = serde_json::json!({"spec": {"paused": true}});
    ens_api
        .patch("live", &PatchParams::default(), &Patch::Merge(&pause))
        .await
        .map_err(|e| fail(e.to_string()))?;
    wait_for("the Paused phase", Duration::from_secs(60), async || {
        let e = ens_api.get("live").await.map_err(|e| fail(e.to_string()))?;
        Ok(e.status.and_then(|s| s.phase) == Some(quorate::crd::EnsemblePhase::Paused))
    })
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), ns);
    for id in [1, 3] {
        let pvc = format!("data-live-{id}");
        pvcs.delete(&pvc, &Default::default())
            .await
            .map_err(|e| fail(format!("delete {pvc}: {e}")))?;
        pods.delete(&format!("live-{id}"), &Default::default())
            .await
            .map_err(|e| fail(format!("delete live-{id}: {e}")))?;
        wait_for(
            &format!("{pvc} gone"),
            Duration::from_secs(120),
            async || {
                Ok(pvcs
                    .get_opt(&pvc)
                    .await
                    .map_err(|e| fail(e.to_string()))?
                    .is_none())
            },
        )
        .await?;
    }
    // The live data (the survivor's volume) is newer than the backup: consent is needed.
    run_restore_ready(
        bed,
        &client,
        ns,
        "rebuild",
        restore_spec(
            "live",
            "daily",
            &old.id,
            serde_json::json!({"allowOlder": true}),
        ),
    )
    .await?;
    let srvr = members_srvr(&client, ns, "live").await?;
    let serving: Vec<u32> = srvr
        .iter()
        .filter(|(_, v)| {
            v.pointer("/server_stats/server_state")
                .and_then(|s| s.as_str())
                .is_some_and(|s| s == "leader" || s == "follower")
        })
        .map(|(id, _)| *id)
        .collect();
    if serving != [1, 2, 3] {
        return Err(fail(format!(
            "after the restore the members serving are {serving:?}: {srvr:?}"
        )));
    }
    for id in [1, 2, 3] {
        let ip = pods
            .get(&format!("live-{id}"))
            .await
            .map_err(|e| fail(e.to_string()))?
            .status
            .and_then(|s| s.pod_ip)
            .ok_or_else(|| fail(format!("live-{id} has no IP")))?;
        let one = format!("{ip}:2181");
        let read = bed
            .judge_at(&one)
            .await?
            .verify(&one, auth, "/first", 30)
            .await
            .map_err(|e| fail(format!("kazoo verify through member {id}: {e}")))?;
        if !read.ok {
            return Err(fail(format!(
                "member {id} lacks the backup's data: {read:?}"
            )));
        }
    }
    let hosts = member_hosts(&client, ns, "live").await?;
    let tree = tree_of(bed, &hosts, &password).await?;
    if tree.keys().any(|p| p.starts_with("/second")) {
        return Err(fail(
            "data newer than the backup survived an offline restore",
        ));
    }
    Ok(())
}

async fn restores_are_checked_before_any_member_is_touched(bed: &Bed, ns: &str) -> TestResult {
    let LiveAndBackup {
        client,
        ens_api: _,
        hosts,
        password,
        old,
    } = live_newer_than_its_backup(bed, ns, 1, 200, 100).await?;
    let auth = Some(("super", password.as_str()));
    let uids = pod_uids(&client, ns, "live").await?;
    let zxid = live_zxid(&client, ns, "live").await?;

    // verifyOnly: a scratch member loads it; the live ensemble is not touched. The scratch
    // member is judged by its own counters, not by a walk of its tree: a backup taken while a
    // session holds ephemerals (which the scratch member loads with their session, then drops
    // when it expires) must still come out exact.
    let held = ["/first/lock", "/registry/scratch/member-1"];
    let holder = hold_ephemerals(bed, &hosts, auth, &held).await?;
    let with_ephemerals = create_backup(
        &client,
        ns,
        "held",
        backup_spec("live", "held", serde_json::json!({})),
    )
    .await?;
    let held_artifact =
        next_artifact(bed, &with_ephemerals, "held", &[], Duration::from_secs(120)).await?;
    holder
        .release()
        .await
        .map_err(|e| fail(format!("hold: {e}")))?;
    if held_artifact.phase != ArtifactPhase::Ready {
        return Err(fail(format!(
            "the backup with ephemerals failed: {:?}",
            held_artifact.message
        )));
    }
    // The live data's newest zxid, read by kazoo (sessions, the operator's own included, are
    // transactions too: the server's last zxid moves without any data changing).
    let live_data = data_zxid(bed, &hosts, &password).await?;
    for (name, backup, id) in [
        ("verify", "daily", &old.id),
        ("verify-held", "held", &held_artifact.id),
    ] {
        let s = run_restore_ready(
            bed,
            &client,
            ns,
            name,
            restore_spec("live", backup, id, serde_json::json!({"verifyOnly": true})),
        )
        .await?;
        if !s
            .message
            .as_deref()
            .is_some_and(|m| m.contains("the member's own counts"))
        {
            return Err(fail(format!(
                "verifyOnly {name} was not judged by the member's own counts: {:?}",
                s.message
            )));
        }
    }
    if data_zxid(bed, &hosts, &password).await? != live_data
        || pod_uids(&client, ns, "live").await? != uids
    {
        return Err(fail("verifyOnly changed the live ensemble"));
    }
    for pod in ["verify-scratch", "verify-held-scratch"] {
        let scratch = Api::<Pod>::namespaced(client.clone(), ns)
            .get_opt(pod)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if scratch.is_some_and(|p| p.metadata.deletion_timestamp.is_none()) {
            return Err(fail(format!("the scratch member {pod} was left running")));
        }
    }

    // Older than the live data: refused without allowOlder, nothing touched.
    let s = run_restore(
        bed,
        &client,
        ns,
        "older",
        restore_spec("live", "daily", &old.id, serde_json::json!({})),
    )
    .await?;
    let refused = s.conditions.iter().any(|c| c.reason == "OlderThanLive");
    if s.phase != Some(RestorePhase::Failed)
        || !refused
        || !s
            .message
            .as_deref()
            .is_some_and(|m| m.contains("allowOlder"))
    {
        return Err(fail(format!(
            "an older backup was not refused: {:?} {:?}",
            s.phase, s.message
        )));
    }
    if data_zxid(bed, &hosts, &password).await? != live_data
        || pod_uids(&client, ns, "live").await? != uids
    {
        return Err(fail("a refused restore touched the ensemble"));
    }

    // One byte changed in the stored data: refused before any member is touched.
    let data = s3()
        .root_dir()
        .join(BUCKET)
        .join("e2e")
        .join(ns)
        .join("daily")
        .join(&old.id)
        .join("data");
    let mut bytes =
        std::fs::read(&data).map_err(|e| fail(format!("read {}: {e}", data.display())))?;
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&data, &bytes).map_err(|e| fail(e.to_string()))?;
    let s = run_restore(
        bed,
        &client,
        ns,
        "corrupt",
        restore_spec(
            "live",
            "daily",
            &old.id,
            serde_json::json!({"allowOlder": true}),
        ),
    )
    .await?;
    if s.phase != Some(RestorePhase::Failed)
        || !s.message.as_deref().is_some_and(|m| m.contains("checksum"))
    {
        return Err(fail(format!(
            "a corrupt artifact was not refused: {:?}",
            s.message
        )));
    }
    if data_zxid(bed, &hosts, &password).await? != live_data
        || pod_uids(&client, ns, "live").await? != uids
    {
        return Err(fail("a corrupt artifact touched the ensemble"));
    }
    bytes[at] ^= 0x01;
    std::fs::write(&data, &bytes).map_err(|e| fail(e.to_string()))?;

    // With allowOlder the older data is restored: /second is gone, /first is back.
    run_restore_ready(
        bed,
        &client,
        ns,
        "allowed",
        restore_spec(
            "live",
            "daily",
            &old.id,
            serde_json::json!({"allowOlder": true}),
        ),
    )
    .await?;
    let live_api: Api<MasterEnsemble> = Api::namespaced(client.clone(), ns);
    wait_converged(bed, &live_api, "live", 1, Duration::from_secs(120)).await?;
    let hosts = member_hosts(&client, ns, "live").await?;
    let verified = bed
        .judge_at(&hosts)
        .await?
        .verify(&hosts, auth, "/first", 200)
        .await
        .map_err(|e| fail(format!("verify: {e}")))?;
    if !verified.ok {
        return Err(fail(format!(
            "the restored data is not the backup's: {verified:?}"
        )));
    }
    let tree = tree_of(bed, &hosts, &password).await?;
    if tree.contains_key("/second") {
        return Err(fail(
            "data newer than the backup survived an allowOlder restore",
        ));
    }
    // New writes after the restore are above every zxid the ensemble issued before.
    bed.judge_at(&hosts)
        .await?
        .write(&hosts, auth, "/third", 1)
        .await
        .map_err(|e| fail(format!("write after restore: {e}")))?;
    let after = live_zxid(&client, ns, "live").await?;
    if after <= zxid {
        return Err(fail(format!(
            "zxid after the restore {after:#x} is not above {zxid:#x}"
        )));
    }
    Ok(())
}

/// The older-data guard (I7) while no member serves: two of three members paused (SIGSTOP), the
/// third without a quorum. The live data's newest zxid then comes from the members' volumes,
/// and a backup older than it is refused with every member as it was; resumed, the ensemble
/// still holds the newer data.
async fn an_older_backup_is_refused_from_the_volumes_while_no_member_serves(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let LiveAndBackup {
        client,
        ens_api,
        hosts,
        password,
        old,
    } = live_newer_than_its_backup(bed, ns, 3, 50, 50).await?;
    let auth = Some(("super", password.as_str()));
    let live_data = data_zxid(bed, &hosts, &password).await?;
    // The backup read a follower, never the leader (ZooKeeper's own view of the roles).
    let leaders: Vec<u32> = members_srvr(&client, ns, "live")
        .await?
        .into_iter()
        .filter(|(_, v)| {
            v.pointer("/server_stats/server_state")
                .and_then(|s| s.as_str())
                == Some("leader")
        })
        .map(|(id, _)| id)
        .collect();
    let source = old.source_member.and_then(|m| u32::try_from(m).ok());
    if leaders.len() != 1 || source.is_none() || leaders.contains(&source.unwrap_or(0)) {
        return Err(fail(format!(
            "the backup was read from member {source:?}; the leader is {leaders:?}"
        )));
    }

    // Two members paused: none of the three serves.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let members = |list: Vec<Pod>| -> BTreeMap<String, (String, Option<String>)> {
        list.into_iter()
            .filter(|p| p.labels().contains_key(LABEL_SERVER_ID))
            .map(|p| {
                let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
                (p.name_any(), (p.uid().unwrap_or_default(), ip))
            })
            .collect()
    };
    let selector = ListParams::default().labels(&format!("{LABEL_ENSEMBLE}=live"));
    let before = members(
        pods.list(&selector)
            .await
            .map_err(|e| fail(e.to_string()))?
            .items,
    );
    let names: Vec<String> = before.keys().cloned().collect();
    for name in &names[..2] {
        with_agent(bed, |a| a.pause(ns, name))?;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let third = before[&names[2]]
        .1
        .clone()
        .ok_or_else(|| fail("no Pod IP"))?;
    wait_for("no member to serve", Duration::from_secs(120), async || {
        // The unpaused member's own AdminServer says it does not serve; the operator has seen it.
        let srvr = judges::admin_json(&http, &third, "srvr").await;
        let not_serving = srvr.is_some_and(|v| v.get("error").is_some_and(|e| !e.is_null()));
        let status = ens_api
            .get_status("live")
            .await
            .map_err(|e| fail(e.to_string()))?;
        let none_serving = status.status.is_some_and(|s| {
            s.members
                .iter()
                .all(|m| m.state != Some(quorate::crd::MemberState::Serving))
        });
        Ok(not_serving && none_serving)
    })
    .await?;

    let s = run_restore(
        bed,
        &client,
        ns,
        "older",
        restore_spec("live", "daily", &old.id, serde_json::json!({})),
    )
    .await?;
    let refused = s.conditions.iter().any(|c| c.reason == "OlderThanLive");
    let from_volumes = s.message.as_deref().is_some_and(|m| m.contains("volumes"));
    if s.phase != Some(RestorePhase::Failed) || !refused || !from_volumes {
        return Err(fail(format!(
            "an older backup was not refused from the volumes while no member served: {:?} {:?}\noperator log:\n{}",
            s.phase,
            s.message,
            bed.operator_log_tail()
        )));
    }
    let read = s
        .live_data_zxid
        .as_deref()
        .and_then(|z| i64::from_str_radix(z.trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| fail(format!("no live zxid recorded: {:?}", s.live_data_zxid)))?;
    if read < live_data {
        return Err(fail(format!(
            "the volumes' zxid {read:#x} is below the live data's {live_data:#x}"
        )));
    }
    // Nothing touched: the same member Pods, no fence, the restore's probes gone.
    let ens = ens_api.get("live").await.map_err(|e| fail(e.to_string()))?;
    if ens
        .annotations()
        .contains_key(quorate::constants::ANNOTATION_RESTORING)
    {
        return Err(fail("a refused restore left the ensemble fenced"));
    }
    let after = members(
        pods.list(&selector)
            .await
            .map_err(|e| fail(e.to_string()))?
            .items,
    );
    if after
        .iter()
        .map(|(n, (u, _))| (n, u))
        .ne(before.iter().map(|(n, (u, _))| (n, u)))
    {
        return Err(fail(format!(
            "a refused restore touched the members: {before:?} -> {after:?}"
        )));
    }
    let mut left = Vec::new();
    wait_for(
        "the restore's volume probes to go",
        Duration::from_secs(60),
        async || {
            let probes = pods
                .list(&ListParams::default().labels("quorate.dev/restore=older"))
                .await
                .map_err(|e| fail(e.to_string()))?;
            left = probes
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| (p.name_any(), p.metadata.creation_timestamp.clone()))
                .collect();
            Ok(left.is_empty())
        },
    )
    .await
    .map_err(|e| {
        fail(format!(
            "{e:?}: {left:?} left\noperator log:\n{}",
            bed.operator_log_tail()
        ))
    })?;

    for name in &names[..2] {
        with_agent(bed, |a| a.resume(ns, name))?;
    }
    wait_converged(bed, &ens_api, "live", 3, Duration::from_secs(180)).await?;
    let hosts = member_hosts(&client, ns, "live").await?;
    for (path, count) in [("/first", 50), ("/second", 50)] {
        let v = bed
            .judge_at(&hosts)
            .await?
            .verify(&hosts, auth, path, count)
            .await
            .map_err(|e| fail(format!("verify {path}: {e}")))?;
        if !v.ok {
            return Err(fail(format!("{path} was lost: {v:?}")));
        }
    }
    Ok(())
}

/// An offline restore never stops members while the ensemble's controller may still be taking
/// a step: it claims the fence, then waits until the ensemble's controller says in status that
/// it saw it (`status.restore`). Here that controller's pass is stopped inside a scale-up step
/// (failpoint `create-member.after-claim`: claimed, nothing created), so it can never say so;
/// the restore must stop no member, judged by the member Pods' uids on the API server. Once a
/// fresh operator takes over, the members are handed over, the restore ends Ready with the
/// backup's data (judged by kazoo), the fence is lifted and the interrupted scale-up finishes.
async fn an_offline_restore_waits_until_the_ensemble_hands_its_members_over(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let LiveAndBackup {
        client,
        ens_api,
        hosts: _,
        password,
        old,
    } = live_newer_than_its_backup(bed, ns, 3, 50, 10).await?;
    let before = pod_uids(&client, ns, "live").await?;
    bed.kill_operator();
    set_replicas(&ens_api, "live", 5).await?;
    let failpoint = quorate::controller::failpoints::CREATE_MEMBER_AFTER_CLAIM;
    let armed =
        bed.start_operator_with_env(&[(quorate::controller::failpoints::ENV, failpoint)])?;
    let line = format!("failpoint {failpoint} reached");
    wait_for(&line, Duration::from_secs(180), async || {
        Ok(bed.operator_log(&armed).contains(&line))
    })
    .await
    .map_err(|e| fail(format!("{e:?}\noperator log:\n{}", bed.operator_log_tail())))?;

    let restores: Api<ZkRestore> = Api::namespaced(client.clone(), ns);
    let spec = restore_spec(
        "live",
        "daily",
        &old.id,
        serde_json::json!({"allowOlder": true}),
    );
    restores
        .create(&PostParams::default(), &ZkRestore::new("held", spec))
        .await
        .map_err(|e| fail(format!("create ZkRestore: {e}")))?;
    // The fence is claimed (the API server shows it), the restore is past its verification
    // and a pass in Stopping has looked at the members and said what it waits for.
    wait_for(
        "the restore to claim the fence and wait for the hand-over",
        Duration::from_secs(180),
        async || {
            let ens = ens_api.get("live").await.map_err(|e| fail(e.to_string()))?;
            let fenced = ens
                .annotations()
                .get(quorate::constants::ANNOTATION_RESTORING)
                .is_some_and(|r| r == "held");
            let s = restores
                .get("held")
                .await
                .map_err(|e| fail(e.to_string()))?
                .status
                .unwrap_or_default();
            if matches!(s.phase, Some(RestorePhase::Failed | RestorePhase::Ready)) {
                return Err(fail(format!(
                    "the restore ended while the members were not handed over: {:?} {:?}",
                    s.phase, s.message
                )));
            }
            Ok(fenced
                && s.phase == Some(RestorePhase::Stopping)
                && s.message
                    .is_some_and(|m| m.contains("hand the members over")))
        },
    )
    .await
    .map_err(|e| fail(format!("{e:?}\noperator log:\n{}", bed.operator_log_tail())))?;
    let held = pod_uids(&client, ns, "live").await?;
    if held != before {
        return Err(fail(format!(
            "member Pods changed while the ensemble's controller was inside a step: {before:?} -> {held:?}"
        )));
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let going = pods
        .list(&ListParams::default().labels(&format!("{LABEL_ENSEMBLE}=live")))
        .await
        .map_err(|e| fail(e.to_string()))?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .map(|p| p.name_any())
        .collect::<Vec<_>>();
    if !going.is_empty() {
        return Err(fail(format!(
            "member Pods deleted before the hand-over: {going:?}"
        )));
    }

    // A fresh operator: its ensemble pass sees the fence and hands the members over.
    bed.kill_operator_named(&armed);
    bed.start_operator()?;
    let mut last = None;
    wait_for("the restore to end", Duration::from_secs(300), async || {
        let s = restores
            .get("held")
            .await
            .map_err(|e| fail(e.to_string()))?
            .status
            .unwrap_or_default();
        let done = matches!(s.phase, Some(RestorePhase::Ready | RestorePhase::Failed));
        last = Some(s);
        Ok(done)
    })
    .await
    .map_err(|e| {
        fail(format!(
            "{e:?}: {last:?}\noperator log:\n{}",
            bed.operator_log_tail()
        ))
    })?;
    let end = last.unwrap_or_default();
    if end.phase != Some(RestorePhase::Ready) {
        return Err(fail(format!(
            "the restore did not end Ready: {:?} {:?}",
            end.phase, end.message
        )));
    }
    wait_converged(bed, &ens_api, "live", 5, Duration::from_secs(300)).await?;
    let ens = ens_api.get("live").await.map_err(|e| fail(e.to_string()))?;
    if ens
        .annotations()
        .contains_key(quorate::constants::ANNOTATION_RESTORING)
        || ens
            .status
            .as_ref()
            .and_then(|s| s.restore.clone())
            .is_some()
    {
        return Err(fail(format!(
            "the fence or the hand-over outlived the restore: {:?} {:?}",
            ens.annotations(),
            ens.status.as_ref().map(|s| &s.restore)
        )));
    }
    // The backup's data on every member, the newer writes gone (allowOlder was given).
    let hosts = member_hosts(&client, ns, "live").await?;
    let auth = Some(("super", password.as_str()));
    let v = bed
        .judge_at(&hosts)
        .await?
        .verify(&hosts, auth, "/first", 50)
        .await
        .map_err(|e| fail(format!("verify: {e}")))?;
    if !v.ok || v.checked != 50 {
        return Err(fail(format!("the backup's data is not there: {v:?}")));
    }
    let tree = tree_of(bed, &hosts, &password).await?;
    if tree.keys().any(|p| p.starts_with("/second")) {
        return Err(fail(
            "data newer than the backup survived an offline restore",
        ));
    }
    Ok(())
}

/// Two restores of one ensemble created together: the first created runs, the second is
/// refused before it touches anything, and the fence is lifted only by the one that holds it.
async fn two_restores_of_one_ensemble_run_one_at_a_time(bed: &Bed, ns: &str) -> TestResult {
    let LiveAndBackup {
        client,
        ens_api,
        hosts: _,
        password,
        old,
    } = live_newer_than_its_backup(bed, ns, 1, 50, 10).await?;
    let auth = Some(("super", password.as_str()));
    let restores: Api<ZkRestore> = Api::namespaced(client.clone(), ns);
    let spec = restore_spec(
        "live",
        "daily",
        &old.id,
        serde_json::json!({"allowOlder": true}),
    );
    for name in ["first", "second"] {
        restores
            .create(&PostParams::default(), &ZkRestore::new(name, spec.clone()))
            .await
            .map_err(|e| fail(format!("create ZkRestore {name}: {e}")))?;
    }
    let mut ends = BTreeMap::new();
    wait_for(
        "both restores to end",
        Duration::from_secs(300),
        async || {
            for name in ["first", "second"] {
                let s = restores
                    .get(name)
                    .await
                    .map_err(|e| fail(e.to_string()))?
                    .status
                    .unwrap_or_default();
                if matches!(s.phase, Some(RestorePhase::Ready | RestorePhase::Failed)) {
                    ends.insert(name, s);
                }
            }
            Ok(ends.len() == 2)
        },
    )
    .await
    .map_err(|e| fail(format!("{e:?}\noperator log:\n{}", bed.operator_log_tail())))?;
    let (first, second) = (&ends["first"], &ends["second"]);
    let refused = second
        .conditions
        .iter()
        .any(|c| c.reason == "AnotherRestore");
    if first.phase != Some(RestorePhase::Ready)
        || second.phase != Some(RestorePhase::Failed)
        || !refused
    {
        return Err(fail(format!(
            "expected the first restore Ready and the second refused: {:?} {:?} / {:?} {:?}",
            first.phase, first.message, second.phase, second.message
        )));
    }
    let ens = ens_api.get("live").await.map_err(|e| fail(e.to_string()))?;
    if ens
        .annotations()
        .contains_key(quorate::constants::ANNOTATION_RESTORING)
    {
        return Err(fail("the ensemble was left fenced"));
    }
    wait_converged(bed, &ens_api, "live", 1, Duration::from_secs(120)).await?;
    // The data is the backup's, restored once.
    let hosts = member_hosts(&client, ns, "live").await?;
    let v = bed
        .judge_at(&hosts)
        .await?
        .verify(&hosts, auth, "/first", 50)
        .await
        .map_err(|e| fail(format!("verify: {e}")))?;
    if !v.ok {
        return Err(fail(format!(
            "the restored data is not the backup's: {v:?}"
        )));
    }
    if tree_of(bed, &hosts, &password)
        .await?
        .contains_key("/second")
    {
        return Err(fail(
            "the allowOlder restore left data newer than the backup",
        ));
    }
    Ok(())
}

async fn a_schedule_every_minute_keeps_the_newest_backups(bed: &Bed, ns: &str) -> TestResult {
    let client = bed.client().await?;
    namespace(&client, ns).await?;
    s3_secret(&client, ns).await?;
    converged(bed, &client, ns, "sched", 1, None).await?;
    let api = create_backup(
        &client,
        ns,
        "minutely",
        backup_spec(
            "sched",
            "minutely",
            serde_json::json!({"schedule": "* * * * *", "retention": {"keepLast": 2}}),
        ),
    )
    .await?;
    let mut seen: Vec<String> = vec![];
    while seen.len() < 3 {
        let a = next_artifact(bed, &api, "minutely", &seen, Duration::from_secs(150)).await?;
        if a.phase != ArtifactPhase::Ready {
            return Err(fail(format!("scheduled backup failed: {:?}", a.message)));
        }
        seen.push(a.id);
    }
    let mut listed = vec![];
    wait_for(
        "retention to keep two",
        Duration::from_secs(30),
        async || {
            let b = api.get("minutely").await.map_err(|e| fail(e.to_string()))?;
            listed = b
                .status
                .unwrap_or_default()
                .artifacts
                .iter()
                .map(|a| a.id.clone())
                .collect();
            listed.sort();
            Ok(listed.len() == 2 && stored_ids(ns, "minutely").len() == 2)
        },
    )
    .await?;
    if listed.contains(&seen[0]) || stored_ids(ns, "minutely").contains(&seen[0]) {
        return Err(fail(format!(
            "the oldest backup {} was kept: {listed:?}",
            seen[0]
        )));
    }
    let mut stored = stored_ids(ns, "minutely");
    stored.sort();
    if stored != listed {
        return Err(fail(format!(
            "status lists {listed:?}, the bucket holds {stored:?}"
        )));
    }
    let b = api.get("minutely").await.map_err(|e| fail(e.to_string()))?;
    let st = b.status.unwrap_or_default();
    if st.next_schedule_time.is_none() || st.last_schedule_time.is_none() {
        return Err(fail("lastScheduleTime and nextScheduleTime are reported"));
    }
    Ok(())
}

async fn killing_the_operator_mid_backup_leaves_no_incomplete_ready_artifact(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let client = bed.client().await?;
    namespace(&client, ns).await?;
    s3_secret(&client, ns).await?;
    converged(bed, &client, ns, "big", 1, None).await?;
    let hosts = member_hosts(&client, ns, "big").await?;
    let password = super_password(&client, ns, "big").await?;
    bed.judge_at(&hosts)
        .await?
        .write_with(
            &hosts,
            Some(("super", &password)),
            "/bulk",
            20_000,
            1024,
            "open",
        )
        .await
        .map_err(|e| fail(format!("write: {e}")))?;
    // A tree walk of 20,000 znodes takes long enough to be interrupted.
    let api = create_backup(
        &client,
        ns,
        "slow",
        backup_spec("big", "slow", serde_json::json!({"method": "tree"})),
    )
    .await?;
    let mut running = None;
    let start = Instant::now();
    while running.is_none() && start.elapsed() < Duration::from_secs(60) {
        if let Ok(b) = api.get("slow").await {
            running = b
                .status
                .unwrap_or_default()
                .artifacts
                .into_iter()
                .find(|a| a.phase == ArtifactPhase::BackingUp);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(running) = running else {
        return Err(fail("never saw the backup BackingUp"));
    };
    bed.kill_operator();
    let complete_after_kill =
        stored_objects(ns, "slow", &running.id).contains(&"COMPLETE".to_string());
    bed.start_operator()?;
    let a = next_artifact(bed, &api, "slow", &[], Duration::from_secs(60)).await?;
    if a.id != running.id {
        return Err(fail(format!("another artifact {} finished first", a.id)));
    }
    if complete_after_kill {
        // The backup had already finished when the kill landed: it must be Ready and whole.
        if a.phase != ArtifactPhase::Ready {
            return Err(fail(format!("a complete backup was marked {:?}", a.phase)));
        }
        eprintln!("the backup finished before the kill; nothing to interrupt");
        return Ok(());
    }
    if a.phase != ArtifactPhase::Error
        || !a
            .message
            .as_deref()
            .is_some_and(|m| m.contains("interrupted"))
    {
        return Err(fail(format!(
            "an interrupted backup is {:?}: {:?}",
            a.phase, a.message
        )));
    }
    if stored_objects(ns, "slow", &a.id).contains(&"COMPLETE".to_string()) {
        return Err(fail("an interrupted backup has a completion marker"));
    }
    Ok(())
}

async fn backup_before_change_holds_a_scale_up_until_a_fresh_backup_is_ready(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let client = bed.client().await?;
    namespace(&client, ns).await?;
    s3_secret(&client, ns).await?;
    let ens_api = converged(bed, &client, ns, "gated", 1, None).await?;
    // A scheduled ZkBackup that would not run for hours.
    let api = create_backup(
        &client,
        ns,
        "gate",
        backup_spec(
            "gated",
            "gate",
            serde_json::json!({"schedule": "0 0 1 1 *"}),
        ),
    )
    .await?;
    let patch =
        serde_json::json!({"spec": {"backupBeforeChange": {"backupName": "gate"}, "replicas": 3}});
    let asked = jiff::Timestamp::now();
    ens_api
        .patch("gated", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let a = next_artifact(bed, &api, "gate", &[], Duration::from_secs(120)).await?;
    if a.phase != ArtifactPhase::Ready {
        return Err(fail(format!("the gate's backup failed: {:?}", a.message)));
    }
    // Times in status are whole seconds (truncated): a backup that finished in the same second
    // as the request is recorded as that second; one recorded before it predates the change.
    let asked_second = asked
        .round(
            jiff::TimestampRound::new()
                .smallest(jiff::Unit::Second)
                .mode(jiff::RoundMode::Trunc),
        )
        .map_err(|e| fail(e.to_string()))?;
    let finished = a
        .finished_at
        .map(|t| t.0)
        .ok_or_else(|| fail("no finishedAt"))?;
    if finished < asked_second {
        return Err(fail(format!(
            "the backup finished at {finished}, before the change was asked for at {asked}"
        )));
    }
    // The artifact says which request it answers, to the microsecond: the one made after `asked`.
    if a.requested_at.as_ref().is_none_or(|r| r.0 < asked) {
        return Err(fail(format!(
            "the gate's backup answers no request made after {asked}: {:?}",
            a.requested_at
        )));
    }
    wait_converged(bed, &ens_api, "gated", 3, Duration::from_secs(240)).await?;
    // The scale-up created its first member only after the backup was Ready: judged from the
    // API server's own creation times of the new member Pods, not the operator's Events.
    let first_pod = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("quorate.dev/ensemble=gated"))
        .await
        .map_err(|e| fail(e.to_string()))?
        .items
        .into_iter()
        .filter_map(|p| p.metadata.creation_timestamp.map(|t| t.0))
        .filter(|t| *t >= asked_second)
        .min()
        .ok_or_else(|| fail("no member Pod was created for the scale-up"))?;
    if first_pod < finished {
        return Err(fail(format!(
            "the scale-up created a member at {first_pod}, before the backup finished at {finished}"
        )));
    }
    Ok(())
}

async fn the_backup_cli_creates_lists_shows_restores_and_deletes(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let client = bed.client().await?;
    namespace(&client, ns).await?;
    s3_secret(&client, ns).await?;
    converged(bed, &client, ns, "cli", 1, None).await?;
    create_backup(
        &client,
        ns,
        "base",
        backup_spec(
            "cli",
            "base",
            serde_json::json!({"suspend": true, "schedule": "0 0 1 1 *"}),
        ),
    )
    .await?;
    let target = format!("{ns}/cli");
    for (label, rule) in [
        ("ab", "between 3 and 25"),
        ("...abc", "cannot start with ..."),
        ("bad label", "[A-Za-z0-9_.-]"),
    ] {
        let bad = bed.cli(&["backup", "create", "--label", label, "--ensemble", &target])?;
        let stderr = String::from_utf8_lossy(&bad.stderr);
        if bad.status.success() || !stderr.contains(rule) {
            return Err(fail(format!(
                "label {label:?} is refused with the rule {rule:?}: {stderr}"
            )));
        }
    }
    let made = bed.cli(&[
        "backup",
        "create",
        "--label",
        "manual-1",
        "--ensemble",
        &target,
        "--from",
        "base",
        "--wait",
        "-o",
        "json",
    ])?;
    if !made.status.success() {
        return Err(fail(format!(
            "backup create: {}",
            String::from_utf8_lossy(&made.stderr)
        )));
    }
    let made: serde_json::Value =
        serde_json::from_slice(&made.stdout).map_err(|e| fail(e.to_string()))?;
    let id = made["id"]
        .as_str()
        .ok_or_else(|| fail(format!("no id: {made}")))?
        .to_string();
    if made["phase"] != "Ready" || !id.starts_with("manual-1-") {
        return Err(fail(format!("created: {made}")));
    }
    let listed = bed.cli(&["backup", "list", "manual", "-n", ns])?;
    let text = String::from_utf8_lossy(&listed.stdout);
    if !listed.status.success() || !text.contains(&id) || !text.starts_with("ID") {
        return Err(fail(format!("backup list: {text}")));
    }
    let shown = bed.cli(&["backup", "show", &id, "-n", ns, "-o", "json"])?;
    let shown: serde_json::Value =
        serde_json::from_slice(&shown.stdout).map_err(|e| fail(e.to_string()))?;
    if shown["backup"]["sha256"]
        .as_str()
        .is_none_or(|s| s.len() != 64)
    {
        return Err(fail(format!("backup show: {shown}")));
    }
    // --dry-run: the API server checks the ZkRestore without storing it; nothing is touched.
    let dry = bed.cli(&["backup", "restore", &id, "-n", ns, "--dry-run"])?;
    let said = String::from_utf8_lossy(&dry.stdout);
    if !dry.status.success()
        || !said.contains("dry run")
        || !said.contains(&format!("into {ns}/cli"))
        || !said.contains("stop its 1 member Pods")
    {
        return Err(fail(format!(
            "backup restore --dry-run: {said} {}",
            String::from_utf8_lossy(&dry.stderr)
        )));
    }
    let restores = Api::<ZkRestore>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !restores.items.is_empty() {
        return Err(fail("a dry run created a ZkRestore"));
    }
    // A wait gives up after --timeout (a scratch member's JVM alone takes longer than 1 s);
    // the restore goes on in the cluster.
    let short = bed.cli(&[
        "backup",
        "restore",
        &id,
        "-n",
        ns,
        "--verify-only",
        "--wait",
        "--timeout",
        "1s",
    ])?;
    let said = String::from_utf8_lossy(&short.stderr);
    if short.status.success() || !said.contains("gave up waiting after 1s") {
        return Err(fail(format!("backup restore --timeout 1s: {said}")));
    }
    let verify = bed.cli(&[
        "backup",
        "restore",
        &id,
        "-n",
        ns,
        "--verify-only",
        "--wait",
    ])?;
    if !verify.status.success() {
        return Err(fail(format!(
            "backup restore --verify-only: {}",
            String::from_utf8_lossy(&verify.stderr)
        )));
    }
    // The operator deletes it from inside the cluster: the CLI talks to the API server only
    // (judged from its connect calls, traced by the kernel), never to the bucket.
    let (deleted, connects) = bed.cli_connects(&["backup", "delete", &id, "-n", ns])?;
    if !deleted.status.success() {
        return Err(fail(format!(
            "backup delete: {}",
            String::from_utf8_lossy(&deleted.stderr)
        )));
    }
    let api = bed.plane.api_addr();
    if connects.iter().any(|a| *a != api) || !connects.contains(&api) {
        return Err(fail(format!(
            "backup delete connected to {connects:?}; only the API server {api} is allowed"
        )));
    }
    let zkb = Api::<ZkBackup>::namespaced(client.clone(), ns)
        .get("manual-1")
        .await
        .map_err(|e| fail(e.to_string()))?;
    if zkb.annotations().contains_key("quorate.dev/delete-backups") {
        return Err(fail(format!(
            "the delete request was left on the ZkBackup: {:?}",
            zkb.annotations()
        )));
    }
    if !stored_objects(ns, "manual-1", &id).is_empty() {
        return Err(fail("delete left objects in the bucket"));
    }
    let gone = bed.cli(&["backup", "show", &id, "-n", ns])?;
    if gone.status.success() {
        return Err(fail("a deleted backup is still shown"));
    }
    Ok(())
}

/// Disaster recovery from the bucket alone: an ensemble is backed up in one namespace, then
/// that namespace is deleted with everything in it (ensemble, ZkBackup, members, volumes). In
/// another namespace, with only a credentials Secret and a new empty ensemble, the CLI lists
/// the bucket (the manifest names the source ensemble, its uid and its spec) and restores the
/// artifact; kazoo then reads the same tree as before the backup. No ZkBackup exists there.
async fn restores_from_the_bucket_alone_into_a_new_namespace(bed: &Bed, ns: &str) -> TestResult {
    let client = bed.client().await?;
    namespace(&client, ns).await?;
    s3_secret(&client, ns).await?;
    let source = converged(bed, &client, ns, "source", 1, None).await?;
    let uid = source
        .get("source")
        .await
        .map_err(|e| fail(e.to_string()))?
        .uid()
        .unwrap_or_default();
    let hosts = member_hosts(&client, ns, "source").await?;
    let password = super_password(&client, ns, "source").await?;
    bed.judge_at(&hosts)
        .await?
        .populate(&hosts, Some(("super", &password)), "/dr", 300, 64)
        .await
        .map_err(|e| fail(format!("populate: {e}")))?;
    let before = tree_of(bed, &hosts, &password).await?;
    let api = create_backup(
        &client,
        ns,
        "offsite",
        backup_spec("source", "offsite", serde_json::json!({})),
    )
    .await?;
    let a = next_artifact(bed, &api, "offsite", &[], Duration::from_secs(120)).await?;
    if a.phase != ArtifactPhase::Ready {
        return Err(fail(format!("backup failed: {:?}", a.message)));
    }

    // The disaster: the namespace and everything in it are gone.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .delete(ns, &Default::default())
        .await
        .map_err(|e| fail(format!("delete namespace {ns}: {e}")))?;
    wait_for(
        &format!("namespace {ns} to be gone"),
        Duration::from_secs(180),
        async || {
            Ok(namespaces
                .get_opt(ns)
                .await
                .map_err(|e| fail(e.to_string()))?
                .is_none())
        },
    )
    .await?;

    let dr = format!("{ns}-dr");
    namespace(&client, &dr).await?;
    s3_secret(&client, &dr).await?;
    converged(bed, &client, &dr, "rebuilt", 1, None).await?;
    let bucket = [
        "--from",
        &format!("s3://{BUCKET}/e2e"),
        "--endpoint",
        &s3().endpoint(),
        "--region",
        s3().region(),
        "--secret",
        "s3-keys",
        "-n",
        &dr,
    ]
    .map(str::to_string);
    let cli = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(bucket.iter().map(String::as_str));
        bed.cli(&all)
    };
    let listed = cli(&["backup", "list", "offsite", "-o", "json"])?;
    if !listed.status.success() {
        return Err(fail(format!(
            "backup list --from: {}",
            String::from_utf8_lossy(&listed.stderr)
        )));
    }
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&listed.stdout).map_err(|e| fail(e.to_string()))?;
    let row = rows
        .iter()
        .find(|r| r["id"] == a.id.as_str())
        .ok_or_else(|| fail(format!("{} is not listed from the bucket: {rows:?}", a.id)))?;
    let m = &row["manifest"];
    if row["complete"] != true
        || m["namespace"] != ns
        || m["ensemble"] != "source"
        || m["ensembleUid"] != uid.as_str()
        || m["ensembleSpec"]["replicas"] != 1
    {
        return Err(fail(format!(
            "the bucket's listing must name the source ensemble, its uid and spec: {row}"
        )));
    }
    let text = cli(&["backup", "list", "offsite"])?;
    let text = String::from_utf8_lossy(&text.stdout);
    if !text.contains(&a.id) || !text.contains(&format!("{ns}/source")) {
        return Err(fail(format!("backup list --from (text): {text}")));
    }

    let restored = cli(&[
        "backup",
        "restore",
        &a.id,
        "--ensemble",
        "rebuilt",
        "--yes",
        "--wait",
        "--timeout",
        "10m",
    ])?;
    if !restored.status.success() {
        return Err(fail(format!(
            "backup restore --from: {}\noperator log:\n{}",
            String::from_utf8_lossy(&restored.stderr),
            bed.operator_log_tail()
        )));
    }
    let backups = Api::<ZkBackup>::namespaced(client.clone(), &dr)
        .list(&ListParams::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !backups.items.is_empty() {
        return Err(fail(
            "the restore must not need a ZkBackup in the new namespace",
        ));
    }
    let hosts = member_hosts(&client, &dr, "rebuilt").await?;
    let password = super_password(&client, &dr, "rebuilt").await?;
    let after = tree_of(bed, &hosts, &password).await?;
    same_trees(&before, &after)
}

/// Waits until every member of `ensemble` answers the AdminServer's `snapshot` (not streamed)
/// with HTTP `want` when asked with the `Authorization` header `authorization` (`None`: no
/// header). The AdminServer lets one snapshot through every 300 ms or so, so a 429 is asked
/// again.
async fn wait_snapshot_answer(
    client: &Client,
    ns: &str,
    ensemble: &str,
    authorization: Option<&str>,
    want: u16,
) -> TestResult {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut seen = BTreeMap::new();
    let answered = wait_for(
        &format!("every member of {ensemble} to answer snapshot with {authorization:?} by {want}"),
        Duration::from_secs(90),
        async || {
            let ips = member_ips(client, ns, ensemble).await?;
            seen.clear();
            for (id, ip) in &ips {
                let mut ask = http.get(format!(
                    "http://{ip}:8080/commands/snapshot?streaming=false"
                ));
                if let Some(value) = authorization {
                    ask = ask.header(reqwest::header::AUTHORIZATION, value);
                }
                let status = ask.send().await.map(|r| r.status().as_u16()).ok();
                seen.insert(*id, status);
            }
            Ok(!ips.is_empty() && seen.values().all(|s| *s == Some(want)))
        },
    )
    .await;
    answered.map_err(|e| {
        fail(format!(
            "{}; last answers by server id: {seen:?}",
            e.message().unwrap_or("failed")
        ))
    })
}

/// ZooKeeper gives `world:anyone` every permission on `/` by default, and the AdminServer's
/// `snapshot` (the whole database) and `restore` (replace it) ask for exactly that: anyone who
/// sends any digest header could read or replace all data. Once an ensemble converges, quorate
/// takes the admin permission on `/` from world: the AdminServer then refuses a made-up identity
/// (403) and a missing one (401) and still serves the super user, and kazoo reads the root's
/// ACL as create, delete, read and write for world. A restore that brings back an open root
/// (here: a backup taken after the root was opened again by hand) is locked again.
async fn the_adminservers_snapshot_and_restore_answer_only_the_super_user(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    use quorate_testbed::kazoo::AclEntry;
    const ALL: u32 = 31;
    const ALL_BUT_ADMIN: u32 = 15;
    let guess = Some("digest nobody:guess");
    let client = bed.client().await?;
    namespace(&client, ns).await?;
    s3_secret(&client, ns).await?;
    converged(bed, &client, ns, "locked", 1, None).await?;
    wait_snapshot_answer(&client, ns, "locked", guess, 403).await?;
    wait_snapshot_answer(&client, ns, "locked", None, 401).await?;
    // `restore` asks for the same permission, and is refused before it reads a byte.
    let http = reqwest::Client::new();
    for (id, ip) in member_ips(&client, ns, "locked").await? {
        let status = http
            .post(format!("http://{ip}:8080/commands/restore"))
            .header(reqwest::header::AUTHORIZATION, "digest nobody:guess")
            .body(Vec::<u8>::new())
            .send()
            .await
            .map_err(|e| fail(format!("restore on member {id}: {e}")))?
            .status()
            .as_u16();
        if status != 403 {
            return Err(fail(format!(
                "member {id} answered restore for a made-up identity with {status}"
            )));
        }
    }
    let password = super_password(&client, ns, "locked").await?;
    let super_header = format!("digest super:{password}");
    wait_snapshot_answer(&client, ns, "locked", Some(&super_header), 200).await?;
    let hosts = member_hosts(&client, ns, "locked").await?;
    let judge_root = async |hosts: &str, password: &str| {
        bed.judge_at(hosts)
            .await?
            .acl(hosts, Some(("super", password)), "/")
            .await
            .map_err(|e| fail(format!("kazoo reading the ACL of /: {e}")))
    };
    let locked = vec![AclEntry::new("world", "anyone", ALL_BUT_ADMIN)];
    let root = judge_root(&hosts, &password).await?;
    if root != locked {
        return Err(fail(format!("the root's ACL as kazoo reads it: {root:?}")));
    }

    // Opened again (as an older ensemble's data would hold it), a made-up identity gets through:
    // the refusal above came from the root's ACL.
    let open = vec![AclEntry::new("world", "anyone", ALL)];
    bed.judge_at(&hosts)
        .await?
        .set_acl(&hosts, Some(("super", &password)), "/", &open)
        .await
        .map_err(|e| fail(format!("kazoo opening /: {e}")))?;
    wait_snapshot_answer(&client, ns, "locked", guess, 200).await?;
    let api = create_backup(
        &client,
        ns,
        "open-root",
        backup_spec("locked", "open-root", serde_json::json!({})),
    )
    .await?;
    let a = next_artifact(bed, &api, "open-root", &[], Duration::from_secs(120)).await?;
    if a.phase != ArtifactPhase::Ready {
        return Err(fail(format!("backup failed: {:?}", a.message)));
    }

    // Restored offline into a fresh ensemble (locked when it converged): the placed snapshot
    // opens its root, and quorate locks it again once the restore hands the members back.
    converged(bed, &client, ns, "relocked", 1, None).await?;
    wait_snapshot_answer(&client, ns, "relocked", guess, 403).await?;
    let restored = run_restore_ready(
        bed,
        &client,
        ns,
        "into-relocked",
        restore_spec(
            "relocked",
            "open-root",
            &a.id,
            serde_json::json!({"mode": "offline"}),
        ),
    )
    .await?;
    // Nothing moved since the member loaded the snapshot (no client, no session in it), so the
    // restore was judged by the member's own counters, without a walk.
    let judged = restored.message.unwrap_or_default();
    if !judged.contains("every member's own counts") {
        return Err(fail(format!(
            "the restore was not judged by counters: {judged}"
        )));
    }
    let relocked_api: Api<MasterEnsemble> = Api::namespaced(client.clone(), ns);
    wait_converged(bed, &relocked_api, "relocked", 1, Duration::from_secs(120)).await?;
    wait_snapshot_answer(&client, ns, "relocked", guess, 403).await?;
    let hosts = member_hosts(&client, ns, "relocked").await?;
    let password = super_password(&client, ns, "relocked").await?;
    let root = judge_root(&hosts, &password).await?;
    if root != locked {
        return Err(fail(format!(
            "after the restore, the root's ACL as kazoo reads it: {root:?}"
        )));
    }
    Ok(())
}

fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        (
            "the_adminservers_snapshot_and_restore_answer_only_the_super_user",
            |b, n| Box::pin(the_adminservers_snapshot_and_restore_answer_only_the_super_user(b, n)),
        ),
        (
            "restores_from_the_bucket_alone_into_a_new_namespace",
            |b, n| Box::pin(restores_from_the_bucket_alone_into_a_new_namespace(b, n)),
        ),
        (
            "backs_up_a_varied_tree_and_restores_it_offline_into_a_fresh_ensemble",
            |b, n| {
                Box::pin(backs_up_a_varied_tree_and_restores_it_offline_into_a_fresh_ensemble(b, n))
            },
        ),
        (
            "a_tree_backup_of_3_8_restores_online_into_a_fresh_ensemble",
            |b, n| {
                Box::pin(a_tree_backup_of_3_8_restores_online_into_a_fresh_ensemble(
                    b, n,
                ))
            },
        ),
        (
            "an_online_restore_keeps_the_ephemerals_of_live_sessions",
            |b, n| {
                Box::pin(an_online_restore_keeps_the_ephemerals_of_live_sessions(
                    b, n,
                ))
            },
        ),
        (
            "an_offline_restore_is_judged_at_its_own_zxid_while_clients_write",
            |b, n| Box::pin(an_offline_restore_is_judged_at_its_own_zxid_while_clients_write(b, n)),
        ),
        (
            "an_offline_restore_brings_back_members_whose_volumes_were_lost",
            |b, n| Box::pin(an_offline_restore_brings_back_members_whose_volumes_were_lost(b, n)),
        ),
        (
            "restores_are_checked_before_any_member_is_touched",
            |b, n| Box::pin(restores_are_checked_before_any_member_is_touched(b, n)),
        ),
        (
            "an_older_backup_is_refused_from_the_volumes_while_no_member_serves",
            |b, n| {
                Box::pin(an_older_backup_is_refused_from_the_volumes_while_no_member_serves(b, n))
            },
        ),
        (
            "an_offline_restore_waits_until_the_ensemble_hands_its_members_over",
            |b, n| {
                Box::pin(an_offline_restore_waits_until_the_ensemble_hands_its_members_over(b, n))
            },
        ),
        ("two_restores_of_one_ensemble_run_one_at_a_time", |b, n| {
            Box::pin(two_restores_of_one_ensemble_run_one_at_a_time(b, n))
        }),
        (
            "a_schedule_every_minute_keeps_the_newest_backups",
            |b, n| Box::pin(a_schedule_every_minute_keeps_the_newest_backups(b, n)),
        ),
        (
            "killing_the_operator_mid_backup_leaves_no_incomplete_ready_artifact",
            |b, n| {
                Box::pin(killing_the_operator_mid_backup_leaves_no_incomplete_ready_artifact(b, n))
            },
        ),
        (
            "backup_before_change_holds_a_scale_up_until_a_fresh_backup_is_ready",
            |b, n| {
                Box::pin(backup_before_change_holds_a_scale_up_until_a_fresh_backup_is_ready(b, n))
            },
        ),
        (
            "the_backup_cli_creates_lists_shows_restores_and_deletes",
            |b, n| {
                Box::pin(the_backup_cli_creates_lists_shows_restores_and_deletes(
                    b, n,
                ))
            },
        ),
    ]
}

fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let started = runtime.block_on(async {
        let store = ObjectStore::start()
            .await
            .map_err(|e| format!("cannot start the S3 server: {e}"))?;
        store
            .create_bucket(BUCKET)
            .await
            .map_err(|e| format!("cannot create the bucket: {e}"))?;
        Ok::<_, String>(store)
    });
    let mut store = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let _ = S3.set(S3Info {
        endpoint: store.endpoint(),
        access_key: store.access_key().into(),
        secret_key: store.secret_key().into(),
        region: store.region().into(),
        root_dir: store.root_dir().to_path_buf(),
    });
    let agent = common::agent_running_quorate_images();
    let code = common::run(
        "bk",
        scenarios(),
        agent,
        vec![("QUORATE_IMAGE".into(), "quorate:test".into())],
    );
    store.stop();
    code
}
