//! End-to-end tier: the operator (`quorate run`, as its own process with a token of the Helm
//! chart's ServiceAccount), the node agent and real ZooKeeper on a real control plane. Every scenario is watched by an independent checker that
//! samples each member's AdminServer and the API server, and by a kazoo writer whose every
//! acknowledged write must be readable afterwards.

mod common;
#[path = "ensemble_e2e/operator.rs"]
mod operator;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use libtest_mimic::Failed;
use quorate::constants::LABEL_ENSEMBLE;
use quorate::crd::MasterEnsemble;
use quorate_testbed::kazoo::HistorySpec;
use quorate_testbed::nodeagent::AgentOptions;

/// What the independent checker saw; violations fail the scenario.
#[derive(Default)]
struct Checker {
    violations: Vec<String>,
    samples: usize,
    removed: BTreeSet<u32>,
    last_config: Option<BTreeSet<u32>>,
    max_non_voters: usize,
    max_voters: usize,
    /// Most member Pods running but not serving at once (members in transition, I1).
    max_in_transition: usize,
    /// Whether every voter served at the previous sample.
    voters_served: bool,
}

async fn admin_json(http: &reqwest::Client, ip: &str, cmd: &str) -> Option<serde_json::Value> {
    let url = format!("http://{ip}:8080/commands/{cmd}");
    let resp = http.get(url).send().await.ok()?;
    resp.json::<serde_json::Value>().await.ok()
}

/// One sample: every member Pod's AdminServer, checked against I3, I4 and I5.
async fn sample(
    client: &Client,
    ns: &str,
    name: &str,
    http: &reqwest::Client,
    state: &Mutex<Checker>,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let Ok(list) = pods
        .list(&ListParams::default().labels(&format!("{LABEL_ENSEMBLE}={name}")))
        .await
    else {
        return;
    };
    let mut running: BTreeMap<u32, String> = BTreeMap::new();
    for p in &list.items {
        let id = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("quorate.dev/server-id"))
            .and_then(|v| v.parse().ok());
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
        if let (Some(id), Some(ip)) = (id, ip) {
            running.insert(id, ip);
        }
    }
    let mut config: Option<BTreeSet<u32>> = None;
    let mut serving: BTreeSet<u32> = BTreeSet::new();
    for (id, ip) in &running {
        let Some(srvr) = admin_json(http, ip, "srvr").await else {
            continue;
        };
        if srvr.get("error").is_some_and(|e| !e.is_null()) {
            continue;
        }
        serving.insert(*id);
        if config.is_none()
            && let Some(view) = admin_json(http, ip, "voting_view").await
            && let Some(cur) = view.get("current_config").and_then(|c| c.as_object())
        {
            config = Some(cur.keys().filter_map(|k| k.parse().ok()).collect());
        }
    }
    let Ok(mut st) = state.lock() else { return };
    st.samples += 1;
    st.max_in_transition = st.max_in_transition.max(running.len() - serving.len());
    let Some(config) = config else { return };
    let non_voters: Vec<u32> = serving
        .iter()
        .filter(|id| !config.contains(id))
        .copied()
        .collect();
    st.max_non_voters = st.max_non_voters.max(non_voters.len());
    if non_voters.len() > 1 {
        st.violations.push(format!(
            "I5: {} members outside the configuration serve: {non_voters:?}",
            non_voters.len()
        ));
    }
    if let Some(prev) = st.last_config.clone() {
        let added: Vec<u32> = config.difference(&prev).copied().collect();
        let left: Vec<u32> = prev.difference(&config).copied().collect();
        if added.len() + left.len() > 1 {
            st.violations.push(format!(
                "I3: the configuration changed by more than one voter: {prev:?} -> {config:?}"
            ));
        }
        if !added.is_empty() && !st.voters_served {
            st.violations.push(format!(
                "I2: a voter was added while a voter of {prev:?} was not serving"
            ));
        }
        for id in &added {
            if st.removed.contains(id) {
                st.violations
                    .push(format!("I4: removed server {id} came back"));
            }
        }
        st.removed.extend(left);
    }
    st.max_voters = st.max_voters.max(config.len());
    st.voters_served = config.iter().all(|id| serving.contains(id));
    st.last_config = Some(config);
}

