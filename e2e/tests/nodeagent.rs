//! Tests of the node agent against a real control plane and real ZooKeeper.
//!
//! Each test starts its own plane and agent; the tests run one at a time (ZooKeeper is heavy on
//! two cores). The member Pods are shaped like the ones quorate's operator builds: an init
//! container that prepares the data volume from a ConfigMap and the environment, and a
//! ZooKeeper container that binds its client port to its DNS name, its quorum and election
//! ports to its server line's address, and its AdminServer to its Pod IP.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use quorate_testbed::controlplane::{ControlPlane, Options};
use quorate_testbed::kazoo::Judge;
use quorate_testbed::nodeagent::{
    AgentOptions, Cut, NodeAgent, QUORATE_BIN_MOUNT, REASON_IMAGE_NOT_RUNNABLE, nft_command,
};
use serde_json::json;

/// One test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NS: &str = "zk";
const IMAGE: &str = "docker.io/library/zookeeper:3.9.5";

/// The init container's script: the operator's `prepare` step.
const PREPARE: &str = r#"set -eu
mkdir -p /var/lib/zookeeper/data /var/lib/zookeeper/conf
echo "$ZK_SERVER_ID" > /var/lib/zookeeper/data/myid
if [ ! -f /var/lib/zookeeper/conf/zoo.cfg ]; then
  cp /etc/quorate/config/zoo.cfg /var/lib/zookeeper/conf/zoo.cfg
  printf '%s\n' "$ZK_INITIAL_DYNAMIC" > /var/lib/zookeeper/conf/zoo.cfg.dynamic
fi
sed -i '/^admin\.serverAddress=/d' /var/lib/zookeeper/conf/zoo.cfg
echo "admin.serverAddress=$POD_IP" >> /var/lib/zookeeper/conf/zoo.cfg
"#;

const ZOO_CFG: &str = "tickTime=2000
initLimit=10
syncLimit=5
dataDir=/var/lib/zookeeper/data
dynamicConfigFile=/var/lib/zookeeper/conf/zoo.cfg.dynamic
reconfigEnabled=true
standaloneEnabled=false
admin.enableServer=true
admin.serverPort=8080
4lw.commands.whitelist=srvr,stat,mntr,conf,ruok,isro
";

/// A control plane, an admin client and a node agent.
struct Bed {
    plane: ControlPlane,
    client: Client,
    agent: Option<NodeAgent>,
}

impl Bed {
    async fn start() -> Bed {
        Bed::start_with(AgentOptions::default()).await
    }

    async fn start_with(opts: AgentOptions) -> Bed {
        let plane = ControlPlane::start(Options::default())
            .await
            .expect("control plane starts");
        let client = plane.client().await.expect("admin client");
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": NS}})).expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        let agent = NodeAgent::start(client.clone(), opts)
            .await
            .expect("node agent starts");
        Bed {
            plane,
            client,
            agent: Some(agent),
        }
    }

    fn agent(&self) -> &NodeAgent {
        self.agent.as_ref().expect("agent running")
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn create<K>(&self, value: serde_json::Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let obj: K = serde_json::from_value(value).expect("valid object");
        Api::<K>::namespaced(self.client.clone(), NS)
            .create(&PostParams::default(), &obj)
            .await
            .expect("create object")
    }

    /// The tails of every container log, for failure messages.
    fn logs(&self) -> String {
        let Some(agent) = &self.agent else {
            return String::new();
        };
        let mut out = String::new();
        let dir = agent.state_dir().join("logs");
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for path in entries {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            out.push_str(&format!("\n--- {} ---\n{tail}\n", path.display()));
        }
        out
    }

    /// Polls `check` every 250 ms until it returns Some; panics after `timeout` with the logs.
    async fn eventually<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn pod(&self, name: &str) -> Option<Pod> {
        self.pods().get_opt(name).await.expect("get pod")
    }

    /// Waits until the Pod is Ready; returns it.
    async fn ready(&self, name: &str, timeout: Duration) -> Pod {
        self.eventually(&format!("pod {name} Ready"), timeout, || async {
            self.pod(name).await.filter(is_ready)
        })
        .await
    }

    /// Creates the ConfigMap and the headless Service of an ensemble.
    async fn ensemble_objects(&self, ens: &str) {
        self.create::<ConfigMap>(json!({
            "metadata": {"name": format!("{ens}-config")},
            "data": {"zoo.cfg": ZOO_CFG},
        }))
        .await;
        self.create::<Service>(json!({
            "metadata": {"name": format!("{ens}-members")},
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": {"app.kubernetes.io/name": "zookeeper", "app.kubernetes.io/instance": ens},
                "ports": [
                    {"name": "client", "port": 2181},
                    {"name": "quorum", "port": 2888},
                    {"name": "election", "port": 3888},
                ],
            },
        }))
        .await;
    }

    /// Creates a member's claim and Pod.
    async fn member(&self, ens: &str, id: u32, ids: &[u32]) {
        if self
            .pvcs()
            .get_opt(&format!("data-{ens}-{id}"))
            .await
            .expect("get pvc")
            .is_none()
        {
            self.create::<PersistentVolumeClaim>(json!({
                "metadata": {"name": format!("data-{ens}-{id}")},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }))
            .await;
        }
        self.create::<Pod>(member_pod(ens, id, ids)).await;
    }

    fn pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), NS)
    }
}

fn dns_name(ens: &str, id: u32) -> String {
    format!("{ens}-{id}.{ens}-members.{NS}.svc.cluster.local")
}

