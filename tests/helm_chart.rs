//! Real API server tier: the Helm chart in charts/quorate, rendered and installed by a real helm
//! (built from the Go module proxy by the testbed) against a real kube-apiserver and etcd.
//!
//! What is proved: `helm lint` passes; values.schema.json types and describes every value and
//! refuses wrong ones naming them; the ServiceMonitor and PrometheusRule render only when enabled,
//! the ServiceMonitor scrapes the metrics Service's port, and every metric the rules read is one
//! the operator serves (rendered only: no monitoring.coreos.com CRDs here), and the operator
//! binary drops a deleted ensemble's series from /metrics; the rendered manifests of both RBAC modes (cluster-wide
//! and a list of namespaces) pass the API server's server-side dry run; the operator's Pod
//! template is admitted in a namespace that enforces Pod Security `restricted` (and the same
//! template without its security contexts is refused there); the RBAC has no wildcards, grants
//! what deploy/operator-rbac.yaml grants, and in namespaced mode grants Secrets only in the
//! watched namespaces; `helm install` creates the CRDs, ServiceAccount, RBAC, Deployment and
//! metrics Service, a token of the chart's ServiceAccount can do the operator's reads and writes
//! and nothing it should not, and `helm uninstall` removes all of it but the CRDs (Helm never
//! deletes the CRDs of a chart's crds/ directory).
//!
//! One control plane (no controller manager, no node agent) is shared by every test, each with
//! its own namespaces and release; the Deployment's Pods are never scheduled or run. Every helm
//! and kubectl call has a timeout.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use libtest_mimic::{Arguments, Failed, Trial};
use quorate::crd::{MasterEnsemble, ZkBackup};
use quorate_testbed::controlplane::{ControlPlane, Options};
use serde::Deserialize;
use serde_json::{Value, json};

type TestResult = Result<(), Failed>;
type TestFn = fn(Arc<Ctx>) -> Pin<Box<dyn Future<Output = TestResult> + Send>>;

/// How long one helm or kubectl command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// The image the tests render; nothing pulls it.
const IMAGE_SET: &str = "image.repository=registry.example/quorate,image.tag=9.9.9";
const IMAGE: &str = "registry.example/quorate:9.9.9";

struct Ctx {
    plane: ControlPlane,
    helm: PathBuf,
    /// HELM_CACHE_HOME, HELM_CONFIG_HOME and HELM_DATA_HOME, so helm writes nothing under $HOME.
    helm_home: tempfile::TempDir,
    /// promtool, to check the PrometheusRule and test its alerts.
    promtool: PathBuf,
    /// Installs one at a time: each install also creates the CRDs.
    installs: tokio::sync::Mutex<()>,
}

fn fail(msg: impl Into<String>) -> Failed {
    Failed::from(msg.into())
}

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/quorate")
}

fn is_forbidden<T>(r: &Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

/// Polls `check` every 100 ms until it returns Some, or fails after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, Failed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(fail(format!("timed out after {timeout:?}: {what}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a command with a timeout and optional stdin; Ok(stdout) when it succeeds.
async fn run(
    mut cmd: tokio::process::Command,
    stdin: Option<&str>,
    what: &str,
) -> Result<String, Failed> {
    use tokio::io::AsyncWriteExt as _;
    cmd.stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    })
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("{what}: cannot start: {e}")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| fail(format!("{what}: writing stdin: {e}")))?;
    }
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| fail(format!("{what}: no answer within {COMMAND_TIMEOUT:?}")))?
        .map_err(|e| fail(format!("{what}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(fail(format!(
            "{what} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl Ctx {
    async fn client(&self) -> Result<Client, Failed> {
        self.plane
            .client()
            .await
            .map_err(|e| fail(format!("admin client: {e}")))
    }

    /// helm with the plane's admin kubeconfig and private helm directories.
    async fn helm(&self, args: &[&str]) -> Result<String, Failed> {
        let cmd = quorate_testbed::helm::command(
            &self.helm,
            args,
            self.plane.kubeconfig_path(),
            self.helm_home.path(),
        );
        run(cmd.into(), None, &format!("helm {}", args.join(" "))).await
    }

    /// `promtool ARGS`; Ok(stdout) when it succeeds.
    async fn promtool(&self, args: &[&str]) -> Result<String, Failed> {
        let mut cmd = tokio::process::Command::new(&self.promtool);
        cmd.args(args);
        run(cmd, None, &format!("promtool {}", args.join(" "))).await
    }

    /// `promtool check rules` on the rule file at `path`, which must hold `count` rules.
    async fn check_rules(&self, path: &str, count: usize) -> TestResult {
        let said = self.promtool(&["check", "rules", path]).await?;
        if said.contains(&format!("SUCCESS: {count} rules found")) {
            Ok(())
        } else {
            Err(fail(format!("promtool check rules {path} said:\n{said}")))
        }
    }

    /// `helm template` of the chart: every rendered object (CRDs included when asked).
    async fn render(
        &self,
        release: &str,
        ns: &str,
        set: &[&str],
        crds: bool,
    ) -> Result<Vec<Value>, Failed> {
        let chart = chart_dir();
        let chart = chart.to_string_lossy();
        let mut args = vec![
            "template",
            release,
            &chart,
            "--namespace",
            ns,
            "--set",
            IMAGE_SET,
        ];
        for s in set {
            args.extend(["--set", s]);
        }
        if crds {
            args.push("--include-crds");
        }
        let text = self.helm(&args).await?;
        documents(&text)
    }

    /// Creates namespaces (as the admin), with labels.
    async fn namespaces(&self, names: &[&str], labels: &[(&str, &str)]) -> Result<(), Failed> {
        let api: Api<Namespace> = Api::all(self.client().await?);
        for name in names {
            let obj = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    labels: Some(
                        labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    ),
                    ..Default::default()
                },
                ..Default::default()
            };
            api.create(&PostParams::default(), &obj)
                .await
                .map_err(|e| fail(format!("create namespace {name}: {e}")))?;
        }
        Ok(())
    }

    /// A client authenticated as a ServiceAccount, with a TokenRequest token.
    async fn service_account_client(&self, ns: &str, sa: &str) -> Result<Client, Failed> {
        let token = self.service_account_token(ns, sa).await?;
        self.plane
            .client_for_token(&token)
            .await
            .map_err(|e| fail(format!("client for {ns}/{sa}: {e}")))
    }

    /// A TokenRequest token of a ServiceAccount.
    async fn service_account_token(&self, ns: &str, sa: &str) -> Result<String, Failed> {
        self.plane
            .service_account_token(ns, sa, 600)
            .await
            .map_err(|e| fail(format!("token for {ns}/{sa}: {e}")))
    }
}

/// The documents of a multi-document YAML stream, empty ones left out.
fn documents(text: &str) -> Result<Vec<Value>, Failed> {
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).map_err(|e| fail(format!("rendered YAML: {e}")))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn typed<T: serde::de::DeserializeOwned>(doc: &Value) -> Result<T, Failed> {
    serde_json::from_value(doc.clone())
        .map_err(|e| fail(format!("{} {}: {e}", doc["kind"], doc["metadata"]["name"])))
}

/// The (apiGroup, resource, verb) triples of a set of rules.
fn grants(rules: &[&Value]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        let list = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        for group in list("apiGroups") {
            for resource in list("resources") {
                for verb in list("verbs") {
                    out.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}

fn rules_of<'a>(docs: &'a [Value], kinds: &[&str]) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| kinds.iter().any(|k| d["kind"] == *k))
        .flat_map(|d| d["rules"].as_array().into_iter().flatten())
        .collect()
}

/// The Pod Security `restricted` fields of a Pod spec (JSON), as a list of what is wrong.
fn restricted_violations(spec: &Value) -> Vec<String> {
    let mut wrong = Vec::new();
    let pod = &spec["securityContext"];
    let containers = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec["initContainers"].as_array().into_iter().flatten());
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        let either = |key: &str| {
            if sc[key].is_null() {
                &pod[key]
            } else {
                &sc[key]
            }
        };
        if either("runAsNonRoot") != true {
            wrong.push(format!("{name}: runAsNonRoot is not true"));
        }
        match either("runAsUser").as_i64() {
            Some(0) => wrong.push(format!("{name}: runAsUser is 0")),
            None => wrong.push(format!(
                "{name}: no numeric runAsUser (the image's user must be non-root)"
            )),
            Some(_) => {}
        }
        if sc["readOnlyRootFilesystem"] != true {
            wrong.push(format!("{name}: readOnlyRootFilesystem is not true"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            wrong.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        if sc["privileged"] == true {
            wrong.push(format!("{name}: privileged"));
        }
        let drops: Vec<&str> = sc["capabilities"]["drop"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        if !drops.contains(&"ALL") {
            wrong.push(format!("{name}: capabilities do not drop ALL"));
        }
        if sc["capabilities"]["add"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            wrong.push(format!("{name}: capabilities are added"));
        }
        if either("seccompProfile")["type"] != "RuntimeDefault" {
            wrong.push(format!("{name}: seccompProfile is not RuntimeDefault"));
        }
    }
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[key] == true {
            wrong.push(format!("pod: {key}"));
        }
    }
    if spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| !v["hostPath"].is_null())
    {
        wrong.push("pod: a hostPath volume".into());
    }
    wrong
}

const NAMESPACED: &str = "watchNamespaces={team-a,team-b}";

// ---------------------------------------------------------------------------------------------
// Rendering and lint
// ---------------------------------------------------------------------------------------------

async fn helm_lint_passes_in_both_modes(ctx: Arc<Ctx>) -> TestResult {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    ctx.helm(&["lint", "--strict", &chart]).await?;
    ctx.helm(&["lint", "--strict", &chart, "--set", NAMESPACED])
        .await?;
    Ok(())
}

