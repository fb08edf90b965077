//! End-to-end tier (real parts): a real quorum loss, where no member answers a zxid, and the
//! survivor status names for recovery. Judged from ZooKeeper's own answers read by this test
//! (each member's `srvr` while it still served), never from the operator's reasoning.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, PostParams};
use libtest_mimic::Failed;
use quorate::crd::{
    EnsemblePhase, EnsembleRef, MemberRole, RestoreMode, RestorePhase, RestoreSource,
    SurvivorsSource, ZkRestore, ZkRestoreSpec, ZkRestoreStatus,
};
use quorate_testbed::nodeagent::Cut;

use super::{create_and_converge, status_of};
use crate::common::judges::{Judges, admin_json, voting_view};
use crate::common::*;

/// `last_processed_zxid` from a member's own AdminServer, while it serves.
async fn served_zxid(http: &reqwest::Client, ip: &str) -> Result<u64, Failed> {
    let v = admin_json(http, ip, "srvr")
        .await
        .ok_or_else(|| fail(format!("srvr of {ip}: no answer")))?;
    v.pointer("/server_stats/last_processed_zxid")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| fail(format!("srvr of {ip} has no zxid: {v}")))
}

fn hex(z: &str) -> Option<u64> {
    u64::from_str_radix(z.trim_start_matches("0x"), 16).ok()
}

async fn probe_pods(client: &kube::Client, ns: &str) -> Result<Vec<Pod>, Failed> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=zxid-probe"))
        .await
        .map_err(|e| fail(e.to_string()))?
        .items)
}

