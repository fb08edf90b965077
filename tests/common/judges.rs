//! The judges every end-to-end scenario runs beside the operator. None of them shares code with
//! quorate: they read ZooKeeper (each member's AdminServer over HTTP, kazoo clients) and the API
//! server themselves.
//!
//! - A membership sampler: every few hundred milliseconds it lists the member Pods (server id,
//!   uid, deletion, spec hash) and asks every member's AdminServer for `srvr` (serving, role)
//!   and `voting_view` (its configuration), and checks I1 to I6 from ZooKeeper's own view: one
//!   voter change at a time (the documented 1<->3 step excepted), a voter added only while every
//!   voter serves and only once it has been seen serving (synced) outside the configuration, a
//!   leaving member removed from the configuration before its Pod is deleted, removed ids never
//!   back, never two configurations that could each form a quorum, the leader restarted only
//!   after every other voter runs the new spec.
//! - A kazoo writer (every acknowledged write read back afterwards, a minimum number of them).
//! - A recorded history of reads, writes and versioned compare-and-set by three kazoo clients,
//!   judged linearizable by porcupine.
//! - Data written before the scenario (`/before`), read back at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Client;
use kube::api::{Api, ListParams};
use libtest_mimic::Failed;
use quorate_testbed::kazoo::{HistoryRecorder, HistorySpec, Writer};

use super::sampler::{MemberView, Restart, Sampler, reconfigs_in_dump};
use super::{Bed, fail, member_hosts, wait_for};

/// The fewest acknowledged writes, each read back afterwards, for a writer run to count.
pub const MIN_ACKED_WRITES: usize = 100;
/// The fewest acknowledged operations in a history for its verdict to count.
pub const MIN_HISTORY_OPS: usize = 100;
/// The sampler's verdict counts only with at least this many samples of the ensemble.
pub const MIN_SAMPLES: usize = 10;
/// Znodes written before the scenario and read back after it.
const BEFORE: usize = 50;

/// One AdminServer command's JSON answer from the member at `ip`, or `None`.
pub async fn admin_json(http: &reqwest::Client, ip: &str, cmd: &str) -> Option<serde_json::Value> {
    admin_answer(http, ip, cmd).await.ok()
}

/// The server ids of a member's own configuration, from its AdminServer's `voting_view`.
pub async fn voting_view(http: &reqwest::Client, ip: &str) -> Option<BTreeSet<u32>> {
    admin_json(http, ip, "voting_view").await.and_then(|v| {
        v.get("current_config")?
            .as_object()
            .map(|c| c.keys().filter_map(|k| k.parse().ok()).collect())
    })
}

/// Why an AdminServer command gave no JSON.
#[derive(Debug, PartialEq, Eq)]
pub enum NoAnswer {
    /// Nothing listens (the process is down): the member certainly does not serve.
    Refused,
    /// No answer in time or a broken one (a busy or paused JVM): its state is unknown.
    Silent,
}

/// One AdminServer command's JSON answer, telling a refused connection from silence.
pub async fn admin_answer(
    http: &reqwest::Client,
    ip: &str,
    cmd: &str,
) -> Result<serde_json::Value, NoAnswer> {
    let url = format!("http://{ip}:8080/commands/{cmd}");
    let resp = http.get(url).send().await.map_err(|e| {
        if e.is_connect() && !e.is_timeout() {
            NoAnswer::Refused
        } else {
            NoAnswer::Silent
        }
    })?;
    resp.json::<serde_json::Value>()
        .await
        .map_err(|_| NoAnswer::Silent)
}

/// Reads every member Pod of ensemble `name` and its AdminServer once; `None` when the Pods
/// cannot be listed.
pub async fn sample(
    client: &Client,
    ns: &str,
    name: &str,
    http: &reqwest::Client,
) -> Option<BTreeMap<u32, MemberView>> {
    sample_remembering(client, ns, name, http, &mut None).await
}