async fn a_bad_namespace_list_is_refused_at_render_time(ctx: Arc<Ctx>) -> TestResult {
    for (set, needle) in [
        ("watchNamespaces={Team_A}", "is not a namespace name"),
        ("watchNamespaces={a,a}", "is listed twice"),
    ] {
        match ctx.render("bad", "default", &[set], false).await {
            Ok(_) => return Err(fail(format!("{set} rendered"))),
            Err(e) if e.message().is_some_and(|m| m.contains(needle)) => {}
            Err(e) => return Err(fail(format!("{set}: expected {needle:?}, got {e:?}"))),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The values schema
// ---------------------------------------------------------------------------------------------

/// What the end-to-end harness (tests/common) installs: no operator Pods.
const E2E_SET: &str = "replicaCount=0,image.repository=quorate,image.tag=e2e";

fn read_chart_file(name: &str) -> Result<String, Failed> {
    std::fs::read_to_string(chart_dir().join(name))
        .map_err(|e| fail(format!("charts/quorate/{name}: {e}")))
}

fn values_schema() -> Result<Value, Failed> {
    serde_json::from_str(&read_chart_file("values.schema.json")?)
        .map_err(|e| fail(format!("values.schema.json is not JSON: {e}")))
}

/// The schema node a property's `$ref` points at (`#/definitions/NAME`), or the node itself.
fn resolved<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    match node["$ref"].as_str() {
        Some(r) => r
            .strip_prefix("#/definitions/")
            .map(|name| &schema["definitions"][name])
            .unwrap_or(node),
        None => node,
    }
}

/// Walks the schema's properties: each must have a description, and each object of the
/// chart's own (one with `properties`, not an item of a list of Kubernetes objects) must be
/// closed. Every problem found is pushed to `wrong`.
fn check_schema_node(schema: &Value, node: &Value, path: &str, wrong: &mut Vec<String>) {
    let node = resolved(schema, node);
    let Some(properties) = node["properties"].as_object() else {
        return;
    };
    if node["additionalProperties"] != false {
        wrong.push(format!("{path}: has properties but is not closed"));
    }
    for (name, property) in properties {
        let at = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        if property["description"]
            .as_str()
            .is_none_or(|d| d.trim().is_empty())
        {
            wrong.push(format!("{at}: no description"));
        }
        if property["type"].is_null() && property["$ref"].is_null() {
            wrong.push(format!("{at}: no type"));
        }
        check_schema_node(schema, property, &at, wrong);
    }
}

/// Every key of values.yaml, down to the chart's own closed objects, must be a property of the
/// schema there.
fn check_values_in_schema(
    schema: &Value,
    node: &Value,
    values: &Value,
    path: &str,
    wrong: &mut Vec<String>,
) {
    let node = resolved(schema, node);
    let (Some(values), Some(properties)) = (values.as_object(), node["properties"].as_object())
    else {
        return;
    };
    for (key, value) in values {
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match properties.get(key) {
            Some(property) => check_values_in_schema(schema, property, value, &at, wrong),
            None => wrong.push(format!("{at}: in values.yaml but not in the schema")),
        }
    }
}

async fn every_value_is_in_the_schema_with_a_type_and_a_description(_ctx: Arc<Ctx>) -> TestResult {
    let schema = values_schema()?;
    if schema["$schema"] != "http://json-schema.org/draft-07/schema#" {
        return Err(fail(format!("not draft-07: {}", schema["$schema"])));
    }
    if schema["additionalProperties"] != false {
        return Err(fail("the top level of the schema is not closed"));
    }
    let values: Value = serde_norway::from_str(&read_chart_file("values.yaml")?)
        .map_err(|e| fail(format!("values.yaml: {e}")))?;
    let mut wrong = Vec::new();
    check_schema_node(&schema, &schema, "", &mut wrong);
    check_values_in_schema(&schema, &schema, &values, "", &mut wrong);
    // And the other way: the schema describes no value the chart does not have.
    let (Some(top), Some(described)) = (values.as_object(), schema["properties"].as_object())
    else {
        return Err(fail("values.yaml or the schema has no top-level map"));
    };
    for key in described.keys() {
        if !top.contains_key(key) {
            wrong.push(format!("{key}: in the schema but not in values.yaml"));
        }
    }
    // The pass-through Kubernetes objects stay open.
    for key in [
        "resources",
        "affinity",
        "podSecurityContext",
        "securityContext",
    ] {
        let node = &schema["properties"][key];
        if node["type"] != "object" || node["additionalProperties"] == false {
            wrong.push(format!("{key}: must be an open object"));
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(fail(format!("the values schema: {wrong:#?}")))
    }
}

async fn the_values_schema_accepts_the_defaults_and_every_value_set_the_tests_use(
    ctx: Arc<Ctx>,
) -> TestResult {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    ctx.helm(&["lint", "--strict", &chart, "--set", E2E_SET])
        .await?;
    let every: &[&str] = &[
        "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "image.pullPolicy=Always",
        "imagePullSecrets[0].name=registry",
        "serviceAccount.annotations.example\\.com/role=operator",
        "podLabels.team=storage,podAnnotations.note=x,commonLabels.env=test",
        "extraEnv[0].name=EXTRA,extraEnv[0].value=x",
        "tolerations[0].key=dedicated,tolerations[0].operator=Exists",
        "nodeSelector.disk=ssd,priorityClassName=high",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=disk",
        "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        "resources.limits.cpu=1,securityContext.runAsUser=1000,podSecurityContext.runAsUser=1000",
        "livenessProbe.successThreshold=1,readinessProbe.successThreshold=2",
        "metrics.service.type=NodePort,metrics.service.annotations.a=b",
        "health.port=1,metrics.port=65535,maxConcurrentReconciles=1024",
        "terminationGracePeriodSeconds=0,logging.json=false,logging.filter=debug",
    ];
    for set in [&[][..], &[NAMESPACED][..], &[E2E_SET][..], every] {
        let docs = ctx.render("q", "quorate-system", set, false).await?;
        if of_kind(&docs, "Deployment").len() != 1 {
            return Err(fail(format!("{set:?}: no Deployment rendered")));
        }
    }
    Ok(())
}

/// `helm template` (and `helm lint`) with `set` must fail on the values schema, naming `field`
/// in its message along with `why`.
async fn refused_by_the_schema(ctx: &Ctx, set: &str, field: &str, why: &str) -> TestResult {
    let message = match ctx.render("bad", "default", &[set], false).await {
        Ok(_) => return Err(fail(format!("{set} rendered"))),
        Err(e) => e.message().unwrap_or_default().to_string(),
    };
    if !message.contains("values don't meet the specifications of the schema")
        || !message.contains(field)
        || !message.contains(why)
    {
        return Err(fail(format!(
            "{set}: expected a schema error naming {field:?} ({why:?}), got:\n{message}"
        )));
    }
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    match ctx.helm(&["lint", "--strict", &chart, "--set", set]).await {
        Ok(out) => Err(fail(format!("helm lint passed with {set}:\n{out}"))),
        Err(e) if e.message().is_some_and(|m| m.contains(field)) => Ok(()),
        Err(e) => Err(fail(format!("helm lint with {set}: {e:?}"))),
    }
}

async fn the_values_schema_refuses_bad_values_and_names_them(ctx: Arc<Ctx>) -> TestResult {
    for (set, field, why) in [
        ("replicaCount=two", "'/replicaCount'", "want integer"),
        ("replicaCount=-1", "'/replicaCount'", "minimum"),
        (
            "replicacount=3",
            "'replicacount' not allowed",
            "additional properties",
        ),
        ("metrics.port=0", "'/metrics/port'", "minimum"),
        ("health.port=65536", "'/health/port'", "maximum"),
        (
            "metrics.service.port=0",
            "'/metrics/service/port'",
            "minimum",
        ),
        (
            "maxConcurrentReconciles=0",
            "'/maxConcurrentReconciles'",
            "minimum",
        ),
        (
            "maxConcurrentReconciles=1025",
            "'/maxConcurrentReconciles'",
            "maximum",
        ),
        (
            "image.pullPolicy=Sometimes",
            "'/image/pullPolicy'",
            "IfNotPresent",
        ),
        ("image.digest=latest", "'/image/digest'", "match pattern"),
        (
            "metrics.service.type=ExternalName",
            "'/metrics/service/type'",
            "ClusterIP",
        ),
        ("logging.json=yes", "'/logging/json'", "want boolean"),
        (
            "metrics.servce.enabled=true",
            "'servce' not allowed",
            "'/metrics'",
        ),
        (
            "livenessProbe.successThreshold=2",
            "'/livenessProbe/successThreshold'",
            "1",
        ),
        ("podLabels.team=1", "'/podLabels/team'", "want string"),
        (
            "extraEnv[0].name=A,extraEnv[0].value=1",
            "'/extraEnv/0/value'",
            "want string",
        ),
        (
            "metrics.serviceMonitor.interval=30",
            "'/metrics/serviceMonitor/interval'",
            "want string",
        ),
        (
            "metrics.prometheusRule.alerts.stepStuck.for=5 minutes",
            "'/metrics/prometheusRule/alerts/stepStuck/for'",
            "match pattern",
        ),
        (
            "metrics.prometheusRule.alerts.stepStuck.thresholdSecond=60",
            "'thresholdSecond' not allowed",
            "'/metrics/prometheusRule/alerts/stepStuck'",
        ),
        (
            "metrics.prometheusRule.alerts.backupTooOld.maxAgeSeconds=0",
            "'/metrics/prometheusRule/alerts/backupTooOld/maxAgeSeconds'",
            "minimum",
        ),
    ] {
        refused_by_the_schema(&ctx, set, field, why).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Monitoring: the ServiceMonitor and the PrometheusRule (rendered only: the API server here has
// no monitoring.coreos.com CRDs)
// ---------------------------------------------------------------------------------------------

const MONITORING: &str = "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true";

/// The one object of `kind` in `docs`.
fn only<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value, Failed> {
    match of_kind(docs, kind).as_slice() {
        [one] => Ok(one),
        other => Err(fail(format!("one {kind} expected, got {}", other.len()))),
    }
}

/// The words `prefix` + `[a-z_]+` of `text` that start a word (no letter, digit, `_` or `-`
/// before them): metric names for `quorate_`, label names for `$labels.`.
fn words_after(text: &str, prefix: &str, whole: bool) -> BTreeSet<String> {
    text.match_indices(prefix)
        .filter(|(at, _)| {
            text[..*at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        })
        .map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            if whole {
                format!("{prefix}{word}")
            } else {
                word.to_string()
            }
        })
        .collect()
}

/// What the operator serves: the names of the series (`quorate_steps_total`,
/// `quorate_reconcile_duration_seconds_bucket`, ...) and of their labels, from quorate's own
/// registry with a series in every family src/metrics.rs registers.
fn served_metrics() -> Result<(BTreeSet<String>, BTreeSet<String>), Failed> {
    use quorate::metrics::{EnsembleGauges, Metrics, ObjectKey};
    let now = jiff::Timestamp::now();
    let m = Metrics::new();
    m.reconciled("MasterEnsemble", Duration::from_millis(5), Some("kube"));
    m.step("add-voter", "started");
    m.blocked("QuorumLost");
    m.ensemble(
        &ObjectKey::new("ns", "masters"),
        EnsembleGauges {
            ready: 2,
            healthy_voters: 2,
            in_flight_since: Some(now),
            ..EnsembleGauges::steady(3)
        },
    );
    m.backup_succeeded(&ObjectKey::new("ns", "nightly"), now);
    m.set_leader(true);
    let text = m
        .encode(now)
        .map_err(|e| fail(format!("encode the metrics: {e}")))?;
    // Every family registered in src/metrics.rs has a series above, so none is missed.
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs"))
            .map_err(|e| fail(format!("src/metrics.rs: {e}")))?;
    let registered: Vec<&str> = source
        .split("registry.register(")
        .skip(1)
        .filter_map(|call| call.split('"').nth(1))
        .collect();
    if registered.len() < 10 {
        return Err(fail(format!(
            "found only {registered:?} registered in src/metrics.rs"
        )));
    }
    for family in &registered {
        if !text.contains(&format!("# TYPE quorate_{family} ")) {
            return Err(fail(format!(
                "quorate_{family} has no series in this test's registry: give it one"
            )));
        }
    }
    let mut names = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        names.insert(line[..end].to_string());
        if let Some(set) = line[end..]
            .strip_prefix('{')
            .and_then(|l| l.split_once('}'))
        {
            for pair in set.0.split(',') {
                if let Some((name, _)) = pair.split_once('=') {
                    labels.insert(name.to_string());
                }
            }
        }
    }
    Ok((names, labels))
}

/// The alerting rules of a rendered PrometheusRule.
fn alert_rules(rule: &Value) -> Vec<&Value> {
    rule["spec"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect()
}

async fn monitoring_objects_render_only_when_enabled(ctx: Arc<Ctx>) -> TestResult {
    for set in [&[][..], &[NAMESPACED][..]] {
        let docs = ctx.render("q", "quorate-system", set, false).await?;
        for kind in ["ServiceMonitor", "PrometheusRule"] {
            if !of_kind(&docs, kind).is_empty() {
                return Err(fail(format!("a {kind} rendered by default ({set:?})")));
            }
        }
    }
    let docs = ctx
        .render("q", "quorate-system", &[MONITORING], false)
        .await?;
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        let object = only(&docs, kind)?;
        if object["apiVersion"] != "monitoring.coreos.com/v1"
            || object["metadata"]["namespace"] != "quorate-system"
        {
            return Err(fail(format!("{kind}: {object}")));
        }
    }
    // Each on its own.
    let docs = ctx
        .render(
            "q",
            "quorate-system",
            &["metrics.serviceMonitor.enabled=true"],
            false,
        )
        .await?;
    if of_kind(&docs, "ServiceMonitor").len() != 1 || !of_kind(&docs, "PrometheusRule").is_empty() {
        return Err(fail(
            "serviceMonitor.enabled alone renders other than one ServiceMonitor",
        ));
    }
    let docs = ctx
        .render(
            "q",
            "quorate-system",
            &["metrics.prometheusRule.enabled=true"],
            false,
        )
        .await?;
    if of_kind(&docs, "PrometheusRule").len() != 1 || !of_kind(&docs, "ServiceMonitor").is_empty() {
        return Err(fail(
            "prometheusRule.enabled alone renders other than one PrometheusRule",
        ));
    }
    // A ServiceMonitor without the Service it scrapes is refused.
    let without = "metrics.serviceMonitor.enabled=true,metrics.service.enabled=false";
    match ctx.render("q", "quorate-system", &[without], false).await {
        Ok(_) => Err(fail(format!("{without} rendered"))),
        Err(e)
            if e.message()
                .is_some_and(|m| m.contains("needs metrics.service.enabled")) =>
        {
            Ok(())
        }
        Err(e) => Err(fail(format!("{without}: {e:?}"))),
    }
}

/// The only endpoint in `spec.<key>` of a ServiceMonitor or PodMonitor.
fn one_endpoint<'a>(monitor: &'a Value, key: &str) -> Result<&'a Value, Failed> {
    match monitor["spec"][key].as_array().map(Vec::as_slice) {
        Some([endpoint]) => Ok(endpoint),
        _ => Err(fail(format!("one endpoint expected: {monitor}"))),
    }
}

/// The members' PodMonitor renders only when enabled, selects the Pods quorate builds for
/// members (not its volume probes or restores), scrapes their `metrics` port, looks in the
/// watched namespaces (all when cluster-wide), and labels each series with the ensemble and the
/// server id taken from labels the member Pods carry.
async fn the_zookeeper_pod_monitor_scrapes_every_member_pod(ctx: Arc<Ctx>) -> TestResult {
    use quorate::executor::resources::names::member_labels;
    let docs = ctx
        .render("q", "quorate-system", &[MONITORING], false)
        .await?;
    if !of_kind(&docs, "PodMonitor").is_empty() {
        return Err(fail(
            "a PodMonitor rendered without zookeeperPodMonitor.enabled",
        ));
    }
    let on = "metrics.zookeeperPodMonitor.enabled=true,metrics.zookeeperPodMonitor.interval=15s";
    let member = member_labels("masters", quorate::planner::ServerId(4));
    let probe = quorate::executor::resources::names::ensemble_labels("masters", "probe");
    for (set, namespaces) in [
        (vec![on], json!({"any": true})),
        (
            vec![on, NAMESPACED],
            json!({"matchNames": ["team-a", "team-b"]}),
        ),
    ] {
        let docs = ctx.render("q", "quorate-system", &set, false).await?;
        let monitor = only(&docs, "PodMonitor")?;
        if monitor["apiVersion"] != "monitoring.coreos.com/v1"
            || monitor["spec"]["namespaceSelector"] != namespaces
        {
            return Err(fail(format!("{set:?}: {monitor}")));
        }
        let selector = monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| fail(format!("the PodMonitor selects nothing: {monitor}")))?;
        let selects = |labels: &std::collections::BTreeMap<String, String>| {
            selector
                .iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        };
        if !selects(&member) || selects(&probe) {
            return Err(fail(format!(
                "the PodMonitor's selector {selector:?} must pick member Pods ({member:?}) and not probes ({probe:?})"
            )));
        }
        let endpoint = one_endpoint(monitor, "podMetricsEndpoints")?;
        if endpoint["port"] != "metrics"
            || endpoint["path"] != "/metrics"
            || endpoint["interval"] != "15s"
        {
            return Err(fail(format!("the endpoint: {endpoint}")));
        }
        // Prometheus names a Pod label's meta label after it with every other character as `_`.
        for (key, target) in [
            (quorate::constants::LABEL_ENSEMBLE, "ensemble"),
            (quorate::constants::LABEL_SERVER_ID, "server_id"),
        ] {
            let meta = format!(
                "__meta_kubernetes_pod_label_{}",
                key.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            );
            let relabeled = endpoint["relabelings"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["sourceLabels"] == json!([meta]) && r["targetLabel"] == target);
            if !relabeled || !member.contains_key(key) {
                return Err(fail(format!("no {target} label from {key}: {endpoint}")));
            }
        }
    }
    Ok(())
}

async fn the_service_monitor_scrapes_the_metrics_service_on_its_port(ctx: Arc<Ctx>) -> TestResult {
    let set = [
        MONITORING,
        "metrics.serviceMonitor.interval=15s,metrics.serviceMonitor.scrapeTimeout=5s",
        "metrics.serviceMonitor.labels.release=kube-prometheus",
        "metrics.service.port=9090,metrics.port=9464",
        "commonLabels.team=storage",
    ];
    let docs = ctx.render("q", "quorate-system", &set, false).await?;
    let monitor = only(&docs, "ServiceMonitor")?;
    let service = only(&docs, "Service")?;
    let svc: Service = typed(service)?;
    let service_labels = svc.metadata.labels.clone().unwrap_or_default();
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| fail(format!("the ServiceMonitor selects nothing: {monitor}")))?;
    for (k, v) in selector {
        if service_labels.get(k).map(String::as_str) != v.as_str() {
            return Err(fail(format!(
                "the ServiceMonitor selects {k}={v}, which the metrics Service has not: {service_labels:?}"
            )));
        }
    }
    if !monitor["spec"]["selector"]["matchExpressions"].is_null() {
        return Err(fail(format!("unexpected matchExpressions: {monitor}")));
    }
    if monitor["spec"]["namespaceSelector"]["matchNames"] != json!(["quorate-system"]) {
        return Err(fail(format!(
            "the ServiceMonitor must look in the release namespace only: {monitor}"
        )));
    }
    let endpoint = one_endpoint(monitor, "endpoints")?;
    let port_names: Vec<String> = svc
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.name)
        .collect();
    let port = endpoint["port"].as_str().unwrap_or_default();
    if port != "metrics" || !port_names.iter().any(|n| n == port) {
        return Err(fail(format!(
            "the endpoint's port {port:?} is not the metrics Service's {port_names:?}"
        )));
    }
    if endpoint["path"] != "/metrics"
        || endpoint["interval"] != "15s"
        || endpoint["scrapeTimeout"] != "5s"
    {
        return Err(fail(format!("endpoint {endpoint}")));
    }
    let labels = &monitor["metadata"]["labels"];
    if labels["release"] != "kube-prometheus" || labels["team"] != "storage" {
        return Err(fail(format!("the ServiceMonitor's labels: {labels}")));
    }
    Ok(())
}

