//! quorate's Prometheus metrics (prometheus-client), served at `/metrics`.
//!
//! Every label is bounded: a kind of resource, an error category, a step kind, an outcome, a
//! blocking reason's code, or the namespace and name of an object quorate manages, and an
//! object's series go when the object does (see [`Metrics::watch`]). The README lists each
//! metric and what it means.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
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

/// One object quorate manages, by namespace and name.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ObjectKey {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ObjectKey {
    /// The object `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// The labels of an ensemble's gauges. Not `namespace` and `name`: Prometheus gives every
/// series the `namespace` of the target it scraped (the operator's own), and a series' own
/// `namespace` would be renamed `exported_namespace`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnsembleLabels {
    /// The MasterEnsemble's namespace.
    pub ensemble_namespace: String,
    /// The MasterEnsemble's name.
    pub ensemble: String,
}

impl From<&ObjectKey> for EnsembleLabels {
    fn from(key: &ObjectKey) -> Self {
        EnsembleLabels {
            ensemble_namespace: key.namespace.clone(),
            ensemble: key.name.clone(),
        }
    }
}

/// The labels of a ZkBackup's gauge (not `namespace`, as for [`EnsembleLabels`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackupLabels {
    /// The ZkBackup's namespace.
    pub backup_namespace: String,
    /// The ZkBackup's name.
    pub backup: String,
}

impl From<&ObjectKey> for BackupLabels {
    fn from(key: &ObjectKey) -> Self {
        BackupLabels {
            backup_namespace: key.namespace.clone(),
            backup: key.name.clone(),
        }
    }
}

/// Whether an object exists, as the store of one watched scope holds it: `None` while the
/// store has not completed its first list (it would call every object gone).
pub type Exists = Box<dyn Fn(&ObjectKey) -> Option<bool> + Send + Sync>;

/// One watched scope: a namespace, or every namespace.
struct Scope {
    id: u64,
    namespace: Option<String>,
    ensembles: Exists,
    backups: Exists,
}

impl Scope {
    fn covers(&self, key: &ObjectKey) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| *ns == key.namespace)
    }
}

/// The objects that have series, and the scopes that tell whether they still exist.
#[derive(Default)]
struct Objects {
    /// The start of each ensemble's claimed step.
    in_flight_since: HashMap<ObjectKey, Timestamp>,
    /// The ensembles with gauges.
    ensembles: HashSet<ObjectKey>,
    /// The ZkBackups with a gauge.
    backups: HashSet<ObjectKey>,
    scopes: Vec<Scope>,
    next_scope: u64,
}

/// Whether the scopes call `key` gone: at least one covers it, every one that does has listed
/// its objects, and none holds it. An object no scope covers is kept.
fn gone(scopes: &[Scope], key: &ObjectKey, exists: impl Fn(&Scope) -> Option<bool>) -> bool {
    let mut covered = false;
    for scope in scopes.iter().filter(|s| s.covers(key)) {
        covered = true;
        if exists(scope) != Some(false) {
            return false;
        }
    }
    covered
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The registry and every metric in it.
pub struct Metrics {
    registry: Registry,
    reconcile_duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    steps: Family<StepLabels, Counter>,
    blocked: Family<BlockedLabels, Counter>,
    members: Family<EnsembleLabels, Gauge>,
    voters: Family<EnsembleLabels, Gauge>,
    ready_members: Family<EnsembleLabels, Gauge>,
    failures_tolerated: Family<EnsembleLabels, Gauge>,
    in_flight_age: Family<EnsembleLabels, FloatGauge>,
    backup_last_success: Family<BackupLabels, FloatGauge>,
    leader: Gauge,
    build_info: Family<BuildLabels, Gauge>,
    objects: Mutex<Objects>,
}

/// The labels of `quorate_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The operator's version (`quorate version`).
    pub version: String,
}

/// What one pass observed of an ensemble.
#[derive(Clone, Copy, Debug, Default)]
pub struct EnsembleGauges {
    /// Members with a Pod, voters or not.
    pub members: usize,
    /// Voters in the committed configuration.
    pub voters: usize,
    /// Members that serve and are synced.
    pub ready: usize,
    /// Voters that serve and are synced.
    pub healthy_voters: usize,
    /// When the claimed step started, if one is in flight.
    pub in_flight_since: Option<Timestamp>,
}

