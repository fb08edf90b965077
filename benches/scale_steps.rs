//! Benchmark (not a test): how long quorate takes to scale an ensemble 3 -> 5 and 5 -> 3 on real
//! parts (kube-apiserver, etcd, the node agent, ZooKeeper 3.9.5, the operator), against the
//! floor measured in the same run on the same machine: the same steps done by hand on plain
//! ZooKeeper processes, one joiner at a time started and waited for until it serves and is
//! synced, then added by one reconfig; one voter at a time removed by one reconfig and stopped.
//!
//! `cargo bench --bench scale_steps` prints each time, the floor and their ratio (the target is
//! at most 1.5), and the leaders ZooKeeper reported while the ensemble grew (the target is one:
//! no leader change on add). Times are judged from ZooKeeper's own view (every member's
//! AdminServer), plus `status.observedGeneration` for the operator's run. Nothing is asserted on
//! the times: these machines are noisy, so only the ratio within one run means anything.
//! `QUORATE_BENCH_ROUNDS` (default 2) repeats both measurements. Each change is broken down
//! stage by stage from quorate's Events (`Started` and `Completed` of each step, with the time
//! to the next); `QUORATE_BENCH_TRACE=1` adds every decision from the operator's log.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kube::api::Api;
use quorate::crd::MasterEnsemble;
use quorate::planner::ServerId;
use quorate::zk::{Credentials, MembershipControl, ServerEntry, ZkMembership};
use quorate_testbed::zookeeper::{Ensemble, ZkVersion};

use common::*;

/// What one timed change looked like from ZooKeeper's view.
struct Timed {
    seconds: f64,
    leaders: BTreeSet<u32>,
}

