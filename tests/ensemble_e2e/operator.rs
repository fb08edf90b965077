//! End-to-end tier, the operator as an operator: leader failover in the middle of a step, the
//! operator SIGKILLed at named failpoints inside a step (a `failpoints` build), a rolling
//! upgrade of the operator while an ensemble runs, a permission taken away from the chart's
//! role, and the operator's endpoints and logs. The operators run as processes with a
//! token of the chart's ServiceAccount (see `common`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, PostParams};
use libtest_mimic::Failed;
use quorate::crd::MasterEnsemble;

use super::{create_and_converge, member_pods, server_ids, status_of};
use crate::common::judges::Judges;
use crate::common::sampler::MemberView;
use crate::common::*;

/// Waits until operator `identity` answers /readyz with 200.
async fn ready(bed: &Bed, identity: &str) -> TestResult {
    wait_for(
        &format!("{identity} to be ready"),
        Duration::from_secs(30),
        async || {
            Ok(bed
                .operator_get(identity, "/readyz")
                .await
                .is_ok_and(|(s, _)| s == 200))
        },
    )
    .await
}

/// The current Lease holder, which must be one of the running operators.
async fn leader(bed: &Bed) -> Result<String, Failed> {
    let holder = bed
        .lease_holder()
        .await?
        .ok_or_else(|| fail("nobody holds the leader Lease"))?;
    if bed.operator_addr(&holder).is_none() {
        return Err(fail(format!(
            "the Lease holder {holder} is not a running operator"
        )));
    }
    Ok(holder)
}

/// How many times quorate published `action` in `ns`.
async fn published(bed: &Bed, ns: &str, action: &str) -> Result<i32, Failed> {
    Ok(event_counts(&bed.client().await?, ns)
        .await?
        .iter()
        .filter(|(a, _)| a == action)
        .map(|(_, n)| n)
        .sum())
}