/// Runs the checker until `stop` is set.
fn spawn_checker(
    client: Client,
    ns: String,
    name: String,
) -> (Arc<Mutex<Checker>>, tokio::sync::watch::Sender<bool>) {
    let state = Arc::new(Mutex::new(Checker::default()));
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let st = state.clone();
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(800))
            .build()
            .expect("http client");
        loop {
            sample(&client, &ns, &name, &http, &st).await;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = rx.changed() => break,
            }
        }
    });
    (state, tx)
}

/// The fewest acknowledged writes, each read back afterwards, for a writer run to count.
const MIN_ACKED_WRITES: usize = 100;

async fn checked_scenario(bed: &Bed, ns: &str, steps: &[i32]) -> TestResult {
    let client = bed.client().await?;
    namespace(&client, ns).await?;
    let api: Api<MasterEnsemble> = Api::namespaced(client.clone(), ns);
    let name = "masters";
    api.create(&PostParams::default(), &ensemble(name, steps[0]))
        .await
        .map_err(|e| fail(format!("create: {e}")))?;
    wait_converged(bed, &api, name, steps[0], Duration::from_secs(180)).await?;
    let hosts = member_hosts(&client, ns, name).await?;
    // Data written before any change must survive every change.
    let before = bed
        .judge
        .write(&hosts, None, "/before", 50)
        .await
        .map_err(|e| fail(format!("kazoo write: {e}")))?;
    if before.written != 50 {
        return Err(fail(format!(
            "the /before write was not acknowledged: {before:?}"
        )));
    }
    let (checker, stop) = spawn_checker(client.clone(), ns.to_string(), name.to_string());
    let out = bed.plane.dir().join(format!("{ns}-writes.log"));
    let writer = bed
        .judge
        .writer(
            &hosts,
            None,
            "/w",
            Duration::from_secs(240),
            Duration::from_millis(50),
            &out,
        )
        .map_err(|e| fail(format!("kazoo writer: {e}")))?;
    // A recorded history of reads, writes and versioned compare-and-set by three clients,
    // judged for linearizability by porcupine. It stops by itself (time and count bounds).
    let history_file = bed.plane.dir().join(format!("{ns}-history.jsonl"));
    let mut spec = HistorySpec::new("/h", 4, 3, Duration::from_secs(60), 6000);
    spec.interval = Duration::from_millis(20);
    let history = bed
        .judge
        .history(&hosts, None, &spec, &history_file)
        .map_err(|e| fail(format!("kazoo history: {e}")))?;
    for replicas in &steps[1..] {
        set_replicas(&api, name, *replicas).await?;
        wait_converged(bed, &api, name, *replicas, Duration::from_secs(240)).await?;
    }
    // The run counts only with enough acknowledged writes: on a fast machine the steps may end
    // before the writer has made them, so it keeps writing (to the new membership) until then.
    wait_for(
        "the writer's acknowledged writes",
        Duration::from_secs(120),
        async || {
            Ok(std::fs::read_to_string(&out)
                .map(|t| t.lines().count())
                .unwrap_or(0)
                >= MIN_ACKED_WRITES)
        },
    )
    .await?;
    let _ = stop.send(true);
    drop(writer);
    let recorded = history
        .wait()
        .await
        .map_err(|e| fail(format!("kazoo history: {e}")))?;
    if recorded.by_outcome.ok < MIN_ACKED_WRITES {
        return Err(fail(format!(
            "the history has only {} acknowledged operations: {recorded:?}",
            recorded.by_outcome.ok
        )));
    }
    let verdict = quorate_testbed::lincheck::check(&history_file)
        .map_err(|e| fail(format!("linearizability checker: {e}")))?;
    if !verdict.linearizable {
        return Err(fail(format!(
            "the client history is not linearizable ({} operations): {:?}",
            verdict.operations, verdict.failure
        )));
    }
    let final_hosts = member_hosts(&client, ns, name).await?;
    let verify = bed
        .judge
        .verify(&final_hosts, None, "/before", 50)
        .await
        .map_err(|e| fail(format!("kazoo verify: {e}")))?;
    if !verify.ok || verify.checked != 50 {
        return Err(fail(format!(
            "data written before the change was lost: {verify:?}"
        )));
    }
    let acked = bed
        .judge
        .check_acked(&final_hosts, None, &out)
        .await
        .map_err(|e| fail(format!("check acked: {e}")))?;
    // A writer run counts only with enough acknowledged writes, each read back.
    if acked.acked < MIN_ACKED_WRITES {
        return Err(fail(format!(
            "only {} acknowledged writes (at least {MIN_ACKED_WRITES} needed for the run to count)",
            acked.acked
        )));
    }
    if !acked.ok {
        return Err(fail(format!(
            "{} acknowledged writes missing, {} mismatched",
            acked.missing_count, acked.mismatched_count
        )));
    }
    let st = checker.lock().map_err(|_| fail("lock"))?;
    eprintln!(
        "{ns}: {} checker samples, {} acknowledged writes readable, {} operations in a linearizable history, at most {} non-voter(s) and {} member(s) in transition at once; before-data: {verify:?}",
        st.samples, acked.acked, verdict.operations, st.max_non_voters, st.max_in_transition
    );
    if !st.violations.is_empty() {
        return Err(fail(format!(
            "invariant violations:\n{}",
            st.violations.join("\n")
        )));
    }
    if st.samples < 10 {
        return Err(fail(format!(
            "the checker took only {} samples",
            st.samples
        )));
    }
    if st.max_in_transition > 1 {
        return Err(fail(format!(
            "I1: {} members were in transition at once",
            st.max_in_transition
        )));
    }
    let peak = steps.iter().copied().max().unwrap_or(0) as usize;
    if st.max_voters != peak {
        return Err(fail(format!(
            "the checker saw at most {} voters, the scenario peaked at {peak}",
            st.max_voters
        )));
    }
    Ok(())
}

