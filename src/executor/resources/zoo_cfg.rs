//! ZooKeeper's configuration files, rendered from the spec.
//!
//! The static `zoo.cfg` is the same for every member and lives in the ensemble's ConfigMap; each
//! member copies it to its volume at start-up, because ZooKeeper rewrites it on every reconfig.
//! The dynamic configuration (the `server.N` lines) is never derived from a replica count: a
//! member starts with the committed configuration plus itself, and every later change is a
//! reconfig issued by the operator.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::constants::*;
use crate::crd::ZkServerConfig;
use crate::planner::ServerId;

/// The static part of zoo.cfg. Keys quorate owns come after the user's, so they always win.
pub fn render_static(config: &ZkServerConfig) -> String {
    let mut keys: BTreeMap<&str, String> = BTreeMap::new();
    for (k, v) in &config.extra {
        keys.insert(k.as_str(), v.clone());
    }
    let mut out =
        String::from("# Rendered by quorate. Membership is managed by dynamic reconfiguration.\n");
    for (k, v) in &keys {
        let _ = writeln!(out, "{k}={v}");
    }
    let metrics = [
        (
            "metricsProvider.className",
            "org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider".into(),
        ),
        ("metricsProvider.httpPort", METRICS_PORT.to_string()),
        ("metricsProvider.exportJvmInfo", "true".into()),
    ];
    let owned = [
        ("tickTime", config.tick_time.to_string()),
        ("initLimit", config.init_limit.to_string()),
        ("syncLimit", config.sync_limit.to_string()),
        ("dataDir", format!("{DATA_MOUNT}/data")),
        (
            "dynamicConfigFile",
            format!("{DATA_MOUNT}/conf/zoo.cfg.dynamic"),
        ),
        ("reconfigEnabled", "true".into()),
        ("standaloneEnabled", "false".into()),
        ("skipACL", "no".into()),
        ("admin.enableServer", "true".into()),
        ("admin.serverPort", ADMIN_PORT.to_string()),
        (
            "4lw.commands.whitelist",
            "srvr,stat,mntr,conf,ruok,isro".into(),
        ),
        ("autopurge.snapRetainCount", "5".into()),
        ("autopurge.purgeInterval", "1".into()),
    ];
    let metrics = config.prometheus_metrics.then_some(metrics);
    for (k, v) in owned.into_iter().chain(metrics.into_iter().flatten()) {
        let _ = writeln!(out, "{k}={v}");
    }
    out
}

/// The ConfigMap key of [`SASL_SETTINGS`].
pub const SASL_CFG_KEY: &str = "zoo.cfg.sasl";

/// The zoo.cfg lines of SASL client authentication, enforced for every session. A member's
/// prepare step appends them when its credentials Secret holds the JAAS file that names the
/// SASL users (the JVM reads it through `-Djava.security.auth.login.config`).
pub const SASL_SETTINGS: &str =
    "authProvider.sasl=org.apache.zookeeper.server.auth.SASLAuthenticationProvider
enforce.auth.enabled=true
enforce.auth.schemes=sasl
";

/// One `server.N` line: a voting participant reachable at `host`. The client address is the
/// host name too, so each member binds its client port to its own address (members may share a
/// network namespace, as on the testbed's node agent).
pub fn server_line(id: ServerId, host: &str) -> String {
    format!("server.{id}={host}:{QUORUM_PORT}:{ELECTION_PORT}:participant;{host}:{CLIENT_PORT}")
}

/// The initial dynamic configuration of a new member: the committed voters plus itself. A seed
/// (bootstrap) has itself alone.
pub fn initial_dynamic(
    voters: &BTreeMap<ServerId, String>,
    joiner: ServerId,
    joiner_host: &str,
) -> String {
    let mut lines: BTreeMap<ServerId, String> = voters
        .iter()
        .map(|(id, host)| (*id, server_line(*id, host)))
        .collect();
    lines.insert(joiner, server_line(joiner, joiner_host));
    lines.into_values().map(|l| l + "\n").collect()
}

