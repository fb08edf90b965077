//! A Node whose Pods are stand-in ZooKeeper members: it plays the kubelet for every Pod whose
//! `spec.nodeSelector` picks the label [`STANDIN_LABEL`], so that a benchmark can give one
//! operator a thousand ensembles on a machine that runs a few real JVMs at most.
//!
//! It registers Node [`NODE`] (labelled `quorate.io/standin=true`, heartbeated like the node
//! agent's), binds the Pods that select it (the node agent leaves them alone: it binds only Pods
//! whose node selector its own Node satisfies), and for each bound Pod starts a stand-in member
//! from the Pod's own environment, as the member's container would: `ZK_SERVER_ID`,
//! `ZK_INITIAL_DYNAMIC`, and the super digest from the Secret that `ZK_SUPER_DIGEST` names. The
//! member listens on its own loopback address (`127.<base>.x.y`) on the container ports named
//! `client` and `admin`. The Pod's status is written as a kubelet writes it: `Running`, its IP,
//! its init containers completed, and `Ready` while the member serves (written again only when
//! that changes). A Pod being deleted stops its member and is removed (delete with grace 0).
//!
//! Not modelled: probes (readiness is the member's own serving state), restarts, volumes (the
//! node agent marks every claim `Bound`; a member's data lives in its ensemble's shared state
//! for the life of the process), Events.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;
use tokio::task::JoinHandle;

use super::{StandInMember, StandIns};
use crate::nodeagent::node;

/// The Node's name.
pub const NODE: &str = "quorate-standins";
/// The node label a Pod selects (`spec.nodeSelector`) to run as a stand-in.
pub const STANDIN_LABEL: (&str, &str) = ("quorate.io/standin", "true");

/// Errors of starting the stand-in node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registering Node {NODE}: {0}")]
    Register(#[from] crate::nodeagent::Error),
}

/// A running member and what its Pod's status last said.
struct Hosted {
    uid: String,
    member: StandInMember,
    ip: Ipv4Addr,
    /// What the Pod's status says now (set only once a write succeeded).
    ready: bool,
}

struct State {
    standins: Arc<StandIns>,
    client: kube::Client,
    pods: Store<Pod>,
    base: u8,
    next_host: u32,
    hosted: HashMap<(String, String), Hosted>,
    /// Bindings and deletions asked for, by Pod uid, with when (asked again after 5 s).
    asked: HashMap<String, Instant>,
    digests: HashMap<(String, String, String), Option<String>>,
    /// The Node's labels, which a Pod's node selector must match.
    labels: BTreeMap<String, String>,
    /// Members started since the node started.
    started: u64,
}

/// The stand-in node; stopping it (or dropping it) stops every member it runs.
pub struct StandInNode {
    tasks: Vec<JoinHandle<()>>,
    state: Arc<tokio::sync::Mutex<State>>,
}

impl StandInNode {
    /// Registers Node [`NODE`] at `127.<base>.0.1` and starts serving the Pods that select it.
    pub async fn start(
        client: kube::Client,
        standins: Arc<StandIns>,
        base: u8,
    ) -> Result<StandInNode, Error> {
        let labels = BTreeMap::from([(STANDIN_LABEL.0.to_string(), STANDIN_LABEL.1.to_string())]);
        let ip = Ipv4Addr::new(127, base, 0, 1);
        let version = crate::controlplane::pinned_kubernetes_version();
        node::register(&client, NODE, ip, &version, &labels).await?;
        let (pods, writer) = reflector::store();
        let stream = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        let kick = Arc::new(tokio::sync::Notify::new());
        let state = Arc::new(tokio::sync::Mutex::new(State {
            standins,
            client: client.clone(),
            pods: pods.clone(),
            base,
            next_host: 0,
            hosted: HashMap::new(),
            asked: HashMap::new(),
            digests: HashMap::new(),
            labels: node::labels(NODE, &labels),
            started: 0,
        }));
        let watch = {
            let kick = kick.clone();
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while stream.next().await.is_some() {
                    kick.notify_one();
                }
            })
        };
        let sync = {
            let state = state.clone();
            tokio::spawn(async move {
                let _ = pods.wait_until_ready().await;
                loop {
                    state.lock().await.sync().await;
                    // A change of a Pod, or a second for the members' serving state.
                    let _ = tokio::time::timeout(Duration::from_secs(1), kick.notified()).await;
                }
            })
        };
        let heartbeat = tokio::spawn(node::heartbeat(
            client,
            NODE.into(),
            ip,
            version,
            Duration::from_secs(10),
            labels,
        ));
        Ok(StandInNode {
            tasks: vec![watch, sync, heartbeat],
            state,
        })
    }

    /// How many members were started since the node started.
    pub async fn started(&self) -> u64 {
        self.state.lock().await.started
    }

    /// Stops serving and stops every member.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        let hosted = std::mem::take(&mut self.state.lock().await.hosted);
        for (_, h) in hosted {
            h.member.stop().await;
        }
    }
}