async fn the_prometheus_rule_reads_only_metrics_the_operator_serves(ctx: Arc<Ctx>) -> TestResult {
    let (served, served_labels) = served_metrics()?;
    let docs = ctx
        .render(
            "q",
            "quorate-system",
            &[
                MONITORING,
                "metrics.prometheusRule.alertLabels.team=storage",
            ],
            false,
        )
        .await?;
    let rule = only(&docs, "PrometheusRule")?;
    let rules = alert_rules(rule);
    let alerts: BTreeSet<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    let want: BTreeSet<&str> = [
        "QuorateEnsembleDegraded",
        "QuorateEnsembleQuorumAtRisk",
        "QuorateEnsembleQuorumLost",
        "QuorateNoLeader",
        "QuorateStepStuck",
        "QuorateEnsembleBlocked",
        "QuorateReconcileErrors",
        "QuorateBackupTooOld",
    ]
    .into();
    if alerts != want || rules.len() != want.len() {
        return Err(fail(format!("alerts {alerts:?}, want {want:?}")));
    }
    let selector = "{job=\"q-quorate-metrics\",namespace=\"quorate-system\"";
    let mut referenced = BTreeSet::new();
    for r in &rules {
        let name = r["alert"].as_str().unwrap_or_default();
        let expr = r["expr"]
            .as_str()
            .ok_or_else(|| fail(format!("{name}: no expr")))?;
        let names = words_after(expr, "quorate_", true);
        if names.is_empty() {
            return Err(fail(format!("{name} reads no quorate metric: {expr}")));
        }
        for metric in &names {
            if !served.contains(metric) {
                return Err(fail(format!(
                    "{name} reads {metric}, which the operator does not serve (it serves {served:?})"
                )));
            }
            // Every read is of this release's operator.
            let reads = expr.matches(metric.as_str()).count();
            let scoped = expr.matches(&format!("{metric}{selector}")).count();
            if reads != scoped {
                return Err(fail(format!(
                    "{name}: {metric} read without the selector {selector}: {expr}"
                )));
            }
        }
        referenced.extend(names);
        if r["labels"]["severity"].as_str().is_none_or(str::is_empty)
            || r["labels"]["team"] != "storage"
        {
            return Err(fail(format!("{name}: labels {}", r["labels"])));
        }
        let (summary, description) = (
            r["annotations"]["summary"].as_str().unwrap_or_default(),
            r["annotations"]["description"].as_str().unwrap_or_default(),
        );
        if summary.is_empty()
            || !description.contains("Troubleshooting section of quorate's README")
        {
            return Err(fail(format!(
                "{name}: a summary and a description pointing at the README's Troubleshooting: {}",
                r["annotations"]
            )));
        }
        // The labels the annotations print are labels the operator's series carry.
        for label in words_after(&format!("{summary} {description}"), "$labels.", false) {
            if !served_labels.contains(&label) {
                return Err(fail(format!(
                    "{name} prints $labels.{label}, a label no series has (they have {served_labels:?})"
                )));
            }
        }
        if r["for"].as_str().is_none_or(str::is_empty) {
            return Err(fail(format!("{name}: no for")));
        }
    }
    for metric in [
        "quorate_ensemble_ready_members",
        "quorate_ensemble_voters",
        "quorate_ensemble_failures_tolerated",
        "quorate_leader",
        "quorate_step_in_flight_age_seconds",
        "quorate_blocked_total",
        "quorate_reconcile_errors_total",
        "quorate_backup_last_success_timestamp_seconds",
    ] {
        if !referenced.contains(metric) {
            return Err(fail(format!("no rule reads {metric}")));
        }
    }
    Ok(())
}