/// The ids named by a dynamic configuration's `server.N` lines.
pub fn ids_in_dynamic(text: &str) -> BTreeSet<ServerId> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("server."))
        .filter_map(|rest| rest.split('=').next()?.parse::<u32>().ok())
        .map(ServerId)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_static_config_turns_on_reconfig_and_never_standalone() {
        let cfg = render_static(&ZkServerConfig::default());
        for line in [
            "reconfigEnabled=true",
            "standaloneEnabled=false",
            "skipACL=no",
            "admin.enableServer=true",
            "tickTime=2000",
        ] {
            assert!(cfg.lines().any(|l| l == line), "missing {line} in\n{cfg}");
        }
        assert!(
            !cfg.contains("server."),
            "no membership in the static config"
        );
    }

    #[test]
    fn quorate_owned_keys_win_over_extra_keys() {
        let mut c = ZkServerConfig::default();
        c.extra.insert("maxClientCnxns".into(), "100".into());
        c.extra.insert("reconfigEnabled".into(), "false".into());
        let cfg = render_static(&c);
        let last = cfg.lines().rfind(|l| l.starts_with("reconfigEnabled="));
        assert_eq!(
            last,
            Some("reconfigEnabled=true"),
            "ZooKeeper takes the last value"
        );
        assert!(cfg.contains("maxClientCnxns=100"));
    }

    #[test]
    fn zookeepers_own_prometheus_metrics_are_on_unless_turned_off() {
        let provider = "metricsProvider.className=org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider";
        let on = render_static(&ZkServerConfig::default());
        assert!(on.lines().any(|l| l == provider), "{on}");
        assert!(
            on.lines().any(|l| l == "metricsProvider.httpPort=7000"),
            "{on}"
        );
        let off = render_static(&ZkServerConfig {
            prometheus_metrics: false,
            ..Default::default()
        });
        assert!(!off.contains("metricsProvider"), "{off}");
    }

    #[test]
    fn the_metrics_setting_left_on_keeps_the_members_spec_hash_of_older_ensembles() {
        // An ensemble stored before the setting existed reads it as on; its members' hash must
        // not change (an operator upgrade restarts no member). Off is a change that rolls.
        let older: crate::crd::MasterEnsembleSpec =
            serde_json::from_value(serde_json::json!({"replicas": 3})).unwrap();
        assert!(older.config.prometheus_metrics);
        let hash = crate::planner::model::member_spec_hash(&older);
        let mut explicit = older.clone();
        explicit.config.prometheus_metrics = true;
        assert_eq!(crate::planner::model::member_spec_hash(&explicit), hash);
        explicit.config.prometheus_metrics = false;
        assert_ne!(crate::planner::model::member_spec_hash(&explicit), hash);
    }

    #[test]
    fn a_joiner_starts_with_the_committed_voters_plus_itself() {
        let voters = BTreeMap::from([
            (ServerId(1), "m-1".to_string()),
            (ServerId(2), "m-2".to_string()),
        ]);
        let dynamic = initial_dynamic(&voters, ServerId(5), "m-5");
        assert_eq!(
            dynamic,
            "server.1=m-1:2888:3888:participant;m-1:2181\n\
             server.2=m-2:2888:3888:participant;m-2:2181\n\
             server.5=m-5:2888:3888:participant;m-5:2181\n"
        );
        assert_eq!(
            ids_in_dynamic(&dynamic),
            BTreeSet::from([ServerId(1), ServerId(2), ServerId(5)])
        );
    }

    #[test]
    fn a_seed_starts_with_itself_alone() {
        assert_eq!(
            ids_in_dynamic(&initial_dynamic(&BTreeMap::new(), ServerId(1), "m-1")),
            BTreeSet::from([ServerId(1)])
        );
    }
}
