//! `quorate backup create|list|show|delete|restore`: the DC/OS backup commands, writing the same
//! ZkBackup and ZkRestore resources a user would apply, and `quorate restore-member`, the restore
//! init container's work on a member's volume.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};

use crate::backup::artifact::{Format, parse_zxid};
use crate::backup::place::{self, Outcome, Placement};
use crate::backup::store::{S3Credentials, Store};
use crate::cli::Output;
use crate::constants::*;
use crate::crd::{
    ArtifactPhase, BackupArtifact, BackupArtifactRef, BackupMethod, Destination, EnsembleRef,
    FilesystemDestination, MasterEnsemble, RestoreMode, RestorePhase, RestoreSource,
    SurvivorsSource, ZkBackup, ZkBackupSpec, ZkRestore, ZkRestoreSpec, label_errors,
};

/// How long `--wait` waits at most.
/// How long `--wait` waits unless `--timeout` says otherwise.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(3600);

fn namespace_of(client: &Client, ns: &Option<String>) -> String {
    ns.clone()
        .unwrap_or_else(|| client.default_namespace().to_string())
}

fn split(client: &Client, target: &str) -> (String, String) {
    match target.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (client.default_namespace().to_string(), target.to_string()),
    }
}

/// A ZkBackup name for a label: DNS-safe, lowercase.
pub fn backup_name_for(label: &str) -> String {
    let name: String = label
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' | '-' | '.' => c,
            _ => '-',
        })
        .collect();
    let name = name.trim_matches(|c| c == '-' || c == '.').to_string();
    if name.is_empty() {
        "backup".into()
    } else {
        name
    }
}

/// One artifact and where it is listed.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    /// Namespace.
    pub namespace: String,
    /// The ZkBackup.
    pub backup: String,
    /// The ensemble.
    pub ensemble: String,
    /// The artifact.
    #[serde(flatten)]
    pub artifact: BackupArtifact,
}

async fn all_artifacts(client: &Client, ns: Option<&str>) -> Result<Vec<Listed>, String> {
    let api: Api<ZkBackup> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list ZkBackups: {e}"))?;
    let mut out = vec![];
    for b in list.items {
        for a in b.status.clone().unwrap_or_default().artifacts {
            out.push(Listed {
                namespace: b.namespace().unwrap_or_default(),
                backup: b.name_any(),
                ensemble: b.spec.ensemble_ref.name.clone(),
                artifact: a,
            });
        }
    }
    out.sort_by(|a, b| a.artifact.started_at.cmp(&b.artifact.started_at));
    Ok(out)
}

/// One artifact as a bucket holds it, read without any ZkBackup.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketRow {
    /// Artifact id.
    pub id: String,
    /// Its URL: `spec.source.location` of a restore.
    pub location: String,
    /// Complete and consistent (marker and manifest agree); otherwise why not.
    pub complete: bool,
    /// Why it cannot be restored, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Its manifest: the source ensemble, its uid and spec, zxids, counts, checksum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<crate::backup::artifact::Manifest>,
}

/// Every artifact in the bucket of `dest` (its credentials Secret read in `ns`).
async fn bucket_rows(
    client: &Client,
    dest: &Destination,
    ns: &str,
) -> Result<Vec<BucketRow>, String> {
    let store = crate::controller::backup::store_for(client, ns, dest)
        .await
        .map_err(|e| format!("open the bucket: {e}"))?;
    let mut rows = Vec::new();
    for (ans, backup, id) in store
        .list_all_artifacts()
        .await
        .map_err(|e| format!("list {}: {e}", store.url()))?
    {
        let paths = store.artifact(&ans, &backup, &id);
        let (manifest, problem) = match store.read_manifest(&id, &paths).await {
            Ok(Ok(m)) => (Some(m), None),
            Ok(Err(invalid)) => (None, Some(invalid.to_string())),
            Err(e) => (None, Some(e.to_string())),
        };
        rows.push(BucketRow {
            id,
            location: paths.location.trim_end_matches('/').to_string(),
            complete: manifest.is_some(),
            problem,
            manifest,
        });
    }
    Ok(rows)
}