/// A member Pod as quorate's operator builds it.
fn member_pod(ens: &str, id: u32, ids: &[u32]) -> serde_json::Value {
    let dynamic: Vec<String> = ids
        .iter()
        .map(|&i| {
            let dns = dns_name(ens, i);
            format!("server.{i}={dns}:2888:3888:participant;{dns}:2181")
        })
        .collect();
    let env = json!([
        {"name": "ZK_SERVER_ID", "value": id.to_string()},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "ZK_INITIAL_DYNAMIC", "value": dynamic.join("\n")},
        {"name": "JVM_OPTS", "value": "-Xmx256m -XX:TieredStopAtLevel=1"},
    ]);
    let mounts = json!([
        {"name": "data", "mountPath": "/var/lib/zookeeper"},
        {"name": "config", "mountPath": "/etc/quorate/config"},
    ]);
    json!({
        "metadata": {
            "name": format!("{ens}-{id}"),
            "labels": {"app.kubernetes.io/name": "zookeeper", "app.kubernetes.io/instance": ens},
        },
        "spec": {
            "hostname": format!("{ens}-{id}"),
            "subdomain": format!("{ens}-members"),
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": format!("data-{ens}-{id}")}},
                {"name": "config", "configMap": {"name": format!("{ens}-config")}},
            ],
            "initContainers": [{
                "name": "prepare",
                "image": IMAGE,
                "command": ["/bin/sh", "-c", PREPARE],
                "env": env,
                "volumeMounts": mounts,
            }],
            "containers": [{
                "name": "zookeeper",
                "image": IMAGE,
                "command": ["/bin/sh", "-c",
                    "exec java $JVM_OPTS -Dlogback.configurationFile=/conf/logback.xml \
                     -cp '/apache-zookeeper-3.9.5-bin/lib/*' \
                     org.apache.zookeeper.server.quorum.QuorumPeerMain /var/lib/zookeeper/conf/zoo.cfg"],
                "env": env,
                "ports": [
                    {"name": "client", "containerPort": 2181},
                    {"name": "quorum", "containerPort": 2888},
                    {"name": "election", "containerPort": 3888},
                    {"name": "admin", "containerPort": 8080},
                ],
                "readinessProbe": {
                    "httpGet": {"port": 8080, "path": "/commands/monitor"},
                    "periodSeconds": 1,
                },
                "volumeMounts": mounts,
            }],
        },
    })
}

fn is_ready(pod: &Pod) -> bool {
    condition(pod, "Ready") == Some("True")
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

fn pod_ip(pod: &Pod) -> Ipv4Addr {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .expect("pod IP")
        .parse()
        .expect("an IPv4 pod IP")
}

fn main_status_opt(pod: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|s| s.first().cloned())
}

fn main_status(pod: &Pod) -> k8s_openapi::api::core::v1::ContainerStatus {
    main_status_opt(pod).expect("a container status")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("http client")
}

/// GET `/commands/<command>` on a member's AdminServer.
async fn admin(ip: Ipv4Addr, command: &str) -> Option<serde_json::Value> {
    let resp = http()
        .get(format!("http://{ip}:8080/commands/{command}"))
        .send()
        .await
        .ok()?;
    resp.json().await.ok()
}

