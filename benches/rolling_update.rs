//! Benchmark (not a test): what a rolling update of a 5-member ensemble costs its clients, on
//! real parts (kube-apiserver, etcd, the node agent, ZooKeeper 3.9.5, the operator), against a
//! floor measured in the same run on the same machine: one bare leader kill (SIGKILL) on plain
//! ZooKeeper processes, the least any roll that restarts the leader can cost.
//!
//! In both, a kazoo writer (an independent client, one session, a sequential create every
//! 20 ms) records the time of each acknowledged write, and every write it acknowledged is read
//! back afterwards. The figure is the longest gap between two acknowledgements. The roll is a
//! change of `spec.config.extra` (every member restarts with the new zoo.cfg); the leaders are
//! taken from every member's AdminServer, sampled throughout.
//!
//! `cargo bench --bench rolling_update` prints the roll's longest gap, the floor's, their ratio
//! (the target is at most 1.5), the number of leader changes during the roll (the target is
//! exactly one: followers first, the leader last), and the roll's duration. Nothing is asserted
//! on the times: these machines are noisy, so only the ratio within one run means anything;
//! a writer with too few acknowledged writes, or one lost, fails the run.
//! `QUORATE_BENCH_ROUNDS` (default 1) repeats both measurements.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, Patch, PatchParams};
use quorate::crd::ClientAuthentication;
use quorate_testbed::kazoo::{Judge, Writer, ack_times, longest_gaps};
use quorate_testbed::zookeeper::{Ensemble, ZkVersion};

use common::*;

/// The writer's pace.
const INTERVAL: Duration = Duration::from_millis(20);
/// A run counts only with at least this many acknowledged writes, each read back.
const MIN_ACKED: usize = 200;

/// What the clients saw of one disruption.
struct Disruption {
    /// The three longest gaps between two acknowledged writes as (length, start), longest
    /// first, the start in seconds from the writer's start.
    longest: Vec<(f64, f64)>,
    /// Acknowledged writes, all read back.
    acked: usize,
}

impl Disruption {
    /// The longest time between two acknowledged writes, seconds.
    fn gap(&self) -> f64 {
        self.longest[0].0
    }
}

/// How many writes the writer has acknowledged so far.
fn acked_so_far(writer: &Writer) -> usize {
    std::fs::read_to_string(writer.out_file()).map_or(0, |t| t.lines().count())
}

/// Waits until the writer has acknowledged `n` writes.
async fn until_acked(writer: &Writer, n: usize) -> TestResult {
    wait_for(
        &format!("{n} acknowledged writes"),
        Duration::from_secs(60),
        async || Ok(acked_so_far(writer) >= n),
    )
    .await
}

/// Stops the writer, reads every acknowledged write back through `hosts` and measures the
/// longest gap between acknowledgements.
async fn judged(
    judge: &Judge,
    writer: Writer,
    hosts: &str,
    out: &Path,
) -> Result<Disruption, libtest_mimic::Failed> {
    let report = writer.stop().await.map_err(|e| fail(e.to_string()))?;
    let check = judge
        .check_acked(hosts, None, out)
        .await
        .map_err(|e| fail(format!("reading the writes back: {e}")))?;
    if report.acked < MIN_ACKED || !check.ok || check.acked != report.acked {
        return Err(fail(format!(
            "the run does not count: {} acknowledged (at least {MIN_ACKED} needed), read back: {check:?}",
            report.acked
        )));
    }
    let times = ack_times(out).map_err(|e| fail(e.to_string()))?;
    let longest = longest_gaps(&times, 3);
    if longest.is_empty() {
        return Err(fail("no two acknowledgements"));
    }
    Ok(Disruption {
        longest,
        acked: report.acked,
    })
}

/// The floor: five plain ZooKeeper members, a writer, one SIGKILL of the leader, the leader
/// started again.
async fn bare_leader_kill() -> Result<Disruption, libtest_mimic::Failed> {
    let zk = Ensemble::builder()
        .version(ZkVersion::V3_9_5)
        .members(5)
        .start()
        .await
        .map_err(|e| fail(format!("ZooKeeper: {e}")))?;
    let judge = Judge::new().await.map_err(|e| fail(e.to_string()))?;
    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let out = dir.path().join("writes.jsonl");
    let hosts = zk.connect_string();
    let writer = judge
        .writer(
            &hosts,
            None,
            "/floor",
            Duration::from_secs(300),
            INTERVAL,
            &out,
        )
        .map_err(|e| fail(e.to_string()))?;
    until_acked(&writer, MIN_ACKED / 2).await?;
    let leader = zk
        .wait_leader(Duration::from_secs(30))
        .await
        .map_err(|e| fail(e.to_string()))?;
    zk.kill(leader).map_err(|e| fail(e.to_string()))?;
    wait_for("a new leader", Duration::from_secs(60), async || {
        Ok(zk.leader_id().await.is_ok_and(|l| l != leader))
    })
    .await?;
    zk.start_member(leader)
        .await
        .map_err(|e| fail(format!("restart {leader}: {e}")))?;
    until_acked(&writer, acked_so_far(&writer) + MIN_ACKED / 2).await?;
    judged(&judge, writer, &hosts, &out).await
}