/// A follower is cut off while the other two acknowledge more writes; then those two are cut
/// off as well. Nobody has a quorum, every member still runs, and the one that is least up to
/// date is not down. Status must name one of the two that hold the newest writes, read from
/// their volumes, never the lagging one; once the cuts heal, the probes are gone and nothing
/// acknowledged is lost.
pub async fn names_the_most_up_to_date_survivor_from_the_volumes_after_a_quorum_loss(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    // Long enough that the lagging member is not replaced while it alone is cut off (a few
    // seconds); it is also the start-up grace after which a member that does not serve counts
    // as down, so the quorum loss is declared at most a minute after the Pods were created.
    let mut spec = ensemble("masters", 3);
    spec.spec.failure.replace_after = "60s".into();
    let (client, api) = create_and_converge(bed, ns, spec).await?;
    let judges = Judges::start(bed, ns, "masters").await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let status = status_of(&api).await?;
    let addr = |id: u32| {
        status
            .members
            .iter()
            .find(|m| m.server_id == i64::from(id))
            .and_then(|m| m.address.clone())
            .ok_or_else(|| fail(format!("no address for member {id}")))
    };
    let lagging = status
        .members
        .iter()
        .find(|m| m.role == Some(MemberRole::Follower))
        .map(|m| m.server_id as u32)
        .ok_or_else(|| fail("no follower"))?;
    let others: Vec<u32> = (1..=3).filter(|id| *id != lagging).collect();

    judges.wait_recording().await?;
    judges.excuse_all();
    let lagging_zxid = served_zxid(&http, &addr(lagging)?).await?;
    with_agent(bed, |a| a.cut(ns, &format!("masters-{lagging}"), Cut::Both))?;
    // The other two go on acknowledging writes.
    let hosts = others
        .iter()
        .map(|id| addr(*id).map(|ip| format!("{ip}:2181")))
        .collect::<Result<Vec<_>, _>>()?
        .join(",");
    bed.judge_at(&hosts)
        .await?
        .write(&hosts, None, "/after-the-cut", 40)
        .await
        .map_err(|e| fail(format!("write while {lagging} is cut off: {e}")))?;
    let mut newest = 0;
    for id in &others {
        newest = newest.max(served_zxid(&http, &addr(*id)?).await?);
    }
    if newest < lagging_zxid + 40 {
        return Err(fail(format!(
            "ZooKeeper reports {newest:#x} after 40 writes on top of {lagging_zxid:#x}"
        )));
    }
    for id in &others {
        with_agent(bed, |a| a.cut(ns, &format!("masters-{id}"), Cut::Both))?;
    }

    // Status names a survivor once every volume is read.
    let mut named = None;
    let waited = wait_for(
        "status to name the survivor after the quorum loss",
        Duration::from_secs(180),
        async || {
            let s = status_of(&api).await?;
            let m = s.message.clone().unwrap_or_default();
            named = (s.phase == Some(EnsemblePhase::Blocked)
                && m.contains("recovery must start from member"))
            .then_some(s);
            Ok(named.is_some())
        },
    )
    .await;
    if let Err(e) = waited {
        let probes: Vec<String> = probe_pods(&client, ns)
            .await?
            .iter()
            .map(|p| {
                format!(
                    "{}: {:?}",
                    p.metadata.name.clone().unwrap_or_default(),
                    p.status
                )
            })
            .collect();
        return Err(fail(format!(
            "{e:?}\nprobe Pods: {probes:#?}\noperator log:\n{}",
            bed.operator_log_tail()
        )));
    }
    let s = named.ok_or_else(|| fail("no status"))?;
    let message = s.message.clone().unwrap_or_default();
    let volume = |id: u32| {
        s.members
            .iter()
            .find(|m| m.server_id == i64::from(id))
            .and_then(|m| m.volume_zxid.as_deref())
            .and_then(hex)
    };
    if others
        .iter()
        .all(|id| !message.contains(&format!("member {id},")))
    {
        return Err(fail(format!(
            "the newest writes are on members {others:?}, not on {lagging}: {message}"
        )));
    }
    // What the volumes say agrees with what ZooKeeper acknowledged: the lagging member never
    // got the writes after its cut, the others hold them.
    match volume(lagging) {
        Some(z) if z >= lagging_zxid && z < newest => {}
        other => {
            return Err(fail(format!(
                "member {lagging}'s volume zxid {other:x?} should be in [{lagging_zxid:#x}, {newest:#x})"
            )));
        }
    }
    for id in &others {
        if volume(*id).is_none_or(|z| z < newest) {
            return Err(fail(format!(
                "member {id}'s volume zxid {:x?} is older than ZooKeeper's {newest:#x}",
                volume(*id)
            )));
        }
    }
    if probe_pods(&client, ns).await?.len() != 3 {
        return Err(fail("expected one volume probe Pod per voter"));
    }

    // Heal: the quorum comes back, the probes go, nothing acknowledged is lost.
    for id in 1..=3 {
        with_agent(bed, |a| a.heal(ns, &format!("masters-{id}")))?;
    }
    wait_converged(bed, &api, "masters", 3, Duration::from_secs(180)).await?;
    wait_for(
        "the probes to be removed",
        Duration::from_secs(60),
        async || Ok(probe_pods(&client, ns).await?.is_empty()),
    )
    .await?;
    let hosts = member_hosts(&client, ns, "masters").await?;
    let verify = bed
        .judge_at(&hosts)
        .await?
        .verify(&hosts, None, "/after-the-cut", 40)
        .await
        .map_err(|e| fail(format!("verify: {e}")))?;
    if !verify.ok {
        return Err(fail(format!(
            "writes acknowledged before the loss are missing: {verify:?}"
        )));
    }
    judges.finish(bed).await.map(drop)
}

/// A survivors recovery named `name` of the ensemble `masters`.
fn survivors_recovery(name: &str) -> ZkRestore {
    ZkRestore::new(
        name,
        ZkRestoreSpec {
            ensemble_ref: EnsembleRef {
                name: "masters".into(),
            },
            source: RestoreSource {
                survivors: Some(SurvivorsSource {}),
                ..Default::default()
            },
            mode: RestoreMode::Offline,
            verify_only: false,
            allow_older: false,
        },
    )
}