/// Kill the Lease holder right after it claimed add-voter/4 (status shows the claim); the
/// standby takes the Lease, resumes that claim instead of claiming the step again, and
/// finishes the scale-up with members 1 to 5 and no other.
pub async fn a_standby_takes_over_a_step_its_leader_left_mid_way_and_does_not_repeat_it(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let (client, api) = create_and_converge(bed, ns, ensemble("masters", 3)).await?;
    let old = leader(bed).await?;
    let standby = bed.start_operator()?;
    ready(bed, &standby).await?;
    if leader(bed).await? != old || bed.metric(&standby, "quorate_leader").await? != Some(0.0) {
        return Err(fail("a new process must stand by while the Lease is held"));
    }
    set_replicas(&api, "masters", 5).await?;
    let start = Instant::now();
    let claim = loop {
        if let Some(c) = status_of(&api).await?.in_flight
            && c.id == "add-voter/4"
        {
            break c;
        }
        if start.elapsed() > Duration::from_secs(180) {
            return Err(fail(format!(
                "add-voter/4 was never claimed\noperator log:\n{}",
                bed.operator_log_tail()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Only the holder reconciles: the standby has not run a single pass.
    let standby_passes = bed
        .metric(
            &standby,
            "quorate_reconcile_duration_seconds_count{kind=\"MasterEnsemble\"}",
        )
        .await?;
    bed.kill_operator_named(&old);
    if standby_passes.is_some() {
        return Err(fail(format!(
            "the standby reconciled while the leader held the Lease: {standby_passes:?} passes"
        )));
    }
    let joiner_uid = |pods: &[k8s_openapi::api::core::v1::Pod]| {
        pods.iter()
            .find(|p| p.metadata.name.as_deref() == Some("masters-4"))
            .and_then(|p| p.metadata.uid.clone())
    };
    let uid_before = joiner_uid(&member_pods(&client, ns).await?);
    wait_for(
        "the standby to take the Lease",
        Duration::from_secs(30),
        async || Ok(bed.lease_holder().await?.as_deref() == Some(standby.as_str())),
    )
    .await?;
    wait_converged(bed, &api, "masters", 5, Duration::from_secs(300)).await?;

    let pods = member_pods(&client, ns).await?;
    let ids = server_ids(&pods);
    if ids != (1..=5).collect() {
        return Err(fail(format!(
            "expected members 1..5 and no other, got {ids:?}"
        )));
    }
    if uid_before.is_none() || joiner_uid(&pods) != uid_before {
        return Err(fail(format!(
            "member 4's Pod must be the one created before the failover ({uid_before:?})"
        )));
    }
    // The standby claimed only add-voter/5 itself: it resumed add-voter/4.
    let started_by_standby = bed
        .metric(
            &standby,
            "quorate_steps_total{step=\"add-voter\",outcome=\"started\"}",
        )
        .await?;
    let started_events = published(bed, ns, "Started/add-voter/4").await?;
    if started_by_standby != Some(1.0) || started_events > 1 {
        return Err(fail(format!(
            "add-voter/4 (claimed at {}) was started again: the standby started {started_by_standby:?} add-voter steps, {started_events} Started/add-voter/4 Events",
            claim.started_at.0
        )));
    }
    if published(bed, ns, "Completed/add-voter/4").await? < 1 {
        return Err(fail("add-voter/4 never completed"));
    }
    if bed.metric(&standby, "quorate_leader").await? != Some(1.0) {
        return Err(fail("the new leader must report quorate_leader 1"));
    }
    Ok(())
}

/// What must not change while the operator is replaced: each member Pod's uid and restarts,
/// the committed configuration and the last step.
async fn fingerprint(
    bed: &Bed,
    ns: &str,
    api: &Api<MasterEnsemble>,
) -> Result<(BTreeMap<String, (String, i32)>, String), Failed> {
    let client = bed.client().await?;
    let pods = member_pods(&client, ns)
        .await?
        .into_iter()
        .map(|p| {
            let restarts = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
            (
                p.metadata.name.unwrap_or_default(),
                (p.metadata.uid.unwrap_or_default(), restarts),
            )
        })
        .collect();
    let s = status_of(api).await?;
    let summary = format!(
        "config {:?} voters {:?} last step {:?} next id {:?}",
        s.config_version,
        s.voters,
        s.last_step.map(|l| (l.id, l.started_at.0)),
        s.next_server_id
    );
    Ok((pods, summary))
}

/// A rolling upgrade of the operator (the Deployment's new Pod starts, the old one gets
/// SIGTERM): the old leader stops cleanly and releases the Lease, the new process takes it and
/// reconciles, and no member is restarted and no step taken or repeated. The new process's
/// /healthz, /readyz and /metrics answer, and its JSON log names the ensemble on each pass.
pub async fn a_rolling_operator_upgrade_repeats_no_step_and_restarts_no_member(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let (client, api) = create_and_converge(bed, ns, ensemble("masters", 3)).await?;
    let old = leader(bed).await?;
    let before = fingerprint(bed, ns, &api).await?;
    let started_before = event_counts(&client, ns)
        .await?
        .iter()
        .filter(|(a, _)| a.starts_with("Started/"))
        .count();
    let new = bed.start_operator()?;
    ready(bed, &new).await?;
    if !bed.stop_operator_named(&old, Duration::from_secs(25)) {
        return Err(fail(format!(
            "the old operator {old} did not stop cleanly on SIGTERM\n{}",
            bed.operator_log_tail()
        )));
    }
    wait_for(
        "the new operator to take the Lease",
        Duration::from_secs(30),
        async || Ok(bed.lease_holder().await?.as_deref() == Some(new.as_str())),
    )
    .await?;
    let voters =
        format!("quorate_ensemble_voters{{ensemble_namespace=\"{ns}\",ensemble=\"masters\"}}");
    wait_for(
        "the new leader to reconcile the ensemble",
        Duration::from_secs(60),
        async || Ok(bed.metric(&new, &voters).await? == Some(3.0)),
    )
    .await?;
    // Several more passes (a pass every 2 s while settling, at most 30 s once converged).
    let count = "quorate_reconcile_duration_seconds_count{kind=\"MasterEnsemble\"}";
    let passes = bed.metric(&new, count).await?.unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = fingerprint(bed, ns, &api).await?;
    if after != before {
        return Err(fail(format!(
            "the upgrade changed the ensemble:\nbefore {before:?}\nafter  {after:?}"
        )));
    }
    let started_after = event_counts(&client, ns)
        .await?
        .iter()
        .filter(|(a, _)| a.starts_with("Started/"))
        .count();
    if started_after != started_before {
        return Err(fail(format!(
            "the new operator started {} steps on a converged ensemble",
            started_after - started_before
        )));
    }
    if bed.metric(&new, count).await?.unwrap_or(0.0) < passes.max(1.0) {
        return Err(fail("the new leader stopped reconciling"));
    }
    for path in ["/healthz", "/readyz"] {
        let (code, _) = bed.operator_get(&new, path).await?;
        if code != 200 {
            return Err(fail(format!("{path} of the leader answered {code}")));
        }
    }
    // The families with a series by now (a family without one, such as the step outcomes of a
    // leader that took no step, is not exposed).
    let (_, text) = bed.operator_get(&new, "/metrics").await?;
    for family in [
        "quorate_reconcile_duration_seconds",
        "quorate_ensemble_members",
        "quorate_ensemble_voters",
        "quorate_ensemble_ready_members",
        "quorate_step_in_flight_age_seconds",
        "quorate_leader",
    ] {
        if !text.contains(&format!("# TYPE {family} ")) {
            return Err(fail(format!("/metrics lacks {family}:\n{text}")));
        }
    }
    let age = format!(
        "quorate_step_in_flight_age_seconds{{ensemble_namespace=\"{ns}\",ensemble=\"masters\"}}"
    );
    if metric_value(&text, &age) != Some(0.0) {
        return Err(fail(format!(
            "a converged ensemble has no step in flight: {text}"
        )));
    }
    // Every line is JSON; every pass over the ensemble names it.
    let log = bed.operator_log(&new);
    let mut passes_logged = 0;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| fail(format!("a log line that is not JSON ({e}): {line}")))?;
        if v["fields"]["message"] == "planned" {
            passes_logged += 1;
            if v["span"]["ensemble"].as_str().is_none() {
                return Err(fail(format!(
                    "a pass's log line without the ensemble: {line}"
                )));
            }
        }
    }
    if passes_logged == 0 {
        return Err(fail("the new leader logged no pass"));
    }
    Ok(())
}

/// Take the PodDisruptionBudget rule out of the chart's ClusterRole: the operator reports the
/// refused permission on the ensemble (a Warning Event, the status message, an error log line,
/// `quorate_reconcile_errors_total{category="forbidden"}`) and creates no member; give it back
/// and the ensemble is created.
pub async fn a_removed_permission_is_reported_on_the_ensemble_and_granting_it_recovers(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let client = bed.client().await?;
    namespace(&client, ns).await?;
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let original = roles
        .get(RELEASE)
        .await
        .map_err(|e| fail(format!("the chart's ClusterRole: {e}")))?;
    let mut cut = original.clone();
    if let Some(rules) = cut.rules.as_mut() {
        rules.retain(|r| {
            !r.resources
                .as_ref()
                .is_some_and(|res| res.iter().any(|x| x == "poddisruptionbudgets"))
        });
    }
    roles
        .replace(RELEASE, &PostParams::default(), &cut)
        .await
        .map_err(|e| fail(format!("cut the ClusterRole: {e}")))?;
    let api: Api<MasterEnsemble> = Api::namespaced(client.clone(), ns);
    let checked = async {
        let holder = leader(bed).await?;
        api.create(&PostParams::default(), &ensemble("masters", 1))
            .await
            .map_err(|e| fail(format!("create: {e}")))?;
        wait_for(
            "a Forbidden Warning Event",
            Duration::from_secs(60),
            async || {
                Ok(events(&client, ns).await?.iter().any(|(reason, _, note)| {
                    reason == "Forbidden"
                        && note.contains("poddisruptionbudgets")
                        && note.contains("charts/quorate")
                }))
            },
        )
        .await?;
        let message = status_of(&api).await?.message.unwrap_or_default();
        if !message.contains("forbidden") || !message.contains("poddisruptionbudgets") {
            return Err(fail(format!(
                "the status message must name the refused permission: {message:?}"
            )));
        }
        let errors = bed
            .metric(
                &holder,
                "quorate_reconcile_errors_total{kind=\"MasterEnsemble\",category=\"forbidden\"}",
            )
            .await?;
        if errors.is_none_or(|n| n < 1.0) {
            return Err(fail(format!(
                "forbidden errors are not counted: {errors:?}"
            )));
        }
        if !bed
            .operator_log(&holder)
            .contains("reconcile refused by RBAC")
        {
            return Err(fail("no error line in the operator's log"));
        }
        if !member_pods(&client, ns).await?.is_empty() {
            return Err(fail("a member was created without its PodDisruptionBudget"));
        }
        Ok(())
    }
    .await;
    let mut back = original.clone();
    back.metadata.resource_version = None;
    roles
        .replace(RELEASE, &PostParams::default(), &back)
        .await
        .map_err(|e| fail(format!("restore the ClusterRole: {e}")))?;
    checked?;
    wait_converged(bed, &api, "masters", 1, Duration::from_secs(180)).await
}

/// Every member of `masters` in `ns` as the API server and its own AdminServer show it (the
/// judges' sampler; no quorate code involved).
async fn members_seen(
    client: &kube::Client,
    ns: &str,
    http: &reqwest::Client,
) -> Result<BTreeMap<u32, MemberView>, Failed> {
    crate::common::judges::sample(client, ns, "masters", http)
        .await
        .ok_or_else(|| fail("list the member Pods"))
}

/// The configuration ZooKeeper's leader serves.
fn leader_config(seen: &BTreeMap<u32, MemberView>) -> Option<BTreeSet<u32>> {
    seen.values()
        .filter(|m| m.leader)
        .find_map(|m| m.config.clone())
}

/// Waits until operator `armed` logs that it reached `failpoint`.
async fn reached(bed: &Bed, armed: &str, failpoint: &str) -> TestResult {
    let line = format!("failpoint {failpoint} reached");
    wait_for(&line, Duration::from_secs(300), async || {
        Ok(bed.operator_log(armed).contains(&line))
    })
    .await
    .map_err(|e| fail(format!("{e:?}\noperator log:\n{}", bed.operator_log_tail())))
}

/// Every member as ZooKeeper and the API server show it while operator `armed` stands at its
/// failpoint; then `armed` is SIGKILLed there. Also returns the HTTP client the members were
/// read with.
async fn seen_then_killed(
    bed: &Bed,
    client: &kube::Client,
    ns: &str,
    armed: &str,
) -> Result<(BTreeMap<u32, MemberView>, reqwest::Client), Failed> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let seen = members_seen(client, ns, &http).await?;
    bed.kill_operator_named(armed);
    Ok((seen, http))
}

/// Where an operator is stopped inside a step: the failpoint, the scale it stops in, and how
/// many member Pods and voters ZooKeeper and the API server show while it stands there.
struct StopInside {
    failpoint: &'static str,
    from: i32,
    to: i32,
    pods: usize,
    voters: usize,
}

/// Scales `from` -> `to` under an operator armed with `failpoint`; once it logs that it reached
/// it, checks from ZooKeeper and the API server that it stands where the failpoint says,
/// SIGKILLs it there, and starts a fresh operator without failpoints. Judged without quorate's
/// code (`Judges`: one voter change at a time, synced before it votes, removed before its Pod
/// goes, removed ids never back, no acknowledged write lost, a linearizable history, `/before`
/// intact) and, at the end, from every member's AdminServer: `to` members with exactly the
/// expected server ids (a scale-up ends with 1..=to and each joiner added once; a scale-down
/// removes `from - to` voters and adds none), every member serving the configuration of exactly
/// them under one leader, and no member's Pod replaced since the stop (no second joiner).
async fn an_operator_killed_inside_a_step_leaves_it_to_its_successor(
    bed: &Bed,
    ns: &str,
    at: StopInside,
) -> TestResult {
    let (client, api) = create_and_converge(bed, ns, ensemble("masters", at.from)).await?;
    let judges = Judges::start(bed, ns, "masters").await?;

    // Only the armed operator may act on the change.
    bed.kill_operator();
    set_replicas(&api, "masters", at.to).await?;
    let armed =
        bed.start_operator_with_env(&[(quorate::controller::failpoints::ENV, at.failpoint)])?;
    reached(bed, &armed, at.failpoint).await?;
    let (at_stop, http) = seen_then_killed(bed, &client, ns, &armed).await?;
    let pods_at_stop: BTreeSet<u32> = at_stop.keys().copied().collect();
    let config_at_stop = leader_config(&at_stop);
    if pods_at_stop.len() != at.pods
        || config_at_stop.as_ref().map(BTreeSet::len) != Some(at.voters)
    {
        return Err(fail(format!(
            "at {} expected {} member Pods and {} voters, ZooKeeper and the API server show Pods {pods_at_stop:?} and configuration {config_at_stop:?}",
            at.failpoint, at.pods, at.voters
        )));
    }
    // The step is claimed and its completion not yet recorded.
    let in_flight = status_of(&api).await?.in_flight.map(|c| c.id);
    if in_flight.as_deref().and_then(|id| id.split('/').next()) != at.failpoint.split('.').next() {
        return Err(fail(format!(
            "stopped at {} with {in_flight:?} claimed",
            at.failpoint
        )));
    }

    let successor = bed.start_operator()?;
    wait_converged(bed, &api, "masters", at.to, Duration::from_secs(300)).await?;
    let end = members_seen(&client, ns, &http).await?;
    let verdict = judges.finish(bed).await?;

    let ids: BTreeSet<u32> = end.keys().copied().collect();
    let known: BTreeSet<u32> = (1..=at.to.max(at.from) as u32).collect();
    let leaders = end.values().filter(|m| m.leader).count();
    let scale_up = at.to > at.from;
    if ids.len() != at.to as usize
        || !ids.is_subset(&known)
        || (scale_up && ids != known)
        || leaders != 1
        || end
            .values()
            .any(|m| !m.serving || m.deleting || m.config.as_ref() != Some(&ids))
    {
        return Err(fail(format!(
            "expected {} members of {known:?}, all serving the configuration of exactly themselves under one leader: {end:?}",
            at.to
        )));
    }
    let (added, removed): (BTreeSet<u32>, usize) = if scale_up {
        ((at.from as u32 + 1..=at.to as u32).collect(), 0)
    } else {
        (BTreeSet::new(), (at.from - at.to) as usize)
    };
    let from_config: BTreeSet<u32> = (1..=at.from as u32).collect();
    if verdict.added != added
        || verdict.removed.len() != removed
        || verdict.configs.first() != Some(&from_config)
        || verdict.configs.last() != Some(&ids)
    {
        return Err(fail(format!(
            "ZooKeeper's configurations must go from {from_config:?} to {ids:?}, adding {added:?} and removing {removed}: {:?} (added {:?}, removed {:?})",
            verdict.configs, verdict.added, verdict.removed
        )));
    }
    let replaced: Vec<u32> = at_stop
        .iter()
        .filter(|(id, s)| end.get(id).is_some_and(|e| e.uid != s.uid))
        .map(|(id, _)| *id)
        .collect();
    if !replaced.is_empty() {
        return Err(fail(format!(
            "the Pods of members {replaced:?} were replaced after the stop: a second joiner"
        )));
    }
    eprintln!(
        "{ns}: stopped at {} (Pods {pods_at_stop:?}, configuration {config_at_stop:?}), {successor} finished; configurations {:?}",
        at.failpoint, verdict.configs
    );
    Ok(())
}

/// Stopped after add-voter/4 is claimed (member 4 running, not yet a voter).
pub async fn an_operator_killed_after_claiming_add_voter_finishes_the_scale_up_once(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    an_operator_killed_inside_a_step_leaves_it_to_its_successor(
        bed,
        ns,
        StopInside {
            failpoint: quorate::controller::failpoints::ADD_VOTER_AFTER_CLAIM,
            from: 3,
            to: 5,
            pods: 4,
            voters: 3,
        },
    )
    .await
}

/// Stopped after ZooKeeper committed member 4 as a voter, before the operator recorded it.
pub async fn an_operator_killed_after_add_voter_committed_finishes_the_scale_up_once(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    an_operator_killed_inside_a_step_leaves_it_to_its_successor(
        bed,
        ns,
        StopInside {
            failpoint: quorate::controller::failpoints::ADD_VOTER_AFTER_EFFECT,
            from: 3,
            to: 5,
            pods: 4,
            voters: 4,
        },
    )
    .await
}

/// Stopped after member 4's Pod is created, before the operator recorded it.
pub async fn an_operator_killed_after_creating_a_member_finishes_the_scale_up_once(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    an_operator_killed_inside_a_step_leaves_it_to_its_successor(
        bed,
        ns,
        StopInside {
            failpoint: quorate::controller::failpoints::CREATE_MEMBER_AFTER_EFFECT,
            from: 3,
            to: 5,
            pods: 4,
            voters: 3,
        },
    )
    .await
}

/// Stopped after ZooKeeper committed the first voter's removal, its Pod still running.
pub async fn an_operator_killed_after_remove_voter_committed_finishes_the_scale_down_once(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    an_operator_killed_inside_a_step_leaves_it_to_its_successor(
        bed,
        ns,
        StopInside {
            failpoint: quorate::controller::failpoints::REMOVE_VOTER_AFTER_EFFECT,
            from: 5,
            to: 3,
            pods: 5,
            voters: 4,
        },
    )
    .await
}

/// Found by the fault campaign (seed 2026): a member's disk is lost while the member is down
/// in the middle of a roll. Here the operator is stopped at `restart-member.after-pod` (the
/// first member's old Pod deleted, its new one not yet created), the member's volume is wiped
/// while it has no Pod, and a fresh operator resumes the step: the new Pod, under the new spec,
/// refuses to start without the voter's data. That says nothing about the spec, so the member
/// must be replaced with a fresh id and the roll must go on, instead of stopping the roll as
/// if the new spec were at fault. Judged from ZooKeeper and the API server (`Judges`, no
/// acknowledged write lost) and, at the end, from every member's AdminServer.
pub async fn a_disk_lost_while_its_member_restarts_into_a_new_spec_is_replaced_and_the_roll_goes_on(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let (client, api) = create_and_converge(bed, ns, ensemble("masters", 3)).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let before = members_seen(&client, ns, &http).await?;
    let old_hashes: BTreeSet<Option<String>> =
        before.values().map(|m| m.spec_hash.clone()).collect();
    let judges = Judges::start(bed, ns, "masters").await?;

    // Only the armed operator may act on the spec change.
    bed.kill_operator();
    let patch = serde_json::json!({"spec": {"config": {"tickTime": 600}}});
    api.patch(
        "masters",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .map_err(|e| fail(e.to_string()))?;
    let failpoint = quorate::controller::failpoints::RESTART_MEMBER_AFTER_POD;
    let armed =
        bed.start_operator_with_env(&[(quorate::controller::failpoints::ENV, failpoint)])?;
    reached(bed, &armed, failpoint).await?;
    bed.kill_operator_named(&armed);
    let claimed = status_of(&api).await?.in_flight.map(|c| c.id);
    let victim: u32 = claimed
        .as_deref()
        .and_then(|id| id.strip_prefix("restart-member/"))
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| fail(format!("stopped at {failpoint} with {claimed:?} claimed")))?;
    judges.excuse(victim);

    // The disk is lost while the member has no Pod.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let name = format!("masters-{victim}");
    wait_for(
        "the restarted member's old Pod to go",
        Duration::from_secs(120),
        async || {
            Ok(pods
                .get_opt(&name)
                .await
                .map_err(|e| fail(e.to_string()))?
                .is_none())
        },
    )
    .await?;
    with_agent(bed, |a| {
        a.delete_volume(ns, &format!("data-masters-{victim}"))
    })?;

    let successor = bed.start_operator()?;
    let mut end = BTreeMap::new();
    wait_for(
        "the lost member replaced and every member rolled",
        Duration::from_secs(420),
        async || {
            end = members_seen(&client, ns, &http).await?;
            let ids: BTreeSet<u32> = end.keys().copied().collect();
            let hashes: BTreeSet<Option<String>> =
                end.values().map(|m| m.spec_hash.clone()).collect();
            Ok(ids.len() == 3
                && !ids.contains(&victim)
                && hashes.len() == 1
                && hashes.is_disjoint(&old_hashes)
                && end.values().filter(|m| m.leader).count() == 1
                && end
                    .values()
                    .all(|m| m.serving && !m.deleting && m.config.as_ref() == Some(&ids)))
        },
    )
    .await
    .map_err(|e| {
        fail(format!(
            "{e:?}\nmembers: {end:?}\noperator log:\n{}",
            bed.operator_log_tail()
        ))
    })?;
    let verdict = judges.finish(bed).await?;
    let fresh: Vec<u32> = verdict.added.iter().copied().collect();
    if !verdict.removed.contains(&victim) || fresh.len() != 1 || fresh[0] <= 3 {
        return Err(fail(format!(
            "expected {victim} removed and one fresh id added: removed {:?}, added {:?}",
            verdict.removed, verdict.added
        )));
    }
    eprintln!(
        "{ns}: member {victim} lost its disk mid-roll; {successor} replaced it with {} and rolled on; configurations {:?}",
        fresh[0], verdict.configs
    );
    Ok(())
}

/// Found by the fault campaign (seed 2028): a failed voter's removal commits, the operator is
/// SIGKILLed before it records it, and the quorum is lost before any operator reads the new
/// configuration. The next operator, unable to read the live configuration, must not take the
/// removed member for a voter whose Pod is missing and start it again (I4: removed ids never
/// come back). Here member 3 is paused until quorate replaces it; the armed operator stops at
/// `remove-voter.after-effect` (ZooKeeper's leader shows the configuration {1, 2}); members 1
/// and 2 are paused, so no member serves; a fresh operator takes over. Judged from the API
/// server and the members (no Pod `masters-3` while the quorum is lost, then none ever, under
/// the judges' sampler) and, once 1 and 2 resume, the ensemble converges on three members
/// without member 3.
pub async fn a_removal_committed_before_a_quorum_loss_never_brings_the_member_back(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let (client, api) = create_and_converge(bed, ns, ensemble("masters", 3)).await?;
    let judges = Judges::start(bed, ns, "masters").await?;
    bed.kill_operator();
    let failpoint = quorate::controller::failpoints::REMOVE_VOTER_AFTER_EFFECT;
    let armed =
        bed.start_operator_with_env(&[(quorate::controller::failpoints::ENV, failpoint)])?;
    with_agent(bed, |a| a.pause(ns, "masters-3"))?;
    reached(bed, &armed, failpoint).await?;
    let (at_stop, _) = seen_then_killed(bed, &client, ns, &armed).await?;
    let config_at_stop = leader_config(&at_stop);
    // Fenced: its Pod gone, or terminating (a paused process dies only when the node kills
    // it, and the removal does not wait for that: quorate's `is_fenced`).
    let live_pod_3 = at_stop.get(&3).is_some_and(|m| !m.deleting);
    if config_at_stop != Some(BTreeSet::from([1, 2])) || live_pod_3 {
        return Err(fail(format!(
            "at {failpoint} expected member 3 fenced and removed: Pods {:?}, configuration {config_at_stop:?}",
            at_stop
                .iter()
                .map(|(id, m)| format!("{id}{}", if m.deleting { " (terminating)" } else { "" }))
                .collect::<Vec<_>>()
        )));
    }
    // No member serves from here on.
    for pod in ["masters-1", "masters-2"] {
        with_agent(bed, |a| a.pause(ns, pod))?;
    }
    let successor = bed.start_operator()?;
    // The successor has planned under the loss once the ensemble is Blocked (old code started
    // member 3 instead, and then waited for it).
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    // A Pod `masters-3` that is not being deleted: the one the armed operator fenced may still
    // be terminating (a paused process dies when the node kills it); it was not created anew.
    let live_pod_3 = async || -> Result<bool, Failed> {
        Ok(pods
            .get_opt("masters-3")
            .await
            .map_err(|e| fail(e.to_string()))?
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none()))
    };
    wait_for(
        "the successor to block on the lost quorum, or to start member 3",
        Duration::from_secs(180),
        async || {
            let blocked =
                status_of(&api).await?.phase == Some(quorate::crd::EnsemblePhase::Blocked);
            Ok(blocked || live_pod_3().await?)
        },
    )
    .await?;
    if live_pod_3().await? {
        return Err(fail(format!(
            "{successor} created a Pod for member 3, which ZooKeeper had removed"
        )));
    }
    for pod in ["masters-1", "masters-2"] {
        with_agent(bed, |a| a.resume(ns, pod))?;
    }
    wait_converged(bed, &api, "masters", 3, Duration::from_secs(300)).await?;
    let verdict = judges.finish(bed).await?;
    let ids = server_ids(&member_pods(&client, ns).await?);
    if ids.contains(&3) || ids.len() != 3 || verdict.configs.iter().skip(1).any(|c| c.contains(&3))
    {
        return Err(fail(format!(
            "expected three members without 3: Pods {ids:?}, configurations {:?}",
            verdict.configs
        )));
    }
    eprintln!(
        "{ns}: removal of 3 committed, operator stopped, quorum lost; {successor} left 3 out; configurations {:?}",
        verdict.configs
    );
    Ok(())
}

/// The counterpart of the scenario above: a removal claimed but never sent. Member 3 is paused
/// until quorate fences it (its Pod deleted, its volume kept) and claims `remove-voter/3`; the
/// operator waits at `remove-voter.after-claim` (a failpoint that goes on after a delay) while
/// member 2 is paused, so the quorum is lost before any reconfig request can be sent. The claim
/// had recorded 3 as a member that may have left; since the reconfig never left the operator,
/// ZooKeeper certainly did not apply it, and the claim must be withdrawn: member 3 is still a
/// voter whose volume holds its data, and starting it again gives members 1 and 3 a quorum of
/// {1, 2, 3} with no write lost (found by the fault campaign, seed 2031 round 1, where the
/// ensemble stayed down, Blocked, until a person acted). Judged from ZooKeeper: members 1 and
/// 3 serve again while member 2 is still paused (before the fix quorate stayed Blocked until 2
/// came back), then the ensemble converges on three members with every acknowledged write
/// read back, a linearizable history, and member 3 never out of the configuration.
pub async fn a_removal_that_never_reached_zookeeper_is_withdrawn_and_its_member_restores_the_quorum(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    let (client, api) = create_and_converge(bed, ns, ensemble("masters", 3)).await?;
    let judges = Judges::start(bed, ns, "masters").await?;
    judges.excuse(2);
    judges.excuse(3);
    bed.kill_operator();
    let failpoint = quorate::controller::failpoints::REMOVE_VOTER_AFTER_CLAIM;
    let armed = bed.start_operator_with_env(&[(
        quorate::controller::failpoints::ENV,
        &format!("{failpoint}@20"),
    )])?;
    with_agent(bed, |a| a.pause(ns, "masters-3"))?;
    reached(bed, &armed, failpoint).await?;
    // The claim is written: 3 is recorded as a member that may have left.
    let claimed = status_of(&api).await?;
    if claimed.voters != [1, 2] {
        return Err(fail(format!(
            "at {failpoint} expected the claim to record voters [1, 2], found {:?}",
            claimed.voters
        )));
    }
    with_agent(bed, |a| a.pause(ns, "masters-2"))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    // Members 1 and 3 serve again, with 2 still paused: only member 3's return can do that.
    wait_for(
        "members 1 and 3 serving while member 2 is paused",
        Duration::from_secs(240),
        async || {
            let seen = members_seen(&client, ns, &http).await?;
            Ok([1, 3]
                .iter()
                .all(|id| seen.get(id).is_some_and(|m| m.serving)))
        },
    )
    .await
    .map_err(|e| fail(format!("{e:?}\noperator log:\n{}", bed.operator_log_tail())))?;
    if !bed.operator_log(&armed).contains("claim withdrawn") {
        return Err(fail(format!(
            "{armed} did not log the withdrawal of its claim:\n{}",
            bed.operator_log_tail()
        )));
    }
    // Member 2 has been down past replaceAfter while 1 and 3 served: quorate may have fenced
    // it (its Pod and process gone) before this resume, and then replaces it.
    if !landed(bed, |a| a.resume(ns, "masters-2"))? {
        eprintln!("{ns}: member 2 was already fenced for its replacement");
    }
    wait_converged(bed, &api, "masters", 3, Duration::from_secs(300)).await?;
    let verdict = judges.finish(bed).await?;
    if verdict.configs.iter().any(|c| !c.contains(&3)) {
        return Err(fail(format!(
            "member 3 left the configuration: {:?}",
            verdict.configs
        )));
    }
    eprintln!(
        "{ns}: remove-voter/3 claimed, quorum lost before its reconfig; claim withdrawn, 3 back; configurations {:?}",
        verdict.configs
    );
    Ok(())
}

/// The Lease holder is paused (SIGSTOP) inside create-member/4, after member 4's volume and
/// before its Pod, and stays paused past its Lease; a successor takes over and, the scale-up
/// undone meanwhile, converges back to 3 members, so no leader wants a member 4 any more. When
/// the paused process wakes, its pass goes on (its failpoint lets it go on after a delay that
/// ran out during the pause) to the step's next effect: it must not create member 4's Pod
/// before it notices it lost the Lease and exits. Judged from the API server alone: a watch on
/// the namespace's Pods from before the wake until a sentinel Pod created after the process
/// exited comes through.
pub async fn a_leader_paused_past_its_lease_inside_a_step_does_not_act_when_it_wakes(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    use futures::StreamExt as _;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher;

    let (client, api) = create_and_converge(bed, ns, ensemble("masters", 3)).await?;
    bed.kill_operator();
    let failpoint = quorate::controller::failpoints::CREATE_MEMBER_AFTER_VOLUME;
    let armed = bed.start_operator_with_env(&[(
        quorate::controller::failpoints::ENV,
        &format!("{failpoint}@10"),
    )])?;
    set_replicas(&api, "masters", 5).await?;
    reached(bed, &armed, failpoint).await?;
    if !bed.signal_operator(&armed, libc::SIGSTOP) {
        return Err(fail(format!("cannot pause {armed}")));
    }
    if bed
        .operator_log(&armed)
        .contains(&format!("failpoint {failpoint} passed"))
    {
        return Err(fail(format!(
            "{armed} went past {failpoint} before it was paused (10 s after it reached it): the machine is too slow for this scenario"
        )));
    }
    let claimed = status_of(&api).await?.in_flight.map(|c| c.id);
    if claimed.as_deref() != Some("create-member/4") {
        return Err(fail(format!(
            "paused at {failpoint} with {claimed:?} claimed"
        )));
    }
    set_replicas(&api, "masters", 3).await?;
    let successor = bed.start_operator()?;
    wait_for(
        "the successor to take the Lease",
        Duration::from_secs(60),
        async || Ok(bed.lease_holder().await?.as_deref() == Some(successor.as_str())),
    )
    .await?;
    wait_converged(bed, &api, "masters", 3, Duration::from_secs(300)).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_for(
        "member 4 to have no Pod",
        Duration::from_secs(120),
        async || {
            Ok(pods
                .get_opt("masters-4")
                .await
                .map_err(|e| fail(e.to_string()))?
                .is_none())
        },
    )
    .await?;

    // Every Pod created from here on, by name, as the API server tells it.
    let created = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let listed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = tokio::spawn({
        let (created, listed) = (created.clone(), listed.clone());
        let mut events = watcher(pods.clone(), watcher::Config::default()).boxed();
        async move {
            // Changes to the Pods there were when the watch listed (their status, say) are no
            // creations.
            let mut existing = BTreeSet::new();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::InitApply(pod)) => {
                        existing.extend(pod.metadata.uid);
                    }
                    Ok(watcher::Event::InitDone) => {
                        listed.store(true, std::sync::atomic::Ordering::SeqCst)
                    }
                    Ok(watcher::Event::Apply(pod)) => {
                        let new = pod.metadata.uid.is_some_and(|u| existing.insert(u));
                        if let (true, Ok(mut c), Some(name)) =
                            (new, created.lock(), pod.metadata.name)
                        {
                            c.push(name);
                        }
                    }
                    _ => {}
                }
            }
        }
    });
    wait_for(
        "the Pod watch to list",
        Duration::from_secs(30),
        async || Ok(listed.load(std::sync::atomic::Ordering::SeqCst)),
    )
    .await?;
    bed.signal_operator(&armed, libc::SIGCONT);
    let mut exited = false;
    wait_for(
        &format!("{armed} to notice it lost the Lease and exit"),
        Duration::from_secs(60),
        async || {
            exited |= bed.reap_operators().contains(&armed);
            Ok(exited)
        },
    )
    .await?;
    // Bound to a node that does not exist, so nothing runs it; admitted under `restricted`.
    let sentinel: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sentinel"},
        "spec": {
            "nodeName": "no-such-node",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "sentinel",
                "image": "sentinel:none",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }))
    .map_err(|e| fail(e.to_string()))?;
    pods.create(&PostParams::default(), &sentinel)
        .await
        .map_err(|e| fail(format!("create the sentinel Pod: {e}")))?;
    wait_for(
        "the sentinel Pod to come through the watch",
        Duration::from_secs(30),
        async || {
            Ok(created
                .lock()
                .map_err(|_| fail("lock"))?
                .iter()
                .any(|n| n == "sentinel"))
        },
    )
    .await?;
    watch.abort();
    let _ = pods.delete("sentinel", &Default::default()).await;
    let created: Vec<String> = created
        .lock()
        .map_err(|_| fail("lock"))?
        .iter()
        .filter(|n| *n != "sentinel")
        .cloned()
        .collect();
    if !created.is_empty() {
        return Err(fail(format!(
            "{armed} acted after it woke without the Lease: Pods created {created:?}\n{armed}'s log:\n{}",
            bed.operator_log(&armed)
        )));
    }
    Ok(())
}
