//! A real Kubernetes control plane on loopback: etcd, kube-apiserver and (on request)
//! kube-controller-manager, as plain child processes. No Docker, no cluster.
//!
//! The binaries are built from the Go module proxy by `e2e/scripts/build-controlplane.sh` into
//! the cache ([`crate::cache::cache_dir`]`/controlplane/<version>/`), once; or taken from
//! `KUBEBUILDER_ASSETS` when that names a directory holding `kube-apiserver`, `etcd` and
//! `kubectl` (envtest's binaries; `kube-controller-manager` is optional there).
//!
//! [`ControlPlane::start`] generates a CA, a serving certificate, an admin client certificate
//! (group `system:masters`) and a service-account signing key, starts every process on free
//! `127.0.0.1` ports with RBAC authorization on, and waits for `/readyz`. ServiceAccount tokens
//! (TokenRequest) authenticate. Each process logs to `<state dir>/logs/<name>.log`; a start
//! failure carries the tail of that log. Stopping (or dropping) the plane stops every process
//! and removes the temporary state directory.
//!
//! Faults: [`ControlPlane::restart`] crashes a part (SIGKILL) and starts it again with the same
//! command line, data directory and port, then waits until it is healthy;
//! [`ControlPlane::kill`] and [`ControlPlane::start_again`] do the two halves, for a part that
//! stays down a while. They take `&self`, so a plane shared behind an `Arc` can be faulted while
//! clients use it. For network faults between a client and the apiserver, see
//! [`crate::proxy::ApiProxy`] and [`ControlPlane::kubeconfig_via`].
//!
//! Admission: the `ServiceAccount` plugin is off (nothing mounts tokens into the testbed's Pods,
//! and without the controller manager nothing would create `default` ServiceAccounts); without
//! the controller manager `StorageObjectInUseProtection` is off too, since nothing would ever
//! remove its `kubernetes.io/pvc-protection` finalizer. The service CIDR (`10.0.0.0/16`, room for
//! the thousand-ensemble benchmark's client Services) is for ClusterIP allocation only: nothing
//! on this machine answers there, never dial it.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::cache::{cache_dir, is_executable, log_tail, progress};
use crate::process::Child;

/// The go.mod that pins the versions (the build script reads the same file).
const CONTROLPLANE_GO_MOD: &str = include_str!("../go/controlplane/go.mod");

/// The service-account issuer and the API audience of every plane.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// ClusterIP range of every plane: allocations only, never dialled.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/16";

/// The controllers that kube-controller-manager runs unless [`Options::controllers`] says
/// otherwise: garbage collection (ownerReferences), namespace deletion, PDB status, default
/// ServiceAccounts and their token Secrets, `kube-root-ca.crt` ConfigMaps, PVC protection
/// (which removes the `kubernetes.io/pvc-protection` finalizer once no Pod uses the claim), and
/// ClusterRole aggregation (`aggregationRule`, e.g. `rbac.authorization.k8s.io/aggregate-to-*`).
pub const DEFAULT_CONTROLLERS: &[&str] = &[
    "garbage-collector-controller",
    "namespace-controller",
    "disruption-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "persistentvolumeclaim-protection-controller",
    "clusterrole-aggregation-controller",
];