/// Waits until the restore is Ready or Failed; returns its status.
async fn restore_outcome(
    api: &Api<ZkRestore>,
    name: &str,
    timeout: Duration,
) -> Result<ZkRestoreStatus, Failed> {
    let mut last = ZkRestoreStatus::default();
    let done = wait_for(
        &format!("ZkRestore {name} to finish"),
        timeout,
        async || {
            last = api
                .get_status(name)
                .await
                .map_err(|e| fail(e.to_string()))?
                .status
                .unwrap_or_default();
            Ok(matches!(
                last.phase,
                Some(RestorePhase::Ready | RestorePhase::Failed)
            ))
        },
    )
    .await;
    done.map_err(|e| fail(format!("{e:?}; last status {last:?}")))?;
    Ok(last)
}

/// ZooKeeper's own configuration, asked of every member Pod that serves: all must agree.
async fn zookeeper_voters(
    client: &kube::Client,
    ns: &str,
    http: &reqwest::Client,
) -> Result<BTreeSet<u32>, Failed> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut seen: Vec<(String, BTreeSet<u32>)> = Vec::new();
    for p in pods
        .list(&ListParams::default().labels("quorate.dev/ensemble=masters"))
        .await
        .map_err(|e| fail(e.to_string()))?
        .items
    {
        let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            continue;
        };
        let view = voting_view(http, &ip)
            .await
            .ok_or_else(|| fail(format!("no voting_view from {ip}")))?;
        seen.push((ip, view));
    }
    let first = seen
        .first()
        .map(|(_, v)| v.clone())
        .ok_or_else(|| fail("no member Pod answers"))?;
    if seen.iter().any(|(_, v)| *v != first) {
        return Err(fail(format!(
            "members disagree on the configuration: {seen:?}"
        )));
    }
    Ok(first)
}