async fn the_prometheus_rule_thresholds_and_labels_come_from_values(ctx: Arc<Ctx>) -> TestResult {
    let prefix = "metrics.prometheusRule.alerts";
    let set = [
        MONITORING.to_string(),
        "metrics.prometheusRule.selector=job=\"quorate\"".to_string(),
        "metrics.prometheusRule.labels.release=kube-prometheus".to_string(),
        format!("{prefix}.stepStuck.thresholdSeconds=600,{prefix}.backupTooOld.maxAgeSeconds=7200"),
        format!("{prefix}.reconcileErrors.threshold=2,{prefix}.noLeader.enabled=false"),
        format!("{prefix}.ensembleDegraded.severity=page,{prefix}.ensembleDegraded.for=2m"),
    ];
    let set: Vec<&str> = set.iter().map(String::as_str).collect();
    let docs = ctx.render("q", "quorate-system", &set, false).await?;
    let rule = only(&docs, "PrometheusRule")?;
    if rule["metadata"]["labels"]["release"] != "kube-prometheus" {
        return Err(fail(format!("labels {}", rule["metadata"]["labels"])));
    }
    let rules = alert_rules(rule);
    let by_name = |name: &str| rules.iter().find(|r| r["alert"] == name).copied();
    if by_name("QuorateNoLeader").is_some() || rules.len() != 7 {
        return Err(fail("noLeader.enabled=false still renders QuorateNoLeader"));
    }
    for (name, tail) in [
        ("QuorateStepStuck", "> 600"),
        ("QuorateBackupTooOld", "> 7200"),
        ("QuorateReconcileErrors", "> 2"),
    ] {
        let expr = by_name(name)
            .and_then(|r| r["expr"].as_str())
            .ok_or_else(|| fail(format!("no {name}")))?;
        if !expr.trim_end().ends_with(tail) || !expr.contains("{job=\"quorate\"") {
            return Err(fail(format!("{name}: {expr}")));
        }
    }
    let degraded = by_name("QuorateEnsembleDegraded").ok_or_else(|| fail("no degraded alert"))?;
    if degraded["labels"]["severity"] != "page" || degraded["for"] != "2m" {
        return Err(fail(format!("degraded: {degraded}")));
    }
    Ok(())
}

/// Writes `value` as YAML to `dir/name` and returns the file's path.
fn write_yaml(dir: &Path, name: &str, value: &Value) -> Result<String, Failed> {
    let path = dir.join(name);
    let text = serde_norway::to_string(value).map_err(|e| fail(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    Ok(path.to_string_lossy().into_owned())
}

/// The alerts' tests for `promtool test rules`: series as the operator serves them (scraped by
/// the chart's ServiceMonitor, so with its job and namespace), and at each time the alerts that
/// must fire, with their labels (each alert name listed at a time must fire exactly so).
fn alert_tests(rules_file: &str) -> Value {
    let target = |extra: &[(&str, &str)]| {
        let mut labels = vec![
            ("job".to_string(), "q-quorate-metrics".to_string()),
            ("namespace".to_string(), "quorate-system".to_string()),
        ];
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        labels
    };
    let series = |name: &str, extra: &[(&str, &str)], values: &str| {
        let labels: Vec<String> = target(extra)
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        serde_json::json!({"series": format!("{name}{{{}}}", labels.join(",")), "values": values})
    };
    let alert = |severity: &str, extra: &[(&str, &str)]| {
        let mut labels: serde_json::Map<String, Value> = target(extra)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        labels.insert("severity".into(), severity.into());
        serde_json::json!({"exp_labels": labels})
    };
    let ens = |name: &'static str| [("ensemble_namespace", "a"), ("ensemble", name)];
    // Ensembles: "lost" (1 of 3 voters ready), "risk" (2 of 3, a step in flight since 0),
    // "fine" (5 of 5), "single" (1 of 1: never at risk by this alert).
    let mut input = Vec::new();
    for (name, voters, ready, tolerated) in [
        ("lost", 3, 1, -1),
        ("risk", 3, 2, 0),
        ("fine", 5, 5, 2),
        ("single", 1, 1, 0),
    ] {
        input.push(series(
            "quorate_ensemble_voters",
            &ens(name),
            &format!("{voters}x40"),
        ));
        input.push(series(
            "quorate_ensemble_ready_members",
            &ens(name),
            &format!("{ready}x40"),
        ));
        input.push(series(
            "quorate_ensemble_failures_tolerated",
            &ens(name),
            &format!("{tolerated}x40"),
        ));
        let age = if name == "risk" { "0+60x40" } else { "0x40" };
        input.push(series(
            "quorate_step_in_flight_age_seconds",
            &ens(name),
            age,
        ));
    }
    input.push(series("quorate_leader", &[("pod", "q-quorate-0")], "0x40"));
    input.push(series(
        "quorate_blocked_total",
        &[("reason", "QuorumLost")],
        "0 0 0 1x37",
    ));
    for (category, values) in [("forbidden", "0+1x40"), ("conflict", "0+10x40")] {
        input.push(series(
            "quorate_reconcile_errors_total",
            &[("kind", "MasterEnsemble"), ("category", category)],
            values,
        ));
    }
    // A backup that finished long ago and one that finishes every minute (maxAgeSeconds 600).
    input.push(series(
        "quorate_backup_last_success_timestamp_seconds",
        &[("backup_namespace", "a"), ("backup", "stale")],
        "0x40",
    ));
    input.push(series(
        "quorate_backup_last_success_timestamp_seconds",
        &[("backup_namespace", "a"), ("backup", "fresh")],
        "0+60x40",
    ));
    let at = |time: &str, name: &str, alerts: Vec<Value>| serde_json::json!({"eval_time": time, "alertname": name, "exp_alerts": alerts});
    let at_5m = vec![
        // Blocked fires at once and only in the 10 minutes after the counter rose.
        at(
            "5m",
            "QuorateEnsembleBlocked",
            vec![alert("warning", &[("reason", "QuorumLost")])],
        ),
        at(
            "5m",
            "QuorateEnsembleQuorumLost",
            vec![alert("critical", &ens("lost"))],
        ),
        // Not yet for 5 minutes.
        at("4m", "QuorateEnsembleDegraded", vec![]),
    ];
    let at_30m = vec![
        at("30m", "QuorateEnsembleBlocked", vec![]),
        at(
            "30m",
            "QuorateEnsembleDegraded",
            vec![
                alert("warning", &ens("lost")),
                alert("warning", &ens("risk")),
            ],
        ),
        at(
            "30m",
            "QuorateEnsembleQuorumAtRisk",
            vec![alert("warning", &ens("risk"))],
        ),
        at(
            "30m",
            "QuorateEnsembleQuorumLost",
            vec![alert("critical", &ens("lost"))],
        ),
        at(
            "30m",
            "QuorateStepStuck",
            vec![alert("warning", &ens("risk"))],
        ),
        // max() keeps no label of the series.
        at(
            "30m",
            "QuorateNoLeader",
            vec![serde_json::json!({"exp_labels": {"severity": "critical"}})],
        ),
        at(
            "30m",
            "QuorateReconcileErrors",
            vec![alert(
                "warning",
                &[("kind", "MasterEnsemble"), ("category", "forbidden")],
            )],
        ),
        at(
            "30m",
            "QuorateBackupTooOld",
            vec![alert(
                "warning",
                &[("backup_namespace", "a"), ("backup", "stale")],
            )],
        ),
    ];
    // No operator scraped at all: absent() keeps the selector's equality matchers.
    let nobody = serde_json::json!({
        "interval": "1m",
        "input_series": [series("quorate_ensemble_voters", &ens("fine"), "5x10")],
        "alert_rule_test": [at("6m", "QuorateNoLeader", vec![alert("critical", &[])])],
    });
    serde_json::json!({
        "rule_files": [rules_file],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input,
                "alert_rule_test": at_5m.into_iter().chain(at_30m).collect::<Vec<_>>(),
            },
            nobody,
        ],
    })
}

async fn the_prometheus_rule_passes_promtool_and_each_alert_fires_when_and_only_when_documented(
    ctx: Arc<Ctx>,
) -> TestResult {
    let docs = ctx
        .render(
            "q",
            "quorate-system",
            &[
                MONITORING,
                "metrics.prometheusRule.alerts.backupTooOld.maxAgeSeconds=600",
            ],
            false,
        )
        .await?;
    let rule = only(&docs, "PrometheusRule")?;
    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let write = |name: &str, value: &Value| write_yaml(dir.path(), name, value);
    // The rule file as Prometheus loads it: expressions parse, templates of the annotations
    // parse, durations are valid.
    ctx.check_rules(
        &write("rules.yaml", &rule["spec"])?,
        alert_rules(rule).len(),
    )
    .await?;
    // The alerts' logic, without the annotations (promtool compares annotations verbatim; their
    // templates were checked above, their labels by the_prometheus_rule_reads_only_metrics_...).
    let mut bare = rule["spec"].clone();
    for group in bare["groups"].as_array_mut().into_iter().flatten() {
        for r in group["rules"].as_array_mut().into_iter().flatten() {
            if let Some(r) = r.as_object_mut() {
                r.remove("annotations");
            }
        }
    }
    let bare_rules = write("alerts.yaml", &bare)?;
    let tests = write("tests.yaml", &alert_tests(&bare_rules))?;
    ctx.promtool(&["test", "rules", &tests]).await?;
    // The tests can fail: the one-voter ensemble at risk too is refused.
    let mut wrong = alert_tests(&bare_rules);
    for case in wrong["tests"][0]["alert_rule_test"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if case["alertname"] == "QuorateEnsembleQuorumAtRisk" {
            let mut single = case["exp_alerts"][0].clone();
            single["exp_labels"]["ensemble"] = "single".into();
            case["exp_alerts"]
                .as_array_mut()
                .ok_or_else(|| fail("exp_alerts"))?
                .push(single);
        }
    }
    let wrong = write("wrong.yaml", &wrong)?;
    if ctx.promtool(&["test", "rules", &wrong]).await.is_ok() {
        return Err(fail(
            "promtool test rules passed a test that expects the one-voter ensemble at risk",
        ));
    }
    Ok(())
}

/// Grafana's variables in a panel's query, replaced so that promtool can parse it.
fn without_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$job", ".*")
        .replace("$namespace", ".*")
        .replace("$ensemble", ".*")
}

