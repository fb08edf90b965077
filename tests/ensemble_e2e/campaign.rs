//! Fault campaign tier (real parts): seeded, replayable schedules of faults injected while the
//! operator scales an ensemble between three and five members and rolls it, judged by
//! `common::judges` (membership sampler, kazoo writer with every acknowledged write read back,
//! a history judged linearizable by porcupine) round by round.
//!
//! The operators (two, with leader election) reach the API server through a TCP proxy that can
//! cut them off or drop their watches. Faults come from the node agent (process, volume and
//! network faults), the control plane (etcd and kube-apiserver crashes), the operator processes
//! (SIGKILL, at a named failpoint inside a step, or paused past the Lease) and clients that edit
//! the ensemble or its Pods and PVCs by hand.
//!
//! Knobs (environment): `QUORATE_CAMPAIGN_SEED` (default: fixed), `QUORATE_CAMPAIGN_FAULTS` (how
//! many faults; default: the bounded tier), `QUORATE_CAMPAIGN_REPORT` (where the JSON report goes;
//! default `target/campaign-<seed>.json`). The seed is printed so that any failure replays.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use libtest_mimic::Failed;
use quorate::crd::{EnsemblePhase, MasterEnsemble};
use quorate_testbed::controlplane::Part;
use quorate_testbed::nodeagent::Cut;
use quorate_testbed::proxy::ApiProxy;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::status_of;
use crate::common::judges::Judges;
use crate::common::*;

/// The bounded tier inside the test command: one fault of each kind in a seeded order.
const BOUNDED_SEED: u64 = 13;
/// The longest an ensemble may take to converge after a round's last fault is healed.
const CONVERGE_WITHIN: Duration = Duration::from_secs(240);
/// A round that took longer than this to converge keeps the operators' and members' logs of
/// the run so far beside the report, so that a slow recovery can be read afterwards even when
/// the campaign passes or is stopped by hand.
const SLOW_ROUND: Duration = Duration::from_secs(90);

/// Every kind of fault the campaign injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// A follower's process is SIGKILLed (the agent restarts it).
    FollowerKill,
    /// The leader's process is SIGKILLed.
    LeaderKill,
    /// A member is paused (SIGSTOP) for a while, then resumed.
    MemberPause,
    /// A follower is SIGKILLed again and again (a crash loop), then left alone.
    CrashLoop,
    /// A follower's volume is wiped and its process killed (a lost disk).
    VolumeLost,
    /// A follower is killed, and its volume wiped while it is down.
    VolumeLostWhileDown,
    /// A follower is cut off from peers and clients, both ways.
    CutBoth,
    /// Nothing reaches a follower (it can still send).
    CutIncoming,
    /// Nothing leaves a follower (it can still receive).
    CutOutgoing,
    /// The leader is cut off, both ways.
    LeaderCut,
    /// The quorum and election links drop a share of their packets.
    LossyQuorumLinks,
    /// The operator holding the Lease is SIGKILLed at a random moment.
    OperatorKill,
    /// The operator is SIGKILLed at a named failpoint inside a step.
    OperatorKillAtFailpoint,
    /// The operator holding the Lease is paused past its Lease, a standby takes over, and the
    /// paused one is resumed.
    OperatorPausedPastLease,
    /// kube-apiserver crashes (SIGKILL) and is started again.
    ApiServerRestart,
    /// etcd crashes (SIGKILL) and is started again.
    EtcdRestart,
    /// The operators cannot reach the API server for a while.
    ApiUnreachable,
    /// Every connection of the operators to the API server is cut (watches dropped).
    WatchesDropped,
    /// Another client changes `spec.replicas` mid-step (and the campaign sets it back).
    ConflictingEdit,
    /// A member's Pod is deleted by hand.
    PodDeleted,
    /// A member's PVC is deleted by hand.
    PvcDeleted,
    /// A member's Pod is deleted while a finalizer holds it Terminating, then released.
    PodStuckTerminating,
    /// The leader is SIGKILLed while a joiner waits to be added (around a reconfig).
    LeaderKillDuringReconfig,
}