/// Polls every member Pod's AdminServer (and the ensemble's status) until every member serves,
/// the newest leader's configuration is exactly `voters` members, all of them Pods, and the
/// status has observed the current generation. Records every leader seen meanwhile.
async fn until_converged(
    api: &Api<MasterEnsemble>,
    client: &kube::Client,
    ns: &str,
    voters: usize,
    started: Instant,
) -> Result<Timed, libtest_mimic::Failed> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut leaders = BTreeSet::new();
    loop {
        if started.elapsed() > Duration::from_secs(300) {
            return Err(fail(format!("not {voters} voters after 300 s")));
        }
        let Some(views) = common::judges::sample(client, ns, "masters", &http).await else {
            continue;
        };
        leaders.extend(views.iter().filter(|(_, m)| m.leader).map(|(id, _)| *id));
        let config = views
            .values()
            .filter(|m| m.leader)
            .max_by_key(|m| m.zxid)
            .and_then(|m| m.config.clone());
        let pods: BTreeSet<u32> = views.keys().copied().collect();
        let settled = config
            .as_ref()
            .is_some_and(|c| c.len() == voters && *c == pods)
            && views.values().all(|m| m.serving);
        if settled {
            let e = api.get("masters").await.map_err(|e| fail(e.to_string()))?;
            let observed = e.status.as_ref().and_then(|s| s.observed_generation);
            if observed.is_some() && observed == e.metadata.generation {
                return Ok(Timed {
                    seconds: started.elapsed().as_secs_f64(),
                    leaders,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Prints where the time of a change went, stage by stage, from quorate's Events in `ns` since
/// `from` (each step's `Started` and `Completed`): each Event's offset from the patch and the
/// time until the next. With `QUORATE_BENCH_TRACE=1`, also every decision in the operator's log.
async fn stages(bed: &Bed, client: &kube::Client, ns: &str, from: jiff::Timestamp, end: f64) {
    let offset = |at: jiff::Timestamp| (at - from).total(jiff::Unit::Second).unwrap_or_default();
    match event_times(client, ns).await {
        Ok(events) => {
            let events: Vec<(f64, String)> = events
                .into_iter()
                .filter(|(at, _)| *at >= from)
                .map(|(at, action)| (offset(at), action))
                .collect();
            for (i, (at, action)) in events.iter().enumerate() {
                let next = events.get(i + 1).map_or(end, |(n, _)| *n);
                println!(
                    "  {at:>6.2} s  {action:<32} {:>6.2} s until the next",
                    next - at
                );
            }
            println!("  {end:>6.2} s  converged (ZooKeeper's view and observedGeneration)");
        }
        Err(e) => println!("  (no Events: {e:?})"),
    }
    if std::env::var("QUORATE_BENCH_TRACE").as_deref() != Ok("1") {
        return;
    }
    for line in bed.operator_logs().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let at = v["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let fields = &v["fields"];
        if let Some(at) = at.filter(|at| *at >= from)
            && v["span"]["namespace"] == ns
            && fields["message"] == "planned"
        {
            println!(
                "  {:>6.2} s  planned: {}",
                offset(at),
                fields["decision"].as_str().unwrap_or_default()
            );
        }
    }
}

/// The operator's run: 3 -> 5, then 5 -> 3, each from the patch to converged.
async fn with_the_operator(bed: &Bed, ns: &str) -> Result<(Timed, Timed), libtest_mimic::Failed> {
    let (client, api) = create_and_converge(bed, ns, ensemble("masters", 3)).await?;
    until_converged(&api, &client, ns, 3, Instant::now()).await?;
    let started = Instant::now();
    let patched = jiff::Timestamp::now();
    set_replicas(&api, "masters", 5).await?;
    let up = until_converged(&api, &client, ns, 5, started).await?;
    println!("{ns}: 3 -> 5, stage by stage");
    stages(bed, &client, ns, patched, up.seconds).await;
    let started = Instant::now();
    let patched = jiff::Timestamp::now();
    set_replicas(&api, "masters", 3).await?;
    let down = until_converged(&api, &client, ns, 3, started).await?;
    println!("{ns}: 5 -> 3, stage by stage");
    stages(bed, &client, ns, patched, down.seconds).await;
    api.delete("masters", &Default::default())
        .await
        .map_err(|e| fail(format!("delete: {e}")))?;
    Ok((up, down))
}

/// The floor: the same steps by hand on plain ZooKeeper processes (same version, same machine).
async fn by_hand() -> Result<(f64, f64), libtest_mimic::Failed> {
    let zk = Ensemble::builder()
        .version(ZkVersion::V3_9_5)
        .members(3)
        .start()
        .await
        .map_err(|e| fail(format!("ZooKeeper: {e}")))?;
    let (user, password) = zk.operator_auth();
    let membership = ZkMembership::new(
        zk.connect_string(),
        Some(Credentials::digest(user, password)),
    )
    .map_err(|e| fail(e.to_string()))?;
    let started = Instant::now();
    for id in [4, 5] {
        // Started with the configuration plus itself; start_joiner returns once it serves,
        // which a learner does only once it has synced with the leader.
        zk.start_joiner(id)
            .await
            .map_err(|e| fail(format!("joiner {id}: {e}")))?;
        let entry: ServerEntry = zk
            .server_line(id)
            .parse()
            .map_err(|e| fail(format!("server line: {e}")))?;
        membership
            .add_voters(&[entry])
            .await
            .map_err(|e| fail(format!("add {id}: {e}")))?;
    }
    let up = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for id in [5, 4] {
        membership
            .remove_voters(&[ServerId(id)])
            .await
            .map_err(|e| fail(format!("remove {id}: {e}")))?;
        zk.stop(id)
            .await
            .map_err(|e| fail(format!("stop {id}: {e}")))?;
    }
    let down = started.elapsed().as_secs_f64();
    Ok((up, down))
}

async fn scale_against_the_floor(bed: &Bed, ns: &str) -> TestResult {
    let rounds: usize = std::env::var("QUORATE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    // The harness deletes the scenario's namespace afterwards; each round has its own.
    namespace(&bed.client().await?, ns).await?;
    println!("\nscale steps, {rounds} round(s); floor: the same steps by hand on plain ZooKeeper");
    println!(
        "{:<6} {:>10} {:>10} {:>7} {:>10} {:>10} {:>7}  leaders while growing",
        "round", "3->5 (s)", "floor (s)", "ratio", "5->3 (s)", "floor (s)", "ratio"
    );
    for round in 1..=rounds {
        // Alternated, so that neither always runs on a warmer machine.
        let ((up, down), (floor_up, floor_down)) = if round % 2 == 1 {
            let floor = by_hand().await?;
            (
                with_the_operator(bed, &format!("{ns}-{round}")).await?,
                floor,
            )
        } else {
            let operator = with_the_operator(bed, &format!("{ns}-{round}")).await?;
            (operator, by_hand().await?)
        };
        println!(
            "{round:<6} {:>10.1} {floor_up:>10.1} {:>7.2} {:>10.1} {floor_down:>10.1} {:>7.2}  {:?}{}",
            up.seconds,
            up.seconds / floor_up,
            down.seconds,
            down.seconds / floor_down,
            up.leaders,
            if up.leaders.len() == 1 {
                ""
            } else {
                " (a leader change)"
            },
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::run(
        "bench",
        vec![("scale_3_5_3_against_the_floor", |b, n| {
            Box::pin(scale_against_the_floor(b, n))
        })],
        common::agent_running_quorate_images(),
        vec![],
    )
}
