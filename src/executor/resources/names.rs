//! Names and labels of the objects that make up an ensemble.

use std::collections::BTreeMap;

use crate::constants::*;
use crate::planner::ServerId;

/// The Pod of member `id`: `<ensemble>-<id>`. Also its hostname.
pub fn member_pod(ensemble: &str, id: ServerId) -> String {
    format!("{ensemble}-{id}")
}

/// The PVC of member `id`: `data-<ensemble>-<id>`.
pub fn member_pvc(ensemble: &str, id: ServerId) -> String {
    format!("data-{ensemble}-{id}")
}

/// The volume probe Pod of member `id`: `<ensemble>-zxid-<id>`.
pub fn zxid_probe_pod(ensemble: &str, id: ServerId) -> String {
    format!("{ensemble}-zxid-{id}")
}

/// The volume probe of member `id` for restore `restore`. It ends in `-probe` so that it never
/// takes the name of an ensemble's own probe or member (both end in the server id), even when
/// the restore is named like its ensemble.
pub fn restore_probe_pod(restore: &str, id: ServerId) -> String {
    format!("{restore}-zxid-{id}-probe")
}

/// The headless Service that gives each member a stable DNS name.
pub fn members_service(ensemble: &str) -> String {
    format!("{ensemble}-members")
}

/// The client Service.
pub fn client_service(ensemble: &str) -> String {
    format!("{ensemble}-client")
}

/// The ConfigMap with the static configuration.
pub fn config_map(ensemble: &str) -> String {
    format!("{ensemble}-config")
}

/// The ConfigMap that tells clients how to connect (`ZOOKEEPER` and friends).
pub fn connection_config_map(ensemble: &str) -> String {
    format!("{ensemble}-connection")
}

/// What a client in the cluster connects to: the client Service, which routes to members that
/// serve (their readiness is quorum-aware), as `host:port`.
pub fn connection_string(ensemble: &str, namespace: &str, cluster_domain: &str) -> String {
    format!(
        "{}.{namespace}.svc.{cluster_domain}:{CLIENT_PORT}",
        client_service(ensemble)
    )
}

/// The generated Secret with the ZooKeeper credentials.
pub fn credentials_secret(ensemble: &str) -> String {
    format!("{ensemble}-credentials")
}

/// The stable DNS name of member `id` (through the headless Service).
pub fn member_host(ensemble: &str, namespace: &str, id: ServerId, cluster_domain: &str) -> String {
    format!(
        "{}.{}.{namespace}.svc.{cluster_domain}",
        member_pod(ensemble, id),
        members_service(ensemble)
    )
}

/// Labels on every object of an ensemble.
pub fn ensemble_labels(ensemble: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), "zookeeper".to_string()),
        (LABEL_INSTANCE.to_string(), ensemble.to_string()),
        (LABEL_MANAGED_BY.to_string(), "quorate".to_string()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
        (LABEL_ENSEMBLE.to_string(), ensemble.to_string()),
    ])
}

/// Labels on a member's Pod and PVC.
pub fn member_labels(ensemble: &str, id: ServerId) -> BTreeMap<String, String> {
    let mut labels = ensemble_labels(ensemble, "member");
    labels.insert(LABEL_SERVER_ID.to_string(), id.to_string());
    labels
}

/// The server id in a member's labels, if it is one of quorate's members.
pub fn server_id_of(labels: &BTreeMap<String, String>) -> Option<ServerId> {
    labels
        .get(LABEL_SERVER_ID)?
        .parse::<u32>()
        .ok()
        .filter(|id| *id > 0)
        .map(ServerId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_carry_the_server_id() {
        assert_eq!(member_pod("masters", ServerId(4)), "masters-4");
        assert_eq!(member_pvc("masters", ServerId(4)), "data-masters-4");
        assert_eq!(
            member_host("masters", "prod", ServerId(4), "cluster.local"),
            "masters-4.masters-members.prod.svc.cluster.local"
        );
    }

    #[test]
    fn the_server_id_round_trips_through_the_labels() {
        let labels = member_labels("masters", ServerId(7));
        assert_eq!(server_id_of(&labels), Some(ServerId(7)));
        assert_eq!(labels[LABEL_ENSEMBLE], "masters");
        let mut bad = labels.clone();
        bad.insert(LABEL_SERVER_ID.into(), "0".into());
        assert_eq!(
            server_id_of(&bad),
            None,
            "server id 0 is not valid in ZooKeeper"
        );
        bad.insert(LABEL_SERVER_ID.into(), "x".into());
        assert_eq!(server_id_of(&bad), None);
    }
}