impl Fault {
    /// Whether the fault destroys a member's data for good (its volume or its PVC). A round
    /// injects at most one: two at once can take a majority's data of a three-voter ensemble,
    /// a quorum loss that keeps no acknowledged-write promise and needs a person (recovery
    /// from the survivors), which no operator may decide alone.
    pub fn destroys_data(self) -> bool {
        matches!(
            self,
            Fault::VolumeLost | Fault::VolumeLostWhileDown | Fault::PvcDeleted
        )
    }

    pub const ALL: [Fault; 23] = [
        Fault::FollowerKill,
        Fault::LeaderKill,
        Fault::MemberPause,
        Fault::CrashLoop,
        Fault::VolumeLost,
        Fault::VolumeLostWhileDown,
        Fault::CutBoth,
        Fault::CutIncoming,
        Fault::CutOutgoing,
        Fault::LeaderCut,
        Fault::LossyQuorumLinks,
        Fault::OperatorKill,
        Fault::OperatorKillAtFailpoint,
        Fault::OperatorPausedPastLease,
        Fault::ApiServerRestart,
        Fault::EtcdRestart,
        Fault::ApiUnreachable,
        Fault::WatchesDropped,
        Fault::ConflictingEdit,
        Fault::PodDeleted,
        Fault::PvcDeleted,
        Fault::PodStuckTerminating,
        Fault::LeaderKillDuringReconfig,
    ];
}

/// What a round asks of the operator.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Operation {
    Scale { to: i32 },
    Roll { tick_time: i32 },
}

/// One round's outcome.
#[derive(Debug, Serialize)]
struct Round {
    /// When the round began (wall clock, to find it in the logs).
    started_at: String,
    operation: Operation,
    faults: Vec<Fault>,
    /// Failpoints armed in this round and whether the operator reached them.
    failpoints: Vec<(String, bool)>,
    acknowledged_writes: usize,
    history_operations: usize,
    configurations: usize,
    converge_seconds: f64,
    /// Where the logs of a slow round (see [`SLOW_ROUND`]) were kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    kept_logs: Option<String>,
}

/// The campaign report (JSON).
#[derive(Debug, Default, Serialize)]
struct Report {
    seed: u64,
    faults_requested: usize,
    faults_injected: usize,
    faults_by_kind: BTreeMap<String, usize>,
    fault_kinds: usize,
    rounds: usize,
    acknowledged_writes: usize,
    lost_writes: usize,
    history_operations: usize,
    linearizable: bool,
    invariant_violations: Vec<String>,
    max_converge_seconds: f64,
    seconds: f64,
    /// Whether the campaign ran to its end (a long run's report is written after every round,
    /// so one stopped part-way still tells what it did).
    finished: bool,
    failure: Option<String>,
    round_log: Vec<Round>,
}

impl Report {
    fn save(&self, path: &std::path::Path) -> Result<(), Failed> {
        let json = serde_json::to_string_pretty(self).map_err(|e| fail(e.to_string()))?;
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, &json).map_err(|e| fail(format!("write {}: {e}", path.display())))
    }
}

/// The campaign's control over operators and the API server path.
struct Rig<'a> {
    bed: &'a Bed,
    proxy: ApiProxy,
    kubeconfig: std::path::PathBuf,
    /// While set, the supervisor starts no operator (a fault wants exactly the ones it runs).
    hands_off: std::sync::atomic::AtomicBool,
    /// Members whose data a fault of this round destroyed: they must be replaced (I4).
    destroyed: std::sync::Mutex<Vec<u32>>,
}

