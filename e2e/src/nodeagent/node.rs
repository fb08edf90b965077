//! The Node object: registered with a `Ready` condition, capacity and addresses, and kept Ready by
//! a heartbeat (the conditions' `lastHeartbeatTime` and a Lease in `kube-node-lease`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::Error;

/// The Lease namespace of node heartbeats.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a Lease holds without renewal.
const LEASE_SECONDS: i32 = 40;

fn memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(4 * 1024 * 1024)
}

fn first_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_default()
}

fn kernel_version() -> String {
    first_line("/proc/sys/kernel/osrelease")
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The condition types a kubelet reports, all healthy.
const CONDITION_TYPES: [&str; 4] = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"];

fn conditions(now: &Timestamp) -> serde_json::Value {
    let now = Time(*now);
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        })
    };
    json!([
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "the quorate node agent does not measure memory pressure"
        ),
        cond(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "the quorate node agent does not measure disk pressure"
        ),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "the quorate node agent does not measure PID pressure"
        ),
        cond(
            "Ready",
            "True",
            "KubeletReady",
            "the quorate node agent is posting ready status"
        ),
    ])
}

/// The labels of Node `name`: the well-known ones a kubelet sets, then `extra`.
pub fn labels(name: &str, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch().to_string()),
        (
            "node.kubernetes.io/instance-type".to_string(),
            "quorate-testbed".to_string(),
        ),
    ]);
    labels.extend(extra.clone());
    labels
}

/// Whether a Pod's `spec.nodeSelector` admits a Node labelled `labels` (as the scheduler's
/// NodeSelector filter does; node affinity is not looked at).
pub fn admits(labels: &BTreeMap<String, String>, pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_selector.as_ref())
        .is_none_or(|wanted| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Creates the Node (or adopts an existing one of that name), labelled as [`labels`] says with
/// `extra_labels`, and writes its status.
pub(crate) async fn register(
    client: &kube::Client,
    name: &str,
    ip: Ipv4Addr,
    kubelet_version: &str,
    extra_labels: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": labels(name, extra_labels),
        },
        "spec": {},
    }))
    .map_err(|e| Error::Invalid(format!("building the Node: {e}")))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(source) => {
            return Err(Error::Kube {
                context: format!("creating Node {name}"),
                source,
            });
        }
    }
    let now = Timestamp::now();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let capacity = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{}Ki", memory_kib()),
        "pods": "110",
        "ephemeral-storage": "100Gi",
    });
    let status = json!({
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions(&now),
            "addresses": [
                {"type": "InternalIP", "address": ip.to_string()},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "architecture": arch(),
                "bootID": first_line("/proc/sys/kernel/random/boot_id"),
                "containerRuntimeVersion": "quorate-node-agent://0.1.0",
                "kernelVersion": kernel_version(),
                "kubeProxyVersion": "",
                "kubeletVersion": kubelet_version,
                "machineID": first_line("/etc/machine-id"),
                "operatingSystem": "linux",
                "osImage": os_image(),
                "systemUUID": "",
            },
        }
    });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|source| Error::Kube {
            context: format!("writing the status of Node {name}"),
            source,
        })?;
    renew_lease(client, name).await
}

/// Creates or renews the node's Lease.
async fn renew_lease(client: &kube::Client, name: &str) -> Result<(), Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(Timestamp::now());
    let patch = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now,
        },
    });
    leases
        .patch(
            name,
            &PatchParams::apply("quorate-node-agent").force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
        .map_err(|source| Error::Kube {
            context: format!("renewing the Lease of Node {name}"),
            source,
        })
}

/// Heartbeats forever: the Lease and the conditions' `lastHeartbeatTime`. Re-registers the Node
/// if someone deleted it.
pub(crate) async fn heartbeat(
    client: kube::Client,
    name: String,
    ip: Ipv4Addr,
    kubelet_version: String,
    period: Duration,
    extra_labels: BTreeMap<String, String>,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        tokio::time::sleep(period).await;
        let now = Time(Timestamp::now());
        let beats: Vec<serde_json::Value> = CONDITION_TYPES
            .iter()
            .map(|t| json!({"type": t, "lastHeartbeatTime": now}))
            .collect();
        let patch = json!({"status": {"conditions": beats}});
        let result = match nodes
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 404 => {
                register(&client, &name, ip, &kubelet_version, &extra_labels).await
            }
            Err(source) => Err(Error::Kube {
                context: format!("heartbeat of Node {name}"),
                source,
            }),
            Ok(_) => renew_lease(&client, &name).await,
        };
        if let Err(e) = result {
            tracing::warn!(node = %name, error = %e, "node heartbeat failed");
        }
    }
}

/// Tier: unit (pure).
#[cfg(test)]
mod tests {
    use super::*;

    fn pod(selector: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(json!({"spec": {"containers": [], "nodeSelector": selector}}))
            .expect("pod")
    }

    #[test]
    fn a_node_selector_admits_only_nodes_with_every_label() {
        let plain = labels("quorate-node-1", &BTreeMap::new());
        let standin = labels(
            "quorate-standins",
            &BTreeMap::from([("quorate.io/standin".to_string(), "true".to_string())]),
        );
        let none: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(json!({"spec": {"containers": []}})).expect("pod");
        assert!(admits(&plain, &none) && admits(&standin, &none));
        let wants = pod(json!({"quorate.io/standin": "true"}));
        assert!(!admits(&plain, &wants));
        assert!(admits(&standin, &wants));
        let both = pod(json!({"quorate.io/standin": "true", "kubernetes.io/os": "linux"}));
        assert!(admits(&standin, &both));
        let other = pod(json!({"kubernetes.io/hostname": "quorate-node-1"}));
        assert!(admits(&plain, &other) && !admits(&standin, &other));
    }
}