/// A four-letter word on a member's client port.
async fn four_letter(ip: Ipv4Addr, word: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let talk = async {
        let mut stream = tokio::net::TcpStream::connect((ip, 2181)).await.ok()?;
        stream.write_all(word.as_bytes()).await.ok()?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await.ok()?;
        Some(out)
    };
    tokio::time::timeout(Duration::from_secs(3), talk)
        .await
        .ok()
        .flatten()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Pids of processes whose environment mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(env) = std::fs::read(entry.path().join("environ"))
            && String::from_utf8_lossy(&env).contains(needle)
        {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_stays_ready_and_an_unknown_image_stays_pending_with_a_clear_reason() {
    let _serial = SERIAL.lock().await;
    let bed = Bed::start_with(AgentOptions {
        heartbeat: Duration::from_secs(1),
        ..AgentOptions::default()
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(bed.client.clone(), "kube-node-lease");
    let renewed = |lease: Lease| lease.spec.and_then(|s| s.renew_time);
    let first = renewed(
        leases
            .get(bed.agent().node_name())
            .await
            .expect("the node's lease"),
    );
    assert!(first.is_some());
    bed.eventually(
        "the lease to be renewed",
        Duration::from_secs(10),
        || async {
            let now = renewed(leases.get(bed.agent().node_name()).await.ok()?);
            (now > first).then_some(())
        },
    )
    .await;

    let node = Api::<Node>::all(bed.client.clone())
        .get(bed.agent().node_name())
        .await
        .expect("the node is registered");
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    assert!(ready, "the node is Ready");

    bed.create::<Pod>(json!({
        "metadata": {"name": "busy"},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}]},
    }))
    .await;
    let pod = bed
        .eventually(
            "the image to be refused",
            Duration::from_secs(30),
            || async {
                bed.pod("busy").await.filter(|p| {
                    main_status_opt(p)
                        .and_then(|s| s.state)
                        .and_then(|s| s.waiting)
                        .and_then(|w| w.reason)
                        .as_deref()
                        == Some(REASON_IMAGE_NOT_RUNNABLE)
                })
            },
        )
        .await;
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some(bed.agent().node_name()));
    let waiting = main_status(&pod)
        .state
        .and_then(|s| s.waiting)
        .expect("waiting");
    let message = waiting.message.unwrap_or_default();
    assert!(message.contains("busybox:1.36"), "{message}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pod = bed.pod("busy").await.expect("pod");
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    assert!(!is_ready(&pod));

    let events: Api<Event> = Api::namespaced(bed.client.clone(), NS);
    let event = bed
        .eventually(
            "an ImageNotRunnable event",
            Duration::from_secs(10),
            || async {
                events
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .find(|e| e.reason.as_deref() == Some(REASON_IMAGE_NOT_RUNNABLE))
            },
        )
        .await;
    assert!(
        event.note.unwrap_or_default().contains("busybox:1.36"),
        "the event names the image"
    );

    // A failing init container holds the Pod in Pending and is retried with back-off.
    bed.create::<Pod>(json!({
        "metadata": {"name": "bad-init"},
        "spec": {
            "initContainers": [{"name": "fail", "image": IMAGE, "command": ["/bin/sh", "-c", "exit 3"]}],
            "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "3600"]}],
        },
    }))
    .await;
    let pod = bed
        .eventually(
            "the init container to be retried",
            Duration::from_secs(30),
            || async {
                bed.pod("bad-init").await.filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.init_container_statuses.as_ref())
                        .and_then(|s| s.first())
                        .is_some_and(|s| s.restart_count >= 2)
                })
            },
        )
        .await;
    let status = pod.status.as_ref().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(condition(&pod, "Initialized"), Some("False"));
    let init = &status.init_container_statuses.as_ref().expect("init")[0];
    let last = init
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("last state");
    assert_eq!(last.exit_code, 3);
    assert!(
        main_status(&pod)
            .state
            .and_then(|s| s.waiting)
            .is_some_and(|w| w.reason.as_deref() == Some("PodInitializing"))
    );

    let described = bed
        .plane
        .kubectl()
        .args(["describe", "pod", "-n", NS, "busy"])
        .output()
        .expect("kubectl describe");
    let text = String::from_utf8_lossy(&described.stdout);
    assert!(text.contains(REASON_IMAGE_NOT_RUNNABLE), "{text}");
    assert!(text.contains("busybox:1.36"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_pod_is_bound_runs_becomes_ready_and_serves_at_its_pod_ip() {
    let _serial = SERIAL.lock().await;
    let bed = Bed::start().await;
    bed.ensemble_objects("solo").await;
    let started = Instant::now();
    bed.member("solo", 1, &[1]).await;

    let pod = bed.ready("solo-1", Duration::from_secs(120)).await;
    eprintln!("solo-1 Ready {:?} after creation", started.elapsed());
    let ip = pod_ip(&pod);
    assert_eq!(ip.octets()[0..2], [127, 0]);
    assert_eq!(Some(ip), bed.agent().pod_ip(NS, "solo-1"));
    let status = pod.status.as_ref().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(
        status.host_ip.as_deref(),
        Some(bed.agent().node_ip().to_string().as_str())
    );
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(bed.agent().node_name())
    );
    for c in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(condition(&pod, c), Some("True"), "{c}");
    }
    let init = &status
        .init_container_statuses
        .as_ref()
        .expect("init statuses")[0];
    let done = init
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("init container terminated");
    assert_eq!(done.exit_code, 0);
    assert!(main_status(&pod).state.and_then(|s| s.running).is_some());

    // The AdminServer on the Pod IP, the client port on the DNS name (which is the Pod IP).
    let srvr = admin(ip, "srvr").await.expect("AdminServer answers");
    assert_eq!(
        srvr.pointer("/server_stats/server_state")
            .and_then(|s| s.as_str()),
        Some("leader"),
        "{srvr}"
    );
    let word = four_letter(ip, "srvr").await.expect("client port answers");
    assert!(word.contains("Mode: leader"), "{word}");
    let hosts = std::fs::read_to_string(bed.agent().hosts_file()).expect("hosts file");
    assert!(
        hosts.contains(&format!("{ip} {}", dns_name("solo", 1))),
        "{hosts}"
    );

    // ConfigMap volumes follow the object.
    let configs: Api<ConfigMap> = Api::namespaced(bed.client.clone(), NS);
    let mut cm = configs.get("solo-config").await.expect("configmap");
    cm.data
        .get_or_insert_default()
        .insert("zoo.cfg".into(), format!("{ZOO_CFG}# edited\n"));
    configs
        .replace("solo-config", &PostParams::default(), &cm)
        .await
        .expect("update configmap");
    bed.eventually(
        "the ConfigMap volume to follow",
        Duration::from_secs(10),
        || async {
            let out = bed
                .agent()
                .exec(
                    NS,
                    "solo-1",
                    None,
                    &["cat", "/etc/quorate/config/zoo.cfg"],
                    Duration::from_secs(10),
                )
                .await
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .ends_with("# edited\n")
                .then_some(())
        },
    )
    .await;

    // The claim looks healthy, and its volume is mounted where the container expects it.
    let pvc = bed.pvcs().get("data-solo-1").await.expect("pvc");
    assert_eq!(pvc.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    let myid = bed
        .agent()
        .exec(
            NS,
            "solo-1",
            None,
            &["cat", "/var/lib/zookeeper/data/myid"],
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert_eq!(String::from_utf8_lossy(&myid.stdout).trim(), "1");
    assert!(
        bed.agent()
            .volume_path(NS, "data-solo-1")
            .join("data/myid")
            .is_file()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_find_each_other_by_dns_name_and_elect_a_leader() {
    let _serial = SERIAL.lock().await;
    let bed = Bed::start().await;
    bed.ensemble_objects("ens").await;
    // Members 2 and 3 first: they form a quorum while member 1's name does not resolve yet.
    // When member 1 comes, they must resolve its name anew to connect to it (ZooKeeper keeps
    // the connection that the higher id opens), which the agent's cache settings allow at once.
    let started = Instant::now();
    for id in [2, 3] {
        bed.member("ens", id, &[1, 2, 3]).await;
    }
    for id in [2, 3] {
        bed.ready(&format!("ens-{id}"), Duration::from_secs(120))
            .await;
    }
    eprintln!(
        "members 2 and 3 Ready {:?} after creation",
        started.elapsed()
    );
    let late = Instant::now();
    bed.member("ens", 1, &[1, 2, 3]).await;
    // With Java's default 10 s cache of failed lookups this takes about 15 s.
    bed.ready("ens-1", Duration::from_secs(10)).await;
    let mut ips = Vec::new();
    for id in 1..=3 {
        ips.push(pod_ip(
            &bed.ready(&format!("ens-{id}"), Duration::from_secs(60))
                .await,
        ));
    }
    eprintln!("member 1 Ready {:?} after creation", late.elapsed());
    let distinct: std::collections::BTreeSet<_> = ips.iter().collect();
    assert_eq!(distinct.len(), 3, "{ips:?}");

    let leader = bed
        .eventually(
            "one leader that all members follow",
            Duration::from_secs(60),
            || {
                let ips = ips.clone();
                async move {
                    let mut leaders = Vec::new();
                    let mut ids = Vec::new();
                    for ip in &ips {
                        let v = admin(*ip, "leader").await?;
                        if v.get("is_leader")?.as_bool()? {
                            leaders.push(*ip);
                        }
                        ids.push(v.get("leader_id")?.as_u64()?);
                    }
                    (leaders.len() == 1 && ids.iter().all(|i| *i == ids[0]))
                        .then(|| (leaders[0], ids[0]))
                }
            },
        )
        .await;
    eprintln!(
        "leader: server.{} at {}; all agree {:?} after member 1's creation",
        leader.1,
        leader.0,
        late.elapsed()
    );
    let voting = admin(ips[0], "voting_view").await.expect("voting_view");
    let members = voting
        .get("current_config")
        .and_then(|c| c.as_object())
        .expect("current_config");
    assert_eq!(members.len(), 3, "{voting}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_stops_and_disappears_and_its_successor_keeps_ip_and_data() {
    let _serial = SERIAL.lock().await;
    let bed = Bed::start().await;
    bed.ensemble_objects("solo").await;
    bed.member("solo", 1, &[1]).await;
    let pod = bed.ready("solo-1", Duration::from_secs(120)).await;
    let ip = pod_ip(&pod);
    let volume = bed.agent().volume_path(NS, "data-solo-1");
    std::fs::write(volume.join("marker"), "kept").expect("write into the volume");
    let pids: Vec<u32> = bed.agent().pids().into_iter().map(|(_, p)| p).collect();
    assert_eq!(pids.len(), 1, "one running container: {pids:?}");

    let deleting = Instant::now();
    bed.pods()
        .delete("solo-1", &DeleteParams::default())
        .await
        .expect("delete pod");
    bed.eventually(
        "the pod object to disappear",
        Duration::from_secs(40),
        || async { bed.pod("solo-1").await.is_none().then_some(()) },
    )
    .await;
    eprintln!("deleted in {:?}", deleting.elapsed());
    assert!(!process_exists(pids[0]), "the container process is gone");
    assert!(bed.agent().pids().is_empty());
    assert!(admin(ip, "ruok").await.is_none(), "nothing answers at {ip}");

    bed.member("solo", 1, &[1]).await;
    let again = bed.ready("solo-1", Duration::from_secs(120)).await;
    assert_eq!(pod_ip(&again), ip, "the same name gets the same address");
    let marker = bed
        .agent()
        .exec(
            NS,
            "solo-1",
            None,
            &["cat", "/var/lib/zookeeper/marker"],
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert_eq!(String::from_utf8_lossy(&marker.stdout), "kept");
    let zoo_cfg = std::fs::read_to_string(volume.join("conf/zoo.cfg")).expect("zoo.cfg");
    assert_eq!(
        zoo_cfg.matches("admin.serverAddress=").count(),
        1,
        "{zoo_cfg}"
    );

    // Once the Pod is gone, deleting the claim removes its data.
    bed.pods()
        .delete("solo-1", &DeleteParams::default())
        .await
        .expect("delete pod");
    bed.eventually(
        "the pod object to disappear",
        Duration::from_secs(40),
        || async { bed.pod("solo-1").await.is_none().then_some(()) },
    )
    .await;
    assert!(volume.join("marker").exists());
    bed.pvcs()
        .delete("data-solo-1", &DeleteParams::default())
        .await
        .expect("delete pvc");
    bed.eventually(
        "the volume to be removed",
        Duration::from_secs(20),
        || async { (!volume.exists()).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_container_restarts_and_a_paused_one_turns_unready() {
    let _serial = SERIAL.lock().await;
    let bed = Bed::start().await;
    bed.ensemble_objects("solo").await;
    bed.member("solo", 1, &[1]).await;
    let pod = bed.ready("solo-1", Duration::from_secs(120)).await;
    assert_eq!(main_status(&pod).restart_count, 0);

    bed.agent().kill(NS, "solo-1").expect("kill");
    let killed = Instant::now();
    let pod = bed
        .eventually(
            "the restart count to increment",
            Duration::from_secs(30),
            || async {
                bed.pod("solo-1")
                    .await
                    .filter(|p| main_status_opt(p).is_some_and(|s| s.restart_count == 1))
            },
        )
        .await;
    let last = main_status(&pod)
        .last_state
        .and_then(|s| s.terminated)
        .expect("last state terminated");
    assert_eq!(last.exit_code, 137, "SIGKILL");
    bed.ready("solo-1", Duration::from_secs(60)).await;
    eprintln!("Ready again {:?} after the kill", killed.elapsed());

    bed.agent().pause(NS, "solo-1").expect("pause");
    let paused = Instant::now();
    bed.eventually(
        "the paused pod to turn unready",
        Duration::from_secs(30),
        || async { bed.pod("solo-1").await.filter(|p| !is_ready(p)) },
    )
    .await;
    eprintln!("unready {:?} after the pause", paused.elapsed());
    let pod = bed.pod("solo-1").await.expect("pod");
    assert!(main_status(&pod).state.and_then(|s| s.running).is_some());
    assert_eq!(
        main_status(&pod).restart_count,
        1,
        "a pause is not a restart"
    );

    bed.agent().resume(NS, "solo-1").expect("resume");
    bed.ready("solo-1", Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_agent_leaves_no_process_behind() {
    let _serial = SERIAL.lock().await;
    let mut bed = Bed::start().await;
    bed.ensemble_objects("solo").await;
    bed.member("solo", 1, &[1]).await;
    bed.ready("solo-1", Duration::from_secs(120)).await;
    let agent = bed.agent.take().expect("agent");
    let state = agent.state_dir().to_path_buf();
    let pids: Vec<u32> = agent.pids().into_iter().map(|(_, p)| p).collect();
    assert!(!pids.is_empty());
    let needle = state.display().to_string();
    assert!(
        !processes_mentioning(&needle).is_empty(),
        "the container's environment names the state directory"
    );
    agent.stop().await;
    for pid in pids {
        assert!(!process_exists(pid), "process {pid} outlived the agent");
    }
    assert_eq!(processes_mentioning(&needle), Vec::<u32>::new());
    assert!(!state.exists(), "the temporary state directory is removed");
}

/// A stand-in for the quorate binary: records how it was run into the Pod's shared volume.
const FAKE_QUORATE: &str = r#"#!/bin/sh
set -eu
printf '%s\n' "$0" "$@" > /work/args
printf '%s\n' "$QUORATE_RESTORE_ID" > /work/env
if touch /opt/quorate/bin/written 2>/dev/null; then echo writable; else echo read-only; fi > /work/mount
"#;

/// The main container's check: what the init container left, exactly.
const CHECK_RESTORE: &str = r#"set -eu
expected_args='/opt/quorate/bin/quorate
restore
--from
s3://backups/default/masters/0001
--to
/var/lib/zookeeper'
test "$(cat /work/args)" = "$expected_args"
test "$(cat /work/env)" = "r-42"
test "$(cat /work/mount)" = "read-only"
echo "main saw the restore: $(tr '\n' ' ' < /work/args)"
"#;

/// A Pod shaped like a member whose data quorate restores: an init container of quorate's own
/// image runs `/opt/quorate/bin/quorate restore ...`, then the ZooKeeper container starts.
fn restore_pod(image: &str) -> serde_json::Value {
    let work = json!([{"name": "work", "mountPath": "/work"}]);
    json!({
        "metadata": {"name": "restore"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "work", "emptyDir": {}}],
            "initContainers": [{
                "name": "restore",
                "image": image,
                "command": ["/opt/quorate/bin/quorate"],
                "args": ["restore", "--from", "s3://backups/default/masters/0001", "--to", "/var/lib/zookeeper"],
                "env": [{"name": "QUORATE_RESTORE_ID", "value": "r-42"}],
                "volumeMounts": work,
            }],
            "containers": [{
                "name": "main",
                "image": IMAGE,
                "command": ["/bin/sh", "-c", CHECK_RESTORE],
                "volumeMounts": work,
            }],
        },
    })
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn init_status(pod: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|s| s.first().cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorate_init_container_runs_the_binary_from_the_agents_bin_dir() {
    use std::os::unix::fs::PermissionsExt as _;
    let _serial = SERIAL.lock().await;
    let bin = tempfile::tempdir().expect("a bin directory");
    let fake = bin.path().join("quorate");
    std::fs::write(&fake, FAKE_QUORATE).expect("write the fake binary");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bed = Bed::start_with(AgentOptions {
        quorate_bin_dir: Some(bin.path().to_path_buf()),
        ..AgentOptions::default()
    })
    .await;
    assert_eq!(QUORATE_BIN_MOUNT, "/opt/quorate/bin");
    bed.create::<Pod>(restore_pod("quorate:test")).await;
    let pod = bed
        .eventually(
            "the restore Pod to finish",
            Duration::from_secs(90),
            || async {
                bed.pod("restore")
                    .await
                    .filter(|p| matches!(phase(p), Some("Succeeded" | "Failed")))
            },
        )
        .await;
    assert_eq!(phase(&pod), Some("Succeeded"), "{}", bed.logs());
    let init = init_status(&pod).expect("the init container's status");
    assert_eq!(init.image_id, "quorate-testbed/quorate:test");
    let done = init
        .state
        .and_then(|s| s.terminated)
        .expect("the init container terminated");
    assert_eq!(done.exit_code, 0);
    let log = std::fs::read_to_string(bed.agent().log_path(NS, "restore", "main"))
        .expect("the main container's log");
    assert!(
        log.contains(
            "main saw the restore: /opt/quorate/bin/quorate restore --from \
             s3://backups/default/masters/0001 --to /var/lib/zookeeper"
        ),
        "{log}"
    );
    // The mount was read-only: nothing was written into the host's directory.
    assert!(!bin.path().join("written").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorate_image_on_an_agent_without_a_bin_dir_stays_pending_with_a_clear_reason() {
    let _serial = SERIAL.lock().await;
    let bed = Bed::start_with(AgentOptions {
        quorate_bin_dir: None,
        ..AgentOptions::default()
    })
    .await;
    // A directory that does not exist is refused when an agent starts.
    let refused = NodeAgent::start(
        bed.client.clone(),
        AgentOptions {
            node_name: "quorate-node-2".into(),
            quorate_bin_dir: Some("/nonexistent/quorate-bin".into()),
            ..AgentOptions::default()
        },
    )
    .await;
    let message = refused
        .expect_err("a missing bin dir is refused")
        .to_string();
    assert!(message.contains("/nonexistent/quorate-bin"), "{message}");

    bed.create::<Pod>(restore_pod("ghcr.io/quorate/quorate:0.1.0"))
        .await;
    let pod = bed
        .eventually(
            "the quorate image to be refused",
            Duration::from_secs(30),
            || async {
                bed.pod("restore").await.filter(|p| {
                    init_status(p)
                        .and_then(|s| s.state)
                        .and_then(|s| s.waiting)
                        .and_then(|w| w.reason)
                        .as_deref()
                        == Some(REASON_IMAGE_NOT_RUNNABLE)
                })
            },
        )
        .await;
    let waiting = init_status(&pod)
        .and_then(|s| s.state)
        .and_then(|s| s.waiting)
        .expect("waiting");
    let message = waiting.message.unwrap_or_default();
    for needle in [
        "ghcr.io/quorate/quorate:0.1.0",
        "quorate binary directory",
        "QUORATE_AGENT_BIN_DIR",
        "/opt/quorate/bin",
    ] {
        assert!(message.contains(needle), "{needle:?} in {message}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pod = bed.pod("restore").await.expect("pod");
    assert_eq!(phase(&pod), Some("Pending"));
    assert_eq!(condition(&pod, "Initialized"), Some("False"));
    assert!(
        main_status(&pod)
            .state
            .and_then(|s| s.waiting)
            .is_some_and(|w| w.reason.as_deref() == Some("PodInitializing"))
    );
    assert_eq!(
        init_status(&pod).map(|s| s.restart_count),
        Some(0),
        "nothing ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_termination_message_written_into_a_volume_is_reported_when_the_container_exits() {
    let _serial = SERIAL.lock().await;
    let bed = Bed::start().await;
    let had_dev_log = Path::new("/dev/termination-log").exists();
    let r = json!([{"name": "r", "mountPath": "/r"}]);
    bed.create::<Pod>(json!({
        "metadata": {"name": "message"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "r", "emptyDir": {}}],
            "initContainers": [{
                "name": "first",
                "image": IMAGE,
                "command": ["/bin/sh", "-c", "printf first > /r/first"],
                "terminationMessagePath": "/r/first",
                "volumeMounts": r,
            }],
            "containers": [{
                "name": "main",
                "image": IMAGE,
                "command": ["/bin/sh", "-c", "echo hello > /r/message"],
                "terminationMessagePath": "/r/message",
                "volumeMounts": r,
            }, {
                // The API's default path, /dev/termination-log, is under no volume.
                "name": "quiet",
                "image": IMAGE,
                "command": ["/bin/sh", "-c", "true"],
                "volumeMounts": r,
            }],
        },
    }))
    .await;
    let pod = bed
        .eventually(
            "the message Pod to finish",
            Duration::from_secs(60),
            || async {
                bed.pod("message")
                    .await
                    .filter(|p| matches!(phase(p), Some("Succeeded" | "Failed")))
            },
        )
        .await;
    assert_eq!(phase(&pod), Some("Succeeded"), "{}", bed.logs());
    let terminated = |s: k8s_openapi::api::core::v1::ContainerStatus| {
        s.state
            .and_then(|s| s.terminated)
            .expect("the container terminated")
    };
    let main = terminated(main_status(&pod));
    assert_eq!(main.exit_code, 0);
    assert_eq!(main.message.as_deref(), Some("hello\n"));
    let first = terminated(init_status(&pod).expect("the init container's status"));
    assert_eq!(first.message.as_deref(), Some("first"));
    let quiet = pod
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|s| s.into_iter().find(|s| s.name == "quiet"))
        .expect("the quiet container's status");
    let quiet = terminated(quiet);
    assert_eq!(quiet.exit_code, 0);
    assert_eq!(quiet.message, None);
    if !had_dev_log {
        assert!(!Path::new("/dev/termination-log").exists());
    }
}

// ---------------------------------------------------------------------------------------------
// Network faults.

/// GET `/commands/<command>` on a member's AdminServer from a client bound to `from` (the node's
/// address reaches a cut member): the HTTP status and the body.
async fn admin_from(
    from: Ipv4Addr,
    ip: Ipv4Addr,
    command: &str,
) -> Option<(u16, serde_json::Value)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::V4(from))
        .timeout(Duration::from_secs(3))
        .build()
        .expect("http client");
    let resp = client
        .get(format!("http://{ip}:8080/commands/{command}"))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.ok()?))
}

/// Whether an AdminServer answer says the member is not serving (no quorum).
fn not_serving(body: &serde_json::Value) -> bool {
    body.get("error")
        .and_then(|e| e.as_str())
        .is_some_and(|e| e.contains("not currently serving"))
}

/// `server_stats.server_state` of a `srvr` answer.
fn server_state(body: &serde_json::Value) -> Option<&str> {
    body.pointer("/server_stats/server_state")
        .and_then(|s| s.as_str())
}

/// `nft list tables`.
fn nft_tables() -> String {
    let out = nft_command()
        .expect("nftables in the cache (testbed prepare)")
        .args(["list", "tables"])
        .output()
        .expect("run nft");
    assert!(out.status.success(), "nft list tables: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The net_cls cgroup path of a process (`/proc/<pid>/cgroup`), if it is in one.
fn net_cls_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == "net_cls")
                .then(|| path.to_string())
        })
}

/// The pid of a Pod's running main container.
fn main_pid(agent: &NodeAgent, pod: &str, container: &str) -> Option<u32> {
    let name = format!("{NS}/{pod}/{container}");
    agent
        .pids()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, p)| p)
}

/// Starts a three-member ensemble `ens` and waits for a leader all agree on: the members'
/// addresses (member `i` at index `i - 1`) and the leader's id.
async fn three_members(bed: &Bed, ens: &str) -> (Vec<Ipv4Addr>, u64) {
    bed.ensemble_objects(ens).await;
    for id in 1..=3 {
        bed.member(ens, id, &[1, 2, 3]).await;
    }
    let mut ips = Vec::new();
    for id in 1..=3 {
        ips.push(pod_ip(
            &bed.ready(&format!("{ens}-{id}"), Duration::from_secs(180))
                .await,
        ));
    }
    let leader = agreed_leader(bed, &ips, "one leader that all three members follow").await;
    (ips, leader)
}

/// Waits until every member of `ips` answers `leader` and all name the same leader, which is
/// among them; returns its id.
async fn agreed_leader(bed: &Bed, ips: &[Ipv4Addr], what: &str) -> u64 {
    bed.eventually(what, Duration::from_secs(90), || async move {
        let mut leaders = 0;
        let mut ids = Vec::new();
        for ip in ips {
            let v = admin(*ip, "leader").await?;
            leaders += usize::from(v.get("is_leader")?.as_bool()?);
            ids.push(v.get("leader_id")?.as_u64()?);
        }
        (leaders == 1 && ids.iter().all(|i| *i == ids[0])).then_some(ids[0])
    })
    .await
}

fn hosts(ips: &[Ipv4Addr]) -> String {
    ips.iter()
        .map(|ip| format!("{ip}:2181"))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_both_ways_loses_leadership_and_rejoins_as_follower_when_healed() {
    let _serial = SERIAL.lock().await;
    let judge = Judge::new().await.expect("kazoo venv");
    let bed = Bed::start().await;
    let (ips, old) = three_members(&bed, "cut").await;
    let agent = bed.agent();
    let node = agent.node_ip();
    let old_ip = ips[old as usize - 1];
    let others: Vec<Ipv4Addr> = ips.iter().copied().filter(|ip| *ip != old_ip).collect();
    let written = judge
        .write(&hosts(&ips), None, "/before", 50)
        .await
        .expect("write before the cut");
    assert_eq!(written.written, 50, "{written:?}");

    let pod = format!("cut-{old}");
    agent.cut(NS, &pod, Cut::Both).expect("cut the leader");
    let cut_at = Instant::now();
    assert!(
        nft_tables().contains(agent.nft_table()),
        "the agent's table is in force"
    );
    // Nothing reaches it from an ordinary client (127.0.0.1) any more.
    assert_eq!(admin(old_ip, "ruok").await, None, "the cut leader answered");

    let new = agreed_leader(&bed, &others, "the other two to elect a new leader").await;
    assert_ne!(new, old, "the cut leader cannot stay leader of the others");
    eprintln!(
        "server.{new} leads the other two {:?} after cutting server.{old}",
        cut_at.elapsed()
    );
    let written = judge
        .write(&hosts(&others), None, "/during", 100)
        .await
        .expect("write during the cut");
    assert_eq!(written.written, 100, "{written:?}");
    assert!(written.failures.is_empty(), "{written:?}");

    // Seen from the node's address, the old leader answers but serves nothing.
    let (status, body) = bed
        .eventually(
            "the cut leader to stop serving",
            Duration::from_secs(60),
            || async {
                admin_from(node, old_ip, "srvr")
                    .await
                    .filter(|(_, b)| not_serving(b))
            },
        )
        .await;
    eprintln!(
        "server.{old} not serving {:?} after the cut: HTTP {status} {body}",
        cut_at.elapsed()
    );
    assert!(
        agent.dropped_packets().expect("counters") > 0,
        "the cut dropped nothing"
    );
    assert_eq!(admin(old_ip, "ruok").await, None, "the cut leader answered");

    agent.heal(NS, &pod).expect("heal");
    let healed = Instant::now();
    assert!(
        !nft_tables().contains(agent.nft_table()),
        "nothing in force, no table"
    );
    assert!(agent.heal(NS, &pod).is_err(), "healing twice is an error");
    bed.eventually(
        "the old leader to rejoin as a follower of the new one",
        Duration::from_secs(60),
        || async {
            let srvr = admin(old_ip, "srvr").await?;
            let view = admin(old_ip, "leader").await?;
            (server_state(&srvr) == Some("follower") && view.get("leader_id")?.as_u64()? == new)
                .then_some(())
        },
    )
    .await;
    eprintln!(
        "server.{old} follows again {:?} after the heal",
        healed.elapsed()
    );
    // It has what was written while it was away.
    let verified = judge
        .verify(&format!("{old_ip}:2181"), None, "/during", 100)
        .await
        .expect("verify through the healed member");
    assert!(verified.ok, "{verified:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_outgoing_stops_serving_stays_cut_across_a_restart_and_serves_when_healed() {
    let _serial = SERIAL.lock().await;
    let judge = Judge::new().await.expect("kazoo venv");
    let bed = Bed::start().await;
    let (ips, leader) = three_members(&bed, "out").await;
    let agent = bed.agent();
    let node = agent.node_ip();
    let id = (1..=3u64).find(|i| *i != leader).expect("a follower");
    let ip = ips[id as usize - 1];
    let pod = format!("out-{id}");
    let srvr = admin(ip, "srvr").await.expect("the follower answers");
    assert_eq!(server_state(&srvr), Some("follower"), "{srvr}");

    // Every container process of the Pod is in the Pod's cgroup.
    let pid = main_pid(agent, &pod, "zookeeper").expect("the follower runs");
    let cgroup = net_cls_of(pid).expect("a net_cls cgroup");
    assert!(cgroup.ends_with(&format!("/{ip}")), "{cgroup}");
    assert!(agent.pod_classid(NS, &pod).is_some());

    agent.cut(NS, &pod, Cut::Outgoing).expect("cut outgoing");
    let cut_at = Instant::now();
    bed.eventually(
        "the follower to stop serving",
        Duration::from_secs(60),
        || async {
            admin_from(node, ip, "srvr")
                .await
                .filter(|(_, b)| not_serving(b))
        },
    )
    .await;
    eprintln!(
        "server.{id} not serving {:?} after the cut",
        cut_at.elapsed()
    );
    // Its answers to anyone but the node are dropped.
    assert_eq!(admin(ip, "ruok").await, None, "the cut follower answered");
    // The other two keep a quorum.
    let others: Vec<Ipv4Addr> = ips.iter().copied().filter(|i| *i != ip).collect();
    let written = judge
        .write(&hosts(&others), None, "/during", 50)
        .await
        .expect("write during the cut");
    assert_eq!(written.written, 50, "{written:?}");

    // A restarted container is in the same cgroup, so it stays cut.
    agent.kill(NS, &pod).expect("kill");
    let restarted = bed
        .eventually(
            "the follower's container to restart",
            Duration::from_secs(60),
            || async {
                bed.pod(&pod)
                    .await
                    .filter(|p| main_status_opt(p).is_some_and(|s| s.restart_count == 1))?;
                main_pid(agent, &pod, "zookeeper").filter(|p| *p != pid)
            },
        )
        .await;
    // The container's shell joins the Pod's cgroup as its first command: a process seen before
    // that is still in the root cgroup. Once it has left the root, it must be in the Pod's.
    let joined = bed
        .eventually(
            "the restarted container's shell to leave the root cgroup",
            Duration::from_secs(30),
            || async { net_cls_of(restarted).filter(|c| c != "/") },
        )
        .await;
    assert_eq!(joined, cgroup);
    bed.eventually(
        "the restarted follower's AdminServer to answer, not serving",
        Duration::from_secs(60),
        || async {
            admin_from(node, ip, "srvr")
                .await
                .filter(|(_, b)| not_serving(b))
        },
    )
    .await;
    // Uncut, a restarted member rejoins within a few seconds; cut, it must not for as long.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(8) {
        if let Some((_, body)) = admin_from(node, ip, "srvr").await {
            assert!(
                not_serving(&body),
                "the restarted member serves while cut: {body}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    agent.heal(NS, &pod).expect("heal");
    let healed = Instant::now();
    bed.eventually(
        "the follower to serve again",
        Duration::from_secs(60),
        || async {
            let srvr = admin(ip, "srvr").await?;
            (server_state(&srvr) == Some("follower")).then_some(())
        },
    )
    .await;
    eprintln!(
        "server.{id} serves again {:?} after the heal",
        healed.elapsed()
    );
    let verified = judge
        .verify(&format!("{ip}:2181"), None, "/during", 50)
        .await
        .expect("verify through the healed member");
    assert!(verified.ok, "{verified:?}");
}

/// A follower cut both ways gets nothing more from its leader, not even on the connection it
/// opened to it (from `127.0.0.1`, so neither the address rule nor its own cgroup's stops what
/// the leader sends back): it goes on following for a while (its read timeout), and what it has
/// processed by then is what it had at the cut, however many writes the other two pipelined
/// meanwhile. Judged from ZooKeeper: the follower's own `srvr`, asked from the node's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_both_ways_receives_nothing_even_on_the_connection_it_opened() {
    let _serial = SERIAL.lock().await;
    let judge = Judge::new().await.expect("kazoo venv");
    let bed = Bed::start().await;
    let (ips, leader) = three_members(&bed, "deaf").await;
    let agent = bed.agent();
    let node = agent.node_ip();
    let id = (1..=3u64).find(|i| *i != leader).expect("a follower");
    let ip = ips[id as usize - 1];
    let others: Vec<Ipv4Addr> = ips.iter().copied().filter(|i| *i != ip).collect();
    let zxid = |body: &serde_json::Value| {
        body.pointer("/server_stats/last_processed_zxid")
            .and_then(serde_json::Value::as_u64)
    };
    let written = judge
        .write(&hosts(&ips), None, "/before", 20)
        .await
        .expect("write before the cut");
    assert_eq!(written.written, 20, "{written:?}");
    // Every member has processed the writes before the cut.
    let before = bed
        .eventually(
            "the follower to process the writes before the cut",
            Duration::from_secs(30),
            || async {
                let mine = zxid(&admin(ip, "srvr").await?)?;
                let theirs = zxid(&admin(others[0], "srvr").await?)?;
                (mine == theirs).then_some(mine)
            },
        )
        .await;

    agent
        .cut(NS, &format!("deaf-{id}"), Cut::Both)
        .expect("cut the follower");
    let cut_at = Instant::now();
    let written = judge
        .write(&hosts(&others), None, "/during", 200)
        .await
        .expect("write during the cut");
    assert_eq!(written.written, 200, "{written:?}");
    let newest = zxid(
        &admin(others[0], "srvr")
            .await
            .expect("srvr of a serving member"),
    )
    .expect("a zxid");
    assert!(
        newest >= before + 200,
        "{newest:#x} after 200 writes on {before:#x}"
    );
    let (_, body) = admin_from(node, ip, "srvr")
        .await
        .expect("the cut follower answers the node");
    assert_eq!(
        (server_state(&body), zxid(&body)),
        (Some("follower"), Some(before)),
        "{:?} after the cut, the follower had processed writes it cannot have received: {body}",
        cut_at.elapsed()
    );
    agent.heal(NS, &format!("deaf-{id}")).expect("heal");
    bed.eventually(
        "the healed follower to catch up",
        Duration::from_secs(60),
        || async { (zxid(&admin(ip, "srvr").await?)? >= newest).then_some(()) },
    )
    .await;
}

/// Acknowledged writes per second of a kazoo writer that writes one znode at a time for 4 s.
async fn sequential_writes(judge: &Judge, hosts: &str, prefix: &str, dir: &Path) -> f64 {
    let out = dir.join(format!("{}.jsonl", prefix.trim_start_matches('/')));
    let report = judge
        .writer(
            hosts,
            None,
            prefix,
            Duration::from_secs(4),
            Duration::ZERO,
            &out,
        )
        .expect("start the writer")
        .wait()
        .await
        .expect("writer report");
    assert!(report.acked > 0, "{report:?}");
    report.acked as f64 / report.seconds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_quorum_links_slow_writes_but_they_succeed_and_healing_ends_the_loss() {
    // Pipelined writes (kazoo's batches) hide the loss; one write at a time shows it.
    let _serial = SERIAL.lock().await;
    let judge = Judge::new().await.expect("kazoo venv");
    let bed = Bed::start().await;
    let (ips, leader) = three_members(&bed, "lossy").await;
    let agent = bed.agent();
    let leader_ip = ips[leader as usize - 1];
    // Through the leader: every write needs a follower's acknowledgement over a quorum link.
    let through = format!("{leader_ip}:2181");
    const WRITES: usize = 200;

    let written = judge
        .write(&through, None, "/clean", WRITES)
        .await
        .expect("write");
    assert_eq!(written.written, WRITES, "{written:?}");
    let clean = written.seconds;
    let tmp = tempfile::tempdir().expect("temp dir");
    let clean_rate = sequential_writes(&judge, &through, "/seq-clean", tmp.path()).await;

    assert!(agent.lossy_quorum_links(101).is_err(), "not a percentage");
    agent.lossy_quorum_links(30).expect("lossy links");
    let lossy_rate = sequential_writes(&judge, &through, "/seq-lossy", tmp.path()).await;
    // Each lost packet costs a retransmission timeout (200 ms at least) on a write's path.
    assert!(
        lossy_rate < clean_rate / 2.0,
        "30% loss did not slow one-at-a-time writes: {clean_rate:.0}/s clean, \
         {lossy_rate:.0}/s lossy"
    );
    let written = judge
        .write(&through, None, "/lossy", WRITES)
        .await
        .expect("write");
    assert_eq!(written.written, WRITES, "{written:?}");
    let lossy = written.seconds;
    let dropped = agent.dropped_packets().expect("counters");
    eprintln!("30% loss on the quorum links dropped {dropped} packets");
    assert!(dropped > 0, "the lossy links dropped nothing");
    let verified = judge
        .verify(&hosts(&ips), None, "/lossy", WRITES)
        .await
        .expect("verify");
    assert!(verified.ok, "{verified:?}");

    agent.heal_quorum_links().expect("heal the links");
    assert_eq!(agent.dropped_packets().expect("counters"), 0);
    assert!(
        !nft_tables().contains(agent.nft_table()),
        "nothing in force, no table"
    );
    let written = judge
        .write(&through, None, "/healed", WRITES)
        .await
        .expect("write");
    assert_eq!(written.written, WRITES, "{written:?}");
    let healed_rate = sequential_writes(&judge, &through, "/seq-healed", tmp.path()).await;
    eprintln!(
        "one write at a time: {clean_rate:.0}/s clean, {lossy_rate:.0}/s with 30% loss, \
         {healed_rate:.0}/s healed; {WRITES} pipelined writes: {clean:.2} s clean, {lossy:.2} s \
         lossy, {:.2} s healed",
        written.seconds
    );
    assert!(
        healed_rate > lossy_rate * 2.0,
        "writes stay slow after the heal: {healed_rate:.0}/s (lossy: {lossy_rate:.0}/s)"
    );
    agreed_leader(&bed, &ips, "all three in one ensemble after the heal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_or_dropping_an_agent_leaves_no_table_and_no_cgroup() {
    let _serial = SERIAL.lock().await;
    let mut bed = Bed::start().await;
    bed.ensemble_objects("solo").await;
    bed.member("solo", 1, &[1]).await;
    let pod = bed.ready("solo-1", Duration::from_secs(120)).await;
    let ip = pod_ip(&pod);
    let agent = bed.agent.take().expect("agent");
    let pid = main_pid(&agent, "solo-1", "zookeeper").expect("running");
    let cgroup = net_cls_of(pid).expect("a net_cls cgroup");
    assert!(cgroup.ends_with(&format!("/{ip}")), "{cgroup}");
    let mount = Path::new("/sys/fs/cgroup/net_cls");
    let dir = mount.join(cgroup.trim_start_matches('/'));
    let classid = std::fs::read_to_string(dir.join("net_cls.classid")).expect("classid");
    assert_eq!(
        classid.trim().parse::<u32>().ok(),
        agent.pod_classid(NS, "solo-1"),
        "the Pod's class id"
    );
    agent.cut(NS, "solo-1", Cut::Both).expect("cut");
    agent.lossy_quorum_links(50).expect("lossy links alongside");
    let table = agent.nft_table().to_string();
    assert!(nft_tables().contains(&table));
    agent.stop().await;
    assert!(!nft_tables().contains(&table), "{table} outlived stop()");
    assert!(!dir.exists(), "{} outlived stop()", dir.display());
    assert!(
        !dir.parent().expect("agent's cgroup").exists(),
        "the agent's cgroup outlived stop()"
    );

    // Dropped without stop(): the same.
    let other = NodeAgent::start(
        bed.client.clone(),
        AgentOptions {
            node_name: "quorate-node-2".into(),
            bind_unscheduled: false,
            ..AgentOptions::default()
        },
    )
    .await
    .expect("a second agent");
    bed.create::<Pod>(json!({
        "metadata": {"name": "idle"},
        "spec": {
            "nodeName": "quorate-node-2",
            "containers": [{"name": "main", "image": IMAGE, "command": ["sleep", "3600"]}],
        },
    }))
    .await;
    bed.eventually("the idle Pod to run", Duration::from_secs(60), || async {
        bed.pod("idle")
            .await
            .filter(|p| phase(p) == Some("Running"))
    })
    .await;
    let pid = main_pid(&other, "idle", "main").expect("running");
    let cgroup = net_cls_of(pid).expect("a net_cls cgroup");
    other.cut(NS, "idle", Cut::Outgoing).expect("cut");
    let table = other.nft_table().to_string();
    assert!(table.contains("quorate_node_2"), "{table}");
    assert!(nft_tables().contains(&table));
    drop(other);
    assert!(!nft_tables().contains(&table), "{table} outlived the drop");
    assert!(
        !mount.join(cgroup.trim_start_matches('/')).exists(),
        "{cgroup} outlived the drop"
    );
}