impl Rig<'_> {
    fn destroyed_data_of(&self, id: u32) {
        if let Ok(mut d) = self.destroyed.lock() {
            d.push(id);
        }
    }

    /// What a Deployment does for the operator: an operator that exited (it exits when it
    /// loses its Lease) is replaced, so two keep running.
    fn supervise(&self) -> Result<(), Failed> {
        for gone in self.bed.reap_operators() {
            eprintln!("operator {gone} exited; starting another, as its Deployment would");
        }
        if self.hands_off.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        self.top_up()
    }

    fn start_operator(&self, extra: &[(&str, &str)]) -> Result<String, Failed> {
        let kc = self.kubeconfig.display().to_string();
        let mut env: Vec<(&str, &str)> = vec![("KUBECONFIG", kc.as_str())];
        env.extend_from_slice(extra);
        self.bed.start_operator_with_env(&env)
    }

    /// Keeps two operators running (a leader and a standby).
    fn top_up(&self) -> Result<(), Failed> {
        while self.bed.operator_identities().len() < 2 {
            self.start_operator(&[])?;
        }
        Ok(())
    }
}

/// What became of one fault.
enum Injected {
    /// It landed; with the failpoint armed, if any, and whether the operator reached it.
    Done(Option<(String, bool)>),
    /// Its victim had no running process at that moment (it was restarting): tried again later.
    Missed,
}

fn pick_member(rng: &mut StdRng, ids: &[u32]) -> Result<u32, Failed> {
    ids.choose(rng)
        .copied()
        .ok_or_else(|| fail("no member to fault"))
}

/// The members' ids as ZooKeeper reports them: (leader, voters that serve and follow it).
async fn roles(bed: &Bed, ns: &str) -> Result<(Option<u32>, Vec<u32>), Failed> {
    let client = bed.client().await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let seen = crate::common::judges::sample(&client, ns, "masters", &http)
        .await
        .ok_or_else(|| fail("list the member Pods"))?;
    let leader = seen.iter().find(|(_, m)| m.leader).map(|(id, _)| *id);
    let config = leader
        .and_then(|id| seen[&id].config.clone())
        .unwrap_or_default();
    let followers = seen
        .iter()
        .filter(|(id, m)| m.serving && !m.leader && config.contains(id))
        .map(|(id, _)| *id)
        .collect();
    Ok((leader, followers))
}

/// How long a lasting fault holds: 2 to 8 seconds.
fn hold(rng: &mut StdRng) -> Duration {
    Duration::from_millis(rng.random_range(2000..8000))
}