async fn the_grafana_dashboard_renders_only_when_enabled_and_reads_only_served_metrics(
    ctx: Arc<Ctx>,
) -> TestResult {
    let dashboards = |docs: &[Value]| -> Vec<Value> {
        of_kind(docs, "ConfigMap")
            .into_iter()
            .filter(|c| c["data"]["quorate.json"].is_string())
            .cloned()
            .collect()
    };
    let docs = ctx.render("q", "quorate-system", &[], false).await?;
    if !dashboards(&docs).is_empty() {
        return Err(fail("the dashboard renders by default"));
    }
    let docs = ctx
        .render(
            "q",
            "quorate-system",
            &[
                "metrics.grafanaDashboard.enabled=true,metrics.grafanaDashboard.namespace=monitoring",
                "metrics.grafanaDashboard.annotations.grafana_folder=ZooKeeper",
            ],
            false,
        )
        .await?;
    let [map] = dashboards(&docs)
        .try_into()
        .map_err(|v: Vec<Value>| fail(format!("{} dashboards rendered", v.len())))?;
    let meta = &map["metadata"];
    if meta["labels"]["grafana_dashboard"] != "1"
        || meta["namespace"] != "monitoring"
        || meta["annotations"]["grafana_folder"] != "ZooKeeper"
    {
        return Err(fail(format!("the dashboard's ConfigMap: {meta}")));
    }
    let text = map["data"]["quorate.json"].as_str().unwrap_or_default();
    let dashboard: Value =
        serde_json::from_str(text).map_err(|e| fail(format!("the dashboard is not JSON: {e}")))?;
    if dashboard["uid"] != "quorate-ensembles" {
        return Err(fail(format!("uid {}", dashboard["uid"])));
    }
    let (served, served_labels) = served_metrics()?;
    // A label a query groups by or a legend prints: one the series have, or Prometheus' own.
    let known_label = |l: &str| served_labels.contains(l) || ["job", "le"].contains(&l);
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    let mut queries: Vec<(String, String)> = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        if title.is_empty() || p["description"].as_str().is_none_or(str::is_empty) {
            return Err(fail(format!("a panel without a title or description: {p}")));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            return Err(fail(format!("panel {title} has no query")));
        }
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default().to_string();
            let legend = t["legendFormat"].as_str().unwrap_or_default();
            for label in legend
                .split("{{")
                .skip(1)
                .filter_map(|s| s.split_once("}}").map(|(l, _)| l.trim()))
            {
                if !known_label(label) {
                    return Err(fail(format!(
                        "panel {title} prints {{{{{label}}}}}, no series has it"
                    )));
                }
            }
            queries.push((title.clone(), expr));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(q) = v["query"]["query"].as_str() {
            queries.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    let mut referenced = BTreeSet::new();
    let mut rules = Vec::new();
    for (i, (title, expr)) in queries.iter().enumerate() {
        let names = words_after(expr, "quorate_", true);
        if names.is_empty() {
            return Err(fail(format!("{title} reads no quorate metric: {expr}")));
        }
        for metric in &names {
            if !served.contains(metric) {
                return Err(fail(format!(
                    "{title} reads {metric}, which the operator does not serve"
                )));
            }
        }
        referenced.extend(names);
        for group in expr.split(" by (").skip(1) {
            let labels = group.split(')').next().unwrap_or_default();
            for l in labels.split(',').map(str::trim) {
                if !known_label(l) {
                    return Err(fail(format!("{title} groups by {l}, no series has it")));
                }
            }
        }
        if let Some(query) = expr.strip_prefix("label_values(") {
            let (selector, label) = query
                .trim_end_matches(')')
                .rsplit_once(',')
                .ok_or_else(|| fail(format!("{title}: {expr}")))?;
            if !known_label(label.trim()) {
                return Err(fail(format!(
                    "{title} lists values of {label}, no series has it"
                )));
            }
            rules.push((i, without_grafana_variables(selector)));
        } else {
            rules.push((i, without_grafana_variables(expr)));
        }
    }
    // Every family the operator serves has a panel.
    for metric in &served {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| metric.strip_suffix(s))
            .unwrap_or(metric);
        if !referenced.iter().any(|r| r.starts_with(family)) {
            return Err(fail(format!("no panel shows {metric}")));
        }
    }
    // Every query parses as PromQL: promtool checks them as recording rules.
    let group = serde_json::json!({"groups": [{
        "name": "dashboard",
        "rules": rules
            .iter()
            .map(|(i, expr)| serde_json::json!({"record": format!("quorate:dashboard_query_{i}"), "expr": expr}))
            .collect::<Vec<_>>(),
    }]});
    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let path = write_yaml(dir.path(), "dashboard-queries.yaml", &group)?;
    ctx.check_rules(&path, rules.len()).await
}

async fn the_deployment_runs_the_operator_as_the_chart_promises(ctx: Arc<Ctx>) -> TestResult {
    for (set, watched) in [(&[][..], ""), (&[NAMESPACED][..], "team-a,team-b")] {
        let docs = ctx.render("q", "quorate-system", set, false).await?;
        let deployments = of_kind(&docs, "Deployment");
        let [deployment] = deployments.as_slice() else {
            return Err(fail(format!(
                "one Deployment expected, got {}",
                deployments.len()
            )));
        };
        let d: Deployment = typed(deployment)?;
        let spec = d.spec;
        if spec.replicas != Some(2) {
            return Err(fail(format!("replicas {:?}, want 2", spec.replicas)));
        }
        let pod = spec.template.spec.ok_or_else(|| fail("no pod spec"))?;
        if pod.service_account_name.as_deref() != Some("q-quorate") {
            return Err(fail(format!(
                "serviceAccountName {:?}",
                pod.service_account_name
            )));
        }
        let [c] = pod.containers.as_slice() else {
            return Err(fail("one container expected"));
        };
        if c.image.as_deref() != Some(IMAGE) {
            return Err(fail(format!("image {:?}", c.image)));
        }
        if c.args.as_deref() != Some(&["run".to_string(), "--log-json".to_string()][..]) {
            return Err(fail(format!("args {:?}", c.args)));
        }
        let port = |name: &str| {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port)
        };
        if port("http") != Some(8081) || port("metrics") != Some(8080) {
            return Err(fail(format!("ports {:?}", c.ports)));
        }
        let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .map(|h| (h.path.clone(), h.port.clone()))
        };
        let http = IntOrString::String("http".into());
        if probe_path(&c.liveness_probe) != Some((Some("/healthz".into()), http.clone()))
            || probe_path(&c.readiness_probe) != Some((Some("/readyz".into()), http))
        {
            return Err(fail(format!(
                "probes {:?} / {:?}",
                c.liveness_probe, c.readiness_probe
            )));
        }
        let env = c.env.clone().unwrap_or_default();
        let field = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value_from.as_ref())
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| f.field_path.clone())
        };
        let value = |name: &str| {
            env.iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        if field("POD_NAME").as_deref() != Some("metadata.name")
            || field("POD_NAMESPACE").as_deref() != Some("metadata.namespace")
        {
            return Err(fail(format!(
                "POD_NAME/POD_NAMESPACE from the downward API: {env:?}"
            )));
        }
        if value("QUORATE_IMAGE").as_deref() != Some(IMAGE) {
            return Err(fail(format!(
                "QUORATE_IMAGE is not the operator image: {env:?}"
            )));
        }
        if value("WATCH_NAMESPACES").as_deref() != Some(watched) {
            return Err(fail(format!(
                "WATCH_NAMESPACES {:?}, want {watched:?}",
                value("WATCH_NAMESPACES")
            )));
        }
        // The metrics Service selects the operator Pods on the metrics port.
        let services = of_kind(&docs, "Service");
        let [service] = services.as_slice() else {
            return Err(fail("one Service expected"));
        };
        let svc: Service = typed(service)?;
        let svc_spec = svc.spec.ok_or_else(|| fail("no Service spec"))?;
        let pod_labels = spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .unwrap_or_default();
        let selects = svc_spec
            .selector
            .unwrap_or_default()
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v));
        let target = svc_spec
            .ports
            .unwrap_or_default()
            .first()
            .and_then(|p| p.target_port.clone());
        if !selects || target != Some(IntOrString::String("metrics".into())) {
            return Err(fail(format!(
                "the metrics Service does not reach the metrics port: {service}"
            )));
        }
    }
    Ok(())
}

async fn every_pod_template_meets_pod_security_restricted_fields(ctx: Arc<Ctx>) -> TestResult {
    for set in [&[][..], &[NAMESPACED][..]] {
        let docs = ctx.render("q", "quorate-system", set, false).await?;
        let templates: Vec<&Value> = docs
            .iter()
            .filter_map(|d| match d["kind"].as_str() {
                Some("Pod") => Some(&d["spec"]),
                Some("Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet") => {
                    Some(&d["spec"]["template"]["spec"])
                }
                Some("CronJob") => Some(&d["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
                _ => None,
            })
            .collect();
        if templates.is_empty() {
            return Err(fail("no Pod template rendered"));
        }
        for spec in templates {
            let wrong = restricted_violations(spec);
            if !wrong.is_empty() {
                return Err(fail(format!("not restricted ({set:?}): {wrong:?}")));
            }
        }
    }
    Ok(())
}

async fn the_rbac_has_no_wildcards_and_matches_deploy_operator_rbac(ctx: Arc<Ctx>) -> TestResult {
    let cluster = ctx.render("q", "quorate-system", &[], false).await?;
    let namespaced = ctx
        .render("q", "quorate-system", &[NAMESPACED], false)
        .await?;
    for docs in [&cluster, &namespaced] {
        for rule in rules_of(docs, &["ClusterRole", "Role"]) {
            for key in ["apiGroups", "resources", "verbs"] {
                if rule[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| v.as_str().is_some_and(|s| s.contains('*')))
                {
                    return Err(fail(format!("a wildcard in {key}: {rule}")));
                }
            }
            if !rule["nonResourceURLs"].is_null() || !rule["resourceNames"].is_null() {
                return Err(fail(format!("unexpected rule shape: {rule}")));
            }
        }
    }
    // Cluster-wide mode grants exactly what deploy/operator-rbac.yaml grants (the chart only
    // moves the Lease rule into a Role in the release namespace).
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/operator-rbac.yaml"),
    )
    .map_err(|e| fail(format!("deploy/operator-rbac.yaml: {e}")))?;
    let deploy = documents(&text)?;
    let want = grants(&rules_of(&deploy, &["ClusterRole"]));
    let got = grants(&rules_of(&cluster, &["ClusterRole", "Role"]));
    let secrets = |g: &BTreeSet<(String, String, String)>| {
        g.iter()
            .filter(|(group, resource, _)| group.is_empty() && resource == "secrets")
            .count()
    };
    if secrets(&want) == 0 || secrets(&got) == 0 {
        return Err(fail(
            "no Secret rule found: the comparison would prove nothing",
        ));
    }
    if want != got {
        return Err(fail(format!(
            "the chart and deploy/operator-rbac.yaml differ:\n only in the chart: {:?}\n only in deploy/: {:?}",
            got.difference(&want).collect::<Vec<_>>(),
            want.difference(&got).collect::<Vec<_>>()
        )));
    }
    // Namespaced mode: a Role per watched namespace with the same managed rules, Secrets in no
    // ClusterRole, and only reads of quorate's resources cluster-wide.
    let cluster_wide = grants(&rules_of(&namespaced, &["ClusterRole"]));
    if cluster_wide
        .iter()
        .any(|(g, _, v)| g != "quorate.dev" || !["get", "list", "watch"].contains(&v.as_str()))
    {
        return Err(fail(format!(
            "namespaced mode grants more than reads cluster-wide: {cluster_wide:?}"
        )));
    }
    let roles = of_kind(&namespaced, "Role");
    let managed = grants(&rules_of(&cluster, &["ClusterRole"]));
    for ns in ["team-a", "team-b"] {
        let role = roles
            .iter()
            .find(|r| r["metadata"]["namespace"] == ns)
            .ok_or_else(|| fail(format!("no Role in {ns}")))?;
        let rules: Vec<&Value> = role["rules"].as_array().into_iter().flatten().collect();
        if grants(&rules) != managed {
            return Err(fail(format!("the Role in {ns} is not the managed rules")));
        }
    }
    let bindings = of_kind(&namespaced, "RoleBinding");
    for ns in ["team-a", "team-b", "quorate-system"] {
        if !bindings.iter().any(|b| b["metadata"]["namespace"] == ns) {
            return Err(fail(format!("no RoleBinding in {ns}")));
        }
    }
    if roles.len() != 3
        || bindings.len() != 3
        || !of_kind(&namespaced, "ClusterRoleBinding")
            .iter()
            .all(|b| b["roleRef"]["name"] == "q-quorate-read")
    {
        return Err(fail(
            "namespaced mode renders other Roles or bindings than expected",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The real API server
// ---------------------------------------------------------------------------------------------

/// Renders with `set`, creates the namespaces the output needs, and applies it (server-side
/// apply) with a server-side dry run; every object must come back.
async fn dry_run(
    ctx: &Ctx,
    release: &str,
    ns: &str,
    set: &[&str],
    extra_namespaces: &[&str],
) -> TestResult {
    let docs = ctx.render(release, ns, set, true).await?;
    let mut needed: Vec<&str> = vec![ns];
    needed.extend(extra_namespaces);
    ctx.namespaces(&needed, &[]).await?;
    let stream: String = docs
        .iter()
        .map(|d| format!("---\n{}", serde_norway::to_string(d).unwrap_or_default()))
        .collect();
    // Server-side apply: one request per object that creates or updates, so a CRD that the
    // install tests (sharing this API server) create or delete at the same moment cannot turn
    // a client-side read-then-create into AlreadyExists.
    let mut cmd = tokio::process::Command::from(ctx.plane.kubectl());
    cmd.args([
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=quorate-dry-run",
        "--dry-run=server",
        "-o",
        "name",
        "-f",
        "-",
    ]);
    let out = run(
        cmd,
        Some(&stream),
        "kubectl apply --server-side --dry-run=server",
    )
    .await?;
    let applied = out.lines().filter(|l| !l.trim().is_empty()).count();
    if applied != docs.len() {
        return Err(fail(format!(
            "{} objects rendered, {applied} accepted:\n{out}",
            docs.len()
        )));
    }
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "Deployment",
        "Service",
    ] {
        if of_kind(&docs, kind).is_empty() {
            return Err(fail(format!("no {kind} rendered")));
        }
    }
    Ok(())
}

async fn cluster_wide_manifests_pass_a_server_side_dry_run(ctx: Arc<Ctx>) -> TestResult {
    // The dashboard's ConfigMap too (the monitoring.coreos.com kinds have no CRDs here).
    dry_run(
        &ctx,
        "dry",
        "dry-cluster",
        &["metrics.grafanaDashboard.enabled=true"],
        &[],
    )
    .await
}

async fn namespaced_manifests_pass_a_server_side_dry_run(ctx: Arc<Ctx>) -> TestResult {
    dry_run(
        &ctx,
        "dry",
        "dry-namespaced",
        &["watchNamespaces={dry-team-a,dry-team-b}"],
        &["dry-team-a", "dry-team-b"],
    )
    .await
}

async fn the_operator_pod_is_admitted_under_enforced_restricted_pod_security(
    ctx: Arc<Ctx>,
) -> TestResult {
    let ns = "restricted";
    ctx.namespaces(
        &[ns],
        &[
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
        ],
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client().await?, ns);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    for set in [&[][..], &[NAMESPACED][..]] {
        let docs = ctx.render("q", ns, set, false).await?;
        for deployment in of_kind(&docs, "Deployment") {
            let template = &deployment["spec"]["template"];
            let mut pod = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": template["metadata"].clone(),
                "spec": template["spec"].clone(),
            });
            pod["metadata"]["name"] = "operator-from-template".into();
            let pod: Pod = typed(&pod)?;
            pods.create(&dry, &pod).await.map_err(|e| {
                fail(format!(
                    "the operator's Pod template is refused under restricted: {e}"
                ))
            })?;
            // The namespace does enforce: the same Pod without its security contexts is refused.
            let mut bare = pod.clone();
            if let Some(spec) = bare.spec.as_mut() {
                spec.security_context = None;
                for c in &mut spec.containers {
                    c.security_context = None;
                }
            }
            match pods.create(&dry, &bare).await {
                Err(kube::Error::Api(s))
                    if s.code == 403 && s.message.contains("violates PodSecurity") => {}
                other => {
                    return Err(fail(format!(
                        "a Pod without security contexts must be refused in {ns}: {other:?}"
                    )));
                }
            }
        }
    }
    Ok(())
}

async fn gone<K>(api: &Api<K>, name: &str) -> Result<(), Failed>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    eventually(
        &format!("{name} to be deleted"),
        Duration::from_secs(30),
        || async { matches!(api.get_opt(name).await, Ok(None)).then_some(()) },
    )
    .await
}

async fn exists<K>(api: &Api<K>, name: &str) -> Result<K, Failed>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.get_opt(name)
        .await
        .map_err(|e| fail(format!("get {name}: {e}")))?
        .ok_or_else(|| {
            fail(format!(
                "{} {name} was not created",
                std::any::type_name::<K>()
            ))
        })
}

