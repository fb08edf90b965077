//! The testbed's stand-in for cluster DNS: a hosts file rendered from the Pods and Services the
//! API server holds, read by every Java process through `-Djdk.net.hosts.file`.
//!
//! The records follow what CoreDNS serves for a headless Service (`clusterIP: None`) whose
//! selector picks the Pod: a Pod with `spec.hostname` and `spec.subdomain` equal to the Service's
//! name gets `<hostname>.<subdomain>.<namespace>.svc.<domain>` (and the shorter forms a Pod's
//! search path would complete), and the Service's own name lists every such Pod. As on a real
//! cluster, a Pod is published only while Ready unless the Service says
//! `publishNotReadyAddresses: true`. The short forms are not scoped to the asker's namespace here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};

/// `(namespace, name)` of a Pod.
pub(super) type PodKey = (String, String);

/// Whether the Pod's `Ready` condition is `True`.
pub(super) fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a Service selects the Pod (a non-empty selector whose every label the Pod carries).
pub(super) fn selects(service: &Service, pod: &Pod) -> bool {
    let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    let labels = pod.metadata.labels.as_ref();
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn is_headless(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None")
}

fn publishes_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// Renders the hosts file. `local` holds the addresses of this agent's Pods, which may not have
/// reached the API server yet (a container must resolve its own name from its first instant).
pub(super) fn render(
    machine_hostname: &str,
    domain: &str,
    pods: &[Arc<Pod>],
    services: &[Arc<Service>],
    local: &BTreeMap<PodKey, Ipv4Addr>,
) -> String {
    // namespace -> service name -> service
    let mut headless: BTreeMap<&str, BTreeMap<&str, &Service>> = BTreeMap::new();
    for svc in services {
        if let (Some(ns), Some(name)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        ) && is_headless(svc)
        {
            headless.entry(ns).or_default().insert(name, svc);
        }
    }
    let mut lines: BTreeSet<(Ipv4Addr, String)> = BTreeSet::new();
    for pod in pods {
        let (Some(ns), Some(name)) = (
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let Some(services) = headless.get(ns) else {
            continue;
        };
        let ip = local
            .get(&(ns.to_string(), name.to_string()))
            .copied()
            .or_else(|| {
                pod.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|ip| ip.parse().ok())
            });
        let Some(ip) = ip else { continue };
        let ready = pod_is_ready(pod);
        let spec = pod.spec.as_ref();
        let hostname = spec.and_then(|s| s.hostname.as_deref());
        let subdomain = spec.and_then(|s| s.subdomain.as_deref());
        for (svc_name, svc) in services {
            if !selects(svc, pod) || !(ready || publishes_not_ready(svc)) {
                continue;
            }
            lines.insert((
                ip,
                format!("{svc_name}.{ns}.svc.{domain} {svc_name}.{ns}.svc {svc_name}.{ns}"),
            ));
            if let Some(h) = hostname
                && subdomain == Some(*svc_name)
            {
                let s = svc_name;
                lines.insert((
                    ip,
                    format!("{h}.{s}.{ns}.svc.{domain} {h}.{s}.{ns}.svc {h}.{s}.{ns} {h}.{s}"),
                ));
            }
        }
    }
    let mut out = String::from(
        "# Written by the quorate node agent: the testbed's stand-in for cluster DNS.\n\
         127.0.0.1 localhost localhost.localdomain\n\
         ::1 localhost ip6-localhost ip6-loopback\n",
    );
    if !machine_hostname.is_empty() && machine_hostname != "localhost" {
        out.push_str(&format!("127.0.0.1 {machine_hostname}\n"));
    }
    for (ip, names) in lines {
        out.push_str(&format!("{ip} {names}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: Option<&str>, ready: bool) -> Arc<Pod> {
        let value = serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "zk"}},
            "spec": {"hostname": name, "subdomain": "zk-members", "containers": []},
            "status": {
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
            }
        });
        Arc::new(serde_json::from_value(value).unwrap())
    }

    fn service(name: &str, not_ready: bool) -> Arc<Service> {
        let value = serde_json::json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"clusterIP": "None", "selector": {"app": "zk"},
                     "publishNotReadyAddresses": not_ready}
        });
        Arc::new(serde_json::from_value(value).unwrap())
    }

    #[test]
    fn publishes_every_name_form_of_a_pod_behind_its_headless_service() {
        let text = render(
            "box",
            "cluster.local",
            &[pod("zk-1", Some("127.0.5.2"), false)],
            &[service("zk-members", true)],
            &BTreeMap::new(),
        );
        assert!(text.contains(
            "127.0.5.2 zk-1.zk-members.ns.svc.cluster.local zk-1.zk-members.ns.svc \
             zk-1.zk-members.ns zk-1.zk-members\n"
        ));
        assert!(text.contains("127.0.5.2 zk-members.ns.svc.cluster.local"));
        assert!(text.contains("127.0.0.1 box\n"));
    }

    #[test]
    fn publishes_a_not_ready_pod_only_when_the_service_asks_for_it() {
        let pods = [pod("zk-1", Some("127.0.5.2"), false)];
        let text = render(
            "box",
            "cluster.local",
            &pods,
            &[service("zk-members", false)],
            &BTreeMap::new(),
        );
        assert!(!text.contains("zk-1."));
        let ready = [pod("zk-1", Some("127.0.5.2"), true)];
        let text = render(
            "box",
            "cluster.local",
            &ready,
            &[service("zk-members", false)],
            &BTreeMap::new(),
        );
        assert!(text.contains("zk-1.zk-members.ns.svc.cluster.local"));
    }

    #[test]
    fn uses_the_local_address_before_the_api_server_has_it_and_needs_the_service() {
        let local = BTreeMap::from([(
            ("ns".to_string(), "zk-1".to_string()),
            Ipv4Addr::new(127, 0, 5, 9),
        )]);
        let pods = [pod("zk-1", None, false)];
        let text = render(
            "box",
            "cluster.local",
            &pods,
            &[service("zk-members", true)],
            &local,
        );
        assert!(text.contains("127.0.5.9 zk-1.zk-members.ns.svc.cluster.local"));
        let text = render("box", "cluster.local", &pods, &[], &local);
        assert!(!text.contains("zk-1"));
    }
}