/// Waits for `d` while the fault holds. The campaign's faults last a chosen time by design;
/// every judgement afterwards waits on conditions.
async fn holding(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Injects one fault and heals it; returns the failpoint armed, if any, and whether it was
/// reached.
async fn inject(
    rig: &Rig<'_>,
    ns: &str,
    api: &Api<MasterEnsemble>,
    judges: &Judges,
    fault: Fault,
    op: Operation,
    rng: &mut StdRng,
) -> Result<Injected, Failed> {
    let bed = rig.bed;
    let client = bed.client().await?;
    let (leader, followers) = roles(bed, ns).await?;
    let pod = |id: u32| format!("masters-{id}");
    // A follower, else the leader, else nothing to fault this time.
    let victim = pick_member(rng, &followers).ok().or(leader);
    match fault {
        Fault::FollowerKill | Fault::LeaderKill => {
            let id = if fault == Fault::LeaderKill {
                leader
            } else {
                victim
            };
            if let Some(id) = id
                && !landed(bed, |a| a.kill(ns, &pod(id)))?
            {
                return Ok(Injected::Missed);
            }
        }
        Fault::MemberPause => {
            if let Some(id) = victim {
                if !landed(bed, |a| a.pause(ns, &pod(id)))? {
                    return Ok(Injected::Missed);
                }
                holding(hold(rng)).await;
                // A member that died while paused has nothing to resume.
                landed(bed, |a| a.resume(ns, &pod(id)))?;
            }
        }
        Fault::CrashLoop => {
            if let Some(id) = victim {
                for _ in 0..4 {
                    // Each kill lands on the restarted process (errors while it is down are
                    // the crash loop itself).
                    let _ = with_agent(bed, |a| a.kill(ns, &pod(id)));
                    holding(Duration::from_millis(rng.random_range(300..1500))).await;
                }
            }
        }
        Fault::VolumeLost => {
            if let Some(id) = victim {
                with_agent(bed, |a| a.delete_volume(ns, &format!("data-masters-{id}")))?;
                rig.destroyed_data_of(id);
                landed(bed, |a| a.kill(ns, &pod(id)))?;
            }
        }
        Fault::VolumeLostWhileDown => {
            if let Some(id) = victim {
                landed(bed, |a| a.kill(ns, &pod(id)))?;
                with_agent(bed, |a| a.delete_volume(ns, &format!("data-masters-{id}")))?;
                rig.destroyed_data_of(id);
            }
        }
        Fault::CutBoth | Fault::CutIncoming | Fault::CutOutgoing | Fault::LeaderCut => {
            let (id, how) = match fault {
                Fault::CutIncoming => (victim, Cut::Incoming),
                Fault::CutOutgoing => (victim, Cut::Outgoing),
                Fault::LeaderCut => (leader, Cut::Both),
                _ => (victim, Cut::Both),
            };
            if let Some(id) = id {
                with_agent(bed, |a| a.cut(ns, &pod(id), how))?;
                holding(hold(rng)).await;
                with_agent(bed, |a| a.heal(ns, &pod(id)))?;
            }
        }
        Fault::LossyQuorumLinks => {
            let percent = rng.random_range(10..40);
            with_agent(bed, |a| a.lossy_quorum_links(percent))?;
            holding(hold(rng)).await;
            with_agent(bed, |a| a.heal_quorum_links())?;
        }
        Fault::OperatorKill => {
            if let Some(holder) = bed.lease_holder().await? {
                bed.kill_operator_named(&holder);
            }
            rig.top_up()?;
        }
        Fault::OperatorKillAtFailpoint => {
            // The failpoint of a step this operation takes, armed in a fresh operator that is
            // the only one running, so it is the one that acts.
            let names: &[&str] = match op {
                Operation::Scale { to: 5 } => &[
                    "create-member.after-claim",
                    "create-member.after-volume",
                    "create-member.after-effect",
                    "add-voter.after-claim",
                    "add-voter.after-effect",
                ],
                Operation::Scale { .. } => &[
                    "remove-voter.after-claim",
                    "remove-voter.after-effect",
                    "delete-member.after-claim",
                    "delete-member.after-pod",
                    "delete-member.after-effect",
                ],
                Operation::Roll { .. } => &[
                    "restart-member.after-claim",
                    "restart-member.after-pod",
                    "restart-member.after-effect",
                ],
            };
            let name = names
                .choose(rng)
                .copied()
                .unwrap_or("add-voter.after-claim");
            rig.hands_off
                .store(true, std::sync::atomic::Ordering::SeqCst);
            bed.kill_operator();
            let armed = rig.start_operator(&[("QUORATE_FAILPOINTS", name)])?;
            let line = format!("failpoint {name} reached");
            let reached = wait_for("the failpoint", Duration::from_secs(45), async || {
                Ok(bed.operator_log(&armed).contains(&line))
            })
            .await
            .is_ok();
            bed.kill_operator_named(&armed);
            rig.hands_off
                .store(false, std::sync::atomic::Ordering::SeqCst);
            rig.top_up()?;
            return Ok(Injected::Done(Some((name.to_string(), reached))));
        }
        Fault::OperatorPausedPastLease => {
            if let Some(holder) = bed.lease_holder().await? {
                bed.signal_operator(&holder, libc::SIGSTOP);
                let taken = wait_for(
                    "a standby to take the Lease",
                    Duration::from_secs(60),
                    async || Ok(bed.lease_holder().await?.is_some_and(|h| h != holder)),
                )
                .await;
                bed.signal_operator(&holder, libc::SIGCONT);
                taken?;
            }
        }
        Fault::ApiServerRestart => {
            bed.plane
                .restart(Part::ApiServer)
                .await
                .map_err(|e| fail(format!("restart kube-apiserver: {e}")))?;
        }
        Fault::EtcdRestart => {
            bed.plane
                .restart(Part::Etcd)
                .await
                .map_err(|e| fail(format!("restart etcd: {e}")))?;
            bed.plane
                .wait_healthy(Part::ApiServer, Duration::from_secs(90))
                .await
                .map_err(|e| fail(format!("kube-apiserver after etcd: {e}")))?;
        }
        Fault::ApiUnreachable => {
            rig.proxy.block();
            holding(hold(rng)).await;
            rig.proxy.unblock();
        }
        Fault::WatchesDropped => rig.proxy.reset(),
        Fault::ConflictingEdit => {
            // The size this round asked for (a roll keeps the spec's): the voters in status
            // are one fewer while a member is being replaced, and an even size is refused.
            let target = match op {
                Operation::Scale { to } => to,
                Operation::Roll { .. } => {
                    api.get("masters")
                        .await
                        .map_err(|e| fail(format!("read the ensemble: {e}")))?
                        .spec
                        .replicas
                }
            };
            let other = if target == 5 { 3 } else { 5 };
            set_replicas(api, "masters", other).await?;
            holding(hold(rng)).await;
            set_replicas(api, "masters", target).await?;
        }
        Fault::PodDeleted => {
            if let Some(id) = victim {
                judges.excuse(id);
                let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
                let _ = pods.delete(&pod(id), &DeleteParams::default()).await;
            }
        }
        Fault::PvcDeleted => {
            if let Some(id) = victim {
                judges.excuse_volume(id);
                let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
                if pvcs
                    .delete(&format!("data-masters-{id}"), &DeleteParams::default())
                    .await
                    .is_ok()
                {
                    rig.destroyed_data_of(id);
                }
            }
        }
        Fault::PodStuckTerminating => {
            if let Some(id) = victim {
                let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
                let hold_on =
                    serde_json::json!({"metadata": {"finalizers": ["campaign.quorate.dev/hold"]}});
                if pods
                    .patch(&pod(id), &PatchParams::default(), &Patch::Merge(&hold_on))
                    .await
                    .is_ok()
                {
                    let _ = pods.delete(&pod(id), &DeleteParams::default()).await;
                    holding(hold(rng)).await;
                    let release = serde_json::json!({"metadata": {"finalizers": null}});
                    let _ = pods
                        .patch(&pod(id), &PatchParams::default(), &Patch::Merge(&release))
                        .await;
                }
            }
        }
        Fault::LeaderKillDuringReconfig => {
            // Wait (bounded) for a joiner that serves outside the configuration: the next step
            // is its reconfig. Kill the leader then, or at the end of the wait.
            let _ = wait_for("a synced joiner", Duration::from_secs(20), async || {
                judges.with_sampler(|s| s.joiner_serving)
            })
            .await;
            if let (Some(id), _) = roles(bed, ns).await?
                && !landed(bed, |a| a.kill(ns, &pod(id)))?
            {
                return Ok(Injected::Missed);
            }
        }
    }
    Ok(Injected::Done(None))
}

/// The faults of a campaign: every kind once in a seeded order, then seeded random kinds.
fn schedule(rng: &mut StdRng, faults: usize) -> Vec<Fault> {
    let mut all = Fault::ALL.to_vec();
    all.shuffle(rng);
    let mut out: Vec<Fault> = all.into_iter().take(faults).collect();
    while out.len() < faults {
        out.push(*Fault::ALL.choose(rng).expect("kinds"));
    }
    out
}

/// Whether a member's volume, read on the node, holds its data: `myid` and ZooKeeper's files.
fn volume_holds_data(bed: &Bed, ns: &str, id: u32) -> Result<bool, Failed> {
    let dir = with_agent(
        bed,
        |a| Ok(a.volume_path(ns, &format!("data-masters-{id}"))),
    )?;
    let files = std::fs::read_dir(dir.join("data/version-2"))
        .map(|d| d.count())
        .unwrap_or(0);
    Ok(dir.join("data/myid").is_file() && files > 0)
}

/// Waits until the ensemble has converged on `replicas` voters by ZooKeeper's own view and
/// the operator's status, after every fault has been healed: judged only from samples begun
/// after the faults (a sample taken before them still shows the members they took down), and
/// only while every voter's volume holds its data (a member serving from memory over a wiped
/// disk loses everything at its next restart, so the ensemble has not recovered yet) and
/// every voter's Pod and PVC exist and are not being deleted, read from the API server (the
/// operator's status may still predate the faults).
async fn converged(
    rig: &Rig<'_>,
    ns: &str,
    api: &Api<MasterEnsemble>,
    judges: &Judges,
    replicas: usize,
) -> Result<f64, Failed> {
    let bed = rig.bed;
    let t0 = Instant::now();
    let before = judges.with_sampler(|s| s.samples)?;
    let client = bed.client().await?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client, ns);
    wait_for(
        "convergence after the faults",
        CONVERGE_WITHIN,
        async || {
            rig.supervise()?;
            let s = status_of(api).await?;
            let voters = judges.with_sampler(|s| {
                // Two more samples: the first may have begun before the faults.
                (s.samples >= before + 2 && s.voters_served)
                    .then(|| s.configs.last().cloned())
                    .flatten()
                    .filter(|c| c.len() == replicas)
            })?;
            let Some(voters) = voters else {
                return Ok(false);
            };
            for id in &voters {
                if !volume_holds_data(bed, ns, *id)? {
                    return Ok(false);
                }
                let pvc = pvcs.get_opt(&format!("data-masters-{id}")).await;
                let pod = pods.get_opt(&format!("masters-{id}")).await;
                let present = |deleting: Option<bool>| deleting == Some(false);
                if !present(
                    pvc.ok()
                        .flatten()
                        .map(|c| c.metadata.deletion_timestamp.is_some()),
                ) || !present(
                    pod.ok()
                        .flatten()
                        .map(|p| p.metadata.deletion_timestamp.is_some()),
                ) {
                    return Ok(false);
                }
            }
            Ok(s.phase == Some(EnsemblePhase::Running)
                && s.voters.len() == replicas
                && s.ready_members as usize == replicas)
        },
    )
    .await
    .map_err(|e| {
        let seen = judges
            .with_sampler(|s| s.describe_last())
            .unwrap_or_default();
        fail(format!(
            "{e:?}\nthe judges' latest sample:\n{seen}operator log:\n{}",
            bed.operator_log_tail()
        ))
    })?;
    Ok(t0.elapsed().as_secs_f64())
}

