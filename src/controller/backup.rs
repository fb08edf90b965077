//! The reconcile of one ZkBackup: one backup now (no schedule), or one per schedule tick, or one
//! on request (`backupBeforeChange`, `quorate backup create`); never two of one ensemble at
//! once; retention applied to status and to the store.
//!
//! ```text
//! interrupted artifacts -> Error (their objects removed) -> due? -> claim (status CAS, BackingUp)
//!   -> stream the backup (data, manifest, marker) -> record Ready or Error -> retention -> requeue
//! ```

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::{info, instrument, warn};

use super::{Context, Error};
use crate::backup::artifact::{self, Format};
use crate::backup::engine::{self, BackupJob};
use crate::backup::schedule::{self, Kept, KeptState, Schedule};
use crate::backup::store::{S3Credentials, Store};
use crate::constants::*;
use crate::crd::{
    ArtifactPhase, BackupArtifact, BackupMethod, Destination, MasterEnsemble, MemberRole,
    MemberState, ZkBackup, ZkBackupStatus, condition,
};
use crate::executor::resources::names::credentials_secret;
use crate::planner::ServerId;
use crate::planner::model::to_micros;
use crate::zk::{Credentials, Login, MemberAddr};

/// Backups running in this process, by artifact id and by ensemble (`ns/name`).
#[derive(Default)]
pub struct Running {
    artifacts: Mutex<HashSet<String>>,
    ensembles: Mutex<HashSet<String>>,
}

impl Running {
    fn lock<'a>(m: &'a Mutex<HashSet<String>>) -> std::sync::MutexGuard<'a, HashSet<String>> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether artifact `id` is being taken by this process.
    pub fn has_artifact(&self, id: &str) -> bool {
        Self::lock(&self.artifacts).contains(id)
    }

    /// Claims the ensemble for one backup; `None` when one already runs.
    fn claim(self: &Arc<Self>, ensemble: &str, id: &str) -> Option<RunningGuard> {
        if !Self::lock(&self.ensembles).insert(ensemble.to_string()) {
            return None;
        }
        Self::lock(&self.artifacts).insert(id.to_string());
        Some(RunningGuard {
            running: self.clone(),
            ensemble: ensemble.to_string(),
            id: id.to_string(),
        })
    }
}

/// Releases a claim when the backup ends, however it ends.
struct RunningGuard {
    running: Arc<Running>,
    ensemble: String,
    id: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        Running::lock(&self.running.ensembles).remove(&self.ensemble);
        Running::lock(&self.running.artifacts).remove(&self.id);
    }
}

