//! Leader election on a coordination.k8s.io Lease (kube-lease-manager): of several operator
//! processes only the Lease's holder runs the controllers.
//!
//! A standby waits for the Lease. The leader renews it `grace` seconds before it expires; when
//! a renewal fails or another process holds the Lease, the leader stops its controllers at once
//! (dropping them abandons the pass at its next await point) and the process exits with an
//! error, so that it never acts on a Lease it may have lost. An abandoned step is safe: the
//! claim in status is a compare-and-set, each step is idempotent, and the next leader resumes
//! the claimed step instead of starting another (the status claim is the second guard).
//! SIGTERM or SIGINT stops the controllers after their current pass and releases the Lease,
//! so a standby takes over without waiting for it to expire.
//!
//! Stopping at the next await point is not enough for a process that was paused (SIGSTOP, a
//! long garbage-collection-like stall, a frozen VM) past the Lease's expiry: on waking, a pass
//! in flight would carry on with its step before the Lease watcher notices. So a pass asks the
//! [`LeaseFence`] right before each effect on members (a Pod or volume created or deleted, a
//! reconfig): it reads the Lease and acts only if this process is still its holder and the
//! last renewal is younger than the Lease's duration less `grace` (the clock skew tolerated),
//! by this process's own clock. What remains is a pause between that read and the effect.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tracing::{error, info, warn};

use super::Error;
use crate::metrics::Metrics;
use crate::serve::Health;

/// Where the Lease is, who this process is, and its timings.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This process's identity (its Pod's name in a cluster): the Lease's holderIdentity.
    pub identity: String,
    /// How long the Lease is valid after a renewal, in seconds.
    pub duration_seconds: u64,
    /// How long before expiry the leader renews, in seconds (also the clock skew tolerated).
    pub grace_seconds: u64,
}

impl LeaseOptions {
    /// Refuses timings the Lease cannot work with.
    pub fn validate(&self) -> Result<(), String> {
        if self.grace_seconds == 0 || self.grace_seconds >= self.duration_seconds {
            return Err(format!(
                "--lease-grace-seconds ({}) must be at least 1 and less than --lease-duration-seconds ({})",
                self.grace_seconds, self.duration_seconds
            ));
        }
        if self.identity.is_empty() {
            return Err("the leader-election identity (--identity or POD_NAME) is empty".into());
        }
        Ok(())
    }
}

/// Whether the Lease (its spec, `None` when it does not exist) lets `identity` act at `now`:
/// it holds it, and the last renewal plus the Lease's duration less `grace_seconds` is still
/// ahead. `Err` says why not.
pub fn lease_lets_act(
    spec: Option<&LeaseSpec>,
    identity: &str,
    grace_seconds: u64,
    now: Timestamp,
) -> Result<(), String> {
    let Some(spec) = spec else {
        return Err("the leader Lease does not exist".into());
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder != identity {
        return Err(format!(
            "the leader Lease is held by {holder:?}, not by this process ({identity:?})"
        ));
    }
    let (Some(renewed), Some(duration)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return Err("the leader Lease has no renewTime or leaseDurationSeconds".into());
    };
    let margin = i64::from(duration) - i64::try_from(grace_seconds).unwrap_or(i64::MAX);
    let until = renewed
        .0
        .checked_add(jiff::SignedDuration::from_secs(margin))
        .unwrap_or(renewed.0);
    if now >= until {
        return Err(format!(
            "the leader Lease was last renewed at {} and may have expired (valid here until {until}, now {now})",
            renewed.0
        ));
    }
    Ok(())
}

/// Reads the leader Lease right before an effect, so that a process that lost it while paused
/// does not act once more (see the module doc).
#[derive(Clone)]
pub struct LeaseFence {
    api: Api<Lease>,
    opts: LeaseOptions,
}

impl LeaseFence {
    /// The fence of the Lease described by `opts`.
    pub fn new(client: Client, opts: &LeaseOptions) -> LeaseFence {
        LeaseFence {
            api: Api::namespaced(client, &opts.namespace),
            opts: opts.clone(),
        }
    }

    /// `Ok` when this process may act now; [`Error::Lease`] when it no longer holds the Lease
    /// or cannot tell.
    pub async fn check(&self) -> Result<(), Error> {
        let lease = self.api.get_opt(&self.opts.name).await.map_err(|e| {
            Error::Lease(format!(
                "reading the leader Lease {}/{} before acting: {e}",
                self.opts.namespace, self.opts.name
            ))
        })?;
        lease_lets_act(
            lease.as_ref().and_then(|l| l.spec.as_ref()),
            &self.opts.identity,
            self.opts.grace_seconds,
            Timestamp::now(),
        )
        .map_err(|why| {
            warn!(reason = %why, "not acting: this process may no longer lead");
            Error::Lease(why)
        })
    }
}

fn lease_error(what: &str) -> impl FnOnce(kube_lease_manager::LeaseManagerError) -> Error + '_ {
    move |e| Error::Lease(format!("{what}: {e}"))
}