/// The operator's roll of five members, with the leaders it went through and how long it took.
async fn operator_roll(
    bed: &Bed,
    ns: &str,
) -> Result<(Disruption, Vec<u32>, f64), libtest_mimic::Failed> {
    // Client authentication off, as on the floor's plain members: a SASL login on each
    // reconnect would be a cost the floor does not pay.
    let mut masters = ensemble("masters", 5);
    masters.spec.client_authentication = Some(ClientAuthentication::None);
    let (client, api) = create_and_converge(bed, ns, masters).await?;
    let judge = Judge::new().await.map_err(|e| fail(e.to_string()))?;
    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let out = dir.path().join("writes.jsonl");
    let hosts = member_hosts(&client, ns, "masters").await?;
    let writer_started = Instant::now();
    let writer = judge
        .writer(
            &hosts,
            None,
            "/roll",
            Duration::from_secs(600),
            INTERVAL,
            &out,
        )
        .map_err(|e| fail(e.to_string()))?;
    until_acked(&writer, MIN_ACKED / 2).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let patch = serde_json::json!({"spec": {"config": {"extra": {"maxClientCnxns": "100"}}}});
    let started = Instant::now();
    let patched_at = (started - writer_started).as_secs_f64();
    let rolled = api
        .patch("masters", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| fail(format!("patch: {e}")))?;
    let hash = quorate::planner::model::member_spec_hash(&rolled.spec);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut leaders: Vec<u32> = Vec::new();
    loop {
        if started.elapsed() > Duration::from_secs(600) {
            return Err(fail("the roll did not finish within 600 s"));
        }
        let views = common::judges::sample(&client, ns, "masters", &http).await;
        if let Some(leader) = views
            .as_ref()
            .and_then(|v| v.iter().find(|(_, m)| m.leader).map(|(id, _)| *id))
            && leaders.last() != Some(&leader)
        {
            leaders.push(leader);
        }
        let all_serving = views
            .as_ref()
            .is_some_and(|v| v.len() == 5 && v.values().all(|m| m.serving));
        let list = pods
            .list(
                &ListParams::default()
                    .labels(&format!("{}=masters", quorate::constants::LABEL_ENSEMBLE)),
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        let hashes: BTreeSet<Option<&String>> = list
            .items
            .iter()
            .map(|p| {
                p.annotations()
                    .get(quorate::constants::ANNOTATION_SPEC_HASH)
            })
            .collect();
        let e = api.get("masters").await.map_err(|e| fail(e.to_string()))?;
        let status = e.status.as_ref();
        let settled = all_serving
            && list.items.len() == 5
            && hashes == BTreeSet::from([Some(&hash)])
            && status.and_then(|s| s.observed_generation) == e.metadata.generation
            && status.is_some_and(|s| s.in_flight.is_none());
        if settled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    until_acked(&writer, acked_so_far(&writer) + MIN_ACKED / 4).await?;
    let mut disruption = judged(&judge, writer, &hosts, &out).await?;
    // Gaps as offsets from the patch (the writer's clock started about when it was spawned).
    for (_, start) in &mut disruption.longest {
        *start -= patched_at;
    }
    api.delete("masters", &Default::default())
        .await
        .map_err(|e| fail(format!("delete: {e}")))?;
    Ok((disruption, leaders, seconds))
}

async fn roll_against_a_leader_kill(bed: &Bed, ns: &str) -> TestResult {
    let rounds: usize = std::env::var("QUORATE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    // The harness deletes the scenario's namespace afterwards; each round has its own.
    namespace(&bed.client().await?, ns).await?;
    println!(
        "\nrolling update of 5 members, {rounds} round(s); floor: one bare leader kill on plain ZooKeeper"
    );
    println!(
        "{:<6} {:>12} {:>12} {:>7} {:>9} {:>9}  leaders during the roll",
        "round", "roll gap (s)", "floor gap (s)", "ratio", "roll (s)", "acked"
    );
    for round in 1..=rounds {
        // create_and_converge makes the round's namespace.
        let roll_ns = format!("{ns}-{round}");
        // Alternated, so that neither always runs on a warmer machine.
        let (floor, (roll, leaders, seconds)) = if round % 2 == 1 {
            let floor = bare_leader_kill().await?;
            (floor, operator_roll(bed, &roll_ns).await?)
        } else {
            let roll = operator_roll(bed, &roll_ns).await?;
            (bare_leader_kill().await?, roll)
        };
        let changes = leaders.len().saturating_sub(1);
        println!(
            "{round:<6} {:>12.2} {:>12.2} {:>7.2} {:>9.1} {:>9}  {leaders:?}: {changes} leader change(s)",
            roll.gap(),
            floor.gap(),
            roll.gap() / floor.gap(),
            seconds,
            roll.acked,
        );
        let show = |d: &Disruption| {
            d.longest
                .iter()
                .map(|(g, at)| format!("{g:.2} s at {at:.1} s"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "       longest gaps of the roll (from the patch): {}",
            show(&roll)
        );
        println!(
            "       longest gaps of the floor (from the writer's start): {}",
            show(&floor)
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::run(
        "bench",
        vec![("roll_5_against_a_leader_kill", |b, n| {
            Box::pin(roll_against_a_leader_kill(b, n))
        })],
        common::agent_running_quorate_images(),
        vec![],
    )
}