async fn create_and_converge(
    bed: &Bed,
    ns: &str,
    spec: MasterEnsemble,
) -> Result<(Client, Api<MasterEnsemble>), Failed> {
    let client = bed.client().await?;
    namespace(&client, ns).await?;
    let api: Api<MasterEnsemble> = Api::namespaced(client.clone(), ns);
    let replicas = spec.spec.replicas;
    api.create(&PostParams::default(), &spec)
        .await
        .map_err(|e| fail(format!("create: {e}")))?;
    wait_converged(bed, &api, "masters", replicas, Duration::from_secs(180)).await?;
    Ok((client, api))
}

fn server_ids(list: &[Pod]) -> BTreeSet<u32> {
    list.iter()
        .filter_map(|p| {
            p.metadata
                .labels
                .as_ref()?
                .get("quorate.dev/server-id")?
                .parse()
                .ok()
        })
        .collect()
}

async fn member_pods(client: &Client, ns: &str) -> Result<Vec<Pod>, Failed> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(pods
        .list(&ListParams::default().labels(&format!("{LABEL_ENSEMBLE}=masters")))
        .await
        .map_err(|e| fail(e.to_string()))?
        .items)
}

async fn status_of(
    api: &Api<MasterEnsemble>,
) -> Result<quorate::crd::MasterEnsembleStatus, Failed> {
    Ok(api
        .get_status("masters")
        .await
        .map_err(|e| fail(e.to_string()))?
        .status
        .unwrap_or_default())
}

fn no_violations(checker: &Mutex<Checker>) -> TestResult {
    let st = checker.lock().map_err(|_| fail("lock"))?;
    if !st.violations.is_empty() {
        return Err(fail(format!(
            "invariant violations:\n{}",
            st.violations.join("\n")
        )));
    }
    Ok(())
}

