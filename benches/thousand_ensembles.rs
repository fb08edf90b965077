//! Benchmark (not a test): one operator carrying a thousand ensembles, on real parts where it
//! counts (kube-apiserver, etcd and its audit log, the operator binary, a real ZooKeeper 3.9.5
//! ensemble on the node agent) and stand-in members for the rest: 2 cores cannot run 3,000
//! JVMs. A stand-in (`quorate_testbed::standin`) speaks the part of the AdminServer and client
//! protocol the operator uses, with ZooKeeper's answers (`tests/standin_real.rs` compares them
//! with a real 3.9.5's); its Pods run on a Node of their own (`standin::kubelet`), selected by
//! `spec.podTemplate.nodeSelector`.
//!
//! `cargo bench --bench thousand_ensembles` prints, against issue 15's targets:
//! - the operator's resident memory: its peak while the ensembles were created and converged,
//!   and the peak of a second operator started afterwards over the thousand (the start-up
//!   relist), from `/proc/<pid>/status` (`VmHWM`; target at most 128 MiB);
//! - the operator's API writes over a quiet window once every ensemble converged, counted in the
//!   API server's audit log (target 0);
//! - how soon a spec change to one ensemble among the thousand is acted on: `spec.replicas`
//!   3 -> 5 of randomly chosen stand-in ensembles, one at a time, from the patch's answer to the
//!   first change the operator makes for that ensemble (a new Pod, or a status change), both
//!   seen on watches opened before the patch (target p99 at most 1 s);
//! - the real ensemble's scale 3 -> 5 under that load, judged from its members' AdminServers.
//!
//! Convergence is judged from the members themselves (each stand-in ensemble's committed voters)
//! and the API server (every Pod Ready), plus `status.observedGeneration`. Knobs:
//! `QUORATE_BENCH_ENSEMBLES` (default 1000), `QUORATE_BENCH_REAL` (default 1),
//! `QUORATE_BENCH_CHANGES` (default 100), `QUORATE_BENCH_QUIET_SECONDS` (default 60).
//! Nothing is asserted on the figures: they are printed beside their targets.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use libtest_mimic::Failed;
use quorate::constants::LABEL_ENSEMBLE;
use quorate::crd::MasterEnsemble;
use quorate_testbed::nodeagent::AgentOptions;
use quorate_testbed::standin::StandIns;
use quorate_testbed::standin::kubelet::{STANDIN_LABEL, StandInNode};

use common::judges::{audit_mark, audited_since, operator_user};
use common::*;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The peak and current resident memory of a process, in MiB (`VmHWM`, `VmRSS`).
fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

fn standin_ensemble(name: &str) -> MasterEnsemble {
    let mut e = ensemble(name, 3);
    // The stand-ins do not model SASL; the operator's own digest login they do.
    e.spec.client_authentication = Some(quorate::crd::ClientAuthentication::None);
    let template = e.spec.pod_template.get_or_insert_with(Default::default);
    template.node_selector =
        BTreeMap::from([(STANDIN_LABEL.0.to_string(), STANDIN_LABEL.1.to_string())]);
    e
}

/// How many of `names` have converged: the stand-in ensemble's members committed `voters`
/// voters, every Pod of it is Ready, and the status observed the current generation.
async fn converged(
    standins: &StandIns,
    api: &Api<MasterEnsemble>,
    pods: &Api<Pod>,
    ns: &str,
    voters: usize,
) -> Result<Vec<String>, Failed> {
    let ready: BTreeMap<String, usize> = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| fail(e.to_string()))?
        .items
        .into_iter()
        .filter(is_ready)
        .filter_map(|p| p.metadata.labels?.get(LABEL_ENSEMBLE).cloned())
        .fold(BTreeMap::new(), |mut m, e| {
            *m.entry(e).or_default() += 1;
            m
        });
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| {
            let name = e.metadata.name.clone().unwrap_or_default();
            let observed = e.status.as_ref().and_then(|s| s.observed_generation);
            observed.is_some()
                && observed == e.metadata.generation
                && ready.get(&name) == Some(&voters)
                && standins
                    .voters(&format!("{ns}/{name}"))
                    .is_some_and(|v| v.len() == voters)
        })
        .filter_map(|e| e.metadata.name)
        .collect())
}