/// Errors of the control plane launcher. Every variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building (or finding) the binaries failed.
    #[error("control plane binaries: {0}")]
    Binaries(String),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Generating a key or certificate failed.
    #[error("generating {what}: {source}")]
    Pki {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    /// A certificate was asked for that the testbed does not issue (e.g. a user in more than
    /// two groups).
    #[error("generating {what}: {reason}")]
    PkiUnsupported { what: String, reason: String },
    /// A process did not come up; `log_tail` holds the end of its log.
    #[error("{process} did not start: {reason}\n--- last lines of {} ---\n{log_tail}", log.display())]
    Start {
        process: String,
        reason: String,
        log: PathBuf,
        log_tail: String,
    },
    /// Building a kube client failed.
    #[error("kube client for {who}: {source}")]
    Client {
        who: String,
        #[source]
        source: kube::Error,
    },
    /// A fault could not be injected or undone: the part is not in this plane, is not running
    /// (for a kill), is still running (for a start again), or the plane was stopped.
    #[error("{part}: {reason}")]
    Fault { part: Part, reason: String },
    /// Building a kube client from a generated kubeconfig failed.
    #[error("kubeconfig for {who}: {source}")]
    Kubeconfig {
        who: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

fn pki_err(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |source| Error::Pki {
        what: what.to_string(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------------------------

/// The control plane's executables and their versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    pub kube_apiserver: PathBuf,
    pub etcd: PathBuf,
    pub kubectl: PathBuf,
    /// Always there when built here; may be missing from a `KUBEBUILDER_ASSETS` directory.
    pub kube_controller_manager: Option<PathBuf>,
    /// As `/version` reports it, e.g. `v1.36.3`.
    pub kubernetes_version: String,
    /// e.g. `v3.6.16`.
    pub etcd_version: String,
}

/// The version a consumer go.mod pins for `module`.
fn pinned_version(go_mod: &str, module: &str) -> String {
    go_mod
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            let first = if first == "require" {
                words.next()?
            } else {
                first
            };
            let version = words.next()?;
            (first == module && version.starts_with('v')).then(|| version.to_string())
        })
        .next()
        .unwrap_or_else(|| panic!("e2e/go/controlplane/go.mod pins no version of {module}"))
}

/// The Kubernetes version the build step produces (from `e2e/go/controlplane/go.mod`).
pub fn pinned_kubernetes_version() -> String {
    pinned_version(CONTROLPLANE_GO_MOD, "k8s.io/kubernetes")
}

/// The etcd version the build step produces (from `e2e/go/controlplane/go.mod`).
pub fn pinned_etcd_version() -> String {
    pinned_version(CONTROLPLANE_GO_MOD, "go.etcd.io/etcd/server/v3")
}

/// The build script (`e2e/scripts/build-controlplane.sh`).
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join("build-controlplane.sh")
}

/// Where the build step puts the Kubernetes binaries and etcd.
pub fn cache_dirs() -> (PathBuf, PathBuf) {
    let root = cache_dir().join("controlplane");
    (
        root.join(pinned_kubernetes_version()),
        root.join(format!("etcd-{}", pinned_etcd_version())),
    )
}

/// The built binaries, if the cache holds a complete build (stamp written last).
fn cached_binaries() -> Option<Binaries> {
    let (k8s, etcd) = cache_dirs();
    let binaries = Binaries {
        kube_apiserver: k8s.join("kube-apiserver"),
        etcd: etcd.join("etcd"),
        kubectl: k8s.join("kubectl"),
        kube_controller_manager: Some(k8s.join("kube-controller-manager")),
        kubernetes_version: pinned_kubernetes_version(),
        etcd_version: pinned_etcd_version(),
    };
    let complete = k8s.join(".complete").is_file()
        && etcd.join(".complete").is_file()
        && [&binaries.kube_apiserver, &binaries.etcd, &binaries.kubectl]
            .into_iter()
            .chain(binaries.kube_controller_manager.as_ref())
            .all(|b| is_executable(b));
    complete.then_some(binaries)
}

/// Binaries from an envtest-style directory (`kube-apiserver`, `etcd`, `kubectl`, and
/// optionally `kube-controller-manager`); versions are asked from the binaries themselves.
pub fn binaries_from_assets(dir: &Path) -> Result<Binaries, Error> {
    let need = |name: &str| -> Result<PathBuf, Error> {
        let path = dir.join(name);
        if is_executable(&path) {
            Ok(path)
        } else {
            Err(Error::Binaries(format!(
                "KUBEBUILDER_ASSETS={} has no executable {name}; it needs kube-apiserver, etcd and \
                 kubectl (kube-controller-manager optional), or unset it to build them",
                dir.display()
            )))
        }
    };
    let kube_apiserver = need("kube-apiserver")?;
    let etcd = need("etcd")?;
    let kubectl = need("kubectl")?;
    let kcm = dir.join("kube-controller-manager");
    let version_of = |bin: &Path, prefix: &str| -> Result<String, Error> {
        let out = Command::new(bin)
            .arg("--version")
            .output()
            .map_err(io_err(format!("running {} --version", bin.display())))?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|v| {
                let v = v.trim();
                if v.starts_with('v') {
                    v.to_string()
                } else {
                    format!("v{v}")
                }
            })
            .ok_or_else(|| {
                Error::Binaries(format!(
                    "{} --version printed no '{prefix}' line: {text}",
                    bin.display()
                ))
            })
    };
    Ok(Binaries {
        kubernetes_version: version_of(&kube_apiserver, "Kubernetes ")?,
        etcd_version: version_of(&etcd, "etcd Version:")?,
        kube_controller_manager: is_executable(&kcm).then_some(kcm),
        kube_apiserver,
        etcd,
        kubectl,
    })
}

/// Returns the control plane's binaries: from `KUBEBUILDER_ASSETS` if set, else from the cache,
/// building them first (minutes, once; progress on stderr) when the cache lacks them. Blocking.
pub fn ensure_binaries() -> Result<Binaries, Error> {
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
        return binaries_from_assets(Path::new(&dir));
    }
    // One build at a time within this process (the script also locks across processes).
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(binaries) = cached_binaries() {
        return Ok(binaries);
    }
    let script = build_script();
    let start = Instant::now();
    progress(
        "controlplane",
        start,
        &format!(
            "building kube-apiserver, kube-controller-manager, kubectl {} and etcd {} with {} \
             (once; minutes on a cold machine)",
            pinned_kubernetes_version(),
            pinned_etcd_version(),
            script.display()
        ),
    );
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let mut child = Child::spawn("build-controlplane", cmd)
        .map_err(io_err(format!("running {}", script.display())))?;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(io_err(format!("waiting for {}", script.display()))(e)),
        }
    };
    if !status.success() {
        return Err(Error::Binaries(format!(
            "{} failed ({status}); see its messages above. It needs Go >= 1.26 (https://go.dev/doc/install) \
             and the Go module proxy; or set KUBEBUILDER_ASSETS to a directory with kube-apiserver, etcd \
             and kubectl",
            script.display()
        )));
    }
    let binaries = cached_binaries().ok_or_else(|| {
        Error::Binaries(format!(
            "{} succeeded but {:?} lack the binaries or the .complete stamp",
            script.display(),
            cache_dirs()
        ))
    })?;
    progress("controlplane", start, "control plane binaries built");
    Ok(binaries)
}