/// Like [`sample`]; while the Pods cannot be listed (the API server restarting), the members
/// of the last list in `last` are still read from their AdminServers, so the judge does not go
/// blind to ZooKeeper while the API server is away. Members are read concurrently, so one
/// silent member does not stretch the sample.
pub async fn sample_remembering(
    client: &Client,
    ns: &str,
    name: &str,
    http: &reqwest::Client,
    last: &mut Option<Vec<Pod>>,
) -> Option<BTreeMap<u32, MemberView>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let items = match pods
        .list(&ListParams::default().labels(&format!("quorate.dev/ensemble={name}")))
        .await
    {
        Ok(list) => {
            *last = Some(list.items.clone());
            list.items
        }
        Err(_) => last.clone()?,
    };
    let views = items.iter().filter_map(|p| {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        let id = labels
            .get("quorate.dev/server-id")
            .and_then(|v| v.parse::<u32>().ok())?;
        Some(async move { (id, member_view(http, p).await) })
    });
    Some(futures::future::join_all(views).await.into_iter().collect())
}

/// The server ids whose PVC exists and is not being deleted (`None` when the list fails).
async fn member_volumes(client: &Client, ns: &str, name: &str) -> Option<BTreeSet<u32>> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let list = pvcs
        .list(&ListParams::default().labels(&format!("quorate.dev/ensemble={name}")))
        .await
        .ok()?;
    Some(
        list.items
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter_map(|c| {
                c.metadata
                    .labels
                    .as_ref()?
                    .get("quorate.dev/server-id")?
                    .parse()
                    .ok()
            })
            .collect(),
    )
}

/// One member Pod as the sampler sees it: its Pod, and its AdminServer's `srvr` and
/// `voting_view`.
async fn member_view(http: &reqwest::Client, p: &Pod) -> MemberView {
    let mut view = MemberView {
        uid: p.metadata.uid.clone().unwrap_or_default(),
        deleting: p.metadata.deletion_timestamp.is_some(),
        spec_hash: p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("quorate.dev/spec-hash").cloned()),
        ..Default::default()
    };
    let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
        return view;
    };
    match admin_answer(http, &ip, "srvr").await {
        Ok(srvr) if srvr.get("error").is_none_or(|e| e.is_null()) => {
            view.serving = true;
            view.leader = srvr
                .pointer("/server_stats/server_state")
                .and_then(|s| s.as_str())
                == Some("leader");
            view.zxid = srvr
                .pointer("/server_stats/last_processed_zxid")
                .and_then(|z| z.as_u64());
            view.config = voting_view(http, &ip).await;
        }
        Ok(_) | Err(NoAnswer::Refused) => {}
        Err(NoAnswer::Silent) => view.unanswered = true,
    }
    view
}