/// Until `count` ensembles named `s…` converged, printing progress and the operator's memory.
async fn until_all_converged(
    bed: &Bed,
    standins: &StandIns,
    ns: &str,
    count: usize,
    operator: &str,
) -> Result<f64, Failed> {
    let client = bed.client().await?;
    let api: Api<MasterEnsemble> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let done = converged(standins, &api, &pods, ns, 3).await?;
        let done = done.iter().filter(|n| n.starts_with('s')).count();
        if done >= count {
            return Ok(started.elapsed().as_secs_f64());
        }
        if last_print.elapsed() > Duration::from_secs(15) {
            last_print = Instant::now();
            let mem = bed.operator_pid(operator).and_then(memory_mib);
            println!(
                "  {:>6.0} s  {done}/{count} converged; operator peak/now RSS {}",
                started.elapsed().as_secs_f64(),
                mem.map_or("?".into(), |(h, r)| format!("{h:.1}/{r:.1} MiB"))
            );
        }
        if started.elapsed() > Duration::from_secs(3600) {
            return Err(fail(format!("{done}/{count} converged after an hour")));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Scales `name` 3 -> 5 and returns the seconds from the patch's answer to the first change the
/// operator made for it: a new Pod of the ensemble, or a change of its status.
async fn reaction(client: &kube::Client, ns: &str, name: &str) -> Result<f64, Failed> {
    let api: Api<MasterEnsemble> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let before = api.get(name).await.map_err(|e| fail(e.to_string()))?;
    let status_before = serde_json::to_value(&before.status).unwrap_or_default();
    let version = before.metadata.resource_version.clone().unwrap_or_default();
    let pod_list = pods
        .list_metadata(&ListParams::default().labels(&format!("{LABEL_ENSEMBLE}={name}")))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let pod_version = pod_list.metadata.resource_version.unwrap_or_default();
    let ens_watch = api
        .watch(
            &WatchParams::default().fields(&format!("metadata.name={name}")),
            &version,
        )
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(e.to_string()))
        .try_filter_map(move |ev| {
            let changed = match ev {
                WatchEvent::Modified(e) => {
                    serde_json::to_value(&e.status).unwrap_or_default() != status_before
                }
                _ => false,
            };
            futures::future::ready(Ok(changed.then_some(())))
        });
    let pod_watch = pods
        .watch(
            &WatchParams::default().labels(&format!("{LABEL_ENSEMBLE}={name}")),
            &pod_version,
        )
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(e.to_string()))
        .try_filter_map(|ev| {
            futures::future::ready(Ok(matches!(ev, WatchEvent::Added(_)).then_some(())))
        });
    let mut first = futures::stream::select(ens_watch.boxed(), pod_watch.boxed());
    set_replicas(&api, name, 5).await?;
    let patched = Instant::now();
    match tokio::time::timeout(Duration::from_secs(60), first.next()).await {
        Ok(Some(Ok(()))) => Ok(patched.elapsed().as_secs_f64()),
        Ok(other) => Err(fail(format!("{name}: the watches ended: {other:?}"))),
        Err(_) => Err(fail(format!(
            "{name}: nothing changed within 60 s of the patch"
        ))),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn thousand(bed: &Bed, ns: &str) -> TestResult {
    let count = knob("QUORATE_BENCH_ENSEMBLES", 1000);
    let real = knob("QUORATE_BENCH_REAL", 1);
    let changes = knob("QUORATE_BENCH_CHANGES", 100).min(count);
    let quiet = knob("QUORATE_BENCH_QUIET_SECONDS", 60);
    let client = bed.client().await?;
    namespace(&client, ns).await?;
    let standins = StandIns::new();
    let node = StandInNode::start(client.clone(), standins.clone(), 200)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let operator = bed
        .operator_identities()
        .pop()
        .ok_or_else(|| fail("no operator"))?;
    let api: Api<MasterEnsemble> = Api::namespaced(client.clone(), ns);
    println!(
        "{count} stand-in ensembles of 3 (in this process, on Node {}, 127.200.x.y), {real} real \
         ZooKeeper 3.9.5 ensemble(s) of 3 (JVMs on the node agent), one operator",
        quorate_testbed::standin::kubelet::NODE
    );
    let created = Instant::now();
    for r in 0..real {
        api.create(&PostParams::default(), &ensemble(&format!("real{r}"), 3))
            .await
            .map_err(|e| fail(format!("create real{r}: {e}")))?;
    }
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(
                    &PostParams::default(),
                    &standin_ensemble(&format!("s{i:04}")),
                )
                .await
                .map(drop)
                .map_err(|e| fail(format!("create s{i:04}: {e}")))
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    println!(
        "created {} objects in {:.1} s",
        count + real,
        created.elapsed().as_secs_f64()
    );
    let seconds = until_all_converged(bed, &standins, ns, count, &operator).await?;
    for r in 0..real {
        wait_converged(bed, &api, &format!("real{r}"), 3, Duration::from_secs(600)).await?;
    }
    let first = bed.operator_pid(&operator).and_then(memory_mib);
    println!(
        "all {count} stand-in ensembles converged {seconds:.0} s after the first create ({} members started); \
         operator peak RSS {} (target at most 128 MiB)",
        node.started().await,
        first.map_or("?".into(), |(h, _)| format!("{h:.1} MiB"))
    );

    // A second operator over the thousand: the start-up relist and the first pass of each.
    bed.kill_operator();
    let second = bed.start_operator()?;
    let relisted = Instant::now();
    let mut peak = 0.0f64;
    while relisted.elapsed() < Duration::from_secs(90) {
        if let Some((h, _)) = bed.operator_pid(&second).and_then(memory_mib) {
            peak = peak.max(h);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let now = bed.operator_pid(&second).and_then(memory_mib);
    println!(
        "a restarted operator over the {} ensembles: peak RSS {peak:.1} MiB over its first 90 s, \
         now {} (target at most 128 MiB)",
        count + real,
        now.map_or("?".into(), |(_, r)| format!("{r:.1} MiB"))
    );
    until_all_converged(bed, &standins, ns, count, &second).await?;

    // Converged: the operator writes nothing.
    let mark = audit_mark(bed);
    let quiet_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(quiet as u64)).await;
    let writes: Vec<_> = audited_since(bed, mark, &operator_user())?
        .into_iter()
        .filter(|a| matches!(a.verb.as_str(), "create" | "update" | "patch" | "delete"))
        .filter(|a| a.resource != "leases")
        .collect();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for w in &writes {
        *by_kind
            .entry(format!("{} {}", w.verb, w.resource))
            .or_default() += 1;
    }
    println!(
        "operator API writes over {:.0} s converged (audit log, Lease renewals aside): {} {by_kind:?} (target 0)",
        quiet_started.elapsed().as_secs_f64(),
        writes.len()
    );

    // A spec change among the thousand.
    let mut picks: Vec<usize> = (0..count).collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in (1..picks.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        picks.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    let mut times = Vec::new();
    for i in picks.into_iter().take(changes) {
        times.push(reaction(&client, ns, &format!("s{i:04}")).await?);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "spec change acted on, over {} changes: p50 {:.3} s, p99 {:.3} s, max {:.3} s (target p99 at most 1 s)",
        times.len(),
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        times.last().copied().unwrap_or(f64::NAN)
    );

    // The real ensemble's step under that load.
    if real > 0 {
        let started = Instant::now();
        set_replicas(&api, "real0", 5).await?;
        wait_converged(bed, &api, "real0", 5, Duration::from_secs(600)).await?;
        let status = started.elapsed().as_secs_f64();
        let hosts = member_hosts(&client, ns, "real0").await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let mut voters = Vec::new();
        for host in hosts.split(',') {
            let ip = host.rsplit_once(':').map_or(host, |(ip, _)| ip);
            voters.push(
                common::judges::voting_view(&http, ip)
                    .await
                    .map(|v| v.len()),
            );
        }
        println!(
            "the real ensemble scaled 3 -> 5 under that load in {status:.1} s (its members' voting views: {voters:?})"
        );
    }
    node.stop().await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::run(
        "bench",
        vec![("one_operator_and_a_thousand_ensembles", |b, n| {
            Box::pin(thousand(b, n))
        })],
        AgentOptions::default(),
        vec![],
    )
}