async fn replaces_a_failed_member_with_a_fresh_id(bed: &Bed, ns: &str) -> TestResult {
    let (client, api) = create_and_converge(bed, ns, ensemble("masters", 3)).await?;
    let (checker, stop) = spawn_checker(client.clone(), ns.to_string(), "masters".into());
    let status = status_of(&api).await?;
    let victim = status
        .members
        .iter()
        .find(|m| m.role == Some(quorate::crd::MemberRole::Follower))
        .map(|m| m.server_id)
        .ok_or_else(|| fail("no follower"))?;
    // The member hangs for good (SIGSTOP): it is down but its Pod stays.
    {
        let agent = bed.agent.lock().map_err(|_| fail("lock"))?;
        agent
            .as_ref()
            .ok_or_else(|| fail("no agent"))?
            .pause(ns, &format!("masters-{victim}"))
            .map_err(|e| fail(e.to_string()))?;
    }
    wait_for(
        "the failed member to be replaced",
        Duration::from_secs(180),
        async || {
            let s = status_of(&api).await?;
            Ok(s.phase.as_deref() == Some("Running")
                && s.ready_members == 3
                && !s.voters.contains(&victim)
                && s.voters.len() == 3)
        },
    )
    .await
    .map_err(|e| fail(format!("{e:?}\noperator log:\n{}", bed.operator_log_tail())))?;
    let ids = server_ids(&member_pods(&client, ns).await?);
    if ids.contains(&(victim as u32)) || !ids.iter().any(|i| *i > 3) {
        return Err(fail(format!(
            "member {victim} should be gone and a fresh id (>3) present: {ids:?}"
        )));
    }
    let log = events(&client, ns).await?;
    let order: Vec<&str> = log
        .iter()
        .filter(|e| e.0 == "Started")
        .map(|e| e.1.as_str())
        .collect();
    let fence = order
        .iter()
        .position(|a| a.starts_with("Started/fence-member/"));
    let remove = order
        .iter()
        .rposition(|a| a.starts_with("Started/remove-voter/"));
    if fence.is_none() || remove.is_none() || fence > remove {
        return Err(fail(format!("expected fence then remove, got {order:?}")));
    }
    let _ = stop.send(true);
    no_violations(&checker)
}

async fn rolls_followers_first_and_the_leader_last(bed: &Bed, ns: &str) -> TestResult {
    let (client, api) = create_and_converge(bed, ns, ensemble("masters", 3)).await?;
    let leader = status_of(&api)
        .await?
        .leader
        .ok_or_else(|| fail("no leader"))?;
    let (checker, stop) = spawn_checker(client.clone(), ns.to_string(), "masters".into());
    let patch = serde_json::json!({"spec": {"config": {"tickTime": 600}}});
    api.patch("masters", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| fail(e.to_string()))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_converged(bed, &api, "masters", 3, Duration::from_secs(240)).await?;
    let restarts: Vec<String> = events(&client, ns)
        .await?
        .into_iter()
        .filter(|e| e.1.starts_with("Started/restart-member/"))
        .map(|e| e.1.trim_start_matches("Started/").to_string())
        .collect();
    if restarts.len() != 3 || restarts.last() != Some(&format!("restart-member/{leader}")) {
        return Err(fail(format!(
            "expected 3 restarts, leader {leader} last: {restarts:?}"
        )));
    }
    let _ = stop.send(true);
    no_violations(&checker)
}

async fn a_bad_image_blocks_the_roll_after_the_first_member_and_reverting_recovers(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let (client, api) = create_and_converge(bed, ns, ensemble("masters", 3)).await?;
    let bad = "registry.invalid/zookeeper-broken:0.0.1";
    let patch = serde_json::json!({"spec": {"image": bad}});
    api.patch("masters", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| fail(e.to_string()))?;
    wait_for("the roll to block", Duration::from_secs(120), async || {
        Ok(status_of(&api).await?.phase.as_deref() == Some("Blocked"))
    })
    .await
    .map_err(|e| fail(format!("{e:?}\noperator log:\n{}", bed.operator_log_tail())))?;
    let s = status_of(&api).await?;
    let degraded = s
        .conditions
        .iter()
        .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "RolloutUnhealthy");
    let available = s
        .conditions
        .iter()
        .any(|c| c.type_ == "Available" && c.status == "True");
    if !degraded || !available {
        return Err(fail(format!(
            "expected Degraded=RolloutUnhealthy and still Available: {:?}",
            s.conditions
        )));
    }
    let pods = member_pods(&client, ns).await?;
    let broken = pods
        .iter()
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.containers[0].image.clone())
                .as_deref()
                == Some(bad)
        })
        .count();
    if broken != 1 {
        return Err(fail(format!(
            "exactly one member should have been rolled, {broken} were"
        )));
    }
    if !events(&client, ns).await?.iter().any(|e| e.0 == "Blocked") {
        return Err(fail("no Blocked Warning Event"));
    }
    let revert = serde_json::json!({"spec": {"image": null}});
    api.patch("masters", &PatchParams::default(), &Patch::Merge(&revert))
        .await
        .map_err(|e| fail(e.to_string()))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_converged(bed, &api, "masters", 3, Duration::from_secs(180)).await
}