impl EnsembleGauges {
    /// A steady ensemble of `n` healthy voters and no step in flight.
    pub fn steady(n: usize) -> EnsembleGauges {
        EnsembleGauges {
            members: n,
            voters: n,
            ready: n,
            healthy_voters: n,
            in_flight_since: None,
        }
    }

    /// How many more voters may fail before the quorum is lost: healthy voters minus a
    /// majority of the voters; negative when the quorum is already lost (by that many).
    pub fn failures_tolerated(&self) -> i64 {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        count(self.healthy_voters) - count(crate::planner::rules::majority(self.voters))
    }
}

/// A watched scope registered by [`Metrics::watch`]; dropping it (the scope's controllers
/// stopped) forgets the series of its objects.
#[must_use = "the scope is watched until this is dropped"]
pub struct Watched {
    metrics: Arc<Metrics>,
    id: u64,
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut objects = self.metrics.objects();
        let Some(at) = objects.scopes.iter().position(|s| s.id == self.id) else {
            return;
        };
        let scope = objects.scopes.remove(at);
        let ensembles: Vec<ObjectKey> = objects
            .ensembles
            .iter()
            .filter(|k| scope.covers(k))
            .cloned()
            .collect();
        let backups: Vec<ObjectKey> = objects
            .backups
            .iter()
            .filter(|k| scope.covers(k))
            .cloned()
            .collect();
        for key in &ensembles {
            self.metrics.remove_ensemble(&mut objects, key);
        }
        for key in &backups {
            self.metrics.remove_backup(&mut objects, key);
        }
    }
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
            failures_tolerated: Family::default(),
            in_flight_age: Family::default(),
            backup_last_success: Family::default(),
            leader: Gauge::default(),
            build_info: Family::default(),
            objects: Mutex::default(),
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
            "ensemble_failures_tolerated",
            "How many more voters of each ensemble may fail before its quorum is lost \
             (healthy voters minus a majority; negative once the quorum is lost)",
            m.failures_tolerated.clone(),
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
        registry.register(
            "build_info",
            "Always 1; the version label names the running operator",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
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

    /// The objects with series; a poisoned lock is taken over (its maps stay consistent: no
    /// update panics halfway).
    fn objects(&self) -> MutexGuard<'_, Objects> {
        self.objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What one pass observed of an ensemble.
    pub fn ensemble(&self, ensemble: &ObjectKey, seen: EnsembleGauges) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let labels = EnsembleLabels::from(ensemble);
        let mut objects = self.objects();
        objects.ensembles.insert(ensemble.clone());
        self.members.get_or_create(&labels).set(count(seen.members));
        self.voters.get_or_create(&labels).set(count(seen.voters));
        self.ready_members
            .get_or_create(&labels)
            .set(count(seen.ready));
        self.failures_tolerated
            .get_or_create(&labels)
            .set(seen.failures_tolerated());
        match seen.in_flight_since {
            Some(t) => {
                objects.in_flight_since.insert(ensemble.clone(), t);
            }
            None => {
                objects.in_flight_since.remove(ensemble);
                self.in_flight_age.get_or_create(&labels).set(0.0);
            }
        }
    }

    /// The ensemble is gone: forget its series.
    pub fn forget_ensemble(&self, ensemble: &ObjectKey) {
        let mut objects = self.objects();
        self.remove_ensemble(&mut objects, ensemble);
    }

    fn remove_ensemble(&self, objects: &mut Objects, ensemble: &ObjectKey) {
        let labels = EnsembleLabels::from(ensemble);
        self.members.remove(&labels);
        self.voters.remove(&labels);
        self.ready_members.remove(&labels);
        self.failures_tolerated.remove(&labels);
        self.in_flight_age.remove(&labels);
        objects.in_flight_since.remove(ensemble);
        objects.ensembles.remove(ensemble);
    }

    /// The newest Ready backup of a ZkBackup finished at `at`.
    pub fn backup_succeeded(&self, backup: &ObjectKey, at: Timestamp) {
        let mut objects = self.objects();
        objects.backups.insert(backup.clone());
        self.backup_last_success
            .get_or_create(&BackupLabels::from(backup))
            .set(at.as_millisecond() as f64 / 1000.0);
    }

    /// The ZkBackup is gone: forget its series.
    pub fn forget_backup(&self, backup: &ObjectKey) {
        let mut objects = self.objects();
        self.remove_backup(&mut objects, backup);
    }

    fn remove_backup(&self, objects: &mut Objects, backup: &ObjectKey) {
        self.backup_last_success.remove(&BackupLabels::from(backup));
        objects.backups.remove(backup);
    }

    /// Watches a scope (`namespace`, or every namespace when `None`): from now on each scrape
    /// first forgets the series of every ensemble and ZkBackup in it that `ensembles` or
    /// `backups` (its controllers' stores) no longer hold. Until the returned [`Watched`] is
    /// dropped; an object in no watched scope keeps its series.
    pub fn watch(
        self: &Arc<Self>,
        namespace: Option<String>,
        ensembles: Exists,
        backups: Exists,
    ) -> Watched {
        let mut objects = self.objects();
        let id = objects.next_scope;
        objects.next_scope += 1;
        objects.scopes.push(Scope {
            id,
            namespace,
            ensembles,
            backups,
        });
        Watched {
            metrics: self.clone(),
            id,
        }
    }

    /// Forgets the series of the objects the watched scopes call gone.
    fn forget_gone(&self, objects: &mut Objects) {
        if objects.scopes.is_empty() {
            return;
        }
        let ensembles: Vec<ObjectKey> = objects
            .ensembles
            .iter()
            .filter(|k| gone(&objects.scopes, k, |s| (s.ensembles)(k)))
            .cloned()
            .collect();
        let backups: Vec<ObjectKey> = objects
            .backups
            .iter()
            .filter(|k| gone(&objects.scopes, k, |s| (s.backups)(k)))
            .cloned()
            .collect();
        for key in &ensembles {
            self.remove_ensemble(objects, key);
        }
        for key in &backups {
            self.remove_backup(objects, key);
        }
    }

    /// Whether this process leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The OpenMetrics text of every metric, with in-flight ages computed at `now`, once the
    /// series of objects that are gone are forgotten.
    pub fn encode(&self, now: Timestamp) -> Result<String, std::fmt::Error> {
        let mut objects = self.objects();
        self.forget_gone(&mut objects);
        for (ensemble, t) in objects.in_flight_since.iter() {
            let age = now.duration_since(*t).as_secs_f64().max(0.0);
            self.in_flight_age
                .get_or_create(&EnsembleLabels::from(ensemble))
                .set(age);
        }
        // Encoded under the lock: a pass that records an object the scopes have just called
        // gone waits, and its series is judged again at the next scrape.
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
        let e = ObjectKey::new("ns", "masters");
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        m.ensemble(
            &e,
            EnsembleGauges {
                members: 4,
                voters: 3,
                ready: 4,
                healthy_voters: 3,
                in_flight_since: Some(start),
            },
        );
        let at = |s: i64| start + jiff::SignedDuration::from_secs(s);
        let text = m.encode(at(42)).expect("encode");
        let age =
            "quorate_step_in_flight_age_seconds{ensemble_namespace=\"ns\",ensemble=\"masters\"}";
        assert_eq!(line(&text, age), Some(format!("{age} 42.0").as_str()));
        assert!(
            text.contains(
                "quorate_ensemble_voters{ensemble_namespace=\"ns\",ensemble=\"masters\"} 3"
            )
        );
        m.ensemble(&e, EnsembleGauges::steady(4));
        let text = m.encode(at(50)).expect("encode");
        assert_eq!(line(&text, age), Some(format!("{age} 0.0").as_str()));
        m.forget_ensemble(&e);
        let text = m.encode(at(60)).expect("encode");
        assert!(line(&text, age).is_none(), "{text}");
    }

    #[test]
    fn failures_tolerated_counts_healthy_voters_above_a_majority_and_goes_negative_without_one() {
        let m = Metrics::new();
        let e = ObjectKey::new("ns", "masters");
        let series =
            "quorate_ensemble_failures_tolerated{ensemble_namespace=\"ns\",ensemble=\"masters\"}";
        for (voters, healthy, want) in [
            (5, 5, 2),
            (5, 3, 0),
            (3, 3, 1),
            (3, 1, -1),
            (1, 1, 0),
            (1, 0, -1),
        ] {
            m.ensemble(
                &e,
                EnsembleGauges {
                    healthy_voters: healthy,
                    ..EnsembleGauges::steady(voters)
                },
            );
            let text = m.encode(Timestamp::now()).expect("encode");
            assert_eq!(
                line(&text, series),
                Some(format!("{series} {want}").as_str()),
                "{healthy} of {voters} healthy"
            );
        }
        m.forget_ensemble(&e);
        let text = m.encode(Timestamp::now()).expect("encode");
        assert!(line(&text, series).is_none(), "{text}");
        let info = format!(
            "quorate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.lines().any(|l| l == info), "{text}");
    }

    #[test]
    fn the_last_backup_is_unix_seconds_and_the_leader_gauge_follows_the_lease() {
        let m = Metrics::new();
        let at: Timestamp = "2026-12-01T10:00:00.5Z".parse().expect("time");
        m.backup_succeeded(&ObjectKey::new("ns", "nightly"), at);
        m.set_leader(true);
        let text = m.encode(Timestamp::now()).expect("encode");
        let want = format!(
            "quorate_backup_last_success_timestamp_seconds{{backup_namespace=\"ns\",backup=\"nightly\"}} {}",
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
        m.forget_backup(&ObjectKey::new("ns", "nightly"));
        let text = m.encode(Timestamp::now()).expect("encode");
        assert!(
            !text.contains("quorate_backup_last_success_timestamp_seconds{"),
            "{text}"
        );
    }

    /// The label names of every series line of an OpenMetrics text.
    fn label_names(text: &str) -> HashSet<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| Some(l.split_once('{')?.1.split_once('}')?.0))
            .flat_map(|labels| labels.split(','))
            .filter_map(|pair| pair.split_once('=').map(|(name, _)| name.to_string()))
            .collect()
    }

    #[test]
    fn no_label_clashes_with_a_label_prometheus_sets_on_the_target() {
        let m = Metrics::new();
        m.reconciled("MasterEnsemble", Duration::from_millis(5), Some("kube"));
        m.step("add-voter", "started");
        m.blocked("QuorumLost");
        m.ensemble(&ObjectKey::new("ns", "masters"), EnsembleGauges::steady(3));
        m.backup_succeeded(&ObjectKey::new("ns", "nightly"), Timestamp::now());
        let text = m.encode(Timestamp::now()).expect("encode");
        let names = label_names(&text);
        for want in [
            "ensemble_namespace",
            "ensemble",
            "backup_namespace",
            "backup",
        ] {
            assert!(names.contains(want), "no {want} label in {text}");
        }
        // What Prometheus' Kubernetes service discovery and the Prometheus Operator put on every
        // series of a target: a series of ours with one of them would be renamed exported_*.
        for target in [
            "namespace",
            "name",
            "job",
            "instance",
            "pod",
            "service",
            "endpoint",
            "container",
        ] {
            assert!(!names.contains(target), "label {target} in {text}");
        }
    }

    /// What a watched scope's stores hold: `None` before their first list.
    #[derive(Clone, Default)]
    struct Listed(Arc<Mutex<Option<HashSet<ObjectKey>>>>);

    impl Listed {
        fn set(&self, names: &[(&str, &str)]) {
            *self.0.lock().expect("lock") = Some(
                names
                    .iter()
                    .map(|(ns, name)| ObjectKey::new(ns, name))
                    .collect(),
            );
        }

        fn exists(&self) -> Exists {
            let listed = self.clone();
            Box::new(move |key| Some(listed.0.lock().ok()?.as_ref()?.contains(key)))
        }
    }

    #[test]
    fn the_series_of_an_object_its_scope_no_longer_holds_go_at_the_next_scrape() {
        let m = Arc::new(Metrics::new());
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let series = |ns: &str, name: &str| {
            format!("quorate_ensemble_voters{{ensemble_namespace=\"{ns}\",ensemble=\"{name}\"}}")
        };
        let age = |ns: &str, name: &str| {
            format!(
                "quorate_step_in_flight_age_seconds{{ensemble_namespace=\"{ns}\",ensemble=\"{name}\"}}"
            )
        };
        let backup = "quorate_backup_last_success_timestamp_seconds{backup_namespace=\"a\",backup=\"nightly\"}";
        let record = || {
            m.ensemble(&ObjectKey::new("a", "kept"), EnsembleGauges::steady(3));
            m.ensemble(
                &ObjectKey::new("a", "deleted"),
                EnsembleGauges {
                    ready: 2,
                    healthy_voters: 2,
                    in_flight_since: Some(start),
                    ..EnsembleGauges::steady(3)
                },
            );
            m.ensemble(&ObjectKey::new("b", "unwatched"), EnsembleGauges::steady(1));
            m.backup_succeeded(&ObjectKey::new("a", "nightly"), start);
        };
        record();
        let (ensembles, backups) = (Listed::default(), Listed::default());
        let watched = m.watch(Some("a".into()), ensembles.exists(), backups.exists());

        // Before the stores' first list nothing is called gone.
        let text = m.encode(start).expect("encode");
        for s in [
            series("a", "kept"),
            series("a", "deleted"),
            series("b", "unwatched"),
            backup.to_string(),
        ] {
            assert!(
                line(&text, &s).is_some(),
                "{s} missing before the first list:\n{text}"
            );
        }

        // Listed: a/deleted and the backup are gone from the stores, a/kept is not, and no
        // scope covers namespace b.
        ensembles.set(&[("a", "kept")]);
        backups.set(&[]);
        let text = m.encode(start).expect("encode");
        assert!(line(&text, &series("a", "kept")).is_some(), "{text}");
        assert!(line(&text, &series("b", "unwatched")).is_some(), "{text}");
        for gone in [series("a", "deleted"), age("a", "deleted"), backup.into()] {
            assert!(line(&text, &gone).is_none(), "{gone} stayed:\n{text}");
        }
        // Nor does the in-flight age come back at the next scrape.
        let text = m.encode(start).expect("encode");
        assert!(line(&text, &age("a", "deleted")).is_none(), "{text}");

        // A pass that was running when the object went records it again: the next scrape
        // forgets it again.
        record();
        let text = m.encode(start).expect("encode");
        assert!(line(&text, &series("a", "deleted")).is_none(), "{text}");
        assert!(line(&text, backup).is_none(), "{text}");

        // A deleted ensemble created again under the same name has series again.
        ensembles.set(&[("a", "kept"), ("a", "deleted")]);
        record();
        let text = m.encode(start).expect("encode");
        assert!(line(&text, &series("a", "deleted")).is_some(), "{text}");

        // The scope's controllers stopped: its objects' series go, the others' stay.
        drop(watched);
        let text = m.encode(start).expect("encode");
        assert!(line(&text, &series("a", "kept")).is_none(), "{text}");
        assert!(line(&text, &series("a", "deleted")).is_none(), "{text}");
        assert!(line(&text, &series("b", "unwatched")).is_some(), "{text}");
    }

    #[test]
    fn an_object_is_gone_only_when_every_scope_covering_it_has_listed_it_gone() {
        let m = Arc::new(Metrics::new());
        let key = ObjectKey::new("a", "masters");
        let series = "quorate_ensemble_members{ensemble_namespace=\"a\",ensemble=\"masters\"}";
        m.ensemble(&key, EnsembleGauges::steady(1));
        let (everywhere, namespace_a) = (Listed::default(), Listed::default());
        let _all = m.watch(None, everywhere.exists(), everywhere.exists());
        let _a = m.watch(Some("a".into()), namespace_a.exists(), namespace_a.exists());
        everywhere.set(&[]);
        let text = m.encode(Timestamp::now()).expect("encode");
        assert!(
            line(&text, series).is_some(),
            "one scope had not listed yet: {text}"
        );
        namespace_a.set(&[("a", "masters")]);
        let text = m.encode(Timestamp::now()).expect("encode");
        assert!(line(&text, series).is_some(), "one scope holds it: {text}");
        namespace_a.set(&[]);
        let text = m.encode(Timestamp::now()).expect("encode");
        assert!(line(&text, series).is_none(), "{text}");
    }
}