/// The operator's writes in a managed namespace `ns`, as `sa`: each must succeed.
async fn operator_can_work_in(admin: &Client, sa: &Client, ns: &str) -> TestResult {
    let step = |what: &'static str| {
        move |e: kube::Error| fail(format!("in {ns}, the operator must be able to {what}: {e}"))
    };
    // An ensemble (created by a user) whose status the operator writes.
    let ens: MasterEnsemble = serde_json::from_value(json!({
        "apiVersion": "quorate.dev/v1alpha1", "kind": "MasterEnsemble",
        "metadata": {"name": "masters"}, "spec": {"replicas": 3}
    }))
    .map_err(|e| fail(format!("{e}")))?;
    Api::<MasterEnsemble>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &ens)
        .await
        .map_err(|e| fail(format!("admin creates an ensemble in {ns}: {e}")))?;
    let ensembles: Api<MasterEnsemble> = Api::namespaced(sa.clone(), ns);
    ensembles
        .patch_status(
            "masters",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"phase": "Creating"}})),
        )
        .await
        .map_err(step("patch a MasterEnsemble's status"))?;
    let mut current = ensembles
        .get_status("masters")
        .await
        .map_err(step("get a MasterEnsemble's status"))?;
    current
        .status
        .get_or_insert_with(Default::default)
        .next_server_id = Some(1);
    ensembles
        .replace_status("masters", &PostParams::default(), &current)
        .await
        .map_err(step("update a MasterEnsemble's status (the claim)"))?;
    Api::<ZkBackup>::namespaced(sa.clone(), ns)
        .list(&ListParams::default())
        .await
        .map_err(step("list ZkBackups"))?;
    // Members: a Pod and its PVC, created and deleted.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "masters-1"},
        "spec": {"containers": [{"name": "zookeeper", "image": "zookeeper:3.9.5"}]}
    }))
    .map_err(|e| fail(format!("{e}")))?;
    let pods: Api<Pod> = Api::namespaced(sa.clone(), ns);
    pods.create(&PostParams::default(), &pod)
        .await
        .map_err(step("create a Pod"))?;
    pods.list(&ListParams::default())
        .await
        .map_err(step("list Pods"))?;
    pods.delete("masters-1", &DeleteParams::default())
        .await
        .map_err(step("delete a Pod"))?;
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data-masters-1"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .map_err(|e| fail(format!("{e}")))?;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(sa.clone(), ns);
    pvcs.create(&PostParams::default(), &pvc)
        .await
        .map_err(step("create a PVC"))?;
    pvcs.delete("data-masters-1", &DeleteParams::default())
        .await
        .map_err(step("delete a PVC"))?;
    // The support objects and the credentials Secret are server-side applies that create.
    let apply = PatchParams::apply("quorate").force();
    let body = |api_version: &str, kind: &str, name: &str, rest: Value| {
        let mut v = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
        if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), rest) {
            obj.extend(more);
        }
        Patch::Apply(v)
    };
    let config = json!({"data": {"zoo.cfg": "tickTime=2000\n"}});
    Api::<ConfigMap>::namespaced(sa.clone(), ns)
        .patch(
            "masters-config",
            &apply,
            &body("v1", "ConfigMap", "masters-config", config),
        )
        .await
        .map_err(step("apply a ConfigMap"))?;
    let members =
        json!({"spec": {"clusterIP": "None", "ports": [{"name": "client", "port": 2181}]}});
    Api::<Service>::namespaced(sa.clone(), ns)
        .patch(
            "masters-members",
            &apply,
            &body("v1", "Service", "masters-members", members),
        )
        .await
        .map_err(step("apply a Service"))?;
    let pdb = json!({"spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"quorate.dev/ensemble": "masters"}}}});
    Api::<PodDisruptionBudget>::namespaced(sa.clone(), ns)
        .patch(
            "masters",
            &apply,
            &body("policy/v1", "PodDisruptionBudget", "masters", pdb),
        )
        .await
        .map_err(step("apply a PodDisruptionBudget"))?;
    let secrets: Api<Secret> = Api::namespaced(sa.clone(), ns);
    let credentials = json!({"stringData": {"super-password": "x"}});
    secrets
        .patch(
            "masters-credentials",
            &apply,
            &body("v1", "Secret", "masters-credentials", credentials),
        )
        .await
        .map_err(step("apply the credentials Secret"))?;
    // A user's Secret named by spec.auth is read by name.
    let user_secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "zk-auth"}, "stringData": {"super-password": "y"}}),
    )
    .map_err(|e| fail(format!("{e}")))?;
    Api::<Secret>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &user_secret)
        .await
        .map_err(|e| fail(format!("admin creates a Secret in {ns}: {e}")))?;
    secrets
        .get("zk-auth")
        .await
        .map_err(step("read a Secret by name"))?;
    // An Event (events.k8s.io, as kube's Recorder publishes them).
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "masters.step-1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "quorate", "reportingInstance": "quorate-0",
        "action": "Started/create-member/1", "reason": "Started", "type": "Normal",
        "regarding": {"apiVersion": "quorate.dev/v1alpha1", "kind": "MasterEnsemble", "name": "masters", "namespace": ns}
    }))
    .map_err(|e| fail(format!("{e}")))?;
    Api::<Event>::namespaced(sa.clone(), ns)
        .create(&PostParams::default(), &event)
        .await
        .map_err(step("publish an Event"))?;
    Ok(())
}