async fn paused_stops_every_step(bed: &Bed, ns: &str) -> TestResult {
    let (client, api) = create_and_converge(bed, ns, ensemble("masters", 1)).await?;
    let patch = serde_json::json!({"spec": {"paused": true, "replicas": 3}});
    api.patch("masters", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| fail(e.to_string()))?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let pods = member_pods(&client, ns).await?;
    let s = status_of(&api).await?;
    if pods.len() != 1 || s.phase.as_deref() != Some("Paused") {
        return Err(fail(format!(
            "paused ensemble changed: {} pods, phase {:?}",
            pods.len(),
            s.phase
        )));
    }
    let unpause = serde_json::json!({"spec": {"paused": false}});
    api.patch("masters", &PatchParams::default(), &Patch::Merge(&unpause))
        .await
        .map_err(|e| fail(e.to_string()))?;
    wait_converged(bed, &api, "masters", 3, Duration::from_secs(180)).await
}

async fn an_operator_killed_mid_scale_up_finishes_without_a_second_member(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let (client, api) = create_and_converge(bed, ns, ensemble("masters", 3)).await?;
    set_replicas(&api, "masters", 5).await?;
    wait_for(
        "the first joiner's Pod",
        Duration::from_secs(60),
        async || Ok(member_pods(&client, ns).await?.len() > 3),
    )
    .await?;
    bed.kill_operator();
    tokio::time::sleep(Duration::from_secs(2)).await;
    bed.start_operator()?;
    wait_converged(bed, &api, "masters", 5, Duration::from_secs(240)).await?;
    let ids = server_ids(&member_pods(&client, ns).await?);
    if ids != BTreeSet::from([1, 2, 3, 4, 5]) {
        return Err(fail(format!(
            "the restarted operator must finish with members 1..5 and no extra: {ids:?}"
        )));
    }
    Ok(())
}

async fn even_replicas_are_rejected_and_nothing_changes(bed: &Bed, ns: &str) -> TestResult {
    let (client, api) = create_and_converge(bed, ns, ensemble("masters", 3)).await?;
    let before = api.get("masters").await.map_err(|e| fail(e.to_string()))?;
    let even = serde_json::json!({"spec": {"replicas": 4}});
    match api
        .patch("masters", &PatchParams::default(), &Patch::Merge(&even))
        .await
    {
        Err(kube::Error::Api(s))
            if s.code == 422 && s.message.contains("spec.replicas must be odd") => {}
        other => return Err(fail(format!("replicas 4 must be refused: {other:?}"))),
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = api.get("masters").await.map_err(|e| fail(e.to_string()))?;
    if after.metadata.generation != before.metadata.generation
        || member_pods(&client, ns).await?.len() != 3
    {
        return Err(fail("the ensemble changed after a refused spec"));
    }
    Ok(())
}

async fn deleting_the_ensemble_removes_everything_it_owned(bed: &Bed, ns: &str) -> TestResult {
    let (client, api) = create_and_converge(bed, ns, ensemble("masters", 1)).await?;
    api.delete("masters", &Default::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), ns);
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), ns);
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), ns);
    wait_for(
        "garbage collection of the ensemble's objects",
        Duration::from_secs(120),
        async || {
            let lp = ListParams::default().labels(&format!("{LABEL_ENSEMBLE}=masters"));
            Ok(member_pods(&client, ns).await?.is_empty()
                && pvcs
                    .list(&lp)
                    .await
                    .map_err(|e| fail(e.to_string()))?
                    .items
                    .is_empty()
                && services
                    .list(&lp)
                    .await
                    .map_err(|e| fail(e.to_string()))?
                    .items
                    .is_empty()
                && cms
                    .list(&lp)
                    .await
                    .map_err(|e| fail(e.to_string()))?
                    .items
                    .is_empty())
        },
    )
    .await
}