/// `quorate backup list --from URL`: the artifacts a bucket holds, newest last.
pub async fn list_bucket(
    client: &Client,
    dest: &Destination,
    prefix: Option<&str>,
    ns: &Option<String>,
    output: Output,
) -> Result<String, String> {
    let ns = namespace_of(client, ns);
    let mut rows: Vec<BucketRow> = bucket_rows(client, dest, &ns)
        .await?
        .into_iter()
        .filter(|r| prefix.is_none_or(|p| r.id.starts_with(p)))
        .collect();
    rows.sort_by_key(|r| r.manifest.as_ref().map(|m| m.finished_at));
    if output.is_structured() {
        return output.encode(&rows);
    }
    if rows.is_empty() {
        return Ok("no backups\n".into());
    }
    let mut lines = vec![vec![
        "ID".to_string(),
        "SOURCE".into(),
        "UID".into(),
        "FINISHED".into(),
        "ZXID".into(),
        "ZNODES".into(),
        "BYTES".into(),
        "LOCATION".into(),
    ]];
    for r in &rows {
        let m = r.manifest.as_ref();
        lines.push(vec![
            r.id.clone(),
            m.map(|m| format!("{}/{}", m.namespace, m.ensemble))
                .unwrap_or_else(|| r.problem.clone().unwrap_or("-".into())),
            m.and_then(|m| m.ensemble_uid.clone()).unwrap_or("-".into()),
            m.map(|m| m.finished_at.to_string()).unwrap_or("-".into()),
            m.map(|m| crate::backup::artifact::zxid_hex(m.zxid))
                .unwrap_or("-".into()),
            m.map(|m| m.user_znodes.to_string()).unwrap_or("-".into()),
            m.map(|m| m.bytes.to_string()).unwrap_or("-".into()),
            r.location.clone(),
        ]);
    }
    Ok(render(&lines))
}

/// The complete artifact `id` in the bucket of `dest`, and the same as a listed backup.
async fn find_in_bucket(
    client: &Client,
    dest: &Destination,
    ns: &str,
    id: &str,
) -> Result<(BucketRow, Listed), String> {
    let row = bucket_rows(client, dest, ns)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| {
            format!("no backup with id {id} in the bucket (see `quorate backup list --from ...`)")
        })?;
    let Some(m) = row.manifest.clone() else {
        return Err(format!(
            "backup {id} cannot be restored: {}",
            row.problem.clone().unwrap_or_default()
        ));
    };
    let listed = Listed {
        namespace: m.namespace.clone(),
        backup: m.backup.clone(),
        ensemble: m.ensemble.clone(),
        artifact: BackupArtifact {
            id: m.id.clone(),
            phase: ArtifactPhase::Ready,
            zxid: Some(crate::backup::artifact::zxid_hex(m.zxid)),
            znodes: i64::try_from(m.znodes).ok(),
            bytes: i64::try_from(m.bytes).ok(),
            sha256: Some(m.sha256.clone()),
            location: Some(row.location.clone()),
            source_member: Some(i64::from(m.source_member)),
            ..Default::default()
        },
    };
    Ok((row, listed))
}

async fn find(client: &Client, ns: Option<&str>, id: &str) -> Result<Listed, String> {
    all_artifacts(client, ns)
        .await?
        .into_iter()
        .find(|l| l.artifact.id == id)
        .ok_or_else(|| format!("no backup with id {id} (see `quorate backup list`)"))
}

fn phase_word(p: ArtifactPhase) -> &'static str {
    match p {
        ArtifactPhase::BackingUp => "BackingUp",
        ArtifactPhase::Ready => "Ready",
        ArtifactPhase::Error => "Error",
    }
}

fn table(rows: &[Listed]) -> String {
    let mut lines = vec![vec![
        "ID".to_string(),
        "ENSEMBLE".into(),
        "PHASE".into(),
        "STARTED".into(),
        "ZXID".into(),
        "ZNODES".into(),
        "BYTES".into(),
        "METHOD".into(),
    ]];
    for r in rows {
        let a = &r.artifact;
        lines.push(vec![
            a.id.clone(),
            format!("{}/{}", r.namespace, r.ensemble),
            phase_word(a.phase).into(),
            a.started_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or("-".into()),
            a.zxid.clone().unwrap_or("-".into()),
            a.znodes.map(|n| n.to_string()).unwrap_or("-".into()),
            a.bytes.map(|n| n.to_string()).unwrap_or("-".into()),
            a.method
                .map(|m| format!("{m:?}").to_lowercase())
                .unwrap_or("-".into()),
        ]);
    }
    render(&lines)
}

