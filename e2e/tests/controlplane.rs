//! Tests of the control plane launcher against the real binaries (built on first use).
//!
//! Each test starts its own plane (a few seconds); the checks that need no controller manager
//! share one plane.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod,
    PodSpec, Service, ServiceAccount, ServicePort, ServiceSpec, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use quorate_testbed::controlplane::{self, ControlPlane, Options, Part};
use quorate_testbed::proxy::ApiProxy;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// Polls `check` every 250 ms until it returns Some, or panics after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(name),
        data: Some([("value".to_string(), value.to_string())].into()),
        ..Default::default()
    }
}

/// The pid of the plane's process `name`; panics when it is not running.
fn pid_of(plane: &ControlPlane, name: &str) -> u32 {
    plane
        .pids()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} is not in {:?}", plane.pids()))
        .1
}

fn value_of(cm: &ConfigMap) -> Option<&str> {
    cm.data.as_ref()?.get("value").map(String::as_str)
}

fn is_forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

/// Stops the plane and checks that none of its processes and none of its state is left.
fn stop_and_check(mut plane: ControlPlane) {
    let pids = plane.pids();
    let dir = plane.dir().to_path_buf();
    assert!(
        pids.iter().any(|(n, _)| n == "etcd") && pids.iter().any(|(n, _)| n == "kube-apiserver")
    );
    for (name, pid) in &pids {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "{name} ({pid}) should run before stop"
        );
    }
    plane.stop();
    for (name, pid) in &pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{name} ({pid}) still exists after stop()"
        );
    }
    assert!(plane.pids().is_empty());
    assert!(
        !dir.exists(),
        "the temporary state dir {} is left",
        dir.display()
    );
    plane.stop(); // idempotent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plane_serves_admin_rbac_users_and_service_account_tokens() {
    let plane = ControlPlane::start(Options::default())
        .await
        .expect("the control plane starts");
    let admin = plane.client().await.unwrap();

    // The admin lists namespaces.
    let namespaces: Vec<String> = Api::<Namespace>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .expect("admin lists namespaces")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(namespaces.iter().any(|n| n == "default"), "{namespaces:?}");
    assert!(
        namespaces.iter().any(|n| n == "kube-system"),
        "{namespaces:?}"
    );

    // /version reports the stamped version, and so does kubectl.
    let version = admin.apiserver_version().await.expect("/version");
    let expected = &plane.binaries().kubernetes_version;
    assert_eq!(&version.git_version, expected);
    assert_eq!(version.git_tree_state, "clean");
    let out = plane
        .kubectl()
        .args(["version", "--output=json"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl version: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clientVersion"]["gitVersion"], expected.as_str(), "{v}");
    assert_eq!(v["serverVersion"]["gitVersion"], expected.as_str(), "{v}");

    // A client-certificate user with no RBAC is forbidden, and allowed after a RoleBinding to
    // its second group (so every O of the certificate counts).
    let alice = plane
        .client_for_user("alice", &["quorate-testers", "quorate-readers"])
        .await
        .unwrap();
    let alice_cms: Api<ConfigMap> = Api::namespaced(alice.clone(), "default");
    let err = alice_cms
        .list(&ListParams::default())
        .await
        .expect_err("alice has no rights yet");
    assert!(is_forbidden(&err), "expected 403 Forbidden, got {err}");
    let review: SelfSubjectReview = Api::all(alice.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("any authenticated user may review itself");
    let info = review.status.and_then(|s| s.user_info).expect("user info");
    assert_eq!(info.username.as_deref(), Some("alice"));
    let groups = info.groups.unwrap_or_default();
    for g in ["quorate-testers", "quorate-readers", "system:authenticated"] {
        assert!(groups.iter().any(|x| x == g), "{g} missing from {groups:?}");
    }
    let role = Role {
        metadata: meta("configmap-reader"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding = RoleBinding {
        metadata: meta("configmap-readers"),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "configmap-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            name: "quorate-readers".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    eventually(
        "alice to be allowed by the RoleBinding",
        Duration::from_secs(15),
        || async { alice_cms.list(&ListParams::default()).await.ok() },
    )
    .await;
    let err = Api::<ConfigMap>::namespaced(alice.clone(), "kube-system")
        .list(&ListParams::default())
        .await
        .expect_err("the Role is only in default");
    assert!(is_forbidden(&err), "{err}");

    // The same user through a kubeconfig file and kubectl.
    let kubeconfig = plane.dir().join("alice.kubeconfig");
    plane
        .write_kubeconfig_for_user("alice", &["quorate-readers"], &kubeconfig)
        .unwrap();
    let out = std::process::Command::new(&plane.binaries().kubectl)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["get", "configmaps", "-n", "default", "-o", "name"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl as alice: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(&plane.binaries().kubectl)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["get", "secrets", "-n", "default"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "alice must not read secrets");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A ServiceAccount token from the TokenRequest API authenticates as that ServiceAccount.
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    sas.create(
        &PostParams::default(),
        &ServiceAccount {
            metadata: meta("probe"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let issued: TokenRequest = sas
        .create_subresource("token", "probe", &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    let token = issued.status.and_then(|s| s.token).expect("a token");
    assert!(!token.is_empty());
    let audiences = issued.spec.and_then(|s| s.audiences).unwrap_or_default();
    assert_eq!(
        audiences,
        vec![controlplane::SERVICE_ACCOUNT_ISSUER.to_string()]
    );
    let probe = plane.client_for_token(&token).await.unwrap();
    let review: SelfSubjectReview = Api::all(probe.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let info = review.status.and_then(|s| s.user_info).expect("user info");
    assert_eq!(
        info.username.as_deref(),
        Some("system:serviceaccount:default:probe")
    );
    let err = Api::<ConfigMap>::namespaced(probe, "default")
        .list(&ListParams::default())
        .await
        .expect_err("the ServiceAccount has no RBAC rights");
    assert!(is_forbidden(&err), "{err}");
    let bad = plane.client_for_token("not-a-token").await.unwrap();
    let err = Api::<ConfigMap>::namespaced(bad, "default")
        .list(&ListParams::default())
        .await
        .expect_err("bad token");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 401),
        "expected 401, got {err}"
    );

    // What the operator creates works without a controller manager: Services get ClusterIPs
    // from the service range (never dialled), Pods are accepted without a ServiceAccount, and
    // a deleted PVC goes away (no pvc-protection finalizer that nothing would remove).
    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    let service = |name: &str, headless: bool| Service {
        metadata: meta(name),
        spec: Some(ServiceSpec {
            cluster_ip: headless.then(|| "None".to_string()),
            selector: Some([("app".to_string(), "zk".to_string())].into()),
            ports: Some(vec![ServicePort {
                name: Some("client".into()),
                port: 2181,
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let client_svc = services
        .create(&PostParams::default(), &service("zk-client", false))
        .await
        .unwrap();
    let ip = client_svc
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    assert!(
        ip.starts_with("10.0."),
        "ClusterIP {ip} outside {}",
        controlplane::SERVICE_CLUSTER_IP_RANGE
    );
    let headless = services
        .create(&PostParams::default(), &service("zk-headless", true))
        .await
        .unwrap();
    assert_eq!(
        headless.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some("None")
    );
    let pod = Pod {
        metadata: meta("zk-1"),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "zookeeper".into(),
                image: Some("zookeeper:3.9.5".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<Pod>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .expect("a Pod is accepted");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), "default");
    let pvc = PersistentVolumeClaim {
        metadata: meta("data-zk-1"),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity("1Gi".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    pvcs.delete("data-zk-1", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the PVC to be deleted", Duration::from_secs(10), || async {
        matches!(pvcs.get_opt("data-zk-1").await, Ok(None)).then_some(())
    })
    .await;

    stop_and_check(plane);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_manager_collects_garbage_deletes_namespaces_and_tracks_pdbs() {
    let plane = ControlPlane::start(Options {
        controller_manager: true,
        ..Default::default()
    })
    .await
    .expect("the control plane starts with a controller manager");
    assert!(
        plane
            .pids()
            .iter()
            .any(|(n, _)| n == "kube-controller-manager")
    );
    let admin = plane.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");

    // Garbage collection: deleting the owner removes the dependent.
    let owner = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: meta("owner"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let dependent = ConfigMap {
        metadata: ObjectMeta {
            name: Some("dependent".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: owner.metadata.uid.clone().unwrap(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    cms.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    let t = Instant::now();
    eventually(
        "the garbage collector to delete the dependent",
        Duration::from_secs(90),
        || async { matches!(cms.get_opt("dependent").await, Ok(None)).then_some(()) },
    )
    .await;
    eprintln!(
        "dependent collected {:.1} s after its owner was deleted",
        t.elapsed().as_secs_f64()
    );

    // PodDisruptionBudget status comes from the disruption controller.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), "default");
    let pdb = PodDisruptionBudget {
        metadata: meta("zk"),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(2)),
            selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), "zk".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    eventually(
        "the disruption controller to observe the PDB",
        Duration::from_secs(60),
        || async {
            let status = pdbs.get("zk").await.ok()?.status?;
            (status.observed_generation == Some(1) && status.desired_healthy == Some(2))
                .then_some(())
        },
    )
    .await;

    // A crashed controller manager comes back with the same flags, and its controllers act
    // again (the namespace deletion below needs it).
    let old_pid = pid_of(&plane, "kube-controller-manager");
    let new_pid = plane
        .restart(Part::ControllerManager)
        .await
        .expect("kube-controller-manager restarts");
    assert_ne!(old_pid, new_pid);
    assert!(!Path::new(&format!("/proc/{old_pid}")).exists());
    assert_eq!(pid_of(&plane, "kube-controller-manager"), new_pid);

    // Namespace deletion completes (namespace controller empties it, then removes it).
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: meta("doomed"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(admin.clone(), "doomed")
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: meta("inside"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the namespace to be deleted",
        Duration::from_secs(60),
        || async { matches!(namespaces.get_opt("doomed").await, Ok(None)).then_some(()) },
    )
    .await;

    stop_and_check(plane);
}

#[tokio::test]
async fn a_start_failure_names_the_process_and_shows_its_log() {
    let err = ControlPlane::start(Options {
        extra_apiserver_args: vec!["--no-such-flag=1".into()],
        ..Default::default()
    })
    .await
    .expect_err("kube-apiserver refuses an unknown flag");
    let text = err.to_string();
    assert!(matches!(err, controlplane::Error::Start { .. }), "{text}");
    assert!(text.contains("kube-apiserver did not start"), "{text}");
    assert!(text.contains("unknown flag: --no-such-flag"), "{text}");
}

#[test]
fn kubebuilder_assets_style_directory_is_accepted() {
    let built = controlplane::ensure_binaries().expect("binaries");
    let dir = tempfile::tempdir().unwrap();
    for (name, path) in [
        ("kube-apiserver", &built.kube_apiserver),
        ("etcd", &built.etcd),
        ("kubectl", &built.kubectl),
    ] {
        std::os::unix::fs::symlink(path, dir.path().join(name)).unwrap();
    }
    let assets =
        controlplane::binaries_from_assets(dir.path()).expect("an envtest-style directory");
    assert_eq!(assets.kubernetes_version, built.kubernetes_version);
    assert_eq!(assets.etcd_version, built.etcd_version);
    assert_eq!(assets.kube_controller_manager, None);
    assert_eq!(
        built.kubernetes_version,
        controlplane::pinned_kubernetes_version()
    );

    std::fs::remove_file(dir.path().join("etcd")).unwrap();
    let err = controlplane::binaries_from_assets(dir.path()).expect_err("etcd is missing");
    assert!(err.to_string().contains("no executable etcd"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_keeps_working_across_apiserver_crashes() {
    let plane = ControlPlane::start(Options::default())
        .await
        .expect("the control plane starts");
    let admin = plane.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    let before = cms
        .create(&PostParams::default(), &config_map("before", "1"))
        .await
        .unwrap();

    // A crash and a restart on the same port: the same client reads what was there before.
    let old_pid = pid_of(&plane, "kube-apiserver");
    let t = Instant::now();
    let new_pid = plane
        .restart(Part::ApiServer)
        .await
        .expect("kube-apiserver restarts");
    eprintln!(
        "kube-apiserver restarted in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert_ne!(old_pid, new_pid);
    assert!(!Path::new(&format!("/proc/{old_pid}")).exists());
    assert_eq!(pid_of(&plane, "kube-apiserver"), new_pid);
    let got = cms
        .get("before")
        .await
        .expect("read after the apiserver restart");
    assert_eq!(got.metadata.uid, before.metadata.uid);
    assert_eq!(value_of(&got), Some("1"));

    // Down for a while: requests fail (promptly, nothing listens), and nothing is restarted.
    assert_eq!(plane.kill(Part::ApiServer).unwrap(), new_pid);
    assert!(!plane.is_running(Part::ApiServer));
    assert!(plane.is_running(Part::Etcd));
    assert!(
        !plane.pids().iter().any(|(n, _)| n == "kube-apiserver"),
        "{:?}",
        plane.pids()
    );
    let during = tokio::time::timeout(Duration::from_secs(30), cms.get("before"))
        .await
        .expect("a request to a dead apiserver fails instead of hanging");
    assert!(
        during.is_err(),
        "read while the apiserver is down: {during:?}"
    );
    let err = plane.kill(Part::ApiServer).expect_err("already down");
    assert!(matches!(err, controlplane::Error::Fault { .. }), "{err}");
    let err = plane
        .kill(Part::ControllerManager)
        .expect_err("this plane has no controller manager");
    assert!(matches!(err, controlplane::Error::Fault { .. }), "{err}");

    let pid = plane
        .start_again(Part::ApiServer)
        .await
        .expect("kube-apiserver starts again");
    let err = plane
        .start_again(Part::ApiServer)
        .await
        .expect_err("it is running");
    assert!(err.to_string().contains("still running"), "{err}");
    let got = cms
        .get("before")
        .await
        .expect("read after the apiserver is back");
    assert_eq!(got.metadata.uid, before.metadata.uid);
    cms.create(&PostParams::default(), &config_map("after", "2"))
        .await
        .expect("write after the apiserver is back");
    assert_eq!(value_of(&cms.get("after").await.unwrap()), Some("2"));
    assert_eq!(pid_of(&plane, "kube-apiserver"), pid);

    // One log file holds every run.
    let (_, log) = plane
        .log_paths()
        .into_iter()
        .find(|(n, _)| n == "kube-apiserver")
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("--- testbed: started again ---").count(), 2);

    stop_and_check(plane);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_etcd_crashes() {
    let plane = ControlPlane::start(Options::default())
        .await
        .expect("the control plane starts");
    let admin = plane.client().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    let before = cms
        .create(&PostParams::default(), &config_map("before", "1"))
        .await
        .unwrap();

    // Writes after an etcd crash; a write whose answer was lost may have landed (409).
    let write = |name: &'static str, value: &'static str| {
        let cms = cms.clone();
        async move {
            match cms
                .create(&PostParams::default(), &config_map(name, value))
                .await
            {
                Ok(_) => Some(()),
                Err(kube::Error::Api(s)) if s.code == 409 => Some(()),
                Err(_) => None,
            }
        }
    };

    let old_pid = pid_of(&plane, "etcd");
    let t = Instant::now();
    let new_pid = plane.restart(Part::Etcd).await.expect("etcd restarts");
    eprintln!("etcd restarted in {:.1} s", t.elapsed().as_secs_f64());
    assert_ne!(old_pid, new_pid);
    assert!(!Path::new(&format!("/proc/{old_pid}")).exists());
    assert!(plane.is_running(Part::ApiServer));
    plane
        .wait_healthy(Part::ApiServer, Duration::from_secs(60))
        .await
        .expect("the apiserver is ready again once etcd is back");
    let got = eventually(
        "the object written before the crash",
        Duration::from_secs(60),
        || async { cms.get("before").await.ok() },
    )
    .await;
    assert_eq!(got.metadata.uid, before.metadata.uid);
    assert_eq!(value_of(&got), Some("1"));
    eventually(
        "a write after etcd's restart",
        Duration::from_secs(60),
        || write("after-restart", "2"),
    )
    .await;
    assert_eq!(
        value_of(&cms.get("after-restart").await.unwrap()),
        Some("2")
    );

    // Down for a while, then back: both objects are there and writes work. Meanwhile
    // something else holds etcd's port, so etcd's first try fails; start_again waits it out.
    plane.kill(Part::Etcd).unwrap();
    assert!(!plane.is_running(Part::Etcd));
    let etcd_port: u16 = plane
        .etcd_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the etcd URL");
    let squatter = std::net::TcpListener::bind(("127.0.0.1", etcd_port))
        .expect("etcd's port is free while it is down");
    let (_, etcd_log) = plane
        .log_paths()
        .into_iter()
        .find(|(n, _)| n == "etcd")
        .unwrap();
    let release = async move {
        eventually(
            "etcd to find its port taken",
            Duration::from_secs(30),
            || async {
                let log = std::fs::read_to_string(&etcd_log).ok()?;
                log.contains("address already in use").then_some(())
            },
        )
        .await;
        drop(squatter);
    };
    let (started, ()) = tokio::join!(plane.start_again(Part::Etcd), release);
    started.expect("etcd starts again once its port is free");
    assert!(plane.is_running(Part::Etcd));
    for (name, value) in [("before", "1"), ("after-restart", "2")] {
        let got = eventually(
            &format!("{name} after etcd was down"),
            Duration::from_secs(60),
            || async { cms.get(name).await.ok() },
        )
        .await;
        assert_eq!(value_of(&got), Some(value), "{name}");
    }
    eventually(
        "a write after etcd was down",
        Duration::from_secs(60),
        || write("after-outage", "3"),
    )
    .await;
    let names: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    for name in ["before", "after-restart", "after-outage"] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }

    stop_and_check(plane);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_blocks_and_cuts_connections_and_watches_recover() {
    use futures::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};

    let plane = ControlPlane::start(Options::default())
        .await
        .expect("the control plane starts");
    let admin = plane.client().await.unwrap();
    let proxy = ApiProxy::start(plane.api_addr()).await.unwrap();
    let addr = proxy.addr();
    assert!(addr.ip().is_loopback() && addr.port() != plane.api_addr().port());

    // kubeconfig_via only moves the server.
    let direct = plane.kubeconfig_for_user("bob", &[]).unwrap();
    let via_yaml = plane.kubeconfig_via(&direct, addr);
    assert!(
        via_yaml.contains(&format!("    server: https://{addr}\n")),
        "{via_yaml}"
    );
    assert!(!via_yaml.contains(&plane.server_url()), "{via_yaml}");
    assert_eq!(direct.lines().count(), via_yaml.lines().count());

    // Through the proxy (TLS passes through: the certificate covers 127.0.0.1).
    let via = plane.client_via(addr).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(via.clone());
    let list = namespaces
        .list(&ListParams::default())
        .await
        .expect("list namespaces through the proxy");
    assert!(
        list.items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("default"))
    );
    assert!(proxy.stats().accepted >= 1, "{:?}", proxy.stats());

    // Blocked: a request fails within a bounded time, and nothing stays open.
    proxy.block();
    assert!(proxy.is_blocked());
    let t = Instant::now();
    let blocked = tokio::time::timeout(
        Duration::from_secs(15),
        namespaces.list(&ListParams::default()),
    )
    .await
    .expect("a request through a blocked proxy fails instead of hanging");
    assert!(
        blocked.is_err(),
        "a request through a blocked proxy succeeded"
    );
    eprintln!(
        "blocked request failed after {:.2} s: {}",
        t.elapsed().as_secs_f64(),
        blocked.unwrap_err()
    );
    // The request fails either on a new connection the proxy refuses or on the pooled one it
    // cut when it blocked.
    let stats = proxy.stats();
    assert!(stats.refused + stats.cut >= 1, "{stats:?}");
    eventually(
        "no connection to stay open while blocked",
        Duration::from_secs(10),
        || async { (proxy.stats().active == 0).then_some(()) },
    )
    .await;
    // A raw connection is reset at once: the connect itself may already report it.
    let raw = tokio::time::timeout(Duration::from_secs(10), async {
        let mut raw = tokio::net::TcpStream::connect(addr).await?;
        let mut buf = [0u8; 16];
        tokio::io::AsyncReadExt::read(&mut raw, &mut buf).await
    })
    .await
    .expect("a blocked connection ends at once");
    assert!(
        matches!(raw, Ok(0) | Err(_)),
        "read {raw:?} from a blocked proxy"
    );

    // Unblocked: requests work again.
    proxy.unblock();
    assert!(!proxy.is_blocked());
    namespaces
        .list(&ListParams::default())
        .await
        .expect("list namespaces after unblock");

    // A watch through the proxy is cut by reset() and recovers.
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let cms_via: Api<ConfigMap> = Api::namespaced(via.clone(), "default");
    let watch = tokio::spawn(async move {
        let mut stream = watcher(cms_via, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = stream.next().await {
            if tx.send(event.map_err(|e| e.to_string())).is_err() {
                break;
            }
        }
    });
    let mut errors = Vec::new();
    // Waits for the watcher to report `name` applied (or listed after a relist).
    let mut wait_for = async |what: &str, name: Option<&str>| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = tokio::time::timeout(left, events.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for the watcher to see {what}"))
                .expect("the watcher task runs");
            let seen = match &event {
                Ok(watcher::Event::InitDone) => name.is_none(),
                Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                    name.is_some() && cm.metadata.name.as_deref() == name
                }
                Ok(_) => false,
                Err(e) => {
                    errors.push(e.clone());
                    false
                }
            };
            if seen {
                return;
            }
        }
    };
    wait_for("its initial list", None).await;
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    cms.create(&PostParams::default(), &config_map("before-reset", "1"))
        .await
        .unwrap();
    wait_for("before-reset", Some("before-reset")).await;
    let before = proxy.stats();
    assert!(before.active >= 1, "the watch is open: {before:?}");
    proxy.reset();
    eventually(
        "the open connections to be cut",
        Duration::from_secs(10),
        || async { (proxy.stats().cut > before.cut).then_some(()) },
    )
    .await;
    cms.create(&PostParams::default(), &config_map("after-reset", "2"))
        .await
        .unwrap();
    wait_for("after-reset", Some("after-reset")).await;
    let after = proxy.stats();
    assert!(
        after.accepted > before.accepted,
        "the watcher reconnected through the proxy: {before:?} -> {after:?}"
    );
    eprintln!("watch cut and recovered; watcher errors: {errors:?}; proxy {after:?}");
    watch.abort();
    let _ = watch.await;

    // Shut down: the port no longer answers.
    proxy.shutdown().await;
    let gone = tokio::net::TcpStream::connect(addr).await;
    assert!(gone.is_err(), "the proxy still accepts after shutdown");

    stop_and_check(plane);
}

/// Fault campaigns share the plane and the proxy between tasks (`Arc<ControlPlane>`).
#[test]
fn plane_and_proxy_can_be_shared_between_tasks() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<ControlPlane>();
    shared::<ApiProxy>();
    shared::<controlplane::Error>();
}