/// What the operator must not do in any namespace.
async fn operator_cannot_overreach(sa: &Client, ns: &str) -> TestResult {
    if !is_forbidden(
        &Api::<Secret>::namespaced(sa.clone(), ns)
            .list(&ListParams::default())
            .await,
    ) {
        return Err(fail(format!("listing Secrets in {ns} must be Forbidden")));
    }
    if !is_forbidden(
        &Api::<ConfigMap>::namespaced(sa.clone(), ns)
            .list(&ListParams::default())
            .await,
    ) {
        return Err(fail(format!(
            "listing ConfigMaps in {ns} must be Forbidden"
        )));
    }
    if !is_forbidden(
        &Api::<Namespace>::all(sa.clone())
            .delete(ns, &DeleteParams::default())
            .await,
    ) {
        return Err(fail(format!("deleting namespace {ns} must be Forbidden")));
    }
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("quorate-leader".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    if !is_forbidden(
        &Api::<Lease>::namespaced(sa.clone(), ns)
            .create(&PostParams::default(), &lease)
            .await,
    ) {
        return Err(fail(format!(
            "a Lease outside the release namespace ({ns}) must be Forbidden"
        )));
    }
    Ok(())
}

/// The operator's leader-election Lease in the release namespace: created, read and renewed.
async fn operator_can_hold_its_lease(sa: &Client, release_ns: &str) -> TestResult {
    let leases: Api<Lease> = Api::namespaced(sa.clone(), release_ns);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("quorate-leader".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    leases
        .create(&PostParams::default(), &lease)
        .await
        .map_err(|e| {
            fail(format!(
                "the operator creates its Lease in {release_ns}: {e}"
            ))
        })?;
    let mut held = leases
        .get("quorate-leader")
        .await
        .map_err(|e| fail(format!("the operator reads its Lease: {e}")))?;
    held.spec
        .get_or_insert_with(Default::default)
        .holder_identity = Some("quorate-0".into());
    // kube-lease-manager takes and renews the Lease with server-side apply (a patch).
    held.metadata.managed_fields = None;
    leases
        .patch(
            "quorate-leader",
            &PatchParams::apply("quorate-lease-test").force(),
            &Patch::Apply(&held),
        )
        .await
        .map_err(|e| fail(format!("the operator renews its Lease: {e}")))?;
    Ok(())
}

/// Waits until the ServiceAccount's grants reach the authorizer: it can list MasterEnsembles in
/// every namespace.
async fn lists_ensembles_cluster_wide(sa: &Client) -> TestResult {
    let all: Api<MasterEnsemble> = Api::all(sa.clone());
    eventually(
        "the chart's ServiceAccount to list MasterEnsembles cluster-wide",
        Duration::from_secs(10),
        || async { all.list(&ListParams::default()).await.ok().map(|_| ()) },
    )
    .await
}

async fn crds_are_established(admin: &Client) -> TestResult {
    let api: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for name in [
        "masterensembles.quorate.dev",
        "zkbackups.quorate.dev",
        "zkrestores.quorate.dev",
    ] {
        tokio::time::timeout(
            Duration::from_secs(30),
            kube::runtime::wait::await_condition(
                api.clone(),
                name,
                kube::runtime::conditions::is_crd_established(),
            ),
        )
        .await
        .map_err(|_| fail(format!("{name} not Established within 30 s")))?
        .map_err(|e| fail(format!("waiting for {name}: {e}")))?;
    }
    Ok(())
}

/// Everything a release renders outside the CRDs, by kind.
struct Installed {
    release_ns: String,
    fullname: String,
    /// (namespace, Role name) of every Role.
    roles: Vec<(String, String)>,
    cluster_roles: Vec<String>,
}

async fn check_installed(admin: &Client, i: &Installed) -> TestResult {
    let ns = &i.release_ns;
    exists(
        &Api::<ServiceAccount>::namespaced(admin.clone(), ns),
        &i.fullname,
    )
    .await?;
    let d = exists(
        &Api::<Deployment>::namespaced(admin.clone(), ns),
        &i.fullname,
    )
    .await?;
    if d.spec.replicas != Some(2) {
        return Err(fail("the installed Deployment does not have 2 replicas"));
    }
    exists(
        &Api::<Service>::namespaced(admin.clone(), ns),
        &format!("{}-metrics", i.fullname),
    )
    .await?;
    for name in &i.cluster_roles {
        exists(&Api::<ClusterRole>::all(admin.clone()), name).await?;
        exists(&Api::<ClusterRoleBinding>::all(admin.clone()), name).await?;
    }
    for (role_ns, name) in &i.roles {
        exists(&Api::<Role>::namespaced(admin.clone(), role_ns), name).await?;
        exists(
            &Api::<RoleBinding>::namespaced(admin.clone(), role_ns),
            name,
        )
        .await?;
    }
    Ok(())
}

async fn check_uninstalled(admin: &Client, i: &Installed) -> TestResult {
    let ns = &i.release_ns;
    gone(
        &Api::<ServiceAccount>::namespaced(admin.clone(), ns),
        &i.fullname,
    )
    .await?;
    gone(
        &Api::<Deployment>::namespaced(admin.clone(), ns),
        &i.fullname,
    )
    .await?;
    gone(
        &Api::<Service>::namespaced(admin.clone(), ns),
        &format!("{}-metrics", i.fullname),
    )
    .await?;
    for name in &i.cluster_roles {
        gone(&Api::<ClusterRole>::all(admin.clone()), name).await?;
        gone(&Api::<ClusterRoleBinding>::all(admin.clone()), name).await?;
    }
    for (role_ns, name) in &i.roles {
        gone(&Api::<Role>::namespaced(admin.clone(), role_ns), name).await?;
        gone(
            &Api::<RoleBinding>::namespaced(admin.clone(), role_ns),
            name,
        )
        .await?;
    }
    // Helm keeps the CRDs of crds/ (and so every MasterEnsemble) on uninstall, by design.
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    exists(&crds, "masterensembles.quorate.dev").await?;
    Ok(())
}

async fn install(ctx: &Ctx, release: &str, ns: &str, set: &[&str]) -> TestResult {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    let mut args = vec![
        "install",
        release,
        &chart,
        "--namespace",
        ns,
        "--create-namespace",
        "--set",
        IMAGE_SET,
    ];
    for s in set {
        args.extend(["--set", s]);
    }
    ctx.helm(&args).await.map(|_| ())
}

async fn install_in_cluster_wide_mode_grants_the_operator_what_it_needs_and_uninstall_removes_it(
    ctx: Arc<Ctx>,
) -> TestResult {
    let _one = ctx.installs.lock().await;
    let admin = ctx.client().await?;
    let (release, release_ns) = ("wide", "quorate-wide");
    ctx.namespaces(&["app-1"], &[]).await?;
    install(&ctx, release, release_ns, &[]).await?;
    crds_are_established(&admin).await?;
    let installed = Installed {
        release_ns: release_ns.into(),
        fullname: "wide-quorate".into(),
        roles: vec![(release_ns.into(), "wide-quorate-leader-election".into())],
        cluster_roles: vec!["wide-quorate".into()],
    };
    check_installed(&admin, &installed).await?;

    let sa = ctx
        .service_account_client(release_ns, "wide-quorate")
        .await?;
    lists_ensembles_cluster_wide(&sa).await?;
    operator_can_work_in(&admin, &sa, "app-1").await?;
    operator_can_hold_its_lease(&sa, release_ns).await?;
    operator_cannot_overreach(&sa, "app-1").await?;

    ctx.helm(&["uninstall", release, "--namespace", release_ns])
        .await?;
    check_uninstalled(&admin, &installed).await
}

/// The operator binary itself, as the namespaced release's ServiceAccount with
/// `WATCH_NAMESPACES=team-a,team-b`: it takes the Lease, creates the first member of an
/// ensemble in team-a, and leaves the one in team-z ("theirs") alone, with no Forbidden error.
async fn the_operator_manages_only_its_namespaces(
    ctx: &Ctx,
    admin: &Client,
    release_ns: &str,
    sa: &str,
) -> TestResult {
    let token = ctx.service_account_token(release_ns, sa).await?;
    let kubeconfig = ctx.plane.dir().join("scoped-operator.kubeconfig");
    std::fs::write(&kubeconfig, ctx.plane.kubeconfig_for_token(&token))
        .map_err(|e| fail(format!("write the kubeconfig: {e}")))?;
    let log_path = ctx.plane.dir().join("scoped-operator.log");
    let log = std::fs::File::create(&log_path).map_err(|e| fail(format!("log: {e}")))?;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_quorate"));
    cmd.args(["run", "--log-json"])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info,kube=warn")
        .env("WATCH_NAMESPACES", "team-a,team-b")
        .env("POD_NAME", "scoped-0")
        .env("POD_NAMESPACE", release_ns)
        .stdout(std::process::Stdio::null())
        .stderr(log);
    let mut operator = quorate_testbed::process::Child::spawn("scoped-operator", cmd)
        .map_err(|e| fail(format!("start the operator: {e}")))?;
    let result = async {
        let ours: MasterEnsemble = serde_json::from_value(json!({
            "apiVersion": "quorate.dev/v1alpha1", "kind": "MasterEnsemble",
            "metadata": {"name": "ours"}, "spec": {"replicas": 1}
        }))
        .map_err(|e| fail(format!("{e}")))?;
        Api::<MasterEnsemble>::namespaced(admin.clone(), "team-a")
            .create(&PostParams::default(), &ours)
            .await
            .map_err(|e| fail(format!("create team-a/ours: {e}")))?;
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "team-a");
        eventually(
            "the operator to create team-a/ours's first member",
            Duration::from_secs(60),
            || async { pods.get_opt("ours-1").await.ok().flatten() },
        )
        .await?;
        let leases: Api<Lease> = Api::namespaced(admin.clone(), release_ns);
        let holder = leases
            .get("quorate-leader")
            .await
            .map_err(|e| fail(format!("the leader Lease in {release_ns}: {e}")))?
            .spec
            .and_then(|s| s.holder_identity);
        if holder.as_deref() != Some("scoped-0") {
            return Err(fail(format!(
                "the Lease's holder is {holder:?}, not scoped-0"
            )));
        }
        // A few passes later the ensemble outside the watched namespaces is untouched.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let theirs = Api::<MasterEnsemble>::namespaced(admin.clone(), "team-z")
            .get("theirs")
            .await
            .map_err(|e| fail(format!("read team-z/theirs: {e}")))?;
        let pods_z = Api::<Pod>::namespaced(admin.clone(), "team-z")
            .list(&ListParams::default())
            .await
            .map_err(|e| fail(format!("list team-z: {e}")))?;
        if theirs.status.is_some() || !pods_z.items.is_empty() {
            return Err(fail(format!(
                "team-z is not watched, yet: status {:?}, {} Pods",
                theirs.status,
                pods_z.items.len()
            )));
        }
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.to_lowercase().contains("forbidden"))
        {
            return Err(fail(format!(
                "the namespaced operator hit a permission it lacks: {line}"
            )));
        }
        Ok(())
    }
    .await;
    operator.stop(Duration::from_secs(10));
    result.map_err(|e| with_log_tail(e, &log_path))
}

/// `e` with the newest 20 lines of the operator's log at `log_path`.
fn with_log_tail(e: Failed, log_path: &std::path::Path) -> Failed {
    let text = std::fs::read_to_string(log_path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    fail(format!(
        "{e:?}\noperator log (newest first):\n{}",
        tail.join("\n")
    ))
}

/// The operator's /metrics text, at `addr`.
async fn scrape(addr: std::net::SocketAddr) -> Option<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

/// The operator binary (the admin's kubeconfig, `WATCH_NAMESPACES=metrics-a`, no leader
/// election) serves each ensemble's gauges under `ensemble_namespace` and `ensemble`, the labels
/// the chart's PrometheusRule prints, and drops a deleted ensemble's series while another's stay.
async fn the_operator_drops_a_deleted_ensembles_series_from_its_metrics(
    ctx: Arc<Ctx>,
) -> TestResult {
    let admin = ctx.client().await?;
    let ns = "metrics-a";
    ctx.namespaces(&[ns], &[]).await?;
    // The chart's CRDs, whether or not an install test has created them yet (helm skips the
    // ones that exist; the lock keeps an install from creating them at the same moment).
    {
        let _one = ctx.installs.lock().await;
        let mut cmd = tokio::process::Command::from(ctx.plane.kubectl());
        cmd.args(["apply", "--server-side", "-f"])
            .arg(chart_dir().join("crds"));
        run(cmd, None, "kubectl apply the chart's CRDs").await?;
    }
    crds_are_established(&admin).await?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| fail(format!("a free port: {e}")))?;
    let log_path = ctx.plane.dir().join("metrics-operator.log");
    let log = std::fs::File::create(&log_path).map_err(|e| fail(format!("log: {e}")))?;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_quorate"));
    cmd.args(["run", "--log-json", "--metrics-addr", &addr.to_string()])
        .env("KUBECONFIG", ctx.plane.kubeconfig_path())
        .env("RUST_LOG", "info,kube=warn")
        .env("WATCH_NAMESPACES", ns)
        .env("QUORATE_LEADER_ELECTION", "false")
        .env("POD_NAME", "metrics-0")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    let mut operator = quorate_testbed::process::Child::spawn("metrics-operator", cmd)
        .map_err(|e| fail(format!("start the operator: {e}")))?;
    let result = async {
        let ensembles: Api<MasterEnsemble> = Api::namespaced(admin.clone(), ns);
        for name in ["kept", "deleted"] {
            let ens: MasterEnsemble = serde_json::from_value(json!({
                "apiVersion": "quorate.dev/v1alpha1", "kind": "MasterEnsemble",
                "metadata": {"name": name}, "spec": {"replicas": 1}
            }))
            .map_err(|e| fail(format!("{e}")))?;
            ensembles
                .create(&PostParams::default(), &ens)
                .await
                .map_err(|e| fail(format!("create {ns}/{name}: {e}")))?;
        }
        let series = |name: &str| {
            format!("quorate_ensemble_members{{ensemble_namespace=\"{ns}\",ensemble=\"{name}\"}} ")
        };
        let (kept, deleted) = (series("kept"), series("deleted"));
        let has = |text: &str, s: &str| text.lines().any(|l| l.starts_with(s));
        eventually(
            "both ensembles' series at /metrics",
            Duration::from_secs(60),
            || async {
                scrape(addr)
                    .await
                    .filter(|t| has(t, &kept) && has(t, &deleted))
            },
        )
        .await?;
        ensembles
            .delete("deleted", &DeleteParams::default())
            .await
            .map_err(|e| fail(format!("delete {ns}/deleted: {e}")))?;
        gone(&ensembles, "deleted").await?;
        eventually(
            "the deleted ensemble's series to leave /metrics",
            Duration::from_secs(30),
            || async { scrape(addr).await.filter(|t| !has(t, &deleted)) },
        )
        .await?;
        // Passes go on (the kept ensemble's every 2 s while its member does not start, and the
        // deleted one's member Pod still exists, there being no garbage collector here): the
        // deleted ensemble does not come back, the kept one stays.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let text = scrape(addr)
            .await
            .ok_or_else(|| fail("/metrics did not answer"))?;
        if has(&text, &deleted) || !has(&text, &kept) {
            return Err(fail(format!(
                "after 5 s, want only the kept ensemble's series:\n{text}"
            )));
        }
        for label in ["namespace=", "name="] {
            if text
                .lines()
                .filter(|l| l.starts_with("quorate_ensemble_"))
                .any(|l| l.contains(&format!("{{{label}")) || l.contains(&format!(",{label}")))
            {
                return Err(fail(format!("a series labelled {label}:\n{text}")));
            }
        }
        Ok(())
    }
    .await;
    operator.stop(Duration::from_secs(10));
    result.map_err(|e| with_log_tail(e, &log_path))
}