/// Keeps every operator's whole log and the members' logs beside the report `path` (with
/// `tag` in their names, when one is given) and says where.
fn keep_logs(bed: &Bed, ns: &str, path: &std::path::Path, tag: &str) -> String {
    let name = |ext: &str| {
        if tag.is_empty() {
            path.with_extension(ext)
        } else {
            path.with_extension(format!("{tag}.{ext}"))
        }
    };
    let logs = name("operators.log");
    let operators = match std::fs::write(&logs, bed.operator_logs()) {
        Ok(()) => format!("operators' logs in {}", logs.display()),
        Err(e) => format!("operators' logs not kept: {e}"),
    };
    let members = keep_member_logs(bed, ns, &name("members"));
    let kept = format!("{operators}; {members}");
    eprintln!("{kept}");
    kept
}

/// Copies every container log of the campaign's namespace (all runs of each member, appended by
/// the node agent) into `dir`, so that a failed campaign can be read from ZooKeeper's side too.
fn keep_member_logs(bed: &Bed, ns: &str, dir: &std::path::Path) -> String {
    let Some(logs) = bed
        .agent
        .lock()
        .ok()
        .and_then(|a| a.as_ref().map(|a| a.state_dir().join("logs")))
    else {
        return "members' logs not kept: no node agent".to_string();
    };
    let prefix = format!("{ns}_");
    let copy = || -> std::io::Result<usize> {
        std::fs::create_dir_all(dir)?;
        let mut n = 0;
        for entry in std::fs::read_dir(&logs)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(&prefix) {
                std::fs::copy(entry.path(), dir.join(&name))?;
                n += 1;
            }
        }
        Ok(n)
    };
    match copy() {
        Ok(n) => format!("{n} members' logs in {}", dir.display()),
        Err(e) => format!("members' logs not kept: {e}"),
    }
}