/// A majority lost for good, recovered from the survivors. Five voters; follower `L` is cut
/// off while the rest acknowledge more writes, so `L` lags; then three members (the leader
/// among them) lose their process and their volume, leaving `L` and the up-to-date `B`, two of
/// five: no quorum, and none can come back. A ZkRestore with `source.survivors` must rebuild
/// from `B`, never from `L`: every write acknowledged before the loss (all held by `B`, as
/// `B`'s own `srvr` showed) is back, `L`'s volume is kept aside with its data, and ZooKeeper's
/// own configuration (every member's `voting_view`) grows back to five with `B` and fresh ids
/// only. Earlier, while the ensemble served, a recovery is refused and changes nothing.
///
/// The judges' writer and sampler do not run here: losing a majority for good may lose writes
/// that only the lost members held, and the rebuild drops four voters in one step by design.
/// The writes are checked by the kazoo judge instead, against what `B` held.
pub async fn recovers_from_the_most_up_to_date_survivor_after_a_majority_is_lost(
    bed: &Bed,
    ns: &str,
) -> TestResult {
    // No replacement while members are lost one by one: the loss must stay a loss.
    let mut spec = ensemble("masters", 5);
    spec.spec.failure.replace_after = "10m".into();
    let (client, api) = create_and_converge(bed, ns, spec).await?;
    let restores: Api<ZkRestore> = Api::namespaced(client.clone(), ns);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| fail(e.to_string()))?;

    // Refused while the ensemble serves: nothing is touched.
    restores
        .create(&PostParams::default(), &survivors_recovery("too-early"))
        .await
        .map_err(|e| fail(format!("create: {e}")))?;
    let early = restore_outcome(&restores, "too-early", Duration::from_secs(60)).await?;
    let message = early.message.clone().unwrap_or_default();
    if early.phase != Some(RestorePhase::Failed) || !message.contains("nothing to recover") {
        return Err(fail(format!(
            "a recovery of a serving ensemble must be refused: {early:?}"
        )));
    }
    let before = zookeeper_voters(&client, ns, &http).await?;
    if before != (1..=5).collect() {
        return Err(fail(format!(
            "the refused recovery changed the configuration: {before:?}"
        )));
    }

    let hosts = member_hosts(&client, ns, "masters").await?;
    bed.judge_at(&hosts)
        .await?
        .write(&hosts, None, "/before-the-loss", 40)
        .await
        .map_err(|e| fail(format!("write: {e}")))?;
    let status = status_of(&api).await?;
    let addr = |id: u32| {
        status
            .members
            .iter()
            .find(|m| m.server_id == i64::from(id))
            .and_then(|m| m.address.clone())
            .ok_or_else(|| fail(format!("no address for member {id}")))
    };
    let followers: Vec<u32> = status
        .members
        .iter()
        .filter(|m| m.role == Some(MemberRole::Follower))
        .map(|m| m.server_id as u32)
        .collect();
    let (lagging, best) = match followers[..] {
        [l, b, ..] => (l, b),
        _ => return Err(fail(format!("fewer than two followers: {followers:?}"))),
    };
    let lost: Vec<u32> = (1..=5).filter(|id| *id != lagging && *id != best).collect();

    let lagging_zxid = served_zxid(&http, &addr(lagging)?).await?;
    with_agent(bed, |a| a.cut(ns, &format!("masters-{lagging}"), Cut::Both))?;
    let writers = lost
        .iter()
        .chain([&best])
        .map(|id| addr(*id).map(|ip| format!("{ip}:2181")))
        .collect::<Result<Vec<_>, _>>()?
        .join(",");
    bed.judge_at(&writers)
        .await?
        .write(&writers, None, "/after-the-cut", 40)
        .await
        .map_err(|e| fail(format!("write while {lagging} is cut off: {e}")))?;
    let mut newest = 0;
    for id in &lost {
        newest = newest.max(served_zxid(&http, &addr(*id)?).await?);
    }
    wait_for(
        &format!("member {best} to hold every acknowledged write"),
        Duration::from_secs(30),
        async || Ok(served_zxid(&http, &addr(best)?).await? >= newest),
    )
    .await?;

    // Three members lose their disk and their process for good.
    for id in &lost {
        with_agent(bed, |a| a.delete_volume(ns, &format!("data-masters-{id}")))?;
        kill_and_wait_gone(bed, ns, &format!("masters-{id}")).await?;
    }
    // `L` is healed only once the three are gone and `B` itself has stopped serving: a killed
    // member still dying, or a leader `B` that has not yet noticed it lost its followers (it
    // takes ZooKeeper a few ticks), would sync `L`, and `L` would no longer lag.
    // As a person would, recover once ZooKeeper itself says the survivors have no quorum.
    let stopped_serving = async |ids: &[u32]| -> Result<bool, Failed> {
        for id in ids {
            let srvr = admin_json(&http, &addr(*id)?, "srvr").await;
            if srvr.is_some_and(|v| v.get("error").is_none_or(|e| e.is_null())) {
                return Ok(false);
            }
        }
        Ok(true)
    };
    wait_for(
        &format!("member {best} to stop serving"),
        Duration::from_secs(60),
        async || stopped_serving(&[best]).await,
    )
    .await?;
    with_agent(bed, |a| a.heal(ns, &format!("masters-{lagging}")))?;
    wait_for(
        "the survivors to stop serving",
        Duration::from_secs(60),
        async || stopped_serving(&[lagging, best]).await,
    )
    .await?;

    // From the command line, as the README says.
    let target = format!("{ns}/masters");
    let out = tokio::task::block_in_place(|| {
        bed.cli(&[
            "ensemble",
            "recover",
            &target,
            "--yes",
            "--wait",
            "--timeout",
            "5m",
            "-o",
            "json",
        ])
    })?;
    if !out.status.success() {
        return Err(fail(format!(
            "quorate ensemble recover failed: {}\noperator log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            bed.operator_log_tail()
        )));
    }
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(format!("recover -o json: {e}: {out:?}")))?;
    let recovery = printed["restore"].as_str().unwrap_or_default().to_string();
    let done = restore_outcome(&restores, &recovery, Duration::from_secs(10)).await?;
    if done.phase != Some(RestorePhase::Ready) {
        return Err(fail(format!(
            "the recovery {recovery} is not Ready: {done:?}"
        )));
    }
    // ZooKeeper's own view: back to five voters, B and fresh ids only.
    let mut after = BTreeSet::new();
    wait_for(
        "ZooKeeper's configuration to grow back to five voters",
        Duration::from_secs(300),
        async || {
            after = zookeeper_voters(&client, ns, &http)
                .await
                .unwrap_or_default();
            Ok(after.len() == 5)
        },
    )
    .await
    .map_err(|e| {
        fail(format!(
            "{e:?}; last seen {after:?}\noperator log:\n{}",
            bed.operator_log_tail()
        ))
    })?;
    wait_converged(bed, &api, "masters", 5, Duration::from_secs(120)).await?;
    let recorded: BTreeSet<u32> = status_of(&api)
        .await?
        .voters
        .iter()
        .map(|v| *v as u32)
        .collect();
    if recorded != after {
        return Err(fail(format!(
            "status records voters {recorded:?}, ZooKeeper says {after:?}"
        )));
    }
    if after.len() != 5 || !after.contains(&best) || after.iter().any(|id| *id != best && *id <= 5)
    {
        return Err(fail(format!(
            "expected member {best} and four fresh ids (> 5), ZooKeeper says {after:?}; the recovery recorded {:?}\noperator log:\n{}",
            done.members,
            bed.operator_log_tail()
        )));
    }
    // Every acknowledged write is back: B held them all; L never got the later ones.
    let hosts = member_hosts(&client, ns, "masters").await?;
    for prefix in ["/before-the-loss", "/after-the-cut"] {
        let v = bed
            .judge_at(&hosts)
            .await?
            .verify(&hosts, None, prefix, 40)
            .await
            .map_err(|e| fail(format!("verify {prefix}: {e}")))?;
        if !v.ok {
            return Err(fail(format!(
                "writes acknowledged before the loss are missing under {prefix}: {v:?}"
            )));
        }
    }
    // The lagging survivor's volume is set aside with its data, no longer the ensemble's.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let aside = pvcs
        .get(&format!("data-masters-{lagging}"))
        .await
        .map_err(|e| fail(format!("the lagging survivor's PVC is gone: {e}")))?;
    let labels = aside.metadata.labels.clone().unwrap_or_default();
    if labels.contains_key("quorate.dev/ensemble")
        || labels.get("quorate.dev/set-aside-by") != Some(&recovery)
        || aside
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| !o.is_empty())
    {
        return Err(fail(format!(
            "the lagging survivor's PVC is not set aside: {:?}",
            aside.metadata
        )));
    }
    let dir = with_agent(bed, |a| {
        Ok(a.volume_path(ns, &format!("data-masters-{lagging}")))
    })?;
    let logs = std::fs::read_dir(dir.join("data/version-2"))
        .map_err(|e| fail(format!("the set-aside volume lost its data: {e}")))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("log."))
        .count();
    if logs == 0 {
        return Err(fail("the set-aside volume holds no transaction log"));
    }
    // Status agrees with what ZooKeeper said before the loss.
    let zxid_of = |id: u32| {
        done.members
            .iter()
            .find(|m| m.server_id == i64::from(id))
            .and_then(|m| m.zxid.as_deref())
            .and_then(hex)
    };
    match (zxid_of(lagging), zxid_of(best)) {
        (Some(l), Some(b)) if l >= lagging_zxid && l < newest && b >= newest => {}
        other => {
            return Err(fail(format!(
                "the survivors' zxids {other:x?} do not match ZooKeeper's ({newest:#x} newest)"
            )));
        }
    }
    // It takes writes again.
    bed.judge_at(&hosts)
        .await?
        .write(&hosts, None, "/after-the-recovery", 20)
        .await
        .map_err(|e| fail(format!("write after the recovery: {e}")))?;
    let v = bed
        .judge_at(&hosts)
        .await?
        .verify(&hosts, None, "/after-the-recovery", 20)
        .await
        .map_err(|e| fail(format!("verify: {e}")))?;
    if v.ok {
        Ok(())
    } else {
        Err(fail(format!(
            "writes after the recovery are missing: {v:?}"
        )))
    }
}