/// Reads the S3 keys of a destination from its Secret (none for a filesystem destination).
pub async fn s3_credentials(
    client: &kube::Client,
    namespace: &str,
    dest: &Destination,
) -> Result<Option<S3Credentials>, Error> {
    let Some(s3) = &dest.s3 else {
        return Ok(None);
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get(&s3.credentials_secret)
        .await
        .map_err(Error::kube(format!(
            "read Secret {namespace}/{} named by spec.destination.s3.credentialsSecret",
            s3.credentials_secret
        )))?;
    Ok(Some(S3Credentials {
        access_key_id: secret_key(&secret, namespace, SECRET_S3_ACCESS_KEY_ID)?,
        secret_access_key: secret_key(&secret, namespace, SECRET_S3_SECRET_ACCESS_KEY)?,
    }))
}

/// The store of a destination, with its keys read from the Secret.
pub async fn store_for(
    client: &kube::Client,
    namespace: &str,
    dest: &Destination,
) -> Result<Store, Error> {
    let creds = s3_credentials(client, namespace, dest).await?;
    Store::from_destination(dest, creds.as_ref()).map_err(|e| Error::Backup(e.to_string()))
}

/// The super user's login to an ensemble (from `<ensemble>-credentials`): its digest, after a
/// SASL login when the members enforce client authentication.
pub async fn super_login(
    client: &kube::Client,
    namespace: &str,
    ensemble: &str,
) -> Result<Login, Error> {
    let name = credentials_secret(ensemble);
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get(&name)
        .await
        .map_err(Error::kube(format!("read Secret {namespace}/{name}")))?;
    let password = secret_key(&secret, namespace, SECRET_SUPER_PASSWORD)?;
    Ok(Login::digest(Credentials::digest(SUPER_USER, password)).with_sasl(sasl_login(&secret)))
}

/// The operator's SASL login (the user `quorate`) when an ensemble's members enforce client
/// authentication, which its credentials Secret says by holding the clients' password.
pub(crate) fn sasl_login(secret: &Secret) -> Option<Credentials> {
    secret_value(secret, SECRET_CLIENT_PASSWORD)?;
    let password = secret_value(secret, SECRET_OPERATOR_PASSWORD)?;
    Some(Credentials::digest(OPERATOR_USER, password))
}

/// The UTF-8 value of `key` in a Secret, or an error naming the Secret and the key.
pub(crate) fn secret_key(secret: &Secret, namespace: &str, key: &str) -> Result<String, Error> {
    secret_value(secret, key).ok_or_else(|| {
        Error::Inconsistent(format!(
            "Secret {namespace}/{} has no key {key}",
            secret.metadata.name.as_deref().unwrap_or_default()
        ))
    })
}

/// The UTF-8 value under `key` in a Secret, if there is one.
pub(crate) fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

/// Serving members of an ensemble as its status lists them, followers first.
pub fn serving_members(ens: &MasterEnsemble) -> Vec<(MemberAddr, Option<MemberRole>)> {
    let mut members: Vec<_> = ens
        .status
        .iter()
        .flat_map(|s| s.members.iter())
        .filter(|m| m.state == Some(MemberState::Serving))
        .filter_map(|m| {
            let ip = m.address.clone()?;
            let id = u32::try_from(m.server_id).ok()?;
            let mut addr = MemberAddr::new(ServerId(id), ip);
            if let Some(p) = m.client_port.and_then(|p| u16::try_from(p).ok()) {
                addr.client_port = p;
            }
            if let Some(p) = m.admin_port.and_then(|p| u16::try_from(p).ok()) {
                addr.admin_port = p;
            }
            Some((addr, m.role))
        })
        .collect();
    // Followers first: a backup reads from a follower and spares the leader.
    members.sort_by_key(|(a, role)| (*role == Some(MemberRole::Leader), a.id));
    members
}

/// The ZooKeeper version triple from a version string such as `3.9.5-abc, built on ...`.
pub fn version_triple(v: &str) -> Option<(u32, u32, u32)> {
    let core = v.split(['-', ',', ' ']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

/// The format a backup takes: the AdminServer snapshot from 3.9.4 on (`auto`, `snapshot`), a
/// tree walk otherwise or when asked.
pub fn format_for(method: BackupMethod, version: Option<&str>) -> Result<Format, String> {
    let has_snapshot = version
        .and_then(version_triple)
        .is_some_and(|v| v >= (3, 9, 4));
    match method {
        BackupMethod::Tree => Ok(Format::Tree),
        BackupMethod::Auto if has_snapshot => Ok(Format::Snapshot),
        BackupMethod::Auto => Ok(Format::Tree),
        BackupMethod::Snapshot if has_snapshot => Ok(Format::Snapshot),
        BackupMethod::Snapshot => Err(format!(
            "spec.method snapshot needs ZooKeeper 3.9.4 or newer (the AdminServer snapshot command); the source member runs {}",
            version.unwrap_or("an unknown version")
        )),
    }
}

/// Replaces a ZkBackup's status after `change` (see [`super::update_status`]).
pub async fn update_backup_status(
    api: &Api<ZkBackup>,
    name: &str,
    change: impl FnMut(&mut ZkBackupStatus),
) -> Result<ZkBackup, Error> {
    super::update_status(api, name, change).await
}

/// Sets condition `type_` to `ok` with a reason and message; the transition time moves only
/// when the status flips.
pub fn record_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let status = if ok { "True" } else { "False" };
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Time(now);
        }
        c.status = status.into();
        c.reason = reason.into();
        c.message = message.into();
        return;
    }
    conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(now),
        observed_generation: None,
    });
}

/// Why a backup starts now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// No schedule and never run.
    Once,
    /// A schedule tick.
    Tick(Timestamp),
    /// The request annotation, made at this time.
    Requested(Timestamp),
}