// ---------------------------------------------------------------------------------------------
// Certificates (rcgen). Kubernetes takes a client certificate's user from the subject's CN and
// its groups from every O attribute. rcgen's DistinguishedName keeps one value per DnType, but
// `DnType::CustomDnType` with organizationName's OID is a key of its own that encodes as a
// second O, so a subject carries up to two groups.
// ---------------------------------------------------------------------------------------------

/// The attribute types that carry a client certificate's groups, in order. Both encode as
/// organizationName (2.5.4.10).
fn group_dn_types() -> [rcgen::DnType; 2] {
    [
        rcgen::DnType::OrganizationName,
        rcgen::DnType::CustomDnType(vec![2, 5, 4, 10]),
    ]
}

/// What a leaf certificate is for.
enum Usage<'a> {
    /// TLS serving for these subject alternative names (IP addresses or DNS names).
    Server { sans: &'a [&'a str] },
    /// TLS client authentication.
    Client,
}

/// The certificate authority: signs the serving and client certificates.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    cert_pem: String,
}

/// A key pair with its PEM certificate.
struct Issued {
    cert_pem: String,
    key_pem: String,
}

/// Parameters valid from an hour ago for ten years, with this subject.
fn cert_params(
    sans: &[&str],
    subject: rcgen::DistinguishedName,
) -> Result<rcgen::CertificateParams, Error> {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params =
        rcgen::CertificateParams::new(sans).map_err(pki_err("subject alternative names"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(Duration::from_secs(3600));
    params.not_after = epoch + now + Duration::from_secs(10 * 365 * 86_400);
    params.distinguished_name = subject;
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

impl Ca {
    fn new(common_name: &str) -> Result<Ca, Error> {
        use rcgen::{BasicConstraints, DnType, IsCa, KeyUsagePurpose};
        let mut subject = rcgen::DistinguishedName::new();
        subject.push(DnType::CommonName, common_name);
        let mut params = cert_params(&[], subject)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().map_err(pki_err("the CA key"))?;
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key)
            .map_err(pki_err("the CA certificate"))?;
        Ok(Ca {
            cert_pem: issuer.pem(),
            issuer,
        })
    }

    /// A certificate with subject CN `common_name` and one O per group (at most two), signed
    /// by this CA.
    fn issue(&self, common_name: &str, groups: &[&str], usage: Usage<'_>) -> Result<Issued, Error> {
        use rcgen::{DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose};
        let what = format!("a certificate for {common_name}");
        let group_types = group_dn_types();
        if groups.len() > group_types.len() {
            return Err(Error::PkiUnsupported {
                what,
                reason: format!(
                    "the testbed supports at most {} groups per certificate user, got {}: {groups:?}",
                    group_types.len(),
                    groups.len()
                ),
            });
        }
        let mut subject = rcgen::DistinguishedName::new();
        for (ty, group) in group_types.into_iter().zip(groups) {
            subject.push(ty, *group);
        }
        subject.push(DnType::CommonName, common_name);
        let (sans, purpose): (&[&str], _) = match usage {
            Usage::Server { sans } => (sans, ExtendedKeyUsagePurpose::ServerAuth),
            Usage::Client => (&[], ExtendedKeyUsagePurpose::ClientAuth),
        };
        let mut params = cert_params(sans, subject)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        let key = rcgen::KeyPair::generate().map_err(pki_err(&what))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(pki_err(&what))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The control plane
// ---------------------------------------------------------------------------------------------

/// How to start a [`ControlPlane`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also run kube-controller-manager (garbage collection, namespace deletion, PDB status, ...).
    pub controller_manager: bool,
    /// State directory (certificates, kubeconfigs, etcd data, logs). Default: a temporary
    /// directory that [`ControlPlane::stop`] removes; a given directory is kept.
    pub dir: Option<PathBuf>,
    /// kube-controller-manager's `--controllers`; empty means [`DEFAULT_CONTROLLERS`].
    pub controllers: Vec<String>,
    /// Extra kube-apiserver flags (`--name=value`), appended last.
    pub extra_apiserver_args: Vec<String>,
    /// Keep an audit log of every write (and of Secret reads) at `<dir>/audit.log`: the API
    /// server's own record of who wrote what, which judges count (see [`AUDIT_POLICY`]).
    pub audit: bool,
}

/// The audit policy of [`Options::audit`]: one JSON line per completed write request (and per
/// Secret read, a cheap sign that an operator's pass ran), without Leases and Events, which
/// every component renews or publishes all the time.
pub const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted", "Panic"]
rules:
  - level: None
    resources:
      - group: coordination.k8s.io
        resources: ["leases"]
      - group: events.k8s.io
        resources: ["events"]
      - group: ""
        resources: ["events"]
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: Metadata
    verbs: ["get"]
    resources:
      - group: ""
        resources: ["secrets"]
  - level: None
"#;

/// Where the state lives: a temporary directory (removed on stop) or the caller's.
enum StateDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl StateDir {
    fn path(&self) -> &Path {
        match self {
            StateDir::Temp(t) => t.path(),
            StateDir::Kept(p) => p,
        }
    }
}

/// One of the plane's processes, for fault injection ([`ControlPlane::restart`],
/// [`ControlPlane::kill`], [`ControlPlane::start_again`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Etcd,
    ApiServer,
    /// Only in a plane started with [`Options::controller_manager`].
    ControllerManager,
}

impl Part {
    /// The process name, as [`ControlPlane::pids`] and [`ControlPlane::log_paths`] name it.
    pub fn process_name(self) -> &'static str {
        match self {
            Part::Etcd => "etcd",
            Part::ApiServer => "kube-apiserver",
            Part::ControllerManager => "kube-controller-manager",
        }
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.process_name())
    }
}