/// The joiner watcher: every ~100 ms, asks each member Pod outside the sampler's latest
/// configuration whether it serves and whether its own configuration leaves it out (a synced
/// joiner), and tells the sampler. A sample waits for every member (up to 2 s for a silent
/// one), so a joiner can sync and be added between two samples; this keeps "synced before it
/// votes" (I3) judged from ZooKeeper's view at a pace no step outruns.
async fn watch_joiners(
    client: Client,
    ns: String,
    name: String,
    sampler: Arc<Mutex<Sampler>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    // As patient as the sampler: a busy machine slows a JVM's answer, not its sync.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(1500))
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let selector = ListParams::default().labels(&format!("quorate.dev/ensemble={name}"));
    let mut pods: Vec<(u32, String, String)> = Vec::new();
    for tick in 0u64.. {
        if *stopped.borrow() {
            break;
        }
        if tick % 3 == 0
            && let Ok(list) = api.list(&selector).await
        {
            pods = list
                .items
                .iter()
                .filter_map(|p| {
                    let id = p.metadata.labels.as_ref()?.get("quorate.dev/server-id")?;
                    Some((
                        id.parse().ok()?,
                        p.metadata.uid.clone()?,
                        p.status.as_ref()?.pod_ip.clone()?,
                    ))
                })
                .collect();
        }
        let config = sampler
            .lock()
            .ok()
            .and_then(|s| s.current_config().cloned());
        if let Some(config) = config {
            let http = &http;
            let seen = futures::future::join_all(
                pods.iter().filter(|(id, _, _)| !config.contains(id)).map(
                    |(id, uid, ip)| async move {
                        let serving = match admin_answer(http, ip, "srvr").await {
                            Ok(srvr) if srvr.get("error").is_none_or(|e| e.is_null()) => {
                                // Serving: a joiner only while its own configuration leaves
                                // it out (once it votes, this says nothing of before).
                                match voting_view(http, ip).await {
                                    Some(c) if !c.contains(id) => Some(Some(true)),
                                    _ => None,
                                }
                            }
                            Ok(_) | Err(NoAnswer::Refused) => Some(Some(false)),
                            Err(NoAnswer::Silent) => Some(None),
                        };
                        serving.map(|s| (*id, uid.clone(), s))
                    },
                ),
            )
            .await;
            // "Not serving" says something of a joiner only while it is still outside the
            // committed configuration: once its add commits, an election (a killed leader, a
            // cut) stops it serving as a voter, which says nothing of before. So a poll that saw
            // it not serving counts only if the leader, asked after it, still leaves it out;
            // with no leader to ask (an election), it is not counted either way.
            // The leader's epoch goes with every observation, so the sampler can tell a joiner
            // that stopped serving in an election from one that stopped under the same leader.
            let leader = if seen.iter().flatten().any(|(_, _, s)| s.is_some()) {
                leader_config(http, &pods, &config).await
            } else {
                None
            };
            let epoch = leader.as_ref().map(|(e, _)| *e);
            if let Ok(mut s) = sampler.lock() {
                for (id, uid, serving) in seen.into_iter().flatten() {
                    match serving {
                        Some(true) => s.joiner_seen(id, &uid, true, epoch),
                        Some(false) if leader.as_ref().is_some_and(|(_, c)| !c.contains(&id)) => {
                            s.joiner_seen(id, &uid, false, epoch)
                        }
                        Some(false) => {}
                        None => s.joiner_silent(id, &uid),
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stopped.changed() => break,
        }
    }
}

/// The epoch (the high 32 bits of its last processed zxid) and the configuration of the member
/// that serves as leader now, asked among the members of `config` (the sampler's latest
/// voters), or `None` when none of them answers as leader.
async fn leader_config(
    http: &reqwest::Client,
    pods: &[(u32, String, String)],
    config: &BTreeSet<u32>,
) -> Option<(u32, BTreeSet<u32>)> {
    for (_, _, ip) in pods.iter().filter(|(id, _, _)| config.contains(id)) {
        let Ok(srvr) = admin_answer(http, ip, "srvr").await else {
            continue;
        };
        let stats = |key: &str| srvr.pointer(&format!("/server_stats/{key}")).cloned();
        if stats("server_state").and_then(|s| s.as_str().map(str::to_string))
            != Some("leader".into())
        {
            continue;
        }
        let epoch = stats("last_processed_zxid")
            .and_then(|z| z.as_u64())
            .map(|z| (z >> 32) as u32)?;
        return Some((epoch, voting_view(http, ip).await?));
    }
    None
}

/// What the judges concluded; `Judges::finish` has already failed on any violation.
#[derive(Debug)]
pub struct Verdict {
    pub acked: usize,
    pub history_ops: usize,
    pub samples: usize,
    pub max_voters: usize,
    pub max_non_voters: usize,
    pub max_in_transition: usize,
    pub configs: Vec<BTreeSet<u32>>,
    pub restarts: Vec<Restart>,
    pub removed: BTreeSet<u32>,
    pub added: BTreeSet<u32>,
    /// The sample at which each member's Pod was first seen deleted or gone.
    pub pod_gone_at: BTreeMap<u32, usize>,
    /// The sample at which each member left the configuration.
    pub left_config_at: BTreeMap<u32, usize>,
}

/// The judges of one scenario, running.
pub struct Judges {
    client: Client,
    ns: String,
    name: String,
    sampler: Arc<Mutex<Sampler>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    writer: Writer,
    writes: PathBuf,
    history: HistoryRecorder,
    history_file: PathBuf,
    tag: String,
}

impl Judges {
    /// Writes `/before`, then starts the sampler, the writer and the history recorder against
    /// the ensemble's current members.
    pub async fn start(bed: &Bed, ns: &str, name: &str) -> Result<Judges, Failed> {
        Judges::start_tagged(bed, ns, name, "").await
    }

    /// [`Judges::start`] with its znodes under paths ending in `tag` (`/before<tag>`, `/w<tag>`,
    /// `/h<tag>`), so that several runs against one ensemble do not meet.
    pub async fn start_tagged(
        bed: &Bed,
        ns: &str,
        name: &str,
        tag: &str,
    ) -> Result<Judges, Failed> {
        let client = bed.client().await?;
        let hosts = member_hosts(&client, ns, name).await?;
        let before = bed
            .judge_at(&hosts)
            .await?
            .write(&hosts, None, &format!("/before{tag}"), BEFORE)
            .await
            .map_err(|e| fail(format!("kazoo write: {e}")))?;
        if before.written != BEFORE {
            return Err(fail(format!(
                "the /before write was not acknowledged: {before:?}"
            )));
        }
        let sampler = Arc::new(Mutex::new(Sampler::default()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let watcher = tokio::spawn(watch_joiners(
            client.clone(),
            ns.to_string(),
            name.to_string(),
            sampler.clone(),
            stop.subscribe(),
        ));
        let task = {
            let (client, ns, name, sampler) = (
                client.clone(),
                ns.to_string(),
                name.to_string(),
                sampler.clone(),
            );
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .connect_timeout(Duration::from_millis(1500))
                    .timeout(Duration::from_secs(2))
                    .build()
                    .expect("http client");
                let mut last = None;
                let mut stopping = false;
                loop {
                    let taken = jiff::Timestamp::now();
                    // Volumes first, then the members' views: a volume gone while the
                    // configuration read after it still lists its member was gone too early.
                    let volumes = member_volumes(&client, &ns, &name).await;
                    if let Some(views) =
                        sample_remembering(&client, &ns, &name, &http, &mut last).await
                        && let Ok(mut s) = sampler.lock()
                    {
                        s.at(format!("taken {taken}"));
                        s.observe(views);
                        if let Some(volumes) = volumes {
                            s.observe_volumes(volumes);
                        }
                    }
                    // The sample taken after the stop sees what the scenario waited for (the
                    // operator's status may report a step a moment after the last sample).
                    if stopping {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                        _ = stopped.changed() => stopping = true,
                    }
                }
                let _ = watcher.await;
            })
        };
        let writes = bed.plane.dir().join(format!("{ns}-{name}{tag}-writes.log"));
        let writer = bed
            .judge_at(&hosts)
            .await?
            .writer(
                &hosts,
                None,
                "/w",
                Duration::from_secs(900),
                Duration::from_millis(50),
                &writes,
            )
            .map_err(|e| fail(format!("kazoo writer: {e}")))?;
        let history_file = bed
            .plane
            .dir()
            .join(format!("{ns}-{name}{tag}-history.jsonl"));
        let mut spec = HistorySpec::new(format!("/h{tag}"), 4, 3, Duration::from_secs(900), 6000);
        spec.interval = Duration::from_millis(20);
        let history = bed
            .judge_at(&hosts)
            .await?
            .history(&hosts, None, &spec, &history_file)
            .map_err(|e| fail(format!("kazoo history: {e}")))?;
        Ok(Judges {
            client,
            ns: ns.to_string(),
            name: name.to_string(),
            sampler,
            stop,
            task,
            writer,
            writes,
            history,
            history_file,
            tag: tag.to_string(),
        })
    }

    /// Member `id` was faulted by the test: its outage is not counted as an operator transition
    /// and its Pod's deletion by the test is not the operator's.
    /// Waits until the writer and the history have each completed an operation, so that a
    /// fault injected next lands while both record.
    pub async fn wait_recording(&self) -> Result<(), Failed> {
        let (writes, history) = (self.writes.clone(), self.history_file.clone());
        let lines = |p: &PathBuf| {
            std::fs::read_to_string(p)
                .map(|t| t.lines().count())
                .unwrap_or(0)
        };
        // The history's first lines are the keys' initial states, one per key.
        wait_for(
            "the judges to record",
            Duration::from_secs(60),
            async || Ok(lines(&writes) >= 1 && lines(&history) >= 5),
        )
        .await
    }

    /// The test faults member `id` from now on: its own outages are not the operator's
    /// transitions. A restart of it by the operator seen before the fault (its Pod deleted
    /// while it served) is no longer held against its later removal: the fault (a disk lost
    /// while it had no Pod, say) is why it leaves.
    pub fn excuse(&self, id: u32) {
        if let Ok(mut s) = self.sampler.lock() {
            s.excused.insert(id);
            s.deleted_while_voting.remove(&id);
        }
    }

    /// The test deletes member `id`'s volume itself: its going is not held against the operator.
    pub fn excuse_volume(&self, id: u32) {
        if let Ok(mut s) = self.sampler.lock() {
            s.volumes_excused.insert(id);
        }
    }

    /// Every member may be faulted by the test from now on (a campaign).
    pub fn excuse_all(&self) {
        if let Ok(mut s) = self.sampler.lock() {
            s.excuse_all = true;
        }
    }

    /// Reads the sampler's state so far.
    pub fn with_sampler<T>(&self, f: impl FnOnce(&Sampler) -> T) -> Result<T, Failed> {
        let s = self.sampler.lock().map_err(|_| fail("sampler lock"))?;
        Ok(f(&s))
    }

    /// Stops every judge and fails unless: enough acknowledged writes, each read back; the
    /// history linearizable with enough operations; `/before` intact; no invariant violation;
    /// enough samples.
    pub async fn finish(self, bed: &Bed) -> Result<Verdict, Failed> {
        // The run counts only with enough acknowledged writes: on a fast machine the scenario
        // may end before the writer has made them, so it keeps writing until then.
        let writes = self.writes.clone();
        wait_for(
            "the writer's acknowledged writes",
            Duration::from_secs(120),
            async || {
                Ok(std::fs::read_to_string(&writes)
                    .map(|t| t.lines().count())
                    .unwrap_or(0)
                    >= MIN_ACKED_WRITES)
            },
        )
        .await?;
        let history_file = self.history_file.clone();
        // Its summary below says what went wrong when it falls short.
        let _ = wait_for(
            "the history's operations",
            Duration::from_secs(120),
            async || {
                Ok(std::fs::read_to_string(&history_file)
                    .map(|t| t.lines().count())
                    .unwrap_or(0)
                    >= MIN_HISTORY_OPS + 4)
            },
        )
        .await;
        // Likewise the sampler keeps sampling until it has enough samples: a sample waits for
        // every member, so a cut-off member slows it down and a short step may end first.
        let sampler = self.sampler.clone();
        wait_for(
            "the sampler's samples",
            Duration::from_secs(120),
            async || Ok(sampler.lock().map(|s| s.samples).unwrap_or(0) >= MIN_SAMPLES),
        )
        .await?;
        let _ = self.stop.send(true);
        let _ = self.task.await;
        drop(self.writer);
        let recorded = self
            .history
            .stop()
            .await
            .map_err(|e| fail(format!("kazoo history: {e}")))?;
        if recorded.by_outcome.ok < MIN_HISTORY_OPS {
            return Err(fail(format!(
                "the history has only {} acknowledged operations: {recorded:?}",
                recorded.by_outcome.ok
            )));
        }
        let verdict = quorate_testbed::lincheck::check(&self.history_file)
            .map_err(|e| fail(format!("linearizability checker: {e}")))?;
        if !verdict.linearizable {
            return Err(fail(format!(
                "the client history is not linearizable ({} operations): {:?}",
                verdict.operations, verdict.failure
            )));
        }
        let hosts = member_hosts(&self.client, &self.ns, &self.name).await?;
        let before = bed
            .judge_at(&hosts)
            .await?
            .verify(&hosts, None, &format!("/before{}", self.tag), BEFORE)
            .await
            .map_err(|e| fail(format!("kazoo verify: {e}")))?;
        if !before.ok || before.checked != BEFORE {
            return Err(fail(format!(
                "data written before the scenario was lost: {before:?}"
            )));
        }
        let acked = bed
            .judge_at(&hosts)
            .await?
            .check_acked(&hosts, None, &self.writes)
            .await
            .map_err(|e| fail(format!("check acked: {e}")))?;
        if acked.acked < MIN_ACKED_WRITES {
            return Err(fail(format!(
                "only {} acknowledged writes (at least {MIN_ACKED_WRITES} needed for the run to count)",
                acked.acked
            )));
        }
        if !acked.ok {
            return Err(fail(format!(
                "{} acknowledged writes missing, {} mismatched: {:?} {:?}",
                acked.missing_count, acked.mismatched_count, acked.missing, acked.mismatched
            )));
        }
        let chain = reconfigs_on_disk(bed, &self.ns, &self.name).await?;
        let mut s = self.sampler.lock().map_err(|_| fail("sampler lock"))?;
        let from_logs = s.judge_jumps(&chain);
        s.violations.extend(from_logs);
        eprintln!(
            "{}/{}: {} samples, configurations {:?} ({} reconfigs in the transaction logs), {} acknowledged writes read back, {} operations in a linearizable history, at most {} non-voter(s) and {} member(s) in transition at once",
            self.ns,
            self.name,
            s.samples,
            s.configs,
            chain.len(),
            acked.acked,
            verdict.operations,
            s.max_non_voters,
            s.max_in_transition
        );
        if !s.violations.is_empty() {
            return Err(fail(format!(
                "invariant violations:\n{}",
                s.violations.join("\n")
            )));
        }
        if s.samples < MIN_SAMPLES {
            return Err(fail(format!("the sampler took only {} samples", s.samples)));
        }
        if s.max_in_transition > 1 {
            return Err(fail(format!(
                "I1: {} members were in transition at once",
                s.max_in_transition
            )));
        }
        Ok(Verdict {
            acked: acked.acked,
            history_ops: verdict.operations,
            samples: s.samples,
            max_voters: s.max_voters,
            max_non_voters: s.max_non_voters,
            max_in_transition: s.max_in_transition,
            configs: s.configs.clone(),
            restarts: s.restarts.clone(),
            removed: s.removed.clone(),
            added: s.added.clone(),
            pod_gone_at: s.pod_gone_at.clone(),
            left_config_at: s.left_config_at.clone(),
        })
    }
}

/// What ZooKeeper's own `TxnLogToolkit` read from one transaction log, by (path, length,
/// modification time): a finished log never changes, so each is read once per test process.
type DumpCache = BTreeMap<(PathBuf, u64, std::time::SystemTime), BTreeMap<u64, BTreeSet<u32>>>;
static DUMPS: Mutex<DumpCache> = Mutex::new(BTreeMap::new());

/// Every reconfig committed to a transaction log on a volume of ensemble `name` on the node
/// (`<state>/volumes/<ns>/data-<name>-<id>/**/version-2/log.*`), or on one removed since when the
/// agent keeps removed volumes (`AgentOptions::keep_removed_volumes`), by zxid, read with
/// ZooKeeper's own `TxnLogToolkit` (nothing of quorate's). A reconfig is acknowledged by a
/// quorum of the old and the new configuration, so some volume, here or removed, holds it; an
/// agent that deletes removed volumes loses those of members replaced meanwhile.
pub async fn reconfigs_on_disk(
    bed: &Bed,
    ns: &str,
    name: &str,
) -> Result<BTreeMap<u64, BTreeSet<u32>>, Failed> {
    let Some(roots) = bed.agent.lock().ok().and_then(|a| {
        a.as_ref().map(|a| {
            [
                a.state_dir().join("volumes").join(ns),
                a.removed_volumes(ns),
            ]
        })
    }) else {
        return Ok(BTreeMap::new());
    };
    let prefix = format!("data-{name}-");
    let mut logs = Vec::new();
    let mut dirs: Vec<PathBuf> = roots
        .iter()
        .flat_map(|root| std::fs::read_dir(root).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.parent().is_some_and(|p| p.ends_with("version-2"))
                && entry.file_name().to_string_lossy().starts_with("log.")
            {
                logs.push(path);
            }
        }
    }
    let dist = tokio::task::spawn_blocking(|| {
        quorate_testbed::zookeeper::ensure_distribution(Default::default())
    })
    .await
    .map_err(|e| fail(e.to_string()))?
    .map_err(|e| fail(format!("ZooKeeper distribution: {e}")))?;
    let scratch = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let mut chain = BTreeMap::new();
    for (i, log) in logs.iter().enumerate() {
        let Ok(meta) = std::fs::metadata(log) else {
            continue; // deleted meanwhile
        };
        let key = (
            log.clone(),
            meta.len(),
            meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        );
        let cached = DUMPS.lock().ok().and_then(|d| d.get(&key).cloned());
        let found = match cached {
            Some(found) => found,
            None => {
                // A copy: the member may still be appending to it.
                let copy = scratch.path().join(format!("log-{i}"));
                if std::fs::copy(log, &copy).is_err() {
                    continue;
                }
                let mut cmd = tokio::process::Command::from(
                    dist.java_command("org.apache.zookeeper.server.persistence.TxnLogToolkit", &[]),
                );
                // A torn last record ends the dump with an error: what came before counts.
                let out = cmd
                    .arg(&copy)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .await
                    .map_err(|e| fail(format!("TxnLogToolkit: {e}")))?;
                let found = reconfigs_in_dump(&String::from_utf8_lossy(&out.stdout));
                if let Ok(mut d) = DUMPS.lock() {
                    d.insert(key, found.clone());
                }
                found
            }
        };
        chain.extend(found);
    }
    Ok(chain)
}

/// One request the API server wrote into its audit log (the testbed's policy keeps writes and
/// Secret reads; see `quorate_testbed::controlplane::AUDIT_POLICY`).
#[derive(Clone, Debug)]
pub struct Audited {
    /// Who made it, as the API server authenticated them.
    pub user: String,
    /// `create`, `update`, `patch`, `delete`, `get`, ...
    pub verb: String,
    /// The resource, with its subresource after a slash (`masterensembles/status`).
    pub resource: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// The audit log's length: the mark from which [`audited_since`] reads.
pub fn audit_mark(bed: &Bed) -> u64 {
    std::fs::metadata(bed.plane.audit_log())
        .map(|m| m.len())
        .unwrap_or(0)
}

/// The requests audited after `mark` whose user is `user`.
pub fn audited_since(bed: &Bed, mark: u64, user: &str) -> Result<Vec<Audited>, Failed> {
    use std::io::{Read, Seek};
    let path = bed.plane.audit_log();
    let mut file =
        std::fs::File::open(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    file.seek(std::io::SeekFrom::Start(mark))
        .map_err(|e| fail(e.to_string()))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| fail(e.to_string()))?;
    let field = |v: &serde_json::Value, p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| field(v, "/user/username") == user)
        .map(|v| {
            let sub = field(&v, "/objectRef/subresource");
            let mut resource = field(&v, "/objectRef/resource");
            if !sub.is_empty() {
                resource = format!("{resource}/{sub}");
            }
            Audited {
                user: field(&v, "/user/username"),
                verb: field(&v, "/verb"),
                resource,
                namespace: field(&v, "/objectRef/namespace"),
                name: field(&v, "/objectRef/name"),
            }
        })
        .collect())
}

/// The user the operators run as: the chart's ServiceAccount.
pub fn operator_user() -> String {
    format!(
        "system:serviceaccount:{}:{}",
        super::RELEASE_NS,
        super::RELEASE
    )
}