/// Resolves when the process is asked to stop (SIGTERM or SIGINT).
pub async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Waits for this process to hold the Lease. `None` when asked to stop first.
async fn acquire(manager: &LeaseManager, opts: &LeaseOptions) -> Result<Option<()>, Error> {
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(None),
            changed = manager.changed() => match changed {
                Ok(true) => return Ok(Some(())),
                Ok(false) => {}
                Err(e) => {
                    warn!(lease = %opts.name, error = %e, "cannot read the leader Lease; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }
}

/// Resolves when this process no longer holds the Lease, or cannot tell that it does.
async fn lost(manager: &LeaseManager) -> String {
    loop {
        match manager.changed().await {
            Ok(true) => {}
            Ok(false) => return "another process holds the leader Lease".into(),
            Err(e) => return format!("renewing the leader Lease failed: {e}"),
        }
    }
}

/// Runs `work` while this process holds the Lease described by `opts`; returns when `work`
/// returns (it stops on SIGTERM), when asked to stop while standing by, or with
/// [`Error::Lease`] when the Lease is lost.
pub async fn run_as_leader<F, Fut>(
    client: Client,
    opts: &LeaseOptions,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    work: F,
) -> Result<(), Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let manager = LeaseManagerBuilder::new(client, &opts.name)
        .with_namespace(&opts.namespace)
        .with_identity(&opts.identity)
        .with_duration(opts.duration_seconds)
        .with_grace(opts.grace_seconds)
        .build()
        .await
        .map_err(lease_error("open the leader Lease"))?;
    health.set_connected(true);
    info!(lease = %format!("{}/{}", opts.namespace, opts.name), identity = %opts.identity, "standing by for the leader Lease");
    if acquire(&manager, opts).await?.is_none() {
        info!("asked to stop while standing by");
        return Ok(());
    }
    info!(identity = %opts.identity, "holding the leader Lease: reconciling");
    metrics.set_leader(true);
    let work = work();
    tokio::pin!(work);
    let outcome = tokio::select! {
        done = &mut work => done,
        why = lost(&manager) => {
            metrics.set_leader(false);
            health.set_failed();
            error!(reason = %why, "lost the leader Lease: stopped reconciling");
            return Err(Error::Lease(why));
        }
    };
    metrics.set_leader(false);
    manager
        .release()
        .await
        .map_err(lease_error("release the leader Lease"))?;
    info!("released the leader Lease");
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(duration: u64, grace: u64) -> LeaseOptions {
        LeaseOptions {
            name: "quorate-leader".into(),
            namespace: "quorate-system".into(),
            identity: "quorate-0".into(),
            duration_seconds: duration,
            grace_seconds: grace,
        }
    }

    fn spec(holder: &str, renewed: &str, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                renewed.parse().expect("time"),
            )),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    fn at(t: &str) -> Timestamp {
        t.parse().expect("time")
    }

    #[test]
    fn a_process_acts_only_on_a_lease_it_holds_and_that_is_fresh_by_its_own_clock() {
        let held = spec("quorate-0", "2026-12-07T10:00:00.500Z", 15);
        // Renewed 0.5 s ago: fine until 10 s after (15 s less a grace of 5 s).
        assert!(lease_lets_act(Some(&held), "quorate-0", 5, at("2026-12-07T10:00:01Z")).is_ok());
        assert!(lease_lets_act(Some(&held), "quorate-0", 5, at("2026-12-07T10:00:10.4Z")).is_ok());
        // Paused past renewal: the other contenders may take it 15 s after; this one stops at 10.
        let late = lease_lets_act(Some(&held), "quorate-0", 5, at("2026-12-07T10:00:10.5Z"))
            .expect_err("stale");
        assert!(late.contains("may have expired"), "{late}");
        // Taken over meanwhile.
        let other = spec("quorate-1", "2026-12-07T10:00:20Z", 15);
        let taken = lease_lets_act(Some(&other), "quorate-0", 5, at("2026-12-07T10:00:21Z"))
            .expect_err("another holder");
        assert!(taken.contains("\"quorate-1\""), "{taken}");
        // Released (no holder) or gone.
        let mut released = held.clone();
        released.holder_identity = None;
        assert!(
            lease_lets_act(Some(&released), "quorate-0", 5, at("2026-12-07T10:00:01Z")).is_err()
        );
        assert!(lease_lets_act(None, "quorate-0", 5, at("2026-12-07T10:00:01Z")).is_err());
    }

    #[test]
    fn the_grace_must_be_shorter_than_the_lease() {
        assert!(opts(15, 5).validate().is_ok());
        let e = opts(5, 5).validate().expect_err("grace = duration");
        assert!(e.contains("--lease-grace-seconds"), "{e}");
        assert!(opts(5, 0).validate().is_err());
        let mut o = opts(15, 5);
        o.identity.clear();
        assert!(o.validate().is_err());
    }
}