async fn the_cli_reports_a_live_ensemble_also_as_a_kubectl_plugin(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    create_and_converge(bed, ns, ensemble("masters", 3)).await?;
    let target = format!("{ns}/masters");
    // `kubectl quorate ...` runs a `kubectl-quorate` found on PATH.
    let plugins = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_quorate"),
        plugins.path().join("kubectl-quorate"),
    )
    .map_err(|e| fail(e.to_string()))?;
    let path = format!(
        "{}:{}",
        plugins.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(&bed.plane.binaries().kubectl)
        .args(["quorate", "ensemble", "status", &target, "-o", "json"])
        .env("KUBECONFIG", bed.plane.kubeconfig_path())
        .env("PATH", &path)
        .output()
        .map_err(|e| fail(format!("kubectl quorate: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "kubectl quorate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("JSON: {e}")))?;
    let members = v["status"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let complete = members.len() == 3
        && members.iter().all(|m| {
            m["serverId"].is_i64()
                && m["pod"].is_string()
                && m["address"].as_str().is_some_and(|a| a.starts_with("127."))
                && m["clientPort"] == 2181
                && m["adminPort"] == 8080
                && m["role"].is_string()
                && m["zxid"].as_str().is_some_and(|z| z.starts_with("0x"))
                && m["synced"] == true
        });
    if !complete
        || v["status"]["conditions"]
            .as_array()
            .is_none_or(|c| c.is_empty())
    {
        return Err(fail(format!("incomplete status JSON: {v}")));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["plan", "--ensemble", &target, "-o", "json"])
        .env("KUBECONFIG", bed.plane.kubeconfig_path())
        .output()
        .map_err(|e| fail(format!("quorate plan: {e}")))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        fail(format!(
            "plan JSON: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    })?;
    if v["decision"] != "Converged" {
        return Err(fail(format!(
            "plan --ensemble on a converged ensemble: {v}"
        )));
    }
    Ok(())
}

fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        ("creates_three_and_scales_to_five_and_back", |b, n| {
            Box::pin(checked_scenario(b, n, &[3, 5, 3]))
        }),
        (
            "grows_one_to_three_and_shrinks_back_without_a_wipe",
            |b, n| Box::pin(checked_scenario(b, n, &[1, 3, 1])),
        ),
        ("replaces_a_failed_member_with_a_fresh_id", |b, n| {
            Box::pin(replaces_a_failed_member_with_a_fresh_id(b, n))
        }),
        ("rolls_followers_first_and_the_leader_last", |b, n| {
            Box::pin(rolls_followers_first_and_the_leader_last(b, n))
        }),
        (
            "a_bad_image_blocks_the_roll_after_the_first_member_and_reverting_recovers",
            |b, n| {
                Box::pin(
                    a_bad_image_blocks_the_roll_after_the_first_member_and_reverting_recovers(b, n),
                )
            },
        ),
        ("paused_stops_every_step", |b, n| {
            Box::pin(paused_stops_every_step(b, n))
        }),
        (
            "an_operator_killed_mid_scale_up_finishes_without_a_second_member",
            |b, n| Box::pin(an_operator_killed_mid_scale_up_finishes_without_a_second_member(b, n)),
        ),
        (
            "a_standby_takes_over_a_step_its_leader_left_mid_way_and_does_not_repeat_it",
            |b, n| {
                Box::pin(
                    operator::a_standby_takes_over_a_step_its_leader_left_mid_way_and_does_not_repeat_it(b, n),
                )
            },
        ),
        (
            "a_rolling_operator_upgrade_repeats_no_step_and_restarts_no_member",
            |b, n| {
                Box::pin(
                    operator::a_rolling_operator_upgrade_repeats_no_step_and_restarts_no_member(
                        b, n,
                    ),
                )
            },
        ),
        (
            "a_removed_permission_is_reported_on_the_ensemble_and_granting_it_recovers",
            |b, n| {
                Box::pin(
                    operator::a_removed_permission_is_reported_on_the_ensemble_and_granting_it_recovers(b, n),
                )
            },
        ),
        ("even_replicas_are_rejected_and_nothing_changes", |b, n| {
            Box::pin(even_replicas_are_rejected_and_nothing_changes(b, n))
        }),
        (
            "the_cli_reports_a_live_ensemble_also_as_a_kubectl_plugin",
            |b, n| {
                Box::pin(the_cli_reports_a_live_ensemble_also_as_a_kubectl_plugin(
                    b, n,
                ))
            },
        ),
        (
            "deleting_the_ensemble_removes_everything_it_owned",
            |b, n| Box::pin(deleting_the_ensemble_removes_everything_it_owned(b, n)),
        ),
    ]
}

fn main() -> std::process::ExitCode {
    common::run("e2e", scenarios(), AgentOptions::default(), vec![])
}