async fn install_in_namespaced_mode_confines_the_operator_to_its_namespaces(
    ctx: Arc<Ctx>,
) -> TestResult {
    let _one = ctx.installs.lock().await;
    let admin = ctx.client().await?;
    let (release, release_ns) = ("scoped", "quorate-scoped");
    let (managed, unmanaged) = (["team-a", "team-b"], "team-z");
    ctx.namespaces(&[managed[0], managed[1], unmanaged], &[])
        .await?;
    install(&ctx, release, release_ns, &[NAMESPACED]).await?;
    crds_are_established(&admin).await?;
    let installed = Installed {
        release_ns: release_ns.into(),
        fullname: "scoped-quorate".into(),
        roles: vec![
            (release_ns.into(), "scoped-quorate-leader-election".into()),
            ("team-a".into(), "scoped-quorate".into()),
            ("team-b".into(), "scoped-quorate".into()),
        ],
        cluster_roles: vec!["scoped-quorate-read".into()],
    };
    check_installed(&admin, &installed).await?;
    if Api::<ClusterRole>::all(admin.clone())
        .get_opt("scoped-quorate")
        .await
        .ok()
        .flatten()
        .is_some()
    {
        return Err(fail(
            "namespaced mode must not create the cluster-wide ClusterRole",
        ));
    }
    if Api::<Role>::namespaced(admin.clone(), unmanaged)
        .get_opt("scoped-quorate")
        .await
        .ok()
        .flatten()
        .is_some()
    {
        return Err(fail("no Role belongs in an unmanaged namespace"));
    }

    let sa = ctx
        .service_account_client(release_ns, "scoped-quorate")
        .await?;
    lists_ensembles_cluster_wide(&sa).await?;
    for ns in managed {
        operator_can_work_in(&admin, &sa, ns).await?;
        operator_cannot_overreach(&sa, ns).await?;
    }
    operator_can_hold_its_lease(&sa, release_ns).await?;

    // Outside the watched namespaces: no Secrets, no Pods, no status writes.
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "private"}, "stringData": {"k": "v"}}))
            .map_err(|e| fail(format!("{e}")))?;
    Api::<Secret>::namespaced(admin.clone(), unmanaged)
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|e| fail(format!("admin creates a Secret in {unmanaged}: {e}")))?;
    if !is_forbidden(
        &Api::<Secret>::namespaced(sa.clone(), unmanaged)
            .get("private")
            .await,
    ) {
        return Err(fail(format!(
            "reading a Secret in the unmanaged {unmanaged} must be Forbidden"
        )));
    }
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "intruder"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .map_err(|e| fail(format!("{e}")))?;
    if !is_forbidden(
        &Api::<Pod>::namespaced(sa.clone(), unmanaged)
            .create(&PostParams::default(), &pod)
            .await,
    ) {
        return Err(fail(format!(
            "creating a Pod in the unmanaged {unmanaged} must be Forbidden"
        )));
    }
    let ens: MasterEnsemble = serde_json::from_value(json!({
        "apiVersion": "quorate.dev/v1alpha1", "kind": "MasterEnsemble",
        "metadata": {"name": "theirs"}, "spec": {"replicas": 1}
    }))
    .map_err(|e| fail(format!("{e}")))?;
    Api::<MasterEnsemble>::namespaced(admin.clone(), unmanaged)
        .create(&PostParams::default(), &ens)
        .await
        .map_err(|e| fail(format!("admin creates an ensemble in {unmanaged}: {e}")))?;
    let status = Patch::Merge(json!({"status": {"phase": "Creating"}}));
    if !is_forbidden(
        &Api::<MasterEnsemble>::namespaced(sa.clone(), unmanaged)
            .patch_status("theirs", &PatchParams::default(), &status)
            .await,
    ) {
        return Err(fail(format!(
            "writing an ensemble's status in the unmanaged {unmanaged} must be Forbidden"
        )));
    }

    the_operator_manages_only_its_namespaces(&ctx, &admin, release_ns, "scoped-quorate").await?;

    ctx.helm(&["uninstall", release, "--namespace", release_ns])
        .await?;
    check_uninstalled(&admin, &installed).await
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let tests: Vec<(&str, TestFn)> = vec![
        ("helm_lint_passes_in_both_modes", |c| {
            Box::pin(helm_lint_passes_in_both_modes(c))
        }),
        ("a_bad_namespace_list_is_refused_at_render_time", |c| {
            Box::pin(a_bad_namespace_list_is_refused_at_render_time(c))
        }),
        (
            "every_value_is_in_the_schema_with_a_type_and_a_description",
            |c| {
                Box::pin(every_value_is_in_the_schema_with_a_type_and_a_description(
                    c,
                ))
            },
        ),
        (
            "the_values_schema_accepts_the_defaults_and_every_value_set_the_tests_use",
            |c| {
                Box::pin(
                    the_values_schema_accepts_the_defaults_and_every_value_set_the_tests_use(c),
                )
            },
        ),
        ("the_values_schema_refuses_bad_values_and_names_them", |c| {
            Box::pin(the_values_schema_refuses_bad_values_and_names_them(c))
        }),
        ("the_zookeeper_pod_monitor_scrapes_every_member_pod", |c| {
            Box::pin(the_zookeeper_pod_monitor_scrapes_every_member_pod(c))
        }),
        ("monitoring_objects_render_only_when_enabled", |c| {
            Box::pin(monitoring_objects_render_only_when_enabled(c))
        }),
        (
            "the_service_monitor_scrapes_the_metrics_service_on_its_port",
            |c| {
                Box::pin(the_service_monitor_scrapes_the_metrics_service_on_its_port(
                    c,
                ))
            },
        ),
        (
            "the_prometheus_rule_reads_only_metrics_the_operator_serves",
            |c| {
                Box::pin(the_prometheus_rule_reads_only_metrics_the_operator_serves(
                    c,
                ))
            },
        ),
        (
            "the_prometheus_rule_thresholds_and_labels_come_from_values",
            |c| {
                Box::pin(the_prometheus_rule_thresholds_and_labels_come_from_values(
                    c,
                ))
            },
        ),
        (
            "the_prometheus_rule_passes_promtool_and_each_alert_fires_when_and_only_when_documented",
            |c| {
                Box::pin(
                    the_prometheus_rule_passes_promtool_and_each_alert_fires_when_and_only_when_documented(c),
                )
            },
        ),
        (
            "the_grafana_dashboard_renders_only_when_enabled_and_reads_only_served_metrics",
            |c| {
                Box::pin(
                    the_grafana_dashboard_renders_only_when_enabled_and_reads_only_served_metrics(
                        c,
                    ),
                )
            },
        ),
        (
            "the_deployment_runs_the_operator_as_the_chart_promises",
            |c| Box::pin(the_deployment_runs_the_operator_as_the_chart_promises(c)),
        ),
        (
            "every_pod_template_meets_pod_security_restricted_fields",
            |c| Box::pin(every_pod_template_meets_pod_security_restricted_fields(c)),
        ),
        (
            "the_rbac_has_no_wildcards_and_matches_deploy_operator_rbac",
            |c| {
                Box::pin(the_rbac_has_no_wildcards_and_matches_deploy_operator_rbac(
                    c,
                ))
            },
        ),
        ("cluster_wide_manifests_pass_a_server_side_dry_run", |c| {
            Box::pin(cluster_wide_manifests_pass_a_server_side_dry_run(c))
        }),
        ("namespaced_manifests_pass_a_server_side_dry_run", |c| {
            Box::pin(namespaced_manifests_pass_a_server_side_dry_run(c))
        }),
        (
            "the_operator_pod_is_admitted_under_enforced_restricted_pod_security",
            |c| Box::pin(the_operator_pod_is_admitted_under_enforced_restricted_pod_security(c)),
        ),
        (
            "install_in_cluster_wide_mode_grants_the_operator_what_it_needs_and_uninstall_removes_it",
            |c| {
                Box::pin(install_in_cluster_wide_mode_grants_the_operator_what_it_needs_and_uninstall_removes_it(c))
            },
        ),
        (
            "install_in_namespaced_mode_confines_the_operator_to_its_namespaces",
            |c| Box::pin(install_in_namespaced_mode_confines_the_operator_to_its_namespaces(c)),
        ),
        (
            "the_operator_drops_a_deleted_ensembles_series_from_its_metrics",
            |c| Box::pin(the_operator_drops_a_deleted_ensembles_series_from_its_metrics(c)),
        ),
    ];
    // Listing tests needs neither helm nor a control plane.
    if args.list {
        let trials = tests
            .iter()
            .map(|(name, _)| Trial::test(*name, || Ok(())))
            .collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }
    let started = Instant::now();
    let helm = match quorate_testbed::helm::ensure_helm() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("cannot get helm: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let promtool = match quorate_testbed::promtool::ensure_promtool() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot get promtool: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let helm_home = match tempfile::Builder::new()
        .prefix("quorate-helm-home-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot create helm's home: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let plane = match runtime.block_on(ControlPlane::start(Options::default())) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot start the control plane: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!(
        "helm {} and the control plane ready in {:.1}s at {}",
        helm.display(),
        started.elapsed().as_secs_f64(),
        plane.server_url()
    );
    let ctx = Arc::new(Ctx {
        plane,
        helm,
        helm_home,
        promtool,
        installs: tokio::sync::Mutex::new(()),
    });
    let handle = runtime.handle().clone();
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            let ctx = ctx.clone();
            let handle = handle.clone();
            Trial::test(name, move || handle.block_on(f(ctx)))
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Stop the control plane before exiting, whatever the outcome.
    if let Ok(mut ctx) = Arc::try_unwrap(ctx) {
        ctx.plane.stop();
    }
    drop(runtime);
    conclusion.exit_code()
}