/// The newest request for a backup (the annotation), to the microsecond that artifacts keep.
fn requested_at(zkb: &ZkBackup) -> Option<Timestamp> {
    zkb.annotations()
        .get(ANNOTATION_BACKUP_REQUESTED)
        .and_then(|v| v.parse().ok())
        .map(to_micros)
}

/// Whether an artifact answers the request made at `r`: it was taken for that request or a
/// later one, or started in a whole second after it (start times are whole seconds, so one
/// that started in the request's own second may predate it). A failed attempt answers it too:
/// the request is not retried in a loop; asking again retries.
fn answers_request(a: &BackupArtifact, r: Timestamp) -> bool {
    a.requested_at.as_ref().is_some_and(|t| t.0 >= r)
        || a.started_at.as_ref().is_some_and(|t| t.0 > r)
}

/// One pass over one ZkBackup.
#[instrument(skip_all, fields(namespace = %zkb.namespace().unwrap_or_default(), ensemble = %zkb.spec.ensemble_ref.name, backup = %zkb.name_any()))]
pub async fn reconcile(zkb: Arc<ZkBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let now = Timestamp::now();
    let ns = zkb.namespace().unwrap_or_default();
    let name = zkb.name_any();
    let api: Api<ZkBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let status = zkb.status.clone().unwrap_or_default();
    if let Some(at) = status
        .artifacts
        .iter()
        .filter(|a| a.phase == ArtifactPhase::Ready)
        .filter_map(|a| a.finished_at.as_ref().map(|t| t.0))
        .max()
    {
        ctx.metrics
            .backup_succeeded(&crate::metrics::ObjectKey::new(&ns, &name), at);
    }

    // An artifact BackingUp that this process is not taking was interrupted (the operator
    // stopped mid-backup): it never got its completion marker; say so and remove its objects.
    // The object this pass was given may be older than the status a backup of this process
    // wrote as it ended, just before it let go of its claim: only a read made after the claim
    // was seen gone tells a finished backup (Ready, its objects kept) from an interrupted one.
    let unclaimed: HashSet<String> = status
        .artifacts
        .iter()
        .filter(|a| a.phase == ArtifactPhase::BackingUp && !ctx.backups.has_artifact(&a.id))
        .map(|a| a.id.clone())
        .collect();
    let interrupted: Vec<BackupArtifact> = if unclaimed.is_empty() {
        Vec::new()
    } else {
        let fresh = api
            .get_opt(&name)
            .await
            .map_err(Error::kube(format!("read ZkBackup {ns}/{name}")))?;
        fresh
            .and_then(|b| b.status)
            .unwrap_or_default()
            .artifacts
            .into_iter()
            .filter(|a| a.phase == ArtifactPhase::BackingUp && unclaimed.contains(&a.id))
            .collect()
    };
    if !interrupted.is_empty() {
        if let Ok(store) = store_for(&ctx.client, &ns, &zkb.spec.destination).await {
            for a in &interrupted {
                let paths = store.artifact(&ns, &name, &a.id);
                if let Err(e) = store.delete_artifact(&paths).await {
                    warn!(artifact = %a.id, error = %e, "cannot remove an interrupted backup's objects");
                }
            }
        }
        let ids: HashSet<String> = interrupted.iter().map(|a| a.id.clone()).collect();
        update_backup_status(&api, &name, |s| {
            for a in s.artifacts.iter_mut().filter(|a| ids.contains(&a.id)) {
                if a.phase == ArtifactPhase::BackingUp {
                    a.phase = ArtifactPhase::Error;
                    a.finished_at = Some(Time(now));
                    a.message = Some(
                        "interrupted: the operator stopped while this backup ran; its partial data was removed and it was never complete".into(),
                    );
                }
            }
        })
        .await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    let deletions = apply_deletions(&ctx, &zkb, &api).await?;
    if deletions.changed {
        // Status or the annotation changed: the next pass starts from what was written.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    let schedule = match zkb
        .spec
        .schedule
        .as_deref()
        .map(Schedule::parse)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => {
            update_backup_status(&api, &name, |s| {
                record_condition(
                    &mut s.conditions,
                    condition::READY,
                    false,
                    "InvalidSchedule",
                    &e.to_string(),
                    now,
                );
                s.observed_generation = zkb.metadata.generation;
            })
            .await?;
            return Ok(Action::await_change());
        }
    };
    let created = zkb
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let last_scheduled = status.last_schedule_time.as_ref().map(|t| t.0);
    let due = schedule
        .as_ref()
        .map(|s| schedule::due(s, last_scheduled, created, now));
    let request = requested_at(&zkb);
    let trigger = if let Some(r) =
        request.filter(|r| !status.artifacts.iter().any(|a| answers_request(a, *r)))
    {
        Some(Trigger::Requested(r))
    } else if schedule.is_none() && status.artifacts.is_empty() && last_scheduled.is_none() {
        Some(Trigger::Once)
    } else if !zkb.spec.suspend {
        due.and_then(|d| d.run).map(Trigger::Tick)
    } else {
        None
    };

    if let Some(trigger) = trigger {
        let busy = status
            .artifacts
            .iter()
            .any(|a| a.phase == ArtifactPhase::BackingUp);
        if !busy {
            run_one(&ctx, &zkb, &api, trigger, now).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }

    apply_retention(&ctx, &zkb, &api, now).await?;
    let next = due.and_then(|d| d.next);
    let newest = status
        .artifacts
        .iter()
        .filter(|a| a.phase != ArtifactPhase::BackingUp)
        .max_by_key(|a| a.started_at.as_ref().map(|t| t.0));
    update_backup_status(&api, &name, |s| {
        s.next_schedule_time = next.filter(|_| !zkb.spec.suspend).map(Time);
        s.observed_generation = zkb.metadata.generation;
        match newest {
            Some(a) if a.phase == ArtifactPhase::Ready => record_condition(
                &mut s.conditions,
                condition::READY,
                true,
                "BackupReady",
                &format!("newest backup {} is Ready", a.id),
                now,
            ),
            Some(a) => record_condition(
                &mut s.conditions,
                condition::READY,
                false,
                "BackupFailed",
                &format!(
                    "newest backup {} failed: {}",
                    a.id,
                    a.message.clone().unwrap_or_default()
                ),
                now,
            ),
            None => record_condition(
                &mut s.conditions,
                condition::READY,
                false,
                "NoBackupYet",
                "no backup has finished yet",
                now,
            ),
        }
    })
    .await?;
    let wait = next
        .map(|n| n.duration_since(now).unsigned_abs())
        .unwrap_or(Duration::from_secs(300))
        .clamp(Duration::from_secs(1), Duration::from_secs(300));
    // A deletion that waits for a backup or a restore to end is looked at again soon (this
    // controller does not watch restores).
    let wait = if deletions.waiting {
        wait.min(Duration::from_secs(5))
    } else {
        wait
    };
    Ok(Action::requeue(wait))
}

/// Claims, takes and records one backup.
async fn run_one(
    ctx: &Arc<Context>,
    zkb: &ZkBackup,
    api: &Api<ZkBackup>,
    trigger: Trigger,
    now: Timestamp,
) -> Result<(), Error> {
    let ns = zkb.namespace().unwrap_or_default();
    let name = zkb.name_any();
    let ens_name = &zkb.spec.ensemble_ref.name;
    let ens_key = format!("{ns}/{ens_name}");
    let id = artifact::new_id(&zkb.spec.label);
    let Some(_guard) = ctx.backups.claim(&ens_key, &id) else {
        info!(ensemble = %ens_key, "another backup of this ensemble is running; waiting");
        return Ok(());
    };
    let ens = Api::<MasterEnsemble>::namespaced(ctx.client.clone(), &ns)
        .get_opt(ens_name)
        .await
        .map_err(Error::kube(format!("read MasterEnsemble {ens_key}")))?;
    let tick = match trigger {
        Trigger::Tick(t) => Some(t),
        _ => None,
    };
    let requested = match trigger {
        Trigger::Requested(r) => Some(MicroTime(r)),
        _ => None,
    };
    let fail_early = |message: String| BackupArtifact {
        id: id.clone(),
        phase: ArtifactPhase::Error,
        started_at: Some(Time(now)),
        finished_at: Some(Time(now)),
        requested_at: requested.clone(),
        message: Some(message),
        ..Default::default()
    };

    let record_early = |a: BackupArtifact| {
        let name = name.clone();
        async move {
            update_backup_status(api, &name, |s| {
                s.artifacts.push(a.clone());
                if let Some(t) = tick {
                    s.last_schedule_time = Some(Time(t));
                }
            })
            .await
            .map(|_| ())
        }
    };
    let Some(ens) = ens else {
        return record_early(fail_early(format!(
            "MasterEnsemble {ens_key} (spec.ensembleRef) does not exist"
        )))
        .await;
    };
    let members = serving_members(&ens);
    let Some((member, _)) = members.first().cloned() else {
        return record_early(fail_early(format!(
            "no member of {ens_key} is serving; nothing to back up"
        )))
        .await;
    };
    let observed = ctx.probe.command(&member, "monitor").await.ok();
    let version = observed
        .as_ref()
        .and_then(|v| v.get("version"))
        .and_then(|v| v.as_str())
        .map(|v| v.split(['-', ',']).next().unwrap_or(v).to_string());
    let format = match format_for(zkb.spec.method, version.as_deref()) {
        Ok(f) => f,
        Err(message) => return record_early(fail_early(message)).await,
    };
    let zxid_before = ctx
        .probe
        .command(&member, "server_stats")
        .await
        .ok()
        .and_then(|v| v["server_stats"]["last_processed_zxid"].as_i64());
    let store = match store_for(&ctx.client, &ns, &zkb.spec.destination).await {
        Ok(s) => s,
        Err(e) => return record_early(fail_early(e.to_string())).await,
    };
    let login = super_login(&ctx.client, &ns, ens_name).await?;
    let paths = store.artifact(&ns, &name, &id);
    let started = BackupArtifact {
        id: id.clone(),
        phase: ArtifactPhase::BackingUp,
        started_at: Some(Time(now)),
        requested_at: requested.clone(),
        location: Some(paths.location.clone()),
        source_member: Some(i64::from(member.id.0)),
        method: Some(format.method()),
        ..Default::default()
    };
    // The claim: the artifact is listed BackingUp before any byte is read.
    update_backup_status(api, &name, |s| {
        s.artifacts.push(started.clone());
        if let Some(t) = tick {
            s.last_schedule_time = Some(Time(t));
        }
    })
    .await?;
    super::publish_event(
        ctx,
        zkb,
        EventType::Normal,
        &format!("Started/backup/{id}"),
        &format!("backing up {ens_key} from {member} ({format:?})"),
    )
    .await;
    info!(artifact = %id, %member, ?format, "backup started");
    let job = BackupJob {
        id: id.clone(),
        namespace: ns.clone(),
        ensemble: ens_name.clone(),
        ensemble_uid: ens.uid(),
        ensemble_spec: serde_json::to_value(&ens.spec).ok(),
        backup: name.clone(),
        member,
        format,
        user: SUPER_USER.into(),
        password: login
            .digest
            .as_ref()
            .map_or_else(String::new, |c| c.password().into()),
        sasl: login.sasl.clone(),
        zookeeper_version: version,
        zxid_before,
        started_at: now,
    };
    let progress = |bytes: u64| info!(artifact = %id, bytes, "backup progress");
    let result = engine::run_backup(&store, &job, Timestamp::now, &progress).await;
    let finished = Timestamp::now();
    match result {
        Ok(m) => {
            info!(artifact = %id, bytes = m.bytes, znodes = m.znodes, "backup ready");
            let message = (!m.not_preserved.is_empty())
                .then(|| format!("not preserved: {}", m.not_preserved.join("; ")));
            update_backup_status(api, &name, |s| {
                if let Some(a) = s.artifacts.iter_mut().find(|a| a.id == id) {
                    a.phase = ArtifactPhase::Ready;
                    a.finished_at = Some(Time(m.finished_at));
                    a.zxid = Some(artifact::zxid_hex(m.zxid));
                    a.znodes = Some(m.znodes as i64);
                    a.bytes = Some(m.bytes as i64);
                    a.sha256 = Some(m.sha256.clone());
                    a.message = message.clone();
                }
            })
            .await?;
            super::publish_event(
                ctx,
                zkb,
                EventType::Normal,
                &format!("Completed/backup/{id}"),
                &format!(
                    "{} bytes, {} znodes, zxid {}",
                    m.bytes,
                    m.znodes,
                    artifact::zxid_hex(m.zxid)
                ),
            )
            .await;
        }
        Err(e) => {
            warn!(artifact = %id, error = %e, "backup failed");
            let paths = store.artifact(&ns, &name, &id);
            let cleanup = store.delete_artifact(&paths).await.err();
            let message = match cleanup {
                None => format!("{e}"),
                Some(c) => format!("{e} (its partial objects could not be removed: {c})"),
            };
            update_backup_status(api, &name, |s| {
                if let Some(a) = s.artifacts.iter_mut().find(|a| a.id == id) {
                    a.phase = ArtifactPhase::Error;
                    a.finished_at = Some(Time(finished));
                    a.message = Some(message.clone());
                }
            })
            .await?;
            super::publish_event(
                ctx,
                zkb,
                EventType::Warning,
                &format!("Failed/backup/{id}"),
                &message,
            )
            .await;
        }
    }
    Ok(())
}

/// The backup ids the delete annotation asks for.
pub(crate) fn deletion_requests(
    annotations: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeSet<String> {
    annotations
        .get(ANNOTATION_DELETE_BACKUPS)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// What to do with the requested deletions: the ids to delete now, and the ids that stay
/// requested (still running, or used by a restore that has not finished). An id that no
/// artifact has is done: it was deleted already.
fn plan_deletions(
    requested: &std::collections::BTreeSet<String>,
    artifacts: &[BackupArtifact],
    in_use: &HashSet<String>,
) -> (Vec<String>, std::collections::BTreeSet<String>) {
    let mut now = Vec::new();
    let mut later = std::collections::BTreeSet::new();
    for id in requested {
        match artifacts.iter().find(|a| &a.id == id) {
            None => {}
            Some(a) if a.phase == ArtifactPhase::BackingUp || in_use.contains(id) => {
                later.insert(id.clone());
            }
            Some(_) => now.push(id.clone()),
        }
    }
    (now, later)
}

/// The ids of this ZkBackup's backups that a restore which has not finished reads.
async fn artifacts_in_use(ctx: &Context, zkb: &ZkBackup) -> Result<HashSet<String>, Error> {
    let ns = zkb.namespace().unwrap_or_default();
    let name = zkb.name_any();
    let restores = Api::<crate::crd::ZkRestore>::namespaced(ctx.client.clone(), &ns)
        .list(&Default::default())
        .await
        .map_err(Error::kube(format!("list ZkRestores in {ns}")))?;
    Ok(restores
        .items
        .iter()
        .filter(|r| {
            !matches!(
                r.status.as_ref().and_then(|s| s.phase),
                Some(crate::crd::RestorePhase::Ready | crate::crd::RestorePhase::Failed)
            )
        })
        .flat_map(|r| {
            let source = &r.spec.source;
            let by_ref = source
                .backup
                .as_ref()
                .filter(|b| b.name == name)
                .map(|b| b.artifact.clone());
            let by_location = source.location.as_deref().and_then(|l| {
                let (rest, id) = l.rsplit_once('/')?;
                rest.ends_with(&format!("/{ns}/{name}"))
                    .then(|| id.to_string())
            });
            by_ref.into_iter().chain(by_location)
        })
        .collect())
}

/// What [`apply_deletions`] did.
#[derive(Clone, Copy, Debug, Default)]
struct Deletions {
    /// It wrote status or the annotation, or the annotation changed under it.
    changed: bool,
    /// Some requested deletion waits for its backup or a restore of it to end.
    waiting: bool,
}

/// Deletes the backups the delete annotation asks for (objects first, marker first; then
/// status), and takes the ids that are done out of the annotation with a compare-and-set on the
/// object this pass read.
async fn apply_deletions(
    ctx: &Context,
    zkb: &ZkBackup,
    api: &Api<ZkBackup>,
) -> Result<Deletions, Error> {
    let requested = deletion_requests(zkb.annotations());
    if requested.is_empty() {
        return Ok(Deletions::default());
    }
    let ns = zkb.namespace().unwrap_or_default();
    let name = zkb.name_any();
    let artifacts = zkb.status.clone().unwrap_or_default().artifacts;
    let in_use = artifacts_in_use(ctx, zkb).await?;
    let (now, later) = plan_deletions(&requested, &artifacts, &in_use);
    let mut removed = HashSet::new();
    let mut failed = Vec::new();
    if !now.is_empty() {
        let store = store_for(&ctx.client, &ns, &zkb.spec.destination).await?;
        for id in &now {
            match store.delete_artifact(&store.artifact(&ns, &name, id)).await {
                Ok(()) => {
                    info!(artifact = %id, "deleted a backup on request");
                    removed.insert(id.clone());
                }
                Err(e) => {
                    warn!(artifact = %id, error = %e, "cannot delete a backup on request");
                    failed.push((
                        id.clone(),
                        format!("deletion requested, but the store refused it (retried): {e}"),
                    ));
                }
            }
        }
    }
    // Status changes when a backup went, or a failure is new.
    let news = failed.iter().any(|(id, message)| {
        artifacts
            .iter()
            .any(|a| &a.id == id && a.message.as_ref() != Some(message))
    });
    let mut current = None;
    if !removed.is_empty() || news {
        let written = update_backup_status(api, &name, |s| {
            s.artifacts.retain(|a| !removed.contains(&a.id));
            for (id, message) in &failed {
                if let Some(a) = s.artifacts.iter_mut().find(|a| &a.id == id) {
                    a.message = Some(message.clone());
                }
            }
        })
        .await?;
        current = Some(written);
    }
    // The ids done (deleted, or never there) leave the annotation; waiting or failed ones stay.
    let waiting = !later.is_empty() || !failed.is_empty();
    let keep: std::collections::BTreeSet<String> = later
        .into_iter()
        .chain(failed.into_iter().map(|(id, _)| id))
        .collect();
    let done: std::collections::BTreeSet<&String> = requested.difference(&keep).collect();
    // The object as last written: a status write re-reads it, and ids asked for since then
    // must stay asked for.
    let current = current.as_ref().unwrap_or(zkb);
    let asked = deletion_requests(current.annotations());
    let left: Vec<&String> = asked.iter().filter(|id| !done.contains(id)).collect();
    if left.len() == asked.len() {
        return Ok(Deletions {
            changed: !removed.is_empty() || news,
            waiting,
        });
    }
    let value = (!left.is_empty()).then(|| {
        left.iter()
            .map(|id| id.as_str())
            .collect::<Vec<_>>()
            .join(",")
    });
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": current.resource_version(),
            "annotations": { ANNOTATION_DELETE_BACKUPS: value },
        }
    });
    let patched = api
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await;
    match patched {
        // A conflict (409): someone asked for more meanwhile; the next pass reads the new value.
        Err(e) if !matches!(&e, kube::Error::Api(s) if s.code == 409) => {
            Err(Error::kube(format!("update ZkBackup {ns}/{name}"))(e))
        }
        _ => Ok(Deletions {
            changed: true,
            waiting,
        }),
    }
}

/// Removes the artifacts retention no longer keeps: objects first (marker first), then status.
async fn apply_retention(
    ctx: &Context,
    zkb: &ZkBackup,
    api: &Api<ZkBackup>,
    now: Timestamp,
) -> Result<(), Error> {
    let status = zkb.status.clone().unwrap_or_default();
    let retention = zkb.spec.retention.clone().unwrap_or_default();
    let keep_last = retention.keep_last.and_then(|k| u32::try_from(k).ok());
    let max_age = retention.max_age.as_deref().and_then(schedule::parse_age);
    let kept: Vec<Kept> = status
        .artifacts
        .iter()
        .map(|a| Kept {
            id: a.id.clone(),
            state: match a.phase {
                ArtifactPhase::Ready => KeptState::Ready,
                ArtifactPhase::Error => KeptState::Error,
                ArtifactPhase::BackingUp => KeptState::Running,
            },
            started_at: a.started_at.as_ref().map(|t| t.0).unwrap_or(now),
        })
        .collect();
    let expired = schedule::expired(&kept, keep_last, max_age, now);
    if expired.is_empty() {
        return Ok(());
    }
    let ns = zkb.namespace().unwrap_or_default();
    let name = zkb.name_any();
    let store = store_for(&ctx.client, &ns, &zkb.spec.destination).await?;
    let mut removed = HashSet::new();
    for id in &expired {
        match store.delete_artifact(&store.artifact(&ns, &name, id)).await {
            Ok(()) => {
                info!(artifact = %id, "retention removed a backup");
                removed.insert(id.clone());
            }
            Err(e) => {
                warn!(artifact = %id, error = %e, "retention could not delete a backup; it stays listed")
            }
        }
    }
    update_backup_status(api, &name, |s| {
        s.artifacts.retain(|a| !removed.contains(&a.id))
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_deletions_wait_for_running_backups_and_unfinished_restores() {
        let annotations = [(
            ANNOTATION_DELETE_BACKUPS.to_string(),
            " a, b ,c,,gone,d".to_string(),
        )]
        .into();
        let requested = deletion_requests(&annotations);
        assert_eq!(
            requested.iter().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b", "c", "d", "gone"]
        );
        let artifact = |id: &str, phase| BackupArtifact {
            id: id.into(),
            phase,
            ..Default::default()
        };
        let artifacts = [
            artifact("a", ArtifactPhase::Ready),
            artifact("b", ArtifactPhase::BackingUp),
            artifact("c", ArtifactPhase::Ready),
            artifact("d", ArtifactPhase::Error),
            artifact("kept", ArtifactPhase::Ready),
        ];
        let in_use: HashSet<String> = ["c".to_string()].into();
        let (now, later) = plan_deletions(&requested, &artifacts, &in_use);
        // Ready and failed backups go now; one still running and one a restore reads wait;
        // an id no backup has is done already; a backup nobody asked for stays.
        assert_eq!(now, ["a", "d"]);
        assert_eq!(
            later.iter().map(String::as_str).collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert!(deletion_requests(&Default::default()).is_empty());
    }

    #[test]
    fn a_backup_reads_from_a_follower_of_the_status_the_ensemble_controller_wrote() {
        // The status as the ensemble controller writes it (through serde, as stored): member 1
        // leads, member 2 follows. The backup must pick the follower.
        let status = serde_json::json!({
            "members": [
                {"serverId": 1, "pod": "m-1", "address": "127.0.1.1", "role": "leader", "state": "Serving"},
                {"serverId": 2, "pod": "m-2", "address": "127.0.1.2", "role": "follower", "state": "Serving"},
                {"serverId": 3, "pod": "m-3", "address": "127.0.1.3", "role": "follower", "state": "Down"},
            ]
        });
        let mut ens = MasterEnsemble::new(
            "m",
            serde_json::from_value(serde_json::json!({"replicas": 3, "version": "3.9.5"})).unwrap(),
        );
        ens.status = Some(serde_json::from_value(status).unwrap());
        let members = serving_members(&ens);
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].0.id, ServerId(2));
        assert_eq!(members[1].1, Some(MemberRole::Leader));
    }

    #[test]
    fn snapshots_need_3_9_4() {
        assert_eq!(
            format_for(BackupMethod::Auto, Some("3.9.5")),
            Ok(Format::Snapshot)
        );
        assert_eq!(
            format_for(BackupMethod::Auto, Some("3.9.4")),
            Ok(Format::Snapshot)
        );
        assert_eq!(
            format_for(BackupMethod::Auto, Some("3.8.6")),
            Ok(Format::Tree)
        );
        assert_eq!(format_for(BackupMethod::Auto, None), Ok(Format::Tree));
        assert_eq!(
            format_for(BackupMethod::Tree, Some("3.9.5")),
            Ok(Format::Tree)
        );
        let e = format_for(BackupMethod::Snapshot, Some("3.8.6")).unwrap_err();
        assert!(e.contains("spec.method") && e.contains("3.8.6"), "{e}");
    }

    #[test]
    fn versions_parse_from_what_servers_report() {
        assert_eq!(
            version_triple("3.9.5-293c895a, built on 2026-02-11"),
            Some((3, 9, 5))
        );
        assert_eq!(version_triple("3.8.0-${mvngit.commit.id}"), Some((3, 8, 0)));
        assert_eq!(version_triple("garbage"), None);
    }
}
