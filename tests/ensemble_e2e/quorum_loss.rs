//! End-to-end tier (real parts): a real quorum loss, where no member answers a zxid, and the
//! survivor status names for recovery. Judged from ZooKeeper's own answers read by this test
//! (each member's `srvr` while it still served), never from the operator's reasoning.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use libtest_mimic::Failed;
use quorate::crd::{EnsemblePhase, MemberRole};
use quorate_testbed::nodeagent::Cut;

use super::{create_and_converge, status_of};
use crate::common::judges::{Judges, admin_json};
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
    bed.judge
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
    let verify = bed
        .judge
        .verify(
            &member_hosts(&client, ns, "masters").await?,
            None,
            "/after-the-cut",
            40,
        )
        .await
        .map_err(|e| fail(format!("verify: {e}")))?;
    if !verify.ok {
        return Err(fail(format!(
            "writes acknowledged before the loss are missing: {verify:?}"
        )));
    }
    judges.finish(bed).await.map(drop)
}