impl Drop for StandInNode {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// A literal `env` value of the Pod's first container.
fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// A container port by name.
fn port(container: &Container, name: &str, default: u16) -> u16 {
    container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(default)
}

impl State {
    /// One pass over the Pods.
    async fn sync(&mut self) {
        let pods = self.pods.state();
        let mut present = HashSet::new();
        for pod in &pods {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let bound_to = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
            let recently = |asked: &HashMap<String, Instant>| {
                asked
                    .get(&uid)
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
            };
            match bound_to {
                None | Some("") => {
                    if pod.metadata.deletion_timestamp.is_none()
                        && pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.node_selector.as_ref())
                            .is_some_and(|s| !s.is_empty())
                        && node::admits(&self.labels, pod)
                        && !recently(&self.asked)
                    {
                        self.asked.insert(uid.clone(), Instant::now());
                        self.bind(pod).await;
                    }
                    continue;
                }
                Some(n) if n != NODE => continue,
                Some(_) => {}
            }
            let k = key(pod);
            if pod.metadata.deletion_timestamp.is_some() {
                if let Some(h) = self.hosted.remove(&k) {
                    h.member.stop().await;
                }
                if !recently(&self.asked) {
                    self.asked.insert(uid.clone(), Instant::now());
                    self.remove(pod, &uid).await;
                }
                continue;
            }
            present.insert(k.clone());
            match self.hosted.get_mut(&k) {
                Some(h) if h.uid == uid => {
                    let serving = h.member.serving();
                    if serving != h.ready {
                        let ip = h.ip;
                        if self.write_status(pod, ip, serving).await
                            && let Some(h) = self.hosted.get_mut(&k)
                        {
                            h.ready = serving;
                        }
                    }
                }
                _ => {
                    if let Some(h) = self.hosted.remove(&k) {
                        h.member.stop().await;
                    }
                    if self.run(pod, uid).await {
                        self.started += 1;
                    }
                }
            }
        }
        let gone: Vec<_> = self
            .hosted
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(h) = self.hosted.remove(&k) {
                h.member.stop().await;
            }
        }
        let live: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        self.asked.retain(|uid, _| live.contains(uid.as_str()));
    }

    fn next_ip(&mut self) -> Ipv4Addr {
        loop {
            self.next_host = (self.next_host + 1) % 0x1_0000;
            let [x, y] = (self.next_host as u16).to_be_bytes();
            // .0.1 is the node; skip network and broadcast-looking ends.
            if (x, y) != (0, 1) && y != 0 && y != 255 {
                return Ipv4Addr::new(127, self.base, x, y);
            }
        }
    }

    async fn bind(&self, pod: &Pod) {
        let (ns, name) = key(pod);
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": ns},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
        });
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        match api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => tracing::warn!(namespace = ns, pod = name, error = %e, "binding"),
        }
    }

    async fn remove(&self, pod: &Pod, uid: &str) {
        let (ns, name) = key(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(e) = api.delete(&name, &params).await
            && !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
        {
            tracing::warn!(namespace = ns, pod = name, error = %e, "removing a deleted Pod");
        }
    }

    /// The super digest the member's `ZK_SUPER_DIGEST` names (a Secret key), cached.
    async fn super_digest(&mut self, ns: &str, container: &Container) -> Option<String> {
        let selector = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "ZK_SUPER_DIGEST")?
            .value_from
            .as_ref()?
            .secret_key_ref
            .as_ref()?;
        let k = (ns.to_string(), selector.name.clone(), selector.key.clone());
        if let Some(d) = self.digests.get(&k) {
            return d.clone();
        }
        let secret = Api::<Secret>::namespaced(self.client.clone(), ns)
            .get(&selector.name)
            .await
            .ok()?;
        let digest = secret
            .data
            .and_then(|d| d.get(&selector.key).cloned())
            .and_then(|v| String::from_utf8(v.0).ok());
        self.digests.insert(k, digest.clone());
        digest
    }

    /// Starts the Pod's member and writes its status; false when it could not.
    async fn run(&mut self, pod: &Pod, uid: String) -> bool {
        let (ns, name) = key(pod);
        let Some(container) = pod.spec.as_ref().and_then(|s| s.containers.first()) else {
            return false;
        };
        let (Some(id), Some(dynamic)) = (
            env_value(container, "ZK_SERVER_ID").and_then(|v| v.parse::<u64>().ok()),
            env_value(container, "ZK_INITIAL_DYNAMIC"),
        ) else {
            tracing::warn!(
                namespace = ns,
                pod = name,
                "not a member Pod: no ZK_SERVER_ID or ZK_INITIAL_DYNAMIC"
            );
            return false;
        };
        let ensemble = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map_or_else(|| name.clone(), |o| o.name.clone());
        let digest = self.super_digest(&ns, container).await;
        let ip = self.next_ip();
        let member = match self
            .standins
            .start(
                &format!("{ns}/{ensemble}"),
                id,
                ip,
                port(container, "client", 2181),
                port(container, "admin", 8080),
                dynamic,
                digest.as_deref(),
            )
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(namespace = ns, pod = name, error = %e, "starting a stand-in");
                return false;
            }
        };
        let serving = member.serving();
        let written = self.write_status(pod, ip, serving).await;
        self.hosted.insert(
            (ns, name),
            Hosted {
                uid,
                member,
                ip,
                // A status not written is written again on the next pass.
                ready: if written { serving } else { !serving },
            },
        );
        true
    }

    /// Writes the Pod's status; false when the API server did not take it.
    async fn write_status(&self, pod: &Pod, ip: Ipv4Addr, ready: bool) -> bool {
        let (ns, name) = key(pod);
        let now = Timestamp::now();
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or(now, |t| t.0);
        let spec = pod.spec.clone().unwrap_or_default();
        let image = |c: &Container| c.image.clone().unwrap_or_default();
        let ready_text = if ready { "True" } else { "False" };
        let condition =
            |t: &str, s: &str| json!({"type": t, "status": s, "lastTransitionTime": now});
        let status = json!({"status": {
            "phase": "Running",
            "hostIP": Ipv4Addr::new(127, self.base, 0, 1).to_string(),
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "startTime": started,
            "conditions": [
                condition("PodScheduled", "True"),
                condition("Initialized", "True"),
                condition("ContainersReady", ready_text),
                condition("Ready", ready_text),
            ],
            "initContainerStatuses": spec.init_containers.iter().flatten().map(|c| json!({
                "name": c.name, "image": image(c), "imageID": "", "ready": true,
                "restartCount": 0, "started": false,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": started}},
            })).collect::<Vec<_>>(),
            "containerStatuses": spec.containers.iter().map(|c| json!({
                "name": c.name, "image": image(c), "imageID": "", "ready": ready,
                "restartCount": 0, "started": true,
                "state": {"running": {"startedAt": started}},
            })).collect::<Vec<_>>(),
        }});
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(namespace = ns, pod = name, error = %e, "writing a stand-in Pod's status");
                false
            }
        }
    }
}