/// What started a process: run again, unchanged, by [`ControlPlane::start_again`].
#[derive(Debug, Clone)]
struct Launch {
    bin: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

/// A process of the plane: how it is launched, and the running child unless it was killed.
#[derive(Debug)]
struct Slot {
    name: String,
    launch: Launch,
    child: Option<Child>,
}

/// A running etcd + kube-apiserver (+ kube-controller-manager) on loopback.
///
/// Shared by reference: the fault methods ([`ControlPlane::restart`], [`ControlPlane::kill`],
/// [`ControlPlane::start_again`]) take `&self`.
pub struct ControlPlane {
    binaries: Binaries,
    // In start order; stopped in reverse: controller manager, apiserver, etcd. The lock is only
    // held for bookkeeping, spawning and signalling, never across an await.
    processes: Mutex<Vec<Slot>>,
    state: Option<StateDir>,
    dir: PathBuf,
    port: u16,
    etcd_port: u16,
    ca: Ca,
    admin_kubeconfig: PathBuf,
    admin_yaml: String,
    logs: Vec<(String, PathBuf)>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server", &self.server_url())
            .field("dir", &self.dir)
            .field("pids", &self.pids())
            .finish_non_exhaustive()
    }
}

/// Free loopback ports, held open until the caller drops the listeners.
fn free_ports(n: usize) -> Result<Vec<(u16, TcpListener)>, Error> {
    (0..n)
        .map(|_| {
            let l = TcpListener::bind("127.0.0.1:0")
                .map_err(io_err("binding a free 127.0.0.1 port"))?;
            let port = l
                .local_addr()
                .map_err(io_err("reading a bound port"))?
                .port();
            Ok((port, l))
        })
        .collect()
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(format!("creating {}", path.display())))?;
    std::io::Write::write_all(&mut f, contents.as_bytes())
        .map_err(io_err(format!("writing {}", path.display())))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// A kubeconfig with one cluster, one user and one context. `user` holds the YAML lines of the
/// user entry (indented by 4).
fn kubeconfig_yaml(server: &str, ca_pem: &str, user_name: &str, user: &str) -> String {
    let user_name = serde_json::to_string(user_name).expect("a string serializes");
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: quorate-testbed\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: {user_name}\n  user:\n{user}contexts:\n- name: \
         quorate-testbed\n  context:\n    cluster: quorate-testbed\n    user: {user_name}\n    namespace: default\n\
         current-context: quorate-testbed\n",
        ca = b64(ca_pem),
    )
}

fn cert_user(issued: &Issued) -> String {
    format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&issued.cert_pem),
        b64(&issued.key_pem)
    )
}

async fn client_from_yaml(yaml: &str, who: &str) -> Result<kube::Client, Error> {
    let kubeconfig = Kubeconfig::from_yaml(yaml).map_err(|source| Error::Kubeconfig {
        who: who.to_string(),
        source,
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            who: who.to_string(),
            source,
        })?;
    kube::Client::try_from(config).map_err(|source| Error::Client {
        who: who.to_string(),
        source,
    })
}