/// Runs a campaign of `faults` faults with `seed` in namespace `ns`; writes the report.
pub async fn campaign(bed: &Bed, ns: &str, seed: u64, faults: usize) -> Result<(), Failed> {
    eprintln!(
        "fault campaign: seed {seed}, {faults} faults (replay: QUORATE_CAMPAIGN_SEED={seed} QUORATE_CAMPAIGN_FAULTS={faults})"
    );
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let plan = schedule(&mut rng, faults);
    let (_, api) = create_and_converge(bed, ns, ensemble("masters", 3)).await?;

    // Operators through the proxy.
    let proxy = ApiProxy::start(bed.plane.api_addr())
        .await
        .map_err(|e| fail(format!("proxy: {e}")))?;
    let yaml =
        std::fs::read_to_string(&bed.operator_kubeconfig).map_err(|e| fail(e.to_string()))?;
    let kubeconfig = bed
        .plane
        .dir()
        .join(format!("{ns}-operator-via-proxy.kubeconfig"));
    std::fs::write(&kubeconfig, bed.plane.kubeconfig_via(&yaml, proxy.addr()))
        .map_err(|e| fail(e.to_string()))?;
    let rig = Rig {
        bed,
        proxy,
        kubeconfig,
        hands_off: Default::default(),
        destroyed: Default::default(),
    };
    bed.kill_operator();
    rig.top_up()?;

    let mut report = Report {
        seed,
        faults_requested: faults,
        linearizable: true,
        ..Default::default()
    };
    let path = std::env::var("QUORATE_CAMPAIGN_REPORT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join(format!("campaign-{seed}.json"))
        });
    let mut size = 3;
    let mut tick = 500;
    let mut queue: std::collections::VecDeque<Fault> = plan.into_iter().collect();
    let mut missed = 0;
    // At most this many faults per round (1 to 3 by default; a long campaign may pack more).
    let per_round: usize = std::env::var("QUORATE_CAMPAIGN_FAULTS_PER_ROUND")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(3);
    let mut round = 0;
    let result: Result<(), Failed> = async {
        while !queue.is_empty() {
            round += 1;
            let round_started = jiff::Timestamp::now();
            let judges = Judges::start_tagged(bed, ns, "masters", &format!("-r{round}")).await?;
            judges.excuse_all();
            let op = if rng.random_bool(0.7) {
                size = if size == 3 { 5 } else { 3 };
                Operation::Scale { to: size }
            } else {
                tick = if tick == 500 { 600 } else { 500 };
                Operation::Roll { tick_time: tick }
            };
            match op {
                Operation::Scale { to } => set_replicas(&api, "masters", to).await?,
                Operation::Roll { tick_time } => {
                    let patch = serde_json::json!({"spec": {"config": {"tickTime": tick_time}}});
                    api.patch("masters", &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                }
            }
            let n = rng.random_range(1..=per_round).min(queue.len());
            let mut done = Vec::new();
            let mut failpoints = Vec::new();
            let mut deferred = Vec::new();
            for _ in 0..n {
                let Some(fault) = queue.pop_front() else {
                    break;
                };
                if fault.destroys_data() && done.iter().any(|f: &Fault| f.destroys_data()) {
                    // The next round takes it (see `Fault::destroys_data`).
                    deferred.push(fault);
                    continue;
                }
                holding(Duration::from_millis(rng.random_range(0..3000))).await;
                rig.supervise()?;
                eprintln!("round {round} ({op:?}): {fault:?}");
                match inject(&rig, ns, &api, &judges, fault, op, &mut rng).await? {
                    Injected::Done(fp) => {
                        failpoints.extend(fp);
                        done.push(fault);
                    }
                    Injected::Missed if missed < faults => {
                        missed += 1;
                        queue.push_back(fault);
                    }
                    Injected::Missed => {
                        return Err(fail(format!(
                            "{fault:?} found no running victim {missed} times"
                        )));
                    }
                }
            }
            for fault in deferred.into_iter().rev() {
                queue.push_front(fault);
            }
            rig.supervise()?;
            let converge = converged(&rig, ns, &api, &judges, size as usize).await?;
            let kept_logs = (converge > SLOW_ROUND.as_secs_f64())
                .then(|| keep_logs(bed, ns, &path, &format!("round-{round}")));
            // A member whose data a fault destroyed never votes again under its id (I4): the
            // ensemble converged only once it was replaced.
            let destroyed = std::mem::take(&mut *rig.destroyed.lock().map_err(|_| fail("lock"))?);
            let voters = judges.with_sampler(|s| s.configs.last().cloned().unwrap_or_default())?;
            if let Some(id) = destroyed.iter().find(|id| voters.contains(id)) {
                return Err(fail(format!(
                    "round {round}: member {id} lost its data and still votes in {voters:?} after convergence"
                )));
            }
            // A verdict against quorate keeps the operators' log as its evidence.
            let verdict = judges
                .finish(bed)
                .await
                .map_err(|e| fail(format!("{e:?}\noperator log:\n{}", bed.operator_log_tail())))?;
            for f in &done {
                *report.faults_by_kind.entry(format!("{f:?}")).or_default() += 1;
            }
            report.faults_injected += done.len();
            report.acknowledged_writes += verdict.acked;
            report.history_operations += verdict.history_ops;
            report.max_converge_seconds = report.max_converge_seconds.max(converge);
            report.round_log.push(Round {
                started_at: round_started.to_string(),
                operation: op,
                faults: done,
                failpoints,
                acknowledged_writes: verdict.acked,
                history_operations: verdict.history_ops,
                configurations: verdict.configs.len(),
                converge_seconds: converge,
                kept_logs,
            });
            report.rounds = round;
            report.fault_kinds = report.faults_by_kind.len();
            report.seconds = started.elapsed().as_secs_f64();
            report.save(&path)?;
        }
        Ok(())
    }
    .await;
    report.rounds = round;
    report.fault_kinds = report.faults_by_kind.len();
    report.seconds = started.elapsed().as_secs_f64();
    if let Err(e) = &result {
        let msg = format!("{e:?}");
        // The judges fail on a lost write, a history that is not linearizable or a violation.
        report.lost_writes = usize::from(msg.contains("acknowledged writes missing"));
        report.linearizable = !msg.contains("not linearizable");
        if msg.contains("invariant violations") {
            report.invariant_violations.push(msg.clone());
        }
        // The whole of every operator's log beside the report: the tail in the message rarely
        // reaches back to the step a judge faulted.
        let kept = keep_logs(bed, ns, &path, "");
        let short: String = msg.chars().take(2000).collect();
        report.failure = Some(format!("round {round} (seed {seed}): {short} ({kept})"));
    }
    report.finished = result.is_ok();
    report.save(&path)?;
    eprintln!(
        "fault campaign seed {seed}: {} faults of {} kinds in {} rounds, {} acknowledged writes, {} lost, {} history operations (linearizable: {}), {} violations, longest convergence {:.1} s, {:.0} s; report {}",
        report.faults_injected,
        report.fault_kinds,
        report.rounds,
        report.acknowledged_writes,
        report.lost_writes,
        report.history_operations,
        report.linearizable,
        report.invariant_violations.len(),
        report.max_converge_seconds,
        report.seconds,
        path.display()
    );
    // The other scenarios' operator runs without the proxy again.
    bed.kill_operator();
    bed.start_operator()?;
    result?;
    if report.faults_injected < faults {
        return Err(fail(format!(
            "only {} of {faults} faults were injected",
            report.faults_injected
        )));
    }
    Ok(())
}

/// The campaign as a scenario: the bounded tier unless the environment asks for more.
pub async fn a_seeded_fault_campaign_loses_no_write_and_breaks_no_invariant(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let seed = std::env::var("QUORATE_CAMPAIGN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(BOUNDED_SEED);
    let faults = std::env::var("QUORATE_CAMPAIGN_FAULTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(Fault::ALL.len());
    campaign(bed, ns, seed, faults).await
}