pub(crate) fn render(lines: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    lines
        .iter()
        .map(|l| {
            l.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
                + "\n"
        })
        .collect()
}

/// Arguments of `quorate backup create`.
#[derive(Clone, Debug)]
pub struct CreateArgs {
    /// The label.
    pub label: String,
    /// NAMESPACE/NAME of the ensemble.
    pub ensemble: Option<String>,
    /// A ZkBackup whose destination to use.
    pub from: Option<String>,
    /// A filesystem destination.
    pub filesystem: Option<String>,
    /// How to read the data.
    pub method: BackupMethod,
    /// Wait until the backup is Ready or Error.
    pub wait: bool,
    /// How long a wait lasts.
    pub timeout: Duration,
    /// Output format.
    pub output: Output,
}

/// `quorate backup create`.
pub async fn create(client: &Client, args: &CreateArgs) -> Result<String, String> {
    let errors = label_errors(&args.label);
    if !errors.is_empty() {
        return Err(format!(
            "invalid label {:?}: {}",
            args.label,
            errors.join("; ")
        ));
    }
    let (ns, ens_name) = match &args.ensemble {
        Some(t) => split(client, t),
        None => {
            let ns = client.default_namespace().to_string();
            let list = Api::<MasterEnsemble>::namespaced(client.clone(), &ns)
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("list MasterEnsembles in {ns}: {e}"))?;
            match list.items.as_slice() {
                [one] => (ns, one.name_any()),
                _ => {
                    return Err(format!(
                        "{} MasterEnsembles in {ns}: name one with --ensemble NAMESPACE/NAME",
                        list.items.len()
                    ));
                }
            }
        }
    };
    Api::<MasterEnsemble>::namespaced(client.clone(), &ns)
        .get(&ens_name)
        .await
        .map_err(|e| format!("MasterEnsemble {ns}/{ens_name}: {e}"))?;
    let api: Api<ZkBackup> = Api::namespaced(client.clone(), &ns);
    let existing = api
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list ZkBackups in {ns}: {e}"))?
        .items;
    let requested = Timestamp::now();
    let same = existing
        .iter()
        .find(|b| b.spec.label == args.label && b.spec.ensemble_ref.name == ens_name);
    let name = if let Some(b) = same {
        // The ZkBackup exists: ask its controller for one more backup now.
        let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_BACKUP_REQUESTED: requested.to_string()}}});
        api.patch(
            &b.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| format!("request a backup from ZkBackup {ns}/{}: {e}", b.name_any()))?;
        b.name_any()
    } else {
        let destination = if let Some(path) = &args.filesystem {
            Destination {
                s3: None,
                filesystem: Some(FilesystemDestination { path: path.clone() }),
            }
        } else {
            let source = match &args.from {
                Some(from) => existing.iter().find(|b| &b.name_any() == from).ok_or_else(|| {
                    format!("--from {from}: no ZkBackup of that name in {ns}")
                })?,
                None => existing
                    .iter()
                    .find(|b| b.spec.ensemble_ref.name == ens_name)
                    .ok_or_else(|| {
                        format!(
                            "{ns}/{ens_name} has no ZkBackup to take a destination from: give --from ZKBACKUP or --filesystem PATH"
                        )
                    })?,
            };
            source.spec.destination.clone()
        };
        let name = backup_name_for(&args.label);
        let zkb = ZkBackup {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            spec: ZkBackupSpec {
                ensemble_ref: EnsembleRef {
                    name: ens_name.clone(),
                },
                label: args.label.clone(),
                schedule: None,
                suspend: false,
                retention: None,
                destination,
                method: args.method,
            },
            status: None,
        };
        api.create(&PostParams::default(), &zkb)
            .await
            .map_err(|e| format!("create ZkBackup {ns}/{name}: {e}"))?;
        name
    };
    if !args.wait {
        let note = format!("backup of {ns}/{ens_name} requested through ZkBackup {ns}/{name}\n");
        return match args.output {
            Output::Text => Ok(note),
            Output::Json | Output::Yaml => args.output.encode(
                &serde_json::json!({"namespace": ns, "backup": name, "ensemble": ens_name, "requestedAt": requested.to_string()}),
            ),
        };
    }
    let waited_for = format!("the backup through ZkBackup {ns}/{name}");
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let b = api
            .get(&name)
            .await
            .map_err(|e| format!("read ZkBackup {ns}/{name}: {e}"))?;
        let newest = b
            .status
            .clone()
            .unwrap_or_default()
            .artifacts
            .into_iter()
            .filter(|a| {
                a.started_at
                    .as_ref()
                    .is_some_and(|t| t.0.as_second() >= requested.as_second() - 1)
            })
            .max_by_key(|a| a.started_at.as_ref().map(|t| t.0));
        let line = match &newest {
            Some(a) => format!("{} {}", a.id, phase_word(a.phase)),
            None => "waiting for the backup to start".into(),
        };
        if line != last {
            eprintln!("[{:>4}s] {line}", started.elapsed().as_secs());
            last = line;
        }
        if let Some(a) = newest
            && a.phase != ArtifactPhase::BackingUp
        {
            let listed = Listed {
                namespace: ns.clone(),
                backup: name.clone(),
                ensemble: ens_name.clone(),
                artifact: a.clone(),
            };
            let out = match args.output {
                Output::Json | Output::Yaml => args.output.encode(&listed)?,
                Output::Text => table(&[listed]),
            };
            return if a.phase == ArtifactPhase::Ready {
                Ok(out)
            } else {
                Err(format!(
                    "backup {} failed: {}",
                    a.id,
                    a.message.unwrap_or_default()
                ))
            };
        }
        if started.elapsed() > args.timeout {
            return Err(format!(
                "gave up waiting after {}s (--timeout); {} goes on in the cluster",
                args.timeout.as_secs(),
                waited_for
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `quorate backup list [PREFIX]`.
pub async fn list(
    client: &Client,
    prefix: Option<&str>,
    ns: &Option<String>,
    all_namespaces: bool,
    output: Output,
) -> Result<String, String> {
    let ns = (!all_namespaces).then(|| namespace_of(client, ns));
    let rows: Vec<Listed> = all_artifacts(client, ns.as_deref())
        .await?
        .into_iter()
        .filter(|l| prefix.is_none_or(|p| l.artifact.id.starts_with(p)))
        .collect();
    match output {
        Output::Json | Output::Yaml => output.encode(&rows),
        Output::Text if rows.is_empty() => Ok("no backups\n".into()),
        Output::Text => Ok(table(&rows)),
    }
}

/// `quorate backup show ID`: the artifact, and the restores made from it.
pub async fn show(
    client: &Client,
    id: &str,
    ns: &Option<String>,
    output: Output,
) -> Result<String, String> {
    let ns = namespace_of(client, ns);
    let l = find(client, Some(&ns), id).await?;
    let restores: Vec<ZkRestore> = Api::<ZkRestore>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list ZkRestores in {ns}: {e}"))?
        .items
        .into_iter()
        .filter(|r| {
            r.spec
                .source
                .backup
                .as_ref()
                .is_some_and(|b| b.artifact == id)
        })
        .collect();
    if output.is_structured() {
        let restores: Vec<_> = restores
            .iter()
            .map(|r| serde_json::json!({"name": r.name_any(), "mode": r.spec.mode, "verifyOnly": r.spec.verify_only, "status": r.status}))
            .collect();
        return output.encode(&serde_json::json!({"backup": l, "restores": restores}));
    }
    let a = &l.artifact;
    let field = |k: &str, v: Option<String>| format!("{k:<14}{}\n", v.unwrap_or("-".into()));
    let mut out = String::new();
    out += &field("id:", Some(a.id.clone()));
    out += &field("phase:", Some(phase_word(a.phase).into()));
    out += &field("ensemble:", Some(format!("{}/{}", l.namespace, l.ensemble)));
    out += &field("zkbackup:", Some(l.backup.clone()));
    out += &field("started:", a.started_at.as_ref().map(|t| t.0.to_string()));
    out += &field("finished:", a.finished_at.as_ref().map(|t| t.0.to_string()));
    out += &field("method:", a.method.map(|m| format!("{m:?}").to_lowercase()));
    out += &field("source:", a.source_member.map(|m| format!("server.{m}")));
    out += &field("zxid:", a.zxid.clone());
    out += &field("znodes:", a.znodes.map(|n| n.to_string()));
    out += &field("bytes:", a.bytes.map(|n| n.to_string()));
    out += &field("sha256:", a.sha256.clone());
    out += &field("location:", a.location.clone());
    out += &field("message:", a.message.clone());
    for r in restores {
        let s = r.status.clone().unwrap_or_default();
        out += &field(
            "restore:",
            Some(format!(
                "{} {:?}{} {}",
                r.name_any(),
                s.phase.unwrap_or(RestorePhase::Pending),
                if r.spec.verify_only {
                    " (verify only)"
                } else {
                    ""
                },
                s.message.unwrap_or_default()
            )),
        );
    }
    Ok(out)
}

/// `quorate backup delete ID`: its objects (marker first), then its status entry.
pub async fn delete(
    client: &Client,
    id: &str,
    ns: &Option<String>,
    timeout: Duration,
) -> Result<String, String> {
    let ns = namespace_of(client, ns);
    let l = find(client, Some(&ns), id).await?;
    if l.artifact.phase == ArtifactPhase::BackingUp {
        return Err(format!(
            "backup {id} is still running; delete it once it is Ready or Error"
        ));
    }
    // The operator deletes it, from inside the cluster: the bucket need not be reachable from
    // here. The request joins any other on the ZkBackup, with a compare-and-set.
    let api: Api<ZkBackup> = Api::namespaced(client.clone(), &ns);
    for attempt in 0.. {
        let zkb = api
            .get(&l.backup)
            .await
            .map_err(|e| format!("read ZkBackup {ns}/{}: {e}", l.backup))?;
        let mut ids = crate::controller::backup::deletion_requests(zkb.annotations());
        ids.insert(id.to_string());
        let ids: Vec<String> = ids.into_iter().collect();
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": zkb.resource_version(),
                "annotations": { ANNOTATION_DELETE_BACKUPS: ids.join(",") },
            }
        });
        match api
            .patch(&l.backup, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < 5 => continue,
            Err(e) => {
                return Err(format!(
                    "ask for the deletion on ZkBackup {ns}/{}: {e}",
                    l.backup
                ));
            }
        }
    }
    eprintln!(
        "asked the operator to delete backup {id} (ZkBackup {ns}/{})",
        l.backup
    );
    let started = Instant::now();
    let mut said = None;
    loop {
        let zkb = api
            .get(&l.backup)
            .await
            .map_err(|e| format!("read ZkBackup {ns}/{}: {e}", l.backup))?;
        let artifact = zkb
            .status
            .unwrap_or_default()
            .artifacts
            .into_iter()
            .find(|a| a.id == id);
        let Some(artifact) = artifact else {
            return Ok(format!("deleted backup {id}\n"));
        };
        if artifact.message != said {
            if let Some(m) = &artifact.message {
                eprintln!("[{:>4}s] {m}", started.elapsed().as_secs());
            }
            said = artifact.message;
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "gave up waiting after {}s (--timeout); the deletion stays asked for on ZkBackup {ns}/{} and happens once the operator can (a backup still running or read by a restore waits for it to end)",
                timeout.as_secs(),
                l.backup
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Arguments of `quorate backup restore`.
#[derive(Clone, Debug)]
pub struct RestoreArgs {
    /// The artifact.
    pub id: String,
    /// The namespace of the backup.
    pub namespace: Option<String>,
    /// Restore into this ensemble instead of the backup's.
    pub ensemble: Option<String>,
    /// offline or online.
    pub mode: RestoreMode,
    /// Allow older data to overwrite newer.
    pub allow_older: bool,
    /// Only verify.
    pub verify_only: bool,
    /// Wait until Ready or Failed.
    pub wait: bool,
    /// How long a wait lasts.
    pub timeout: Duration,
    /// Print what the restore would do; change nothing.
    pub dry_run: bool,
    /// Output format.
    pub output: Output,
    /// Find the artifact in this bucket instead of the ZkBackups (disaster recovery).
    pub bucket: Option<Destination>,
}

/// `quorate backup restore ID`: a ZkRestore of that artifact.
pub async fn restore(client: &Client, args: &RestoreArgs) -> Result<String, String> {
    let ns = namespace_of(client, &args.namespace);
    let (l, source) = match &args.bucket {
        Some(dest) => {
            let (row, listed) = find_in_bucket(client, dest, &ns, &args.id).await?;
            let source = RestoreSource {
                location: Some(row.location.clone()),
                destination: Some(dest.clone()),
                ..Default::default()
            };
            (listed, source)
        }
        None => {
            let l = find(client, Some(&ns), &args.id).await?;
            let source = RestoreSource {
                backup: Some(BackupArtifactRef {
                    name: l.backup.clone(),
                    artifact: args.id.clone(),
                }),
                ..Default::default()
            };
            (l, source)
        }
    };
    if l.artifact.phase != ArtifactPhase::Ready {
        return Err(format!(
            "backup {} is {}, not Ready: it cannot be restored",
            args.id,
            phase_word(l.artifact.phase)
        ));
    }
    let ensemble = args.ensemble.clone().unwrap_or(l.ensemble.clone());
    let suffix: String = uuid::Uuid::new_v4().to_string().chars().take(8).collect();
    let name = format!(
        "{}-{}-{suffix}",
        if args.verify_only {
            "verify"
        } else {
            "restore"
        },
        backup_name_for(&l.backup)
    );
    let zkr = ZkRestore {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(BTreeMap::from([(
                "quorate.dev/artifact".to_string(),
                backup_name_for(&args.id)
                    .chars()
                    .take(63)
                    .collect::<String>(),
            )])),
            ..Default::default()
        },
        spec: ZkRestoreSpec {
            ensemble_ref: EnsembleRef { name: ensemble },
            source,
            mode: args.mode,
            verify_only: args.verify_only,
            allow_older: args.allow_older,
        },
        status: None,
    };
    let api: Api<ZkRestore> = Api::namespaced(client.clone(), &ns);
    if args.dry_run {
        return dry_run(client, &api, &zkr, &l.artifact, args.output).await;
    }
    api.create(&PostParams::default(), &zkr)
        .await
        .map_err(|e| format!("create ZkRestore {ns}/{name}: {e}"))?;
    if !args.wait {
        return match args.output {
            Output::Text => Ok(format!("restore {ns}/{name} of {} created\n", args.id)),
            Output::Json | Output::Yaml => args.output.encode(
                &serde_json::json!({"namespace": ns, "restore": name, "artifact": args.id}),
            ),
        };
    }
    wait_restore(&api, &ns, &name, args.timeout, args.output).await
}

/// Waits until ZkRestore `ns/name` is Ready (its message, or its status as JSON) or Failed (an
/// error), printing each new phase and message, for at most `timeout`.
pub async fn wait_restore(
    api: &Api<ZkRestore>,
    ns: &str,
    name: &str,
    timeout: Duration,
    output: Output,
) -> Result<String, String> {
    let waited_for = format!("ZkRestore {ns}/{name}");
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let r = api
            .get(name)
            .await
            .map_err(|e| format!("read ZkRestore {ns}/{name}: {e}"))?;
        let s = r.status.clone().unwrap_or_default();
        let line = format!(
            "{:?}: {}",
            s.phase.unwrap_or(RestorePhase::Pending),
            s.message.clone().unwrap_or_default()
        );
        if line != last {
            eprintln!("[{:>4}s] {line}", started.elapsed().as_secs());
            last = line;
        }
        match s.phase {
            Some(RestorePhase::Ready) => {
                return match output {
                    Output::Json | Output::Yaml => output.encode(
                        &serde_json::json!({"namespace": ns, "restore": name, "status": s}),
                    ),
                    Output::Text => Ok(format!("{}\n", s.message.unwrap_or_default())),
                };
            }
            Some(RestorePhase::Failed) => {
                return Err(format!(
                    "restore {ns}/{name} failed: {}",
                    s.message.unwrap_or_default()
                ));
            }
            _ => {}
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "gave up waiting after {}s (--timeout); {} goes on in the cluster",
                timeout.as_secs(),
                waited_for
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `quorate ensemble recover NAMESPACE/NAME`: a ZkRestore that rebuilds the ensemble from the
/// survivor with the highest zxid after a quorum loss (`source.survivors`).
pub async fn recover(
    client: &Client,
    target: &str,
    wait: bool,
    timeout: Duration,
    output: Output,
) -> Result<String, String> {
    let (ns, ensemble) = match target.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (client.default_namespace().to_string(), target.to_string()),
    };
    Api::<MasterEnsemble>::namespaced(client.clone(), &ns)
        .get_opt(&ensemble)
        .await
        .map_err(|e| format!("read MasterEnsemble {ns}/{ensemble}: {e}"))?
        .ok_or_else(|| format!("MasterEnsemble {ns}/{ensemble} does not exist"))?;
    let suffix: String = uuid::Uuid::new_v4().to_string().chars().take(8).collect();
    let name: String = format!("recover-{ensemble}")
        .chars()
        .take(53)
        .chain(format!("-{suffix}").chars())
        .collect();
    let zkr = ZkRestore {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        spec: ZkRestoreSpec {
            ensemble_ref: EnsembleRef {
                name: ensemble.clone(),
            },
            source: RestoreSource {
                survivors: Some(SurvivorsSource {}),
                ..Default::default()
            },
            mode: RestoreMode::Offline,
            verify_only: false,
            allow_older: false,
        },
        status: None,
    };
    let api: Api<ZkRestore> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &zkr)
        .await
        .map_err(|e| format!("create ZkRestore {ns}/{name}: {e}"))?;
    if !wait {
        return match output {
            Output::Text => Ok(format!(
                "recovery {ns}/{name} of {ns}/{ensemble} created; follow it with kubectl get zkrestore -n {ns} {name} -w\n"
            )),
            Output::Json | Output::Yaml => {
                output.encode(&serde_json::json!({"namespace": ns, "restore": name}))
            }
        };
    }
    wait_restore(&api, &ns, &name, timeout, output).await
}

/// `quorate backup restore --dry-run`: the ZkRestore checked by the API server (a server-side
/// dry run: schema and CEL rules, nothing stored) and what it would do to the ensemble.
async fn dry_run(
    client: &Client,
    api: &Api<ZkRestore>,
    zkr: &ZkRestore,
    artifact: &BackupArtifact,
    output: Output,
) -> Result<String, String> {
    let ns = zkr.namespace().unwrap_or_default();
    let name = zkr.name_any();
    let ens_name = &zkr.spec.ensemble_ref.name;
    let ens = Api::<MasterEnsemble>::namespaced(client.clone(), &ns)
        .get_opt(ens_name)
        .await
        .map_err(|e| format!("read MasterEnsemble {ns}/{ens_name}: {e}"))?
        .ok_or_else(|| format!("MasterEnsemble {ns}/{ens_name} does not exist"))?;
    let checked = api
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            zkr,
        )
        .await
        .map_err(|e| format!("the API server refuses ZkRestore {ns}/{name}: {e}"))?;
    let status = ens.status.clone().unwrap_or_default();
    let members: Vec<i64> = status.members.iter().map(|m| m.server_id).collect();
    let steps: Vec<String> = if zkr.spec.verify_only {
        vec![format!(
            "load it into a scratch member ({name}-scratch) and check it; nothing else changes"
        )]
    } else if zkr.spec.mode == RestoreMode::Online {
        vec![
            "verify the artifact (size, SHA-256, counts) and refuse it if it is older than the live data or of another ensemble's history, unless --allow-older".into(),
            format!(
                "replay its {} znodes through the leader of {ns}/{ens_name} while clients stay connected (not fenced, not atomic)",
                artifact.znodes.unwrap_or_default()
            ),
            "then delete the persistent znodes it does not hold; live sessions' ephemerals and the znodes above them stay".into(),
        ]
    } else {
        vec![
            "verify the artifact (size, SHA-256, counts) and refuse it if it is older than the live data or of another ensemble's history, unless --allow-older".into(),
            format!("fence {ns}/{ens_name}: its controller takes no step until the restore ends"),
            format!(
                "stop its {} member Pods (server ids {members:?}); their volumes stay",
                members.len()
            ),
            "place the verified data on every volume; each member's old data is kept beside it as version-2.before-<restore uid>".into(),
            "start the members, check that they hold the artifact's data, and lift the fence".into(),
        ]
    };
    match output {
        Output::Json | Output::Yaml => output.encode(&serde_json::json!({
            "dryRun": true,
            "restore": checked,
            "artifact": artifact,
            "ensemble": {"namespace": ns, "name": ens_name, "members": members, "voters": status.voters},
            "steps": steps,
        })),
        Output::Text => {
            let mut out = format!(
                "dry run: nothing was changed. ZkRestore {ns}/{name} (accepted by the API server) would restore {} (zxid {}, {} znodes, {} bytes) into {ns}/{ens_name}, {}:\n",
                artifact.id,
                artifact.zxid.as_deref().unwrap_or("unknown"),
                artifact.znodes.unwrap_or_default(),
                artifact.bytes.unwrap_or_default(),
                if zkr.spec.verify_only {
                    "verify only"
                } else if zkr.spec.mode == RestoreMode::Online {
                    "online"
                } else {
                    "offline"
                }
            );
            for (i, step) in steps.iter().enumerate() {
                out.push_str(&format!("  {}. {step}\n", i + 1));
            }
            out.push_str("Run it again with --yes to restore.\n");
            Ok(out)
        }
    }
}

/// Arguments of `quorate restore-member`.
#[derive(Clone, Debug)]
pub struct RestoreMemberArgs {
    /// The destination, as JSON (the ZkBackup's `spec.destination`).
    pub destination: String,
    /// NAMESPACE/ZKBACKUP/ID.
    pub artifact: String,
    /// `zookeeper-snapshot` or `quorate-tree-v1`.
    pub format: String,
    /// The snapshot's zxid.
    pub zxid: String,
    /// Expected size.
    pub bytes: u64,
    /// Expected SHA-256.
    pub sha256: String,
    /// ZooKeeper's dataDir.
    pub data_dir: PathBuf,
    /// The restore's id.
    pub restore_id: String,
}

/// `quorate restore-member`: places a verified artifact on this member's volume.
pub async fn restore_member(args: &RestoreMemberArgs) -> Result<String, String> {
    let destination: Destination = serde_json::from_str(&args.destination)
        .map_err(|e| format!("--destination is not a destination: {e}"))?;
    let parts: Vec<&str> = args.artifact.split('/').collect();
    let [ns, backup, id] = parts.as_slice() else {
        return Err(format!(
            "--artifact {}: expected NAMESPACE/ZKBACKUP/ID",
            args.artifact
        ));
    };
    let format = match args.format.as_str() {
        "zookeeper-snapshot" => Format::Snapshot,
        "quorate-tree-v1" => Format::Tree,
        other => {
            return Err(format!(
                "--format {other}: expected zookeeper-snapshot or quorate-tree-v1"
            ));
        }
    };
    let zxid =
        parse_zxid(&args.zxid).ok_or_else(|| format!("--zxid {}: not a hex zxid", args.zxid))?;
    let credentials = match (
        std::env::var(ENV_S3_ACCESS_KEY_ID),
        std::env::var(ENV_S3_SECRET_ACCESS_KEY),
    ) {
        (Ok(a), Ok(s)) => Some(S3Credentials {
            access_key_id: a,
            secret_access_key: s,
        }),
        _ => None,
    };
    let store =
        Store::from_destination(&destination, credentials.as_ref()).map_err(|e| e.to_string())?;
    let paths = store.artifact(ns, backup, id);
    let placement = Placement {
        data_dir: args.data_dir.clone(),
        restore_id: args.restore_id.clone(),
        artifact_id: id.to_string(),
        format,
        zxid,
        bytes: args.bytes,
        sha256: args.sha256.clone(),
    };
    eprintln!(
        "quorate restore-member: placing {id} in {}",
        args.data_dir.display()
    );
    let total = args.bytes;
    let progress = move |n: u64| {
        eprintln!(
            "quorate restore-member: {n} of {total} bytes ({}%)",
            (n * 100).checked_div(total).unwrap_or(100)
        )
    };
    match place::place(&store, &paths, &placement, &progress)
        .await
        .map_err(|e| e.to_string())?
    {
        Outcome::AlreadyPlaced => Ok(format!(
            "restore {} already placed here; nothing to do\n",
            args.restore_id
        )),
        Outcome::Placed { kept, epoch } => Ok(format!(
            "placed {id} (epoch {epoch}); previous data kept at {}\n",
            kept.map(|k| k.display().to_string())
                .unwrap_or("(none: the volume was empty)".into())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_become_dns_names() {
        assert_eq!(backup_name_for("Nightly_Backup.1"), "nightly-backup.1");
        assert_eq!(backup_name_for("-x-"), "x");
        assert_eq!(backup_name_for("___"), "backup");
    }
}