/// Answers whether etcd's `/health` says healthy (plain HTTP on loopback).
async fn etcd_healthy(port: u16) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .ok()?;
        s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        Some(String::from_utf8_lossy(&body).contains("\"health\":\"true\""))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and (if asked) kube-controller-manager on free loopback ports,
    /// building the binaries first if needed, and waits until the apiserver is ready.
    pub async fn start(opts: Options) -> Result<ControlPlane, Error> {
        let binaries = tokio::task::spawn_blocking(ensure_binaries)
            .await
            .map_err(|e| Error::Binaries(format!("the build task failed: {e}")))??;
        let t0 = Instant::now();
        if opts.controller_manager && binaries.kube_controller_manager.is_none() {
            return Err(Error::Binaries(format!(
                "a controller manager was asked for, but {} has no kube-controller-manager",
                binaries
                    .kube_apiserver
                    .parent()
                    .unwrap_or(Path::new("?"))
                    .display()
            )));
        }
        let state = match &opts.dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
                StateDir::Kept(dir.clone())
            }
            None => StateDir::Temp(
                tempfile::Builder::new()
                    .prefix("quorate-controlplane-")
                    .tempdir()
                    .map_err(io_err("creating a temporary state directory"))?,
            ),
        };
        let dir = state.path().to_path_buf();
        for sub in ["pki", "logs", "etcd"] {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir.join(sub))
                .map_err(io_err(format!("creating {}/{sub}", dir.display())))?;
        }
        let pki = dir.join("pki");
        let logs = dir.join("logs");

        // Certificates and keys.
        let ca = Ca::new("quorate-testbed-ca")?;
        let serving = ca.issue(
            "kube-apiserver",
            &[],
            Usage::Server {
                sans: &[
                    "127.0.0.1",
                    "10.0.0.1",
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ],
            },
        )?;
        let admin = ca.issue("quorate-admin", &["system:masters"], Usage::Client)?;
        let sa_key =
            rcgen::KeyPair::generate().map_err(pki_err("the service-account signing key"))?;
        let f = |name: &str| pki.join(name);
        write(&f("ca.crt"), &ca.cert_pem, 0o644)?;
        write(&f("ca.key"), &ca.issuer.key().serialize_pem(), 0o600)?;
        write(&f("apiserver.crt"), &serving.cert_pem, 0o644)?;
        write(&f("apiserver.key"), &serving.key_pem, 0o600)?;
        write(&f("sa.key"), &sa_key.serialize_pem(), 0o600)?;
        write(&f("sa.pub"), &sa_key.public_key_pem(), 0o644)?;

        let mut ports = free_ports(3)?;
        let (port, etcd_port, etcd_peer_port) = (ports[0].0, ports[1].0, ports[2].0);
        let server = format!("https://127.0.0.1:{port}");
        let admin_yaml =
            kubeconfig_yaml(&server, &ca.cert_pem, "quorate-admin", &cert_user(&admin));
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write(&admin_kubeconfig, &admin_yaml, 0o600)?;

        let mut plane = ControlPlane {
            binaries,
            processes: Mutex::new(Vec::new()),
            state: Some(state),
            dir: dir.clone(),
            port,
            etcd_port,
            ca,
            admin_kubeconfig,
            admin_yaml,
            logs: Vec::new(),
        };

        // etcd
        let etcd_client = format!("http://127.0.0.1:{etcd_port}");
        let etcd_peer = format!("http://127.0.0.1:{etcd_peer_port}");
        let etcd_args = vec![
            "--name=testbed".to_string(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_client}"),
            format!("--advertise-client-urls={etcd_client}"),
            format!("--listen-peer-urls={etcd_peer}"),
            format!("--initial-advertise-peer-urls={etcd_peer}"),
            format!("--initial-cluster=testbed={etcd_peer}"),
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ];
        ports.truncate(1); // release the etcd ports, keep the apiserver's a little longer
        let etcd_bin = plane.binaries.etcd.clone();
        plane.spawn("etcd", &etcd_bin, &etcd_args, &logs)?;
        plane
            .wait_healthy(Part::Etcd, Duration::from_secs(30))
            .await?;
        progress(
            "controlplane",
            t0,
            &format!("etcd {} up on {etcd_client}", plane.binaries.etcd_version),
        );

        // kube-apiserver
        let mut disabled_admission = vec!["ServiceAccount"];
        if !opts.controller_manager {
            disabled_admission.push("StorageObjectInUseProtection");
        }
        let p = |name: &str| f(name).display().to_string();
        let mut api_args = vec![
            format!("--etcd-servers={etcd_client}"),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", pki.display()),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            "--authorization-mode=Node,RBAC".to_string(),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!("--api-audiences={SERVICE_ACCOUNT_ISSUER}"),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            // The `kubernetes` Service's endpoints would be 127.0.0.1, which validation refuses.
            "--endpoint-reconciler-type=none".to_string(),
            "--allow-privileged=true".to_string(),
            format!(
                "--disable-admission-plugins={}",
                disabled_admission.join(",")
            ),
            "--profiling=false".to_string(),
        ];
        if opts.audit {
            let policy = dir.join("audit-policy.yaml");
            std::fs::write(&policy, AUDIT_POLICY).map_err(io_err("write the audit policy"))?;
            api_args.extend([
                format!("--audit-policy-file={}", policy.display()),
                format!("--audit-log-path={}", dir.join("audit.log").display()),
                "--audit-log-format=json".to_string(),
                "--audit-log-mode=blocking".to_string(),
            ]);
        }
        api_args.extend(opts.extra_apiserver_args.iter().cloned());
        drop(ports);
        let api_bin = plane.binaries.kube_apiserver.clone();
        plane.spawn("kube-apiserver", &api_bin, &api_args, &logs)?;
        plane
            .wait_healthy(Part::ApiServer, Duration::from_secs(90))
            .await?;
        let admin_client = client_from_yaml(&plane.admin_yaml, "quorate-admin").await?;
        progress(
            "controlplane",
            t0,
            &format!(
                "kube-apiserver {} ready on {server}",
                plane.binaries.kubernetes_version
            ),
        );

        // kube-controller-manager
        if opts.controller_manager {
            let controllers: Vec<String> = if opts.controllers.is_empty() {
                DEFAULT_CONTROLLERS.iter().map(|c| c.to_string()).collect()
            } else {
                opts.controllers.clone()
            };
            let kcm_args = vec![
                format!("--kubeconfig={}", plane.admin_kubeconfig.display()),
                format!("--controllers={}", controllers.join(",")),
                "--leader-elect=false".to_string(),
                // Serve nothing (no health or metrics port at all).
                "--secure-port=0".to_string(),
                format!("--service-account-private-key-file={}", p("sa.key")),
                format!("--root-ca-file={}", p("ca.crt")),
                format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
                "--use-service-account-credentials=false".to_string(),
                "--profiling=false".to_string(),
            ];
            let kcm_bin = plane
                .binaries
                .kube_controller_manager
                .clone()
                .expect("checked above");
            plane.spawn("kube-controller-manager", &kcm_bin, &kcm_args, &logs)?;
            // Ready enough when its controllers act: the `default` ServiceAccount appears.
            if controllers.iter().any(|c| c == "serviceaccount-controller") {
                let sas: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
                    kube::Api::namespaced(admin_client.clone(), "default");
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    if let Ok(Some(_)) = sas.get_opt("default").await {
                        break;
                    }
                    plane
                        .check_running("kube-controller-manager", "waiting for its controllers")?;
                    if Instant::now() > deadline {
                        return Err(plane.start_error(
                            "kube-controller-manager",
                            "no `default` ServiceAccount within 60 s",
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            } else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                plane.check_running("kube-controller-manager", "starting")?;
            }
            progress(
                "controlplane",
                t0,
                &format!("kube-controller-manager running: {}", controllers.join(",")),
            );
        }
        progress(
            "controlplane",
            t0,
            &format!(
                "control plane started in {:.1} s (state in {})",
                t0.elapsed().as_secs_f64(),
                plane.dir.display()
            ),
        );
        Ok(plane)
    }

    fn spawn(&mut self, name: &str, bin: &Path, args: &[String], logs: &Path) -> Result<(), Error> {
        let launch = Launch {
            bin: bin.to_path_buf(),
            args: args.to_vec(),
            log: logs.join(format!("{name}.log")),
        };
        let child = self.launch(name, &launch, None)?;
        self.logs.push((name.to_string(), launch.log.clone()));
        self.slots().push(Slot {
            name: name.to_string(),
            launch,
            child: Some(child),
        });
        Ok(())
    }

    /// Runs a process: with a fresh log the first time; appending to its log after `note` when
    /// started again.
    fn launch(&self, name: &str, launch: &Launch, note: Option<&str>) -> Result<Child, Error> {
        let log = &launch.log;
        let mut file = match note {
            None => fs::File::create(log),
            Some(_) => fs::OpenOptions::new().create(true).append(true).open(log),
        }
        .map_err(io_err(format!("opening {}", log.display())))?;
        if let Some(note) = note {
            std::io::Write::write_all(&mut file, format!("\n--- testbed: {note} ---\n").as_bytes())
                .map_err(io_err(format!("writing {}", log.display())))?;
        }
        let err = file
            .try_clone()
            .map_err(io_err(format!("opening {}", log.display())))?;
        let mut cmd = Command::new(&launch.bin);
        cmd.args(&launch.args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .current_dir(&self.dir);
        Child::spawn(name, cmd).map_err(io_err(format!("starting {}", launch.bin.display())))
    }

    /// The process list; a poisoned lock is still usable (slots are never half-updated).
    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.processes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log_of(&self, name: &str) -> PathBuf {
        self.logs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| self.dir.join("logs").join(format!("{name}.log")))
    }

    fn start_error(&self, name: &str, reason: &str) -> Error {
        let log = self.log_of(name);
        Error::Start {
            process: name.to_string(),
            reason: reason.to_string(),
            log_tail: log_tail(&log, 40),
            log,
        }
    }

    fn check_running(&self, name: &str, doing: &str) -> Result<(), Error> {
        let status = match self.slots().iter_mut().find(|s| s.name == name) {
            Some(Slot {
                child: Some(child), ..
            }) => child.try_wait().ok().flatten(),
            Some(Slot { child: None, .. }) => {
                return Err(self.start_error(name, &format!("killed while {doing}")));
            }
            None => return Ok(()),
        };
        match status {
            None => Ok(()),
            Some(status) => {
                // Give the log a moment to be flushed by the dead process's last writes.
                std::thread::sleep(Duration::from_millis(50));
                Err(self.start_error(name, &format!("exited ({status}) while {doing}")))
            }
        }
    }

    /// The text Go's net package logs when a listener's port is taken.
    const PORT_IN_USE: &'static str = "address already in use";

    /// Like [`Self::check_running`], but a process that exited because its port was taken (by
    /// an outgoing connection that the kernel gave the free port meanwhile) is started again
    /// with the same arguments: it gets the port once that connection is gone. True when it
    /// was started again.
    fn check_running_or_rebind(&self, part: Part, doing: &str) -> Result<bool, Error> {
        let name = part.process_name();
        let exited = {
            let mut slots = self.slots();
            match slots.iter_mut().find(|s| s.name == name) {
                Some(Slot {
                    child: Some(child), ..
                }) => child.try_wait().ok().flatten().is_some(),
                _ => false,
            }
        };
        if exited {
            std::thread::sleep(Duration::from_millis(50)); // its last log lines
            let log = fs::read_to_string(self.log_of(name)).unwrap_or_default();
            let last_run = log.rsplit("--- testbed:").next().unwrap_or_default();
            if last_run.contains(Self::PORT_IN_USE) {
                let mut slots = self.slots();
                if let Some(slot) = slots.iter_mut().find(|s| s.name == name) {
                    let child = self.launch(
                        name,
                        &slot.launch,
                        Some(&format!("started again: its port was in use while {doing}")),
                    )?;
                    slot.child = Some(child);
                    return Ok(true);
                }
            }
        }
        self.check_running(name, doing).map(|()| false)
    }

    /// Waits until `part` is healthy: etcd's `/health` says so, the apiserver's `/readyz`
    /// answers `ok` to the admin, the controller manager (which serves no port) has kept running
    /// for a second. An [`Error::Start`] with the tail of its log when the process exits, is
    /// killed, or is not healthy within `timeout`.
    pub async fn wait_healthy(&self, part: Part, timeout: Duration) -> Result<(), Error> {
        let name = part.process_name();
        let deadline = Instant::now() + timeout;
        let mut since = Instant::now();
        let admin = match part {
            Part::ApiServer => Some(self.client().await?),
            _ => None,
        };
        let mut last = String::new();
        loop {
            let (healthy, doing, pause) = match (part, &admin) {
                (Part::ApiServer, Some(admin)) => {
                    let req = http::Request::get("/readyz")
                        .body(Vec::new())
                        .expect("a valid request");
                    let healthy =
                        match tokio::time::timeout(Duration::from_secs(5), admin.request_text(req))
                            .await
                        {
                            Ok(Ok(body)) if body.trim() == "ok" => true,
                            Ok(Ok(body)) => {
                                last = body;
                                false
                            }
                            Ok(Err(e)) => {
                                last = e.to_string();
                                false
                            }
                            Err(_) => {
                                last = "/readyz took over 5 s".into();
                                false
                            }
                        };
                    (healthy, "waiting for /readyz", 200)
                }
                (Part::Etcd, _) => (
                    etcd_healthy(self.etcd_port).await,
                    "waiting for /health",
                    100,
                ),
                _ => (since.elapsed() >= Duration::from_secs(1), "starting", 100),
            };
            if healthy && part != Part::ControllerManager {
                return Ok(());
            }
            let mut pause = Duration::from_millis(pause);
            if self.check_running_or_rebind(part, doing)? {
                // Its port was taken: try again in a while, and the controller manager's second
                // of running starts over.
                pause = Duration::from_secs(1);
                since = Instant::now() + pause;
            } else if healthy {
                return Ok(());
            }
            if Instant::now() > deadline {
                let secs = timeout.as_secs();
                let reason = match part {
                    Part::Etcd => format!("no healthy /health within {secs} s"),
                    Part::ApiServer => format!("not ready within {secs} s; last answer: {last}"),
                    Part::ControllerManager => format!("not running within {secs} s"),
                };
                return Err(self.start_error(name, &reason));
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// How long [`Self::start_again`] waits for a part to be healthy.
    fn startup_timeout(part: Part) -> Duration {
        match part {
            Part::Etcd => Duration::from_secs(30),
            Part::ApiServer => Duration::from_secs(90),
            Part::ControllerManager => Duration::from_secs(30),
        }
    }

    fn fault(part: Part, reason: impl Into<String>) -> Error {
        Error::Fault {
            part,
            reason: reason.into(),
        }
    }

    /// Crashes `part`: SIGKILL to its process group (no graceful shutdown, nothing flushed
    /// beyond what the kernel already has), then reaps it. It stays down until
    /// [`Self::start_again`]; meanwhile [`Self::pids`] leaves it out. Returns the killed pid.
    /// An [`Error::Fault`] when the part is not in this plane or is already down.
    pub fn kill(&self, part: Part) -> Result<u32, Error> {
        let mut slots = self.slots();
        let slot = slots
            .iter_mut()
            .find(|s| s.name == part.process_name())
            .ok_or_else(|| Self::fault(part, "not part of this plane (or the plane is stopped)"))?;
        let mut child = slot
            .child
            .take()
            .ok_or_else(|| Self::fault(part, "already killed and not started again"))?;
        let pid = child.pid();
        child.kill();
        Ok(pid)
    }

    /// Starts `part` again after [`Self::kill`] (or after it died by itself) with exactly the
    /// command line of its first start: same binary, arguments, data directory, port,
    /// certificates; its log continues in the same file after a `--- testbed: ... ---` line.
    /// Waits until it is healthy (see [`Self::wait_healthy`]; 30 s for etcd and the controller
    /// manager, 90 s for the apiserver) and returns the new pid. An [`Error::Fault`] when it is
    /// still running or not in this plane; an [`Error::Start`] with its log's tail when it
    /// does not come up.
    pub async fn start_again(&self, part: Part) -> Result<u32, Error> {
        let pid = {
            let mut slots = self.slots();
            let slot = slots
                .iter_mut()
                .find(|s| s.name == part.process_name())
                .ok_or_else(|| {
                    Self::fault(part, "not part of this plane (or the plane is stopped)")
                })?;
            if let Some(child) = slot.child.as_mut()
                && child.is_running()
            {
                return Err(Self::fault(
                    part,
                    format!("still running (pid {}); kill it first", child.pid()),
                ));
            }
            let child = self.launch(part.process_name(), &slot.launch, Some("started again"))?;
            let pid = child.pid();
            // Replacing an exited child reaps it (Child's drop).
            slot.child = Some(child);
            pid
        };
        self.wait_healthy(part, Self::startup_timeout(part)).await?;
        Ok(pid)
    }

    /// A crash and a restart: [`Self::kill`] then [`Self::start_again`]. Returns the new pid
    /// once the part is healthy again.
    pub async fn restart(&self, part: Part) -> Result<u32, Error> {
        self.kill(part)?;
        self.start_again(part).await
    }

    /// Whether `part` is in this plane and its process is running.
    pub fn is_running(&self, part: Part) -> bool {
        self.slots()
            .iter_mut()
            .find(|s| s.name == part.process_name())
            .and_then(|s| s.child.as_mut())
            .is_some_and(|c| c.is_running())
    }

    /// The apiserver's address (`127.0.0.1:<port>`), e.g. the target of a
    /// [`crate::proxy::ApiProxy`].
    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `yaml` (a kubeconfig) with every cluster's `server:` set to `https://<addr>`, e.g. an
    /// [`crate::proxy::ApiProxy`] in front of the apiserver. TLS passes through unchanged, so
    /// `addr` must be an address that the serving certificate covers: its IP SANs are
    /// `127.0.0.1` and `10.0.0.1` (any port).
    pub fn kubeconfig_via(&self, yaml: &str, addr: SocketAddr) -> String {
        let mut out = String::with_capacity(yaml.len());
        for line in yaml.split_inclusive('\n') {
            let body = line.trim_start();
            if let Some(rest) = body.strip_prefix("server:")
                && !rest.trim().is_empty()
            {
                let indent = &line[..line.len() - body.len()];
                let eol = if line.ends_with('\n') { "\n" } else { "" };
                out.push_str(&format!("{indent}server: https://{addr}{eol}"));
            } else {
                out.push_str(line);
            }
        }
        out
    }

    /// An admin client that talks to the apiserver through `addr` (see [`Self::kubeconfig_via`]).
    pub async fn client_via(&self, addr: SocketAddr) -> Result<kube::Client, Error> {
        client_from_yaml(
            &self.kubeconfig_via(&self.admin_yaml, addr),
            "quorate-admin",
        )
        .await
    }

    /// The admin kubeconfig (user `quorate-admin` in group `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// etcd's client URL (`http://127.0.0.1:<port>`).
    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_port)
    }

    /// The binaries this plane runs.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// The audit log of [`Options::audit`] (absent without it).
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// The state directory (pki/, logs/, etcd/, admin.kubeconfig).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM) that signed the serving and client certificates.
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// Each running process's name and pid (also its process group), in start order.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.slots()
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.child.as_ref()?.pid())))
            .collect()
    }

    /// Each process's log file.
    pub fn log_paths(&self) -> Vec<(String, PathBuf)> {
        self.logs.clone()
    }

    /// A `kubectl` command with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.binaries.kubectl);
        cmd.arg(format!("--kubeconfig={}", self.admin_kubeconfig.display()));
        cmd
    }

    /// A client as the admin (`system:masters`).
    pub async fn client(&self) -> Result<kube::Client, Error> {
        client_from_yaml(&self.admin_yaml, "quorate-admin").await
    }

    /// The kubeconfig text for a client-certificate user with these groups (the CN is the user
    /// name, each group an O attribute; at most two groups, more is an [`Error::PkiUnsupported`]).
    pub fn kubeconfig_for_user(&self, user: &str, groups: &[&str]) -> Result<String, Error> {
        let issued = self.ca.issue(user, groups, Usage::Client)?;
        Ok(kubeconfig_yaml(
            &self.server_url(),
            &self.ca.cert_pem,
            user,
            &cert_user(&issued),
        ))
    }

    /// A client authenticated by a fresh client certificate for `user` in `groups` (no RBAC
    /// rights beyond what the cluster grants every authenticated user).
    pub async fn client_for_user(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<kube::Client, Error> {
        client_from_yaml(&self.kubeconfig_for_user(user, groups)?, user).await
    }

    /// Writes a kubeconfig for a client-certificate user (see [`Self::client_for_user`]).
    pub fn write_kubeconfig_for_user(
        &self,
        user: &str,
        groups: &[&str],
        path: &Path,
    ) -> Result<(), Error> {
        write(path, &self.kubeconfig_for_user(user, groups)?, 0o600)
    }

    /// The kubeconfig text for a bearer token (e.g. a ServiceAccount token from TokenRequest).
    pub fn kubeconfig_for_token(&self, token: &str) -> String {
        let token = serde_json::to_string(token).expect("a string serializes");
        kubeconfig_yaml(
            &self.server_url(),
            &self.ca.cert_pem,
            "token-user",
            &format!("    token: {token}\n"),
        )
    }

    /// A TokenRequest token of the ServiceAccount `ns/name`, valid for `seconds`.
    pub async fn service_account_token(
        &self,
        ns: &str,
        name: &str,
        seconds: i64,
    ) -> Result<String, Error> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        let who = format!("ServiceAccount {ns}/{name}");
        let sas: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(self.client().await?, ns);
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![]),
                expiration_seconds: Some(seconds),
                ..Default::default()
            }),
            ..Default::default()
        };
        sas.create_token_request(name, &Default::default(), &req)
            .await
            .map_err(|source| Error::Client {
                who: who.clone(),
                source,
            })?
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| Error::Binaries(format!("the TokenRequest for {who} returned no token")))
    }

    /// A client that authenticates with a bearer token.
    pub async fn client_for_token(&self, token: &str) -> Result<kube::Client, Error> {
        client_from_yaml(&self.kubeconfig_for_token(token), "a bearer token").await
    }

    /// Stops kube-controller-manager, kube-apiserver and etcd (SIGTERM, then SIGKILL), reaps
    /// them, and removes the temporary state directory. Idempotent; also done on drop.
    pub fn stop(&mut self) {
        let slots = self.processes.get_mut().unwrap_or_else(|e| e.into_inner());
        while let Some(slot) = slots.pop() {
            if let Some(mut child) = slot.child {
                child.stop(Duration::from_secs(5));
            }
        }
        if let Some(StateDir::Temp(t)) = self.state.take() {
            let path = t.path().to_path_buf();
            if let Err(e) = t.close() {
                eprintln!(
                    "[testbed controlplane] cannot remove {}: {e}",
                    path.display()
                );
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}
