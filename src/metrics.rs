//! quorate's Prometheus metrics (prometheus-client), served at `/metrics`.
//!
//! Every label is bounded: a kind of resource, an error category, a step kind, an outcome, a
//! blocking reason's code, or the namespace and name of an object quorate manages. The README
//! lists each metric and what it means.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The kind of object a reconcile was for.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `MasterEnsemble`, `ZkBackup` or `ZkRestore`.
    pub kind: String,
}

/// A failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `MasterEnsemble`, `ZkBackup` or `ZkRestore`.
    pub kind: String,
    /// [`crate::controller::Error::category`].
    pub category: String,
}

/// One step's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// The step's kind (`add-voter`, `restart-member`, ...).
    pub step: String,
    /// `started`, `completed` or `failed`.
    pub outcome: String,
}

/// A blocked plan.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BlockedLabels {
    /// The blocking reason's code.
    pub reason: String,
}

/// One object quorate manages.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ObjectLabels {
    /// The labels of `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> ObjectLabels {
        ObjectLabels {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The registry and every metric in it.
pub struct Metrics {
    registry: Registry,
    reconcile_duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    steps: Family<StepLabels, Counter>,
    blocked: Family<BlockedLabels, Counter>,
    members: Family<ObjectLabels, Gauge>,
    voters: Family<ObjectLabels, Gauge>,
    ready_members: Family<ObjectLabels, Gauge>,
    in_flight_age: Family<ObjectLabels, FloatGauge>,
    in_flight_since: Mutex<HashMap<ObjectLabels, Timestamp>>,
    backup_last_success: Family<ObjectLabels, FloatGauge>,
    leader: Gauge,
}

fn reconcile_buckets() -> Histogram {
    // 5 ms to about 40 s: a pass reads objects and probes members; a backup pass streams data.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric, registered with the prefix `quorate`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("quorate");
        let m = Metrics {
            registry: Registry::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_buckets),
            reconcile_errors: Family::default(),
            steps: Family::default(),
            blocked: Family::default(),
            members: Family::default(),
            voters: Family::default(),
            ready_members: Family::default(),
            in_flight_age: Family::default(),
            in_flight_since: Mutex::default(),
            backup_last_success: Family::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "reconcile_duration_seconds",
            "How long one reconcile pass took, by kind of object",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconcile passes that failed, by kind of object and error category",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "steps",
            "Membership steps by kind and outcome (started, completed, failed)",
            m.steps.clone(),
        );
        registry.register(
            "blocked",
            "Times an ensemble's plan became blocked, by reason",
            m.blocked.clone(),
        );
        registry.register(
            "ensemble_members",
            "Members (Pods with a server id) of each ensemble, voters or not",
            m.members.clone(),
        );
        registry.register(
            "ensemble_voters",
            "Voters in each ensemble's committed configuration",
            m.voters.clone(),
        );
        registry.register(
            "ensemble_ready_members",
            "Members of each ensemble that serve and are synced",
            m.ready_members.clone(),
        );
        registry.register(
            "step_in_flight_age_seconds",
            "How long each ensemble's claimed step has been in flight (0: none)",
            m.in_flight_age.clone(),
        );
        registry.register(
            "backup_last_success_timestamp_seconds",
            "When each ZkBackup's newest Ready backup finished (Unix time)",
            m.backup_last_success.clone(),
        );
        registry.register(
            "leader",
            "1 while this operator process holds the leader Lease and reconciles, else 0",
            m.leader.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A reconcile of `kind` that took `took` and failed with `category`, if it failed.
    pub fn reconciled(&self, kind: &str, took: Duration, category: Option<&str>) {
        self.reconcile_duration
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(took.as_secs_f64());
        if let Some(category) = category {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    kind: kind.into(),
                    category: category.into(),
                })
                .inc();
        }
    }

    /// A step of kind `step` reached `outcome`.
    pub fn step(&self, step: &str, outcome: &str) {
        self.steps
            .get_or_create(&StepLabels {
                step: step.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// An ensemble's plan became blocked for `reason`.
    pub fn blocked(&self, reason: &str) {
        self.blocked
            .get_or_create(&BlockedLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// What one pass observed of an ensemble: its members, voters, ready members, and the start
    /// of its claimed step.
    pub fn ensemble(
        &self,
        ensemble: &ObjectLabels,
        members: usize,
        voters: usize,
        ready: usize,
        in_flight_since: Option<Timestamp>,
    ) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.members.get_or_create(ensemble).set(count(members));
        self.voters.get_or_create(ensemble).set(count(voters));
        self.ready_members.get_or_create(ensemble).set(count(ready));
        if let Ok(mut since) = self.in_flight_since.lock() {
            match in_flight_since {
                Some(t) => {
                    since.insert(ensemble.clone(), t);
                }
                None => {
                    since.remove(ensemble);
                    self.in_flight_age.get_or_create(ensemble).set(0.0);
                }
            }
        }
    }

    /// The ensemble is gone: forget its series.
    pub fn forget_ensemble(&self, ensemble: &ObjectLabels) {
        self.members.remove(ensemble);
        self.voters.remove(ensemble);
        self.ready_members.remove(ensemble);
        self.in_flight_age.remove(ensemble);
        if let Ok(mut since) = self.in_flight_since.lock() {
            since.remove(ensemble);
        }
    }

    /// The newest Ready backup of a ZkBackup finished at `at`.
    pub fn backup_succeeded(&self, backup: &ObjectLabels, at: Timestamp) {
        self.backup_last_success
            .get_or_create(backup)
            .set(at.as_millisecond() as f64 / 1000.0);
    }

    /// Whether this process leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The OpenMetrics text of every metric, with in-flight ages computed at `now`.
    pub fn encode(&self, now: Timestamp) -> Result<String, std::fmt::Error> {
        if let Ok(since) = self.in_flight_since.lock() {
            for (ensemble, t) in since.iter() {
                let age = now.duration_since(*t).as_secs_f64().max(0.0);
                self.in_flight_age.get_or_create(ensemble).set(age);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn reconcile_errors_are_counted_by_kind_and_category() {
        let m = Metrics::new();
        m.reconciled("MasterEnsemble", Duration::from_millis(20), None);
        m.reconciled(
            "MasterEnsemble",
            Duration::from_millis(30),
            Some("forbidden"),
        );
        m.reconciled(
            "MasterEnsemble",
            Duration::from_millis(30),
            Some("forbidden"),
        );
        let text = m.encode(Timestamp::now()).expect("encode");
        assert_eq!(
            line(
                &text,
                "quorate_reconcile_errors_total{kind=\"MasterEnsemble\",category=\"forbidden\"}"
            ),
            Some(
                "quorate_reconcile_errors_total{kind=\"MasterEnsemble\",category=\"forbidden\"} 2"
            )
        );
        assert_eq!(
            line(
                &text,
                "quorate_reconcile_duration_seconds_count{kind=\"MasterEnsemble\"}"
            ),
            Some("quorate_reconcile_duration_seconds_count{kind=\"MasterEnsemble\"} 3")
        );
    }

    #[test]
    fn the_in_flight_age_grows_at_scrape_time_and_resets_when_the_step_is_done() {
        let m = Metrics::new();
        let e = ObjectLabels::new("ns", "masters");
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        m.ensemble(&e, 4, 3, 4, Some(start));
        let at = |s: i64| start + jiff::SignedDuration::from_secs(s);
        let text = m.encode(at(42)).expect("encode");
        let age = "quorate_step_in_flight_age_seconds{namespace=\"ns\",name=\"masters\"}";
        assert_eq!(line(&text, age), Some(format!("{age} 42.0").as_str()));
        assert!(text.contains("quorate_ensemble_voters{namespace=\"ns\",name=\"masters\"} 3"));
        m.ensemble(&e, 4, 4, 4, None);
        let text = m.encode(at(50)).expect("encode");
        assert_eq!(line(&text, age), Some(format!("{age} 0.0").as_str()));
        m.forget_ensemble(&e);
        let text = m.encode(at(60)).expect("encode");
        assert!(line(&text, age).is_none(), "{text}");
    }

    #[test]
    fn the_last_backup_is_unix_seconds_and_the_leader_gauge_follows_the_lease() {
        let m = Metrics::new();
        let at: Timestamp = "2026-12-01T10:00:00.5Z".parse().expect("time");
        m.backup_succeeded(&ObjectLabels::new("ns", "nightly"), at);
        m.set_leader(true);
        let text = m.encode(Timestamp::now()).expect("encode");
        let want = format!(
            "quorate_backup_last_success_timestamp_seconds{{namespace=\"ns\",name=\"nightly\"}} {}",
            at.as_millisecond() as f64 / 1000.0
        );
        assert!(text.contains(&want), "{text}");
        assert!(text.contains("quorate_leader 1"), "{text}");
        m.set_leader(false);
        assert!(
            m.encode(Timestamp::now())
                .expect("encode")
                .contains("quorate_leader 0")
        );
    }
}
